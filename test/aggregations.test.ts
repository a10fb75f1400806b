import { parse as parseCsv } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseExportRequest } from '../src/collect/request.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import type { ExportScope } from '../src/domain/export-scope.ts';
import type { FerryError } from '../src/domain/ferry-error.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { seed } from '../src/seed/seed.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { sink } from './support/fixtures/streams.ts';

/**
 * The aggregation datasets (rollups, site_summary, topic_summary) over seeded data, each
 * compared with SQL written here on its own terms (local dates, averages of 0/1 flags) and
 * trend columns worked out here in JavaScript, including the first period of a range, whose
 * previous period lies before the range.
 */

const ZONE = 'America/New_York';
const METRICS = [
  'conversations',
  'messages',
  'visitors',
  'resolution_rate',
  'escalation_rate',
  'satisfaction_avg',
];
const COUNTS = new Set(['conversations', 'messages', 'visitors']);
const DECIMALS: Record<string, number> = { resolution_rate: 4, escalation_rate: 4, satisfaction_avg: 2 };

type Values = Record<string, number | null>;

const round = (value: number, decimals: number) => Math.round(value * 10 ** decimals) / 10 ** decimals;

/** The metric columns and their trends, from raw aggregates of the group and of its previous period. */
function expectedMetrics(
  current: Values | undefined,
  previous: Values | undefined,
  hasPrevious = true,
): Values {
  const out: Values = {};
  for (const m of METRICS) {
    const shape = (v: number | null | undefined) =>
      COUNTS.has(m) ? Number(v ?? 0) : v === null || v === undefined ? null : round(Number(v), DECIMALS[m]!);
    const cur = shape(current?.[m]);
    const prev = hasPrevious ? shape(previous?.[m]) : null;
    out[m] = cur;
    out[`${m}_change`] = cur === null || prev === null ? null : cur - prev;
    out[`${m}_change_pct`] =
      cur === null || prev === null || prev === 0 ? null : round((100 * (cur - prev)) / prev, 2);
  }
  return out;
}

/** Exported CSV cells as numbers (empty: null). */
function metricsOf(row: Record<string, string>): Values {
  const out: Values = {};
  for (const m of METRICS)
    for (const name of [m, `${m}_change`, `${m}_change_pct`])
      out[name] = row[name] === '' || row[name] === undefined ? null : Number(row[name]);
  return out;
}

function expectClose(actual: Values, expected: Values, label: string) {
  for (const [name, value] of Object.entries(expected)) {
    if (value === null) expect(actual[name], `${label} ${name}`).toBeNull();
    else expect(actual[name], `${label} ${name}`).toBeCloseTo(value, 4);
  }
}

/** Raw per-group aggregates, written apart from Ferry's SQL: averages of 0/1 flags. */
const RAW = `count(*) AS conversations, sum(c.message_count) AS messages, count(DISTINCT c.session_id) AS visitors,
  avg(CASE WHEN c.status = 'resolved' THEN 1.0 ELSE 0.0 END) AS resolution_rate,
  avg(CASE WHEN c.escalated THEN 1.0 ELSE 0.0 END) AS escalation_rate,
  avg(c.satisfaction_score) AS satisfaction_avg`;

const numeric = (row: Record<string, unknown>): Values =>
  Object.fromEntries(METRICS.map((m) => [m, row[m] === null ? null : Number(row[m])]));

for (const dialect of DIALECTS) {
  describe(`aggregation datasets (${dialect})`, () => {
    let t: TestDatabase;
    let tenantId: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 2,
        conversations: 400,
        messagesPerConversation: 1,
        seed: 77,
        since: new Date('2025-12-01T00:00:00Z'),
        until: new Date('2026-04-01T00:00:00Z'),
        secretKey: 'aggregations-test-secret-0123456789abcdef',
      });
      tenantId = summary.tenants[0]!.id;
    }, 300_000);
    afterAll(async () => {
      await t?.drop();
    });

    async function exportRows(
      dataset: string,
      range: { from?: string; to?: string },
      options: Record<string, string> = {},
    ): Promise<Record<string, string>[]> {
      const request = parseExportRequest({
        tenantId,
        dataset,
        format: 'csv',
        csvGuard: false,
        timezone: ZONE,
        ...range,
        options,
      });
      const { out, text } = sink();
      await exportDataset(t.database, request, out);
      const rows = parseCsv(text(), { columns: true }) as Record<string, string>[];
      if (rows.length > 0)
        expect(Object.keys(rows[0]!)).toEqual(REFERENCE_DATAMAP.datasets[dataset]!.fields.map((f) => f.name));
      return rows;
    }

    const UNITS = { daily: 'day', weekly: 'week', monthly: 'month' } as const;
    const RANGES = {
      daily: { from: '2026-02-04', to: '2026-02-20' },
      // From a Wednesday: the first week counts whole, and its previous week is before the range.
      weekly: { from: '2026-02-04', to: '2026-03-17' },
      monthly: { from: '2026-01-15', to: '2026-03-31' },
    };

    for (const granularity of ['daily', 'weekly', 'monthly'] as const) {
      it(`rollups ${granularity}: every period and site, trends against the previous period`, async () => {
        const range = RANGES[granularity];
        const unit = UNITS[granularity];
        const rows = await exportRows('rollups', range, { granularity });
        const groups = await sql<Record<string, unknown> & { d: string; site: string }>`${sql.raw(`
          SELECT to_char(date_trunc('${unit}', (c.start_timestamp AT TIME ZONE '${ZONE}')::date), 'YYYY-MM-DD') AS d,
            s.url AS site, ${RAW}
          FROM conversations c JOIN sites s ON s.id = c.site_id
          WHERE c.tenant_id = '${tenantId}'
          GROUP BY 1, 2
          ORDER BY 1, 2`)}`.execute(t.database.db);
        const byKey = new Map(groups.rows.map((g) => [`${g.d} ${g.site}`, g]));
        const previousDay = (day: string) => {
          const d = new Date(`${day}T00:00:00Z`);
          if (unit === 'day') d.setUTCDate(d.getUTCDate() - 1);
          else if (unit === 'week') d.setUTCDate(d.getUTCDate() - 7);
          else d.setUTCMonth(d.getUTCMonth() - 1);
          return d.toISOString().slice(0, 10);
        };
        const firstPeriod = (() => {
          const d = new Date(`${range.from}T00:00:00Z`);
          if (unit === 'week') d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
          if (unit === 'month') d.setUTCDate(1);
          return d.toISOString().slice(0, 10);
        })();
        // In the database's own order of the key (its collation sorts the site URLs).
        const expected = groups.rows.filter((g) => g.d >= firstPeriod && g.d <= range.to);
        expect(rows.map((r) => `${r.date} ${r.site_url}`)).toEqual(expected.map((g) => `${g.d} ${g.site}`));
        for (const [i, row] of rows.entries()) {
          const g = expected[i]!;
          const previous = byKey.get(`${previousDay(g.d)} ${g.site}`);
          expectClose(
            metricsOf(row),
            expectedMetrics(numeric(g), previous && numeric(previous)),
            `${g.d} ${g.site}`,
          );
        }
        // The first period's previous one lies before the range and has conversations: read, not zero.
        const first = rows.filter((r) => r.date === firstPeriod);
        expect(first.length).toBeGreaterThan(0);
        expect(first.some((r) => r.conversations_change !== r.conversations)).toBe(true);
      });
    }

    const SUMMARY = { from: '2026-02-10', to: '2026-03-01' };
    /** The 20 days before SUMMARY. */
    const PREVIOUS = { from: '2026-01-21', to: '2026-02-09' };
    const localDays = (r: { from: string; to: string }) =>
      `(c.start_timestamp AT TIME ZONE '${ZONE}')::date BETWEEN DATE '${r.from}' AND DATE '${r.to}'`;

    it('site_summary: every site, trends against as many days before the range', async () => {
      const rows = await exportRows('site_summary', SUMMARY);
      const per = async (r: { from: string; to: string }) =>
        (
          await sql<Record<string, unknown> & { site_id: string; first: string; last: string }>`${sql.raw(`
            SELECT c.site_id, ${RAW},
              to_char(min(c.start_timestamp) AT TIME ZONE '${ZONE}', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS first,
              to_char(max(c.start_timestamp) AT TIME ZONE '${ZONE}', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS last
            FROM conversations c WHERE c.tenant_id = '${tenantId}' AND ${localDays(r)}
            GROUP BY c.site_id`)}`.execute(t.database.db)
        ).rows;
      const current = new Map((await per(SUMMARY)).map((r) => [r.site_id, r]));
      const previous = new Map((await per(PREVIOUS)).map((r) => [r.site_id, r]));
      const sites = await sql<{ id: string; url: string; name: string }>`
        SELECT id, url, name FROM sites WHERE tenant_id = ${tenantId} ORDER BY url, id`.execute(
        t.database.db,
      );
      expect(rows.map((r) => r.site_url)).toEqual(sites.rows.map((s) => s.url));
      for (const [i, row] of rows.entries()) {
        const site = sites.rows[i]!;
        const cur = current.get(site.id);
        const prev = previous.get(site.id);
        expect(row.site_name).toBe(site.name);
        // Timestamps are written in the report zone with its offset; the local digits match.
        expect(row.first_conversation_at?.slice(0, 26)).toBe(cur?.first ?? '');
        expect(row.last_conversation_at?.slice(0, 26)).toBe(cur?.last ?? '');
        expectClose(metricsOf(row), expectedMetrics(cur && numeric(cur), prev && numeric(prev)), site.url);
      }
      expect(
        rows.some((r) => Number(r.conversations) > 0 && r.conversations_change !== r.conversations),
      ).toBe(true);
    });

    it('topic_summary: every topic of the range, its share, trends against as many days before', async () => {
      const rows = await exportRows('topic_summary', SUMMARY);
      const per = async (r: { from: string; to: string }) =>
        (
          await sql<Record<string, unknown> & { topic: string }>`${sql.raw(`
            SELECT x.topic, ${RAW}
            FROM (SELECT DISTINCT c.id, tp AS topic FROM conversations c, unnest(c.topics_detected) AS tp
              WHERE c.tenant_id = '${tenantId}' AND ${localDays(r)}) x
            JOIN conversations c ON c.id = x.id
            GROUP BY x.topic
            ORDER BY x.topic`)}`.execute(t.database.db)
        ).rows;
      const current = await per(SUMMARY);
      const previous = new Map((await per(PREVIOUS)).map((r) => [r.topic, r]));
      const total = await sql<{ n: number }>`${sql.raw(`
        SELECT count(*)::int AS n FROM conversations c WHERE c.tenant_id = '${tenantId}' AND ${localDays(SUMMARY)}`)}`.execute(
        t.database.db,
      );
      expect(current.length).toBeGreaterThan(1);
      expect(rows.map((r) => r.topic)).toEqual(current.map((r) => r.topic));
      for (const [i, row] of rows.entries()) {
        const cur = current[i]!;
        expect(Number(row.share_of_conversations)).toBeCloseTo(
          round(Number(cur.conversations) / total.rows[0]!.n, 4),
          4,
        );
        const prev = previous.get(cur.topic);
        expectClose(metricsOf(row), expectedMetrics(numeric(cur), prev && numeric(prev)), cur.topic);
      }
    });

    it('a site scope narrows a summary to that site; one customer is no aggregate and is refused', async () => {
      const all = await exportRows('site_summary', SUMMARY);
      const site = all[0]!.site_url!;
      const narrowed = async (scope: ExportScope, dataset = 'site_summary') => {
        const request = parseExportRequest({
          tenantId,
          dataset,
          format: 'csv',
          timezone: ZONE,
          ...SUMMARY,
          scope,
        });
        const { out, text } = sink();
        await exportDataset(t.database, request, out);
        return parseCsv(text(), { columns: true }) as Record<string, string>[];
      };
      const rows = await narrowed({ kind: 'site', site_url: site });
      expect(rows).toEqual([all[0]]);
      const customer = await sql<{
        id: string;
      }>`SELECT id FROM customers WHERE tenant_id = ${tenantId} LIMIT 1`.execute(t.database.db);
      for (const dataset of ['rollups', 'site_summary', 'topic_summary']) {
        const error = await narrowed({ kind: 'customer', customer_id: customer.rows[0]!.id }, dataset).catch(
          (e: unknown) => e,
        );
        expect((error as FerryError).code, dataset).toBe('invalid_parameter');
      }
    });

    it('summaries without both ends of a range have no period to compare with: empty trends', async () => {
      for (const dataset of ['site_summary', 'topic_summary']) {
        const rows = await exportRows(dataset, { from: SUMMARY.from });
        expect(rows.length).toBeGreaterThan(0);
        for (const row of rows)
          for (const m of METRICS) {
            expect(row[`${m}_change`], `${dataset} ${m}`).toBe('');
            expect(row[`${m}_change_pct`], `${dataset} ${m}`).toBe('');
          }
      }
    });
  });
}
