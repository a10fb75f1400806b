import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { PassThrough, type Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import type { Database } from '../db/database.ts';
import { rangeFrom } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, DatasetDeclaration } from '../datamap/types.ts';
import { getWriter } from '../format/registry.ts';
import type { FormatWriter } from '../format/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { exportDocumentDataset } from '../collect/documents.ts';
import { buildExportQuery, selectedFields } from '../collect/query.ts';
import { RecordCounter } from '../collect/record-counter.ts';
import type { ExportRequest } from '../collect/request.ts';
import type { Compression } from '../domain/compression.ts';

export const FERRY_EXPORT_VERSION = '1.0';

export interface ExportProgress {
  records: number;
  bytes: number;
  /** Rows the export is expected to produce, when known. */
  estimatedRecords: number | null;
}

export interface ExportOutcome {
  exportId: string;
  records: number;
  /** Bytes written to the output (after compression). */
  bytes: number;
  sha256: string;
  contentType: string;
  /** File extension including compression, e.g. `csv.gz`. */
  extension: string;
}

export interface ExportOptions {
  exportId?: string;
  /** Key for keyed-hash pseudonyms; random per export by default so exports do not correlate. */
  anonymizeKey?: string;
  onProgress?: (progress: ExportProgress) => void;
  /** Count the rows first so progress can show an estimate (one extra query). */
  estimate?: boolean;
  signal?: AbortSignal;
  /** The data map the dataset is declared in (default: the reference map). */
  datamap?: DataMap;
}

export interface TenantInfo {
  id: string;
  slug: string;
  name: string;
  plan: string;
  timezone: string;
  home_country: string;
}

/** Finds a tenant by id or slug; a missing tenant is a clear error. */
export async function loadTenant(database: Database, idOrSlug: string): Promise<TenantInfo> {
  const isUuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(idOrSlug);
  const row = await database.db
    .selectFrom('tenants')
    .select(['id', 'slug', 'name', 'plan', 'timezone', 'home_country'])
    .where(isUuid ? 'id' : 'slug', '=', idOrSlug)
    .executeTakeFirst();
  if (!row) throw new FerryError('not_found', `tenant "${idOrSlug}" does not exist (see \`ferry tenants\`)`);
  return row;
}

export function compressor(compression: Compression): Transform | null {
  switch (compression) {
    case 'gzip':
      // Level 1: exports are transport copies; higher levels cost 3-5x the time for ~10% size.
      return zlib.createGzip({ level: 1 });
    case 'zstd':
      return zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } });
    case 'none':
      return null;
  }
}

export function compressionSuffix(compression: Compression): string {
  return compression === 'gzip' ? '.gz' : compression === 'zstd' ? '.zst' : '';
}

/** Passes bytes through while hashing and counting them. */
export class HashCounter extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(
    chunk: Buffer,
    _enc: BufferEncoding,
    done: (e?: Error | null, c?: Buffer) => void,
  ): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    done(null, chunk);
  }
}

export function exportMetadata(
  request: ExportRequest,
  tenant: TenantInfo,
  exportId: string,
  timezone: string,
) {
  return {
    export_id: exportId,
    export_date: new Date().toISOString(),
    export_version: FERRY_EXPORT_VERSION,
    tenant_id: tenant.id,
    tenant_name: tenant.name,
    dataset: request.dataset,
    format: request.format,
    timezone,
    anonymization_level: request.pii,
    filters: request.filters,
    ...(Object.keys(request.options).length ? { options: request.options } : {}),
  };
}

function datasetOf(request: ExportRequest, datamap: DataMap = REFERENCE_DATAMAP): DatasetDeclaration {
  const dataset = datamap.datasets[request.dataset];
  if (!dataset) throw new FerryError('invalid_parameter', `dataset: unknown dataset "${request.dataset}"`);
  return dataset;
}

/** Counts the rows a tabular export will produce. */
export async function estimateRows(
  database: Database,
  request: ExportRequest,
  zones: Zones,
  datamap: DataMap = REFERENCE_DATAMAP,
): Promise<number> {
  const dataset = datasetOf(request, datamap);
  const query = buildExportQuery(dataset, request, { ...zones, anonymizeKey: '0'.repeat(32), input: 'csv' });
  const result = await sql<{ n: number }>`SELECT count(*)::int AS n ${sql.raw(rangeFrom(query))}`.execute(
    database.db,
  );
  return result.rows[0]?.n ?? 0;
}

/** The database stream for a tabular dataset in the writer's input shape. */
export function datasetStream(
  database: Database,
  request: ExportRequest,
  writer: FormatWriter,
  zones: Zones,
  anonymizeKey: string,
  datamap: DataMap = REFERENCE_DATAMAP,
): Readable {
  const dataset = datasetOf(request, datamap);
  return database.copyOut(
    buildExportQuery(dataset, request, { ...zones, anonymizeKey, input: writer.input }),
  );
}

/** Timestamps are written in the requested zone, else UTC; days (filters, periods) follow the requested zone, else the tenant's. */
export interface Zones {
  timezone: string;
  dayZone: string;
}

export function zonesFor(request: ExportRequest, tenant: TenantInfo): Zones {
  return { timezone: request.timezone ?? 'UTC', dayZone: request.timezone ?? tenant.timezone };
}

/**
 * Runs one dataset export end to end and streams it into `out`:
 * collect (one COPY) → count → format → compress → hash → out.
 */
export async function exportDataset(
  database: Database,
  request: ExportRequest,
  out: Writable,
  options: ExportOptions = {},
): Promise<ExportOutcome> {
  const tenant = await loadTenant(database, request.tenantId);
  const scoped: ExportRequest = { ...request, tenantId: tenant.id };
  const exportId = options.exportId ?? randomUUID();
  const zones = zonesFor(request, tenant);
  const timezone = zones.timezone;
  const anonymizeKey = options.anonymizeKey ?? randomBytes(16).toString('hex');
  const compression = compressor(request.compression);
  const hasher = new HashCounter();
  const metadata = exportMetadata(scoped, tenant, exportId, timezone);
  const datamap = options.datamap ?? REFERENCE_DATAMAP;
  const dataset = datasetOf(scoped, datamap);

  if (dataset.kind === 'document') {
    const body = new PassThrough();
    const stages: (NodeJS.ReadableStream | NodeJS.WritableStream)[] = [
      body,
      ...(compression ? [compression] : []),
      hasher,
      out,
    ];
    const done = pipeline(stages as unknown as [Readable, Writable], { signal: options.signal } as never);
    const result = await exportDocumentDataset(database, dataset, scoped, body, {
      tenant,
      timezone,
      anonymizeKey,
      metadata,
    });
    body.end();
    await done;
    return {
      exportId,
      records: result.records,
      bytes: hasher.bytes,
      sha256: hasher.hash.digest('hex'),
      contentType: result.contentType,
      extension: `${result.extension}${compressionSuffix(request.compression)}`,
    };
  }

  if (request.format === 'markdown')
    throw new FerryError('unsupported_format', `format markdown is only for knowledge_base`);
  const writer = getWriter(request.format);
  const estimatedRecords = options.estimate ? await estimateRows(database, scoped, zones, datamap) : null;
  const counter = new RecordCounter(writer.input, {
    headerLines: writer.input === 'csv' ? 1 : 0,
    onCount: (records, _bytes) => options.onProgress?.({ records, bytes: hasher.bytes, estimatedRecords }),
  });
  const fields = selectedFields(dataset, scoped);
  const format = writer.create({ dataset: request.dataset, fields, metadata, bom: request.bom });
  const source = datasetStream(database, scoped, writer, zones, anonymizeKey, datamap);
  const stages = [source, counter, format, ...(compression ? [compression] : []), hasher, out];
  await pipeline(stages as unknown as [Readable, Writable], options.signal ? { signal: options.signal } : {});
  options.onProgress?.({ records: counter.count, bytes: hasher.bytes, estimatedRecords });
  return {
    exportId,
    records: counter.count,
    bytes: hasher.bytes,
    sha256: hasher.hash.digest('hex'),
    contentType: writer.contentType,
    extension: `${writer.extension}${compressionSuffix(request.compression)}`,
  };
}
