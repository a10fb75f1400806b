import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/db/database.ts';
import { REFERENCE_DATASETS } from '../src/datamap/reference-datasets.ts';
import {
  ATTRIBUTION_MODELS,
  type AttributionModel,
  type AttributionOptions,
  revenueAttributionSource,
} from '../src/collect/computed/revenue-attribution.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import {
  C,
  insertComputedFixture,
  K1,
  K2,
  K3,
  OTHER_TENANT,
  R,
  TENANT,
} from './support/fixtures/computed.ts';
import { createTestDatabase, DIALECTS } from './support/databases.ts';

const FIELDS = REFERENCE_DATASETS['revenue_attribution']!.fields.map((f) => f.name);

const START = {
  c1: '2026-01-05T08:00:00.000Z',
  c3: '2026-01-05T23:30:00.000Z',
  c5: '2026-01-05T09:00:00.000Z',
  c6: '2026-01-06T12:00:00.000Z',
};

interface Expected {
  id: string;
  row: Record<string, unknown>;
  /** Per model: conversation_timestamp, hours, engagement, satisfaction, credits. */
  models: Record<AttributionModel, [string | null, string, string, string, number[]]>;
  touches: (keyof typeof START)[];
}

const event = (
  id: string,
  date: string,
  customer: string,
  total: string,
  conversion: string,
  extra: Record<string, string>,
  touches: (keyof typeof START)[],
  models: Expected['models'],
): Expected => ({
  id,
  touches,
  models,
  row: {
    date,
    customer_id: customer,
    conversation_ids: `{${touches.map((t) => C[t]).join(',')}}`,
    total_revenue: total,
    attributed_revenue: touches.length > 0 ? total : '0.00',
    attribution_percentage: touches.length > 0 ? '100.00' : '0.00',
    conversion_timestamp: conversion,
    referral_source: '',
    campaign_attribution: '',
    lead_score: '',
    ...extra,
  },
});

const none: Expected['models'][AttributionModel] = [null, '', '0', '', []];

/** Every revenue event of the fixture in key order (conversion time, then id), Europe/Berlin. */
const EXPECTED: Expected[] = [
  // r1: c1 and c3 credited; cx belongs to another tenant and is ignored.
  event(
    R.r1,
    '2026-01-07',
    K1,
    '100.00',
    '2026-01-07T10:00:00.000Z',
    {
      customer_segment: 'smb',
      product_category: 'shoes',
      transaction_type: 'purchase',
      lead_score: '80',
      referral_source: 'google',
      campaign_attribution: 'winter',
      lifetime_value: '100.00',
    },
    ['c1', 'c3'],
    {
      first_touch: [START.c1, '50.00', '30', '5.00', [1, 0]],
      last_touch: [START.c3, '34.50', '10', '', [0, 1]],
      multi_touch: [START.c3, '34.50', '40', '5.00', [0.5, 0.5]],
    },
  ),
  // r0: c5 listed twice, c4 started after the purchase; 12 customer messages cap engagement at 100.
  event(
    R.r0,
    '2026-01-08',
    K2,
    '30.00',
    '2026-01-08T12:00:00.000Z',
    {
      customer_segment: 'mid_market',
      product_category: 'plans',
      transaction_type: 'subscription',
      lead_score: '55',
      lifetime_value: '30.00',
    },
    ['c5'],
    {
      first_touch: [START.c5, '75.00', '100', '', [1]],
      last_touch: [START.c5, '75.00', '100', '', [1]],
      multi_touch: [START.c5, '75.00', '100', '', [1]],
    },
  ),
  // r3 and r4 happen at the same instant; r3 has no conversation.
  event(
    R.r3,
    '2026-01-09',
    K3,
    '20.00',
    '2026-01-09T18:00:00.000Z',
    {
      customer_segment: 'consumer',
      product_category: 'socks',
      transaction_type: 'purchase',
      lifetime_value: '20.00',
    },
    [],
    { first_touch: none, last_touch: none, multi_touch: none },
  ),
  event(
    R.r4,
    '2026-01-09',
    K3,
    '5.00',
    '2026-01-09T18:00:00.000Z',
    {
      customer_segment: 'consumer',
      product_category: 'socks',
      transaction_type: 'purchase',
      lifetime_value: '25.00',
    },
    ['c6'],
    {
      first_touch: [START.c6, '78.00', '20', '3.00', [1]],
      last_touch: [START.c6, '78.00', '20', '3.00', [1]],
      multi_touch: [START.c6, '78.00', '20', '3.00', [1]],
    },
  ),
  // r5: 23:30 UTC is the next day in Berlin; USD keeps a lifetime value of its own.
  event(
    R.r5,
    '2026-01-21',
    K1,
    '10.00',
    '2026-01-20T23:30:00.000Z',
    {
      customer_segment: 'smb',
      product_category: 'shoes',
      transaction_type: 'renewal',
      lifetime_value: '10.00',
    },
    [],
    { first_touch: none, last_touch: none, multi_touch: none },
  ),
  // r2: an unknown conversation id is ignored; c1 is 46 days and one hour earlier.
  event(
    R.r2,
    '2026-02-20',
    K1,
    '50.00',
    '2026-02-20T09:00:00.000Z',
    {
      customer_segment: 'smb',
      product_category: 'shoes',
      transaction_type: 'upgrade',
      lead_score: '90',
      referral_source: 'newsletter',
      lifetime_value: '150.00',
    },
    ['c1'],
    {
      first_touch: [START.c1, '1105.00', '30', '5.00', [1]],
      last_touch: [START.c1, '1105.00', '30', '5.00', [1]],
      multi_touch: [START.c1, '1105.00', '30', '5.00', [1]],
    },
  ),
];

/** The expected row of an event under a model, with timestamps and JSON already normalised. */
function expectedRow(e: Expected, model: AttributionModel): Record<string, unknown> {
  const [conversationTimestamp, hours, engagement, satisfaction, credits] = e.models[model];
  return {
    ...e.row,
    attribution_model: model,
    conversation_timestamp: conversationTimestamp,
    time_to_conversion_hours: hours,
    engagement_score: engagement,
    satisfaction_score: satisfaction,
    touchpoint_sequence: e.touches.map((t, i) => ({
      conversation_id: C[t],
      timestamp: START[t],
      credit: credits[i],
    })),
    _revenue_event_id: e.id,
  };
}

/** A PostgreSQL timestamptz text (`2026-01-07 10:00:00+00`) as ISO 8601 UTC, whatever the session zone. */
function iso(value: string | undefined): string | null {
  if (!value) return null;
  const withColon = value.replace(' ', 'T').replace(/([+-]\d{2})$/, '$1:00');
  return new Date(withColon).toISOString();
}

describe('revenue attribution options', () => {
  const base: AttributionOptions = { tenantId: TENANT, timezone: 'Europe/Berlin', model: 'last_touch' };
  const rejects = (options: Record<string, unknown>, param: string) => {
    let error: unknown;
    try {
      revenueAttributionSource({ ...base, ...options } as AttributionOptions);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FerryError);
    expect((error as FerryError).code).toBe('invalid_parameter');
    expect((error as FerryError).message.startsWith(`${param}:`)).toBe(true);
  };

  it('rejects unknown models, segments, zones and dates, naming the parameter', () => {
    rejects({ model: 'linear' }, 'model');
    rejects({ customerSegment: 'vip' }, 'customer_segment');
    rejects({ timezone: 'Europe/Atlantis' }, 'timezone');
    rejects({ from: '2026-13-01' }, 'from');
    rejects({ tenantId: "' OR true --" }, 'tenant_id');
  });

  it('keys rows by conversion time and a hidden event id', () => {
    const source = revenueAttributionSource(base);
    expect(source.key).toEqual(['t.conversion_timestamp', 't._revenue_event_id']);
    expect(source.from.endsWith(') t WHERE true{{KEY_RANGE}}')).toBe(true);
  });
});

for (const dialect of DIALECTS) {
  describe(`revenue attribution on ${dialect}`, () => {
    let database: Database;
    let drop: () => Promise<void>;
    beforeAll(async () => {
      // PGlite with two-row pages, so every query is streamed as several keyset-paged COPYs.
      ({ database, drop } = await createTestDatabase(dialect, { pageRows: 2 }));
      await insertComputedFixture(database);
    });
    afterAll(() => drop());

    /** Streams the query through COPY (CSV with header), parses it and normalises timestamps and JSON. */
    async function run(options: Partial<AttributionOptions>): Promise<Record<string, unknown>[]> {
      const full: AttributionOptions = {
        tenantId: TENANT,
        timezone: 'Europe/Berlin',
        model: 'last_touch',
        ...options,
      };
      const { from, key } = revenueAttributionSource(full);
      const columns = [...FIELDS, '_revenue_event_id'];
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
      const rows = parse(text, { columns: true }) as Record<string, string>[];
      return rows.map((r) => ({
        ...r,
        conversion_timestamp: iso(r.conversion_timestamp),
        conversation_timestamp: iso(r.conversation_timestamp),
        touchpoint_sequence: JSON.parse(r.touchpoint_sequence!),
      }));
    }

    for (const model of ATTRIBUTION_MODELS) {
      it(`credits conversations under ${model}`, async () => {
        const rows = await run({ model });
        expect(rows).toEqual(EXPECTED.map((e) => expectedRow(e, model)));
      });
    }

    it('filters by conversion day in the time zone and keeps the lifetime value of earlier events', async () => {
      const february = await run({ model: 'multi_touch', from: '2026-02-01' });
      expect(february).toEqual([expectedRow(EXPECTED[5]!, 'multi_touch')]);
      expect(february[0]!.lifetime_value).toBe('150.00');

      const first = await run({ from: '2026-01-07', to: '2026-01-08' });
      expect(first.map((r) => r._revenue_event_id)).toEqual([R.r1, R.r0]);
      // 20 Jan 23:30 UTC is the 21st in Berlin, the 20th in UTC.
      expect((await run({ from: '2026-01-21', to: '2026-01-21' })).map((r) => r._revenue_event_id)).toEqual([
        R.r5,
      ]);
      const utc = await run({ timezone: 'UTC', from: '2026-01-20', to: '2026-01-20' });
      expect(utc.map((r) => [r._revenue_event_id, r.date])).toEqual([[R.r5, '2026-01-20']]);
    });

    it('filters by customer segment', async () => {
      const rows = await run({ customerSegment: 'consumer' });
      expect(rows).toEqual([
        expectedRow(EXPECTED[2]!, 'last_touch'),
        expectedRow(EXPECTED[3]!, 'last_touch'),
      ]);
    });

    it('stays inside the tenant', async () => {
      expect(await run({ tenantId: OTHER_TENANT })).toEqual([]);
    });
  });
}
