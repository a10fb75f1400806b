import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/db/database.ts';
import {
  type AnalyticsOptions,
  analyticsColumns,
  analyticsSource,
} from '../src/collect/computed/analytics.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import {
  insertComputedFixture,
  OTHER_TENANT,
  SITE_A_URL as A,
  SITE_B_URL as B,
  TENANT,
} from './support/fixtures/computed.ts';
import { createTestDatabase, DIALECTS } from './support/databases.ts';

const ALL = analyticsColumns(['all']);

/** A row with nothing but one conversation without messages, ratings or visitors before it. */
const QUIET = {
  total_conversations: '1',
  total_messages: '0',
  ai_messages: '0',
  human_messages: '0',
  avg_response_time_seconds: '',
  avg_resolution_time_minutes: '',
  escalation_rate: '0.0000',
  resolution_rate: '0.0000',
  satisfaction_avg: '',
  satisfaction_responses: '0',
  ai_confidence_avg: '',
  high_confidence_rate: '',
  low_confidence_rate: '',
  unique_visitors: '1',
  returning_visitors: '0',
  conversion_rate: '0.0000',
  bounce_rate: '0.0000',
  avg_session_duration: '',
  mobile_percentage: '0.00',
  international_percentage: '0.00',
  after_hours_percentage: '0.00',
  top_topics: '{}',
  content_gap_topics: '{}',
  custom_kpis: '{"tokens_used": 0, "avg_processing_time_ms": null}',
};

/** Daily, Europe/Berlin, every metric: worked out by hand from the fixture (see docs/metrics.md). */
const DAILY_BERLIN = [
  {
    // c0: Saturday visit of K2; the AI reply has no confidence score.
    ...QUIET,
    date: '2025-12-20',
    site_url: A,
    total_messages: '2',
    ai_messages: '1',
    avg_response_time_seconds: '5.00',
    avg_resolution_time_minutes: '5.00',
    resolution_rate: '1.0000',
    avg_session_duration: '300.00',
    after_hours_percentage: '100.00',
    custom_kpis: '{"tokens_used": 10, "avg_processing_time_ms": null}',
  },
  {
    // c5: twelve unanswered messages; converted by r0 three days later.
    ...QUIET,
    date: '2026-01-05',
    site_url: B,
    total_messages: '12',
    conversion_rate: '1.0000',
    top_topics: '{pricing}',
  },
  {
    // c1 (09:00, K1) and c2 (17:30, anonymous s2, FR, iPhone, escalated).
    date: '2026-01-05',
    site_url: A,
    total_conversations: '2',
    total_messages: '8',
    ai_messages: '2',
    human_messages: '1',
    avg_response_time_seconds: '32.50', // (30 + 60 + 30 + 10) / 4; c2's last message has no reply
    avg_resolution_time_minutes: '10.00',
    escalation_rate: '0.5000',
    resolution_rate: '0.5000',
    satisfaction_avg: '3.50',
    satisfaction_responses: '2',
    ai_confidence_avg: '0.6000', // 0.9 and 0.3
    high_confidence_rate: '0.5000',
    low_confidence_rate: '0.5000',
    unique_visitors: '2',
    returning_visitors: '0',
    conversion_rate: '0.5000', // c1 (r1)
    bounce_rate: '0.0000',
    avg_session_duration: '1500.00',
    mobile_percentage: '50.00',
    international_percentage: '50.00',
    after_hours_percentage: '50.00',
    top_topics: '{billing,refund,shipping}',
    content_gap_topics: '{billing,refund}', // c2's AI confidence 0.3
    custom_kpis: '{"tokens_used": 150, "avg_processing_time_ms": 800.00}',
  },
  {
    // c3 (23:30 UTC on the 5th = 00:30 on the 6th, K1, bounce) and c6 (s2 again, Android).
    date: '2026-01-06',
    site_url: A,
    total_conversations: '2',
    total_messages: '6',
    ai_messages: '1',
    human_messages: '2',
    avg_response_time_seconds: '52.50', // (60 + 45) / 2
    avg_resolution_time_minutes: '20.00',
    escalation_rate: '0.5000',
    resolution_rate: '0.5000',
    satisfaction_avg: '3.00',
    satisfaction_responses: '1',
    ai_confidence_avg: '0.6000',
    high_confidence_rate: '0.0000',
    low_confidence_rate: '0.0000',
    unique_visitors: '2',
    returning_visitors: '2', // K1 (c1) and anonymous session s2 (c2) on the 5th
    conversion_rate: '1.0000', // c3 (r1), c6 (r4)
    bounce_rate: '0.5000',
    avg_session_duration: '1800.00',
    mobile_percentage: '50.00',
    international_percentage: '0.00',
    after_hours_percentage: '50.00',
    top_topics: '{refund}',
    content_gap_topics: '{}',
    custom_kpis: '{"tokens_used": 70, "avg_processing_time_ms": 800.00}',
  },
  {
    // c4: Saturday, K2 seen on site A in December; listed by r0 but started after it.
    ...QUIET,
    date: '2026-01-10',
    site_url: A,
    total_messages: '2',
    human_messages: '1',
    avg_response_time_seconds: '60.00',
    avg_resolution_time_minutes: '30.00',
    resolution_rate: '1.0000',
    satisfaction_avg: '4.00',
    satisfaction_responses: '1',
    returning_visitors: '1',
    avg_session_duration: '600.00',
    after_hours_percentage: '100.00',
    top_topics: '{shipping}',
  },
  { ...QUIET, date: '2026-01-12', site_url: B, after_hours_percentage: '100.00' }, // c7
  { ...QUIET, date: '2026-02-01', site_url: B, after_hours_percentage: '100.00' }, // c8
].map((row) => ({ ...row, tenant_id: TENANT }));

describe('analytics columns and options', () => {
  it('lists the columns of the chosen metric groups in the declared order', () => {
    expect(ALL).toHaveLength(27);
    expect(ALL.slice(0, 3)).toEqual(['date', 'tenant_id', 'site_url']);
    expect(analyticsColumns(['revenue'])).toEqual([
      'date',
      'tenant_id',
      'site_url',
      'total_conversations',
      'conversion_rate',
    ]);
    expect(analyticsColumns(['attribution'])).toEqual([
      'date',
      'tenant_id',
      'site_url',
      'total_conversations',
      'unique_visitors',
      'returning_visitors',
      'bounce_rate',
      'avg_session_duration',
      'mobile_percentage',
      'international_percentage',
      'after_hours_percentage',
    ]);
    const both = analyticsColumns(['revenue', 'performance']);
    expect(both).toEqual(ALL.filter((c) => both.includes(c)));
    expect(both).toContain('conversion_rate');
    expect(both).toContain('custom_kpis');
    expect(both).not.toContain('bounce_rate');
  });

  const base: AnalyticsOptions = {
    tenantId: TENANT,
    timezone: 'Europe/Berlin',
    granularity: 'daily',
    metrics: ['all'],
  };
  const rejects = (options: Partial<AnalyticsOptions> | Record<string, unknown>, param: string) => {
    let error: unknown;
    try {
      analyticsSource({ ...base, ...options } as AnalyticsOptions);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FerryError);
    expect((error as FerryError).code).toBe('invalid_parameter');
    expect((error as FerryError).message.startsWith(`${param}:`)).toBe(true);
  };

  it('rejects unknown time zones and offsets, naming timezone', () => {
    rejects({ timezone: 'Mars/Olympus' }, 'timezone');
    rejects({ timezone: '+01:00' }, 'timezone');
    rejects({ timezone: "Europe/Berlin'; DROP TABLE tenants; --" }, 'timezone');
    rejects({ timezone: '' }, 'timezone');
  });

  it('rejects bad granularity, metric groups, dates and tenant ids', () => {
    rejects({ granularity: 'yearly' }, 'granularity');
    rejects({ metrics: [] }, 'metrics');
    rejects({ metrics: ['speed'] }, 'metrics');
    rejects({ from: '2026-02-30' }, 'from');
    rejects({ to: '5 Jan 2026' }, 'to');
    rejects({ from: '2026-01-06', to: '2026-01-05' }, 'to');
    rejects({ tenantId: 'acme' }, 'tenant_id');
  });

  it('returns a CopyQuery FROM clause with a key range slot', () => {
    const source = analyticsSource(base);
    expect(source.from.startsWith('FROM (')).toBe(true);
    expect(source.from.endsWith(') t WHERE true{{KEY_RANGE}}')).toBe(true);
    expect(source.key).toEqual(['t.date', 't.site_url']);
  });
});

for (const dialect of DIALECTS) {
  describe(`analytics on ${dialect}`, () => {
    let database: Database;
    let drop: () => Promise<void>;
    beforeAll(async () => {
      // PGlite with two-row pages, so every query is streamed as several keyset-paged COPYs.
      ({ database, drop } = await createTestDatabase(dialect, { pageRows: 2 }));
      await insertComputedFixture(database);
    });
    afterAll(() => drop());

    /** Streams the query through COPY (CSV with header) and parses it back. */
    async function run(options: Partial<AnalyticsOptions>): Promise<Record<string, string>[]> {
      const full: AnalyticsOptions = {
        tenantId: TENANT,
        timezone: 'Europe/Berlin',
        granularity: 'daily',
        metrics: ['all'],
        ...options,
      };
      const columns = analyticsColumns(full.metrics);
      const { from, key } = analyticsSource(full);
      const out = database.copyOut({
        projection: columns.map((c) => `t.${c}`).join(', '),
        from,
        key,
        options: 'FORMAT csv',
        header: true,
      });
      const chunks: Buffer[] = [];
      for await (const chunk of out) chunks.push(chunk as Buffer);
      const text = Buffer.concat(chunks).toString('utf8');
      expect(text.split('\n')[0]).toBe(columns.join(','));
      return parse(text, { columns: true }) as Record<string, string>[];
    }

    const pick = (rows: Record<string, string>[], ...names: string[]) =>
      rows.map((r) => Object.fromEntries(names.map((n) => [n, r[n]])));

    it('computes every metric per day and site in the tenant time zone', async () => {
      const rows = await run({});
      expect(rows).toEqual(DAILY_BERLIN);
      for (const row of rows) expect(Object.keys(row)).toEqual(ALL);
    });

    it('cuts days in the requested time zone', async () => {
      const rows = await run({ timezone: 'UTC' });
      expect(pick(rows, 'date', 'site_url', 'total_conversations')).toEqual([
        { date: '2025-12-20', site_url: A, total_conversations: '1' },
        { date: '2026-01-05', site_url: B, total_conversations: '1' },
        { date: '2026-01-05', site_url: A, total_conversations: '3' },
        { date: '2026-01-06', site_url: A, total_conversations: '1' },
        { date: '2026-01-10', site_url: A, total_conversations: '1' },
        { date: '2026-01-11', site_url: B, total_conversations: '1' },
        { date: '2026-01-31', site_url: B, total_conversations: '1' },
      ]);
      // c1 at 08:00 and c3 at 23:30 UTC are outside office hours; c2 at 16:30 is inside.
      // K1's c3 is now on the same day as c1: not a returning visit.
      expect(
        pick(
          rows.slice(2, 4),
          'after_hours_percentage',
          'returning_visitors',
          'bounce_rate',
          'unique_visitors',
        ),
      ).toEqual([
        {
          after_hours_percentage: '66.67',
          returning_visitors: '0',
          bounce_rate: '0.3333',
          unique_visitors: '3',
        },
        {
          after_hours_percentage: '0.00',
          returning_visitors: '1',
          bounce_rate: '0.0000',
          unique_visitors: '1',
        },
      ]);
    });

    it('starts weeks on Monday in the time zone', async () => {
      const keys = ['date', 'site_url', 'total_conversations'];
      const berlin = await run({ granularity: 'weekly' });
      expect(pick(berlin, ...keys)).toEqual([
        { date: '2025-12-15', site_url: A, total_conversations: '1' },
        { date: '2026-01-05', site_url: B, total_conversations: '1' },
        { date: '2026-01-05', site_url: A, total_conversations: '5' },
        { date: '2026-01-12', site_url: B, total_conversations: '1' }, // Sunday 23:30 UTC
        { date: '2026-01-26', site_url: B, total_conversations: '1' },
      ]);
      expect(
        pick(
          [berlin[2]!],
          'unique_visitors',
          'returning_visitors',
          'conversion_rate',
          'after_hours_percentage',
          'avg_response_time_seconds',
          'top_topics',
        ),
      ).toEqual([
        {
          unique_visitors: '4', // sessions s1, s2, s3, s4
          returning_visitors: '1', // K2, seen in December; K1 and s2 only came back within the week
          conversion_rate: '0.6000', // c1, c3, c6 of five
          after_hours_percentage: '60.00', // c2, c3, c4
          avg_response_time_seconds: '42.14', // (30 + 60 + 30 + 10 + 60 + 45 + 60) / 7
          top_topics: '{billing,refund,shipping}',
        },
      ]);
      const utc = await run({ granularity: 'weekly', timezone: 'UTC' });
      expect(pick(utc, ...keys)).toEqual([
        { date: '2025-12-15', site_url: A, total_conversations: '1' },
        { date: '2026-01-05', site_url: B, total_conversations: '2' },
        { date: '2026-01-05', site_url: A, total_conversations: '5' },
        { date: '2026-01-26', site_url: B, total_conversations: '1' },
      ]);
    });

    it('starts months on the 1st in the time zone', async () => {
      const keys = ['date', 'site_url', 'total_conversations'];
      expect(pick(await run({ granularity: 'monthly' }), ...keys)).toEqual([
        { date: '2025-12-01', site_url: A, total_conversations: '1' },
        { date: '2026-01-01', site_url: B, total_conversations: '2' },
        { date: '2026-01-01', site_url: A, total_conversations: '5' },
        { date: '2026-02-01', site_url: B, total_conversations: '1' }, // 31 Jan 23:30 UTC
      ]);
      expect(pick(await run({ granularity: 'monthly', timezone: 'UTC' }), ...keys)).toEqual([
        { date: '2025-12-01', site_url: A, total_conversations: '1' },
        { date: '2026-01-01', site_url: B, total_conversations: '3' },
        { date: '2026-01-01', site_url: A, total_conversations: '5' },
      ]);
    });

    it('labels hours YYYY-MM-DDTHH:00 and keeps from/to to whole local days', async () => {
      const keys = ['date', 'site_url', 'total_conversations', 'avg_response_time_seconds'];
      const berlin = await run({ granularity: 'hourly', from: '2026-01-05', to: '2026-01-05' });
      expect(pick(berlin, ...keys)).toEqual([
        {
          date: '2026-01-05T09:00',
          site_url: A,
          total_conversations: '1',
          avg_response_time_seconds: '40.00',
        },
        { date: '2026-01-05T10:00', site_url: B, total_conversations: '1', avg_response_time_seconds: '' },
        {
          date: '2026-01-05T17:00',
          site_url: A,
          total_conversations: '1',
          avg_response_time_seconds: '10.00',
        },
      ]);
      const utc = await run({ granularity: 'hourly', timezone: 'UTC', from: '2026-01-05', to: '2026-01-05' });
      expect(pick(utc, 'date', 'site_url')).toEqual([
        { date: '2026-01-05T08:00', site_url: A },
        { date: '2026-01-05T09:00', site_url: B },
        { date: '2026-01-05T16:00', site_url: A },
        { date: '2026-01-05T23:00', site_url: A },
      ]);
    });

    it('filters days and sites, with quotes in a site URL inlined safely', async () => {
      const range = await run({ from: '2026-01-06', to: '2026-01-10' });
      expect(range).toEqual(DAILY_BERLIN.filter((r) => r.date >= '2026-01-06' && r.date <= '2026-01-10'));
      const siteB = await run({ siteUrls: [B] });
      expect(siteB).toEqual(DAILY_BERLIN.filter((r) => r.site_url === B));
      expect(await run({ siteUrls: ["x' OR true --"] })).toEqual([]);
    });

    it('computes only the chosen groups, with the same values', async () => {
      for (const metrics of [['revenue'], ['attribution'], ['performance']] as const) {
        const columns = analyticsColumns(metrics);
        const rows = await run({ metrics });
        expect(rows).toEqual(
          DAILY_BERLIN.map((r) => Object.fromEntries(columns.map((c) => [c, r[c as 'date']]))),
        );
      }
    });

    it('stays inside the tenant', async () => {
      const rows = await run({ tenantId: OTHER_TENANT });
      expect(pick(rows, 'date', 'tenant_id', 'site_url', 'total_conversations', 'conversion_rate')).toEqual([
        {
          date: '2026-01-05',
          tenant_id: OTHER_TENANT,
          site_url: A,
          total_conversations: '1',
          conversion_rate: '0.0000',
        },
      ]);
    });
  });
}
