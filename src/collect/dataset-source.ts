import { sql } from 'kysely';
import { Readable } from 'node:stream';
import type { Database } from '../db/database.ts';
import { rangeFrom } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, DatasetDeclaration } from '../datamap/types.ts';
import type { FormatWriter } from '../format/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { REPORTS } from './computed/reports.ts';
import { prepareEnrichment, requestedEnrichments } from './enrichment.ts';
import { buildExportQuery, rowSelector } from './query.ts';
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
    const statement = REPORTS[dataset.report].estimate(request, zones.dayZone, rowSelector(request, zones));
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
  const windows =
    dataset.kind === 'computed' && REPORTS[dataset.report].windowed ? reportWindows(request) : [];
  const enriched = requestedEnrichments(dataset, request).size > 0;
  if (windows.length < 2 && !enriched) return database.copyOut(buildExportQuery(dataset, request, ctx));
  return Readable.from(
    (async function* () {
      // Enriched fields read lookup tables that are filled before the query runs.
      if (enriched) await prepareEnrichment(database, dataset, request, zones);
      if (windows.length < 2) {
        yield* database.copyOut(buildExportQuery(dataset, request, ctx));
        return;
      }
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
 * At most this many statements per report: each window's statement also reads the tenant's
 * history before it (returning visitors), so more windows cost more than their rows.
 */
const MAX_WINDOWS = 8;

/**
 * Consecutive day ranges that cover a computed report's `from`–`to` and split it only at
 * boundaries of its periods, so every row of the report falls in exactly one window and
 * the windows' rows, in order, are the report's rows: weeks (Monday) for weekly reports,
 * months for monthly ones, any day otherwise. A window spans at least a week (four weeks,
 * three months) and there are at most `MAX_WINDOWS`. None without both ends of a date range.
 */
export function reportWindows(request: ExportRequest): { from: string; to: string }[] {
  const from = request.filters.from;
  const to = request.filters.to;
  if (typeof from !== 'string' || typeof to !== 'string') return [];
  const start = Date.parse(`${from.slice(0, 10)}T00:00:00Z`);
  const end = Date.parse(`${to.slice(0, 10)}T00:00:00Z`);
  if (!Number.isFinite(start) || !Number.isFinite(end) || end < start) return [];
  const granularity = request.options.granularity ?? 'daily';
  const days = (end - start) / DAY_MS + 1;
  const first = new Date(start);
  const last = new Date(end);
  let next: (day: number) => number;
  if (granularity === 'monthly') {
    const months =
      (last.getUTCFullYear() - first.getUTCFullYear()) * 12 + last.getUTCMonth() - first.getUTCMonth() + 1;
    const step = Math.max(3, Math.ceil(months / MAX_WINDOWS));
    next = (day) => {
      const d = new Date(day);
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + step, 1);
    };
  } else if (granularity === 'weekly') {
    const mondayOf = (day: number) => day - ((new Date(day).getUTCDay() + 6) % 7) * DAY_MS;
    const weeks = Math.floor((end - mondayOf(start)) / (7 * DAY_MS)) + 1;
    const step = Math.max(4, Math.ceil(weeks / MAX_WINDOWS));
    next = (day) => mondayOf(day) + step * 7 * DAY_MS;
  } else {
    const step = Math.max(7, Math.ceil(days / MAX_WINDOWS));
    next = (day) => day + step * DAY_MS;
  }
  const windows: { from: string; to: string }[] = [];
  for (let day = start; day <= end; ) {
    const following = Math.min(next(day), end + DAY_MS);
    windows.push({ from: dayText(day), to: dayText(following - DAY_MS) });
    day = following;
  }
  return windows;
}
