import { parse as parseCsv } from 'csv-parse/sync';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOOKUP_DAYS } from '../src/collect/computed/analytics.ts';
import { datasetStream } from '../src/collect/dataset-source.ts';
import { buildExportQuery } from '../src/collect/query.ts';
import { type ExportRequest, parseExportRequest } from '../src/collect/request.ts';
import { loadTenant, zonesFor } from '../src/collect/tenant.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import type { CopyQuery, Database } from '../src/db/database.ts';
import { getWriter } from '../src/format/registry.ts';
import { type ExportProgress, exportDataset } from '../src/pipeline/export-dataset.ts';
import { seed } from '../src/seed/seed.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { sink } from './support/fixtures/streams.ts';

/**
 * Computed reports over a year: one statement for the whole range, whose bytes are the same
 * report's over the parts of that range, one after another (each part's first period
 * compared with the history before it, its visitors looked up before it), and progress
 * counted against the estimate.
 */

const ZONE = 'Europe/Berlin';
/** A year from a Monday, so four-week parts start on Mondays. */
const YEAR = { from: '2025-11-03', to: '2026-10-31' };
const DAY_MS = 86_400_000;
const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const at = (text: string) => Date.parse(`${text}T00:00:00Z`);

/** Consecutive parts of YEAR, each starting where `next` says after the one before. */
function parts(next: (start: number) => number): { from: string; to: string }[] {
  const out: { from: string; to: string }[] = [];
  for (let start = at(YEAR.from); start <= at(YEAR.to); ) {
    const following = Math.min(next(start), at(YEAR.to) + DAY_MS);
    out.push({ from: day(start), to: day(following - DAY_MS) });
    start = following;
  }
  return out;
}

/** Calendar months (the first part from YEAR's first day): every report's periods end at them. */
const MONTHS = parts((start) => {
  const d = new Date(start);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
});
/** Four weeks at a time, from Monday to Sunday. */
const FOUR_WEEKS = parts((start) => start + 28 * DAY_MS);

/** The database, counting its COPY statements. */
function counted(database: Database): { database: Database; queries: CopyQuery[] } {
  const queries: CopyQuery[] = [];
  const wrapped = Object.create(database) as Database;
  wrapped.copyOut = (query) => {
    queries.push(query);
    return database.copyOut(query);
  };
  return { database: wrapped, queries };
}

const MESSAGE_LOOKUP = 'm.conversation_id = ANY (ARRAY(SELECT c.id FROM conv c))';

for (const dialect of DIALECTS) {
  describe(`computed reports over a year (${dialect})`, () => {
    let t: TestDatabase;
    let tenantId: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 2,
        conversations: 600,
        messagesPerConversation: 3,
        seed: 16,
        // Half a year of history before the report's year.
        since: new Date('2025-05-01T00:00:00Z'),
        until: new Date('2026-11-01T00:00:00Z'),
        secretKey: 'dated-reports-test-secret-0123456789abcd',
      });
      tenantId = summary.tenants[0]!.id;
      // Statistics, as autovacuum keeps them: planned without any, a report over the year nests
      // its joins and runs for minutes, as the undated report does.
      await t.database.exec('ANALYZE');
    }, 300_000);
    afterAll(async () => {
      await t?.drop();
    });

    function request(dataset: string, range: { from: string; to: string }, options: Record<string, string>) {
      return parseExportRequest({
        tenantId,
        dataset,
        format: 'csv',
        pii: 'complete',
        timezone: ZONE,
        ...range,
        options,
      });
    }

    async function csv(database: Database, r: ExportRequest): Promise<string> {
      const writer = getWriter('csv');
      const zones = zonesFor(r, await loadTenant(t.database, tenantId));
      return text(datasetStream(database, r, writer, zones, 'a'.repeat(32)));
    }

    const CASES: [string, Record<string, string>, { from: string; to: string }[]][] = [
      ['analytics', { granularity: 'daily' }, MONTHS],
      ['analytics', { granularity: 'hourly', metrics: 'performance,attribution' }, MONTHS],
      ['analytics', { granularity: 'weekly' }, FOUR_WEEKS],
      ['analytics', { granularity: 'monthly' }, MONTHS],
      ['revenue_attribution', { attribution_model: 'multi_touch' }, MONTHS],
      ['rollups', { granularity: 'daily' }, MONTHS],
      ['daily_totals', {}, MONTHS],
    ];

    for (const [dataset, options, pieces] of CASES) {
      it(`${dataset} ${JSON.stringify(options)}: one statement, the bytes of the report over its ${pieces.length} parts`, async () => {
        const whole = counted(t.database);
        const all = await csv(whole.database, request(dataset, YEAR, options));
        expect(whole.queries).toHaveLength(1);
        let joined = '';
        for (const [i, piece] of pieces.entries()) {
          const part = await csv(t.database, request(dataset, piece, options));
          // The header line once, from the first part.
          joined += i === 0 ? part : part.slice(part.indexOf('\n') + 1);
        }
        expect(all.split('\n').length).toBeGreaterThan(pieces.length);
        expect(all).toBe(joined);
      }, 120_000);
    }

    it('analytics: the year scans the messages, each part looks them up, and visitors return across parts', async () => {
      const sqlOf = (range: { from: string; to: string }) => {
        const r = request('analytics', range, { granularity: 'daily' });
        return buildExportQuery(REFERENCE_DATAMAP.datasets['analytics']!, r, {
          timezone: ZONE,
          dayZone: ZONE,
          anonymizeKey: 'a'.repeat(32),
          input: 'csv',
        }).from;
      };
      // The equality above compares both ways of reading the messages.
      expect(sqlOf(YEAR)).not.toContain(MESSAGE_LOOKUP);
      for (const piece of MONTHS) {
        expect((at(piece.to) - at(piece.from)) / DAY_MS + 1).toBeLessThanOrEqual(LOOKUP_DAYS);
        expect(sqlOf(piece)).toContain(MESSAGE_LOOKUP);
      }
      // Visitors first seen in an earlier part (or before the year) return in later parts.
      const rows = parseCsv(await csv(t.database, request('analytics', YEAR, { granularity: 'daily' })), {
        columns: true,
      }) as Record<string, string>[];
      const later = rows.filter((r) => r.date! > MONTHS[0]!.to && Number(r.returning_visitors) > 0);
      expect(later.length).toBeGreaterThan(0);
    }, 120_000);

    it('progress: the rows written, counted against the estimate, which is the row count', async () => {
      const events: ExportProgress[] = [];
      const { out, text: written } = sink();
      const outcome = await exportDataset(
        t.database,
        request('analytics', YEAR, { granularity: 'daily' }),
        out,
        {
          estimate: true,
          onProgress: (p) => events.push({ ...p }),
        },
      );
      const rows = written().trimEnd().split('\n').length - 1;
      expect(rows).toBeGreaterThan(300);
      expect(outcome.records).toBe(rows);
      expect(events.length).toBeGreaterThan(0);
      for (const [i, event] of events.entries()) {
        expect(event.estimatedRecords).toBe(rows);
        if (i > 0) expect(event.records).toBeGreaterThanOrEqual(events[i - 1]!.records);
      }
      expect(events.at(-1)!.records).toBe(rows);
    }, 120_000);
  });
}
