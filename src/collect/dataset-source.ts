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
 * The database stream for a tabular dataset in the writer's input shape: one COPY, a computed
 * report over a date range too (one statement reads the history before the range once;
 * statements per part of the range each read it again). Progress is the rows written against
 * `estimateRows`.
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
  if (requestedEnrichments(dataset, request).size === 0)
    return database.copyOut(buildExportQuery(dataset, request, ctx));
  return Readable.from(
    (async function* () {
      // Enriched fields read lookup tables that are filled before the query runs.
      await prepareEnrichment(database, dataset, request, zones);
      yield* database.copyOut(buildExportQuery(dataset, request, ctx));
    })(),
    { objectMode: false },
  );
}
