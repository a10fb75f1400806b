import { sql } from 'kysely';
import { Readable } from 'node:stream';
import type { Database } from '../db/database.ts';
import { rangeFrom } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, DatasetDeclaration } from '../datamap/types.ts';
import type { FormatWriter } from '../format/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { REPORTS } from './computed/reports.ts';
import { buildExportQuery } from './query.ts';
import type { ExportRequest } from './request.ts';
import type { Zones } from './tenant.ts';

/** The data map declaration of the request's dataset; an unknown name is a parameter error. */
export function datasetOf(request: ExportRequest, datamap: DataMap = REFERENCE_DATAMAP): DatasetDeclaration {
  const dataset = datamap.datasets[request.dataset];
  if (!dataset) throw new FerryError('invalid_parameter', `dataset: unknown dataset "${request.dataset}"`);
  return dataset;
}

/** Counts the rows a tabular export will produce (one count query over the export's own FROM). */
export async function estimateRows(
  database: Database,
  request: ExportRequest,
  zones: Zones,
  datamap: DataMap = REFERENCE_DATAMAP,
): Promise<number> {
  const dataset = datasetOf(request, datamap);
  if (dataset.kind === 'computed' && !request.subject) {
    // A report is counted by its own cheap estimate: counting the report would compute it twice.
    const statement = REPORTS[dataset.report].estimate(request, zones.dayZone);
    const result = await sql<{ n: number }>`${sql.raw(statement)}`.execute(database.db);
    return Number(result.rows[0]?.n ?? 0);
  }
  // The pseudonym key only shapes projected values; any well-formed key counts the same rows.
  const query = buildExportQuery(dataset, request, { ...zones, anonymizeKey: '0'.repeat(32), input: 'csv' });
  const result = await sql<{ n: number }>`SELECT count(*)::int AS n ${sql.raw(rangeFrom(query))}`.execute(
    database.db,
  );
  return result.rows[0]?.n ?? 0;
}

/**
 * The database stream for a tabular dataset in the writer's input shape: one COPY, or for
 * a computed report over a date range, one COPY per window of that range in order (see
 * `reportWindows`), so rows — and progress — arrive window by window instead of all at
 * the end of one long aggregation.
 */
export function datasetStream(
  database: Database,
  request: ExportRequest,
  writer: FormatWriter,
  zones: Zones,
  anonymizeKey: string,
  datamap: DataMap = REFERENCE_DATAMAP,
): Readable {
  const dataset = datasetOf(request, datamap);
  const ctx = { ...zones, anonymizeKey, input: writer.input };
  const windows = dataset.kind === 'computed' ? reportWindows(request) : [];
  if (windows.length < 2) return database.copyOut(buildExportQuery(dataset, request, ctx));
  return Readable.from(
    (async function* () {
      for (const [i, window] of windows.entries()) {
        const part: ExportRequest = {
          ...request,
          filters: { ...request.filters, from: window.from, to: window.to },
        };
        const query = buildExportQuery(dataset, part, ctx);
        // The header line comes once, with the first window.
        yield* database.copyOut(i === 0 ? query : { ...query, header: false });
      }
    })(),
    { objectMode: false },
  );
}

const DAY_MS = 86_400_000;
const dayText = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/**
 * Consecutive day ranges that cover a computed report's `from`–`to` and split it only at
 * boundaries of its periods, so every row of the report falls in exactly one window and
 * the windows' rows, in order, are the report's rows: weeks (Monday) for weekly reports,
 * months for monthly ones, any day otherwise. None without both ends of a date range.
 */
export function reportWindows(request: ExportRequest): { from: string; to: string }[] {
  const from = request.filters.from;
  const to = request.filters.to;
  if (typeof from !== 'string' || typeof to !== 'string') return [];
  const start = Date.parse(`${from.slice(0, 10)}T00:00:00Z`);
  const end = Date.parse(`${to.slice(0, 10)}T00:00:00Z`);
  if (!Number.isFinite(start) || !Number.isFinite(end) || end < start) return [];
  const granularity = request.options.granularity ?? 'daily';
  const next = (day: number): number => {
    const d = new Date(day);
    if (granularity === 'monthly') return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 3, 1);
    if (granularity === 'weekly') {
      const monday = day - ((d.getUTCDay() + 6) % 7) * DAY_MS;
      return monday + 28 * DAY_MS;
    }
    return day + 7 * DAY_MS;
  };
  const windows: { from: string; to: string }[] = [];
  for (let day = start; day <= end; ) {
    const following = Math.min(next(day), end + DAY_MS);
    windows.push({ from: dayText(day), to: dayText(following - DAY_MS) });
    day = following;
  }
  return windows;
}
