import { randomBytes, randomUUID } from 'node:crypto';
import { PassThrough, type Readable, type Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { datasetOf, datasetStream, estimateRows } from '../collect/dataset-source.ts';
import { exportDocumentDataset } from '../collect/documents.ts';
import { selectedFields } from '../collect/query.ts';
import { RecordCounter } from '../collect/record-counter.ts';
import type { ExportRequest } from '../collect/request.ts';
import { exportMetadata, loadTenant, zonesFor } from '../collect/tenant.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap } from '../datamap/types.ts';
import type { Database } from '../db/database.ts';
import type { Compression } from '../domain/compression.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { getWriter } from '../format/registry.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import { compressionCodec } from '../packaging/compression.ts';

export interface ExportProgress {
  records: number;
  bytes: number;
  /** Rows the export is expected to produce, when known. */
  estimatedRecords: number | null;
}

/** What a dataset export wrote, without its size and hash (see `exportDataset` for those). */
export interface WrittenDataset {
  exportId: string;
  records: number;
  contentType: string;
  /** File extension including compression, e.g. `csv.gz`. */
  extension: string;
}

export interface ExportOutcome extends WrittenDataset {
  /** Bytes written to the output (after compression). */
  bytes: number;
  sha256: string;
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
  /** The export time the file's metadata records (now by default). */
  now?: Date;
}

/**
 * Extension (with the compression suffix) and media type of a single-dataset file,
 * known before any byte; an unknown format is an `invalid_parameter` error.
 */
export function datasetFileType(
  format: string,
  compression: Compression,
): { extension: string; contentType: string } {
  // Markdown (knowledge base only) is a ZIP of one file per document.
  const base =
    format === 'markdown'
      ? { extension: 'md.zip', contentType: 'application/zip' }
      : { extension: getWriter(format).extension, contentType: getWriter(format).contentType };
  const codec = compressionCodec(compression);
  return {
    extension: `${base.extension}${codec.suffix}`,
    contentType: codec.contentType ?? base.contentType,
  };
}

/**
 * Rows a dataset export will produce (one count query), for a progress percentage;
 * null for document datasets, whose size is not a row count.
 */
export async function estimateDataset(
  database: Database,
  request: ExportRequest,
  datamap: DataMap = REFERENCE_DATAMAP,
): Promise<number | null> {
  if (datasetOf(request, datamap).kind === 'document') return null;
  const zones = zonesFor(request, await loadTenant(database, request.tenantId));
  return estimateRows(database, request, zones, datamap);
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
  const meter = new MeteredHash();
  const written = await streamDataset(database, request, [meter, out], options, () => meter.bytes);
  return { ...written, bytes: meter.bytes, sha256: meter.sha256 };
}

/**
 * The same export without a hash: collect → count → format → compress → out. For a
 * caller that meters the bytes itself (the file run), so each byte is hashed once.
 */
export function writeDataset(
  database: Database,
  request: ExportRequest,
  out: Writable,
  options: Omit<ExportOptions, 'onProgress'> & {
    onProgress?: (progress: Omit<ExportProgress, 'bytes'>) => void;
  } = {},
): Promise<WrittenDataset> {
  return streamDataset(database, request, [out], options, () => 0);
}

async function streamDataset(
  database: Database,
  request: ExportRequest,
  tail: readonly Writable[],
  options: ExportOptions,
  bytes: () => number,
): Promise<WrittenDataset> {
  const tenant = await loadTenant(database, request.tenantId);
  const scoped: ExportRequest = { ...request, tenantId: tenant.id };
  const exportId = options.exportId ?? randomUUID();
  const zones = zonesFor(request, tenant);
  const timezone = zones.timezone;
  const anonymizeKey = options.anonymizeKey ?? randomBytes(16).toString('hex');
  const compression = compressionCodec(request.compression).create();
  const compressed: Transform[] = compression ? [compression] : [];
  const metadata = exportMetadata(scoped, tenant, exportId, timezone, options.now);
  const suffix = compressionCodec(request.compression).suffix;
  const datamap = options.datamap ?? REFERENCE_DATAMAP;
  const dataset = datasetOf(scoped, datamap);

  if (dataset.kind === 'document') {
    const body = new PassThrough();
    const stages = [body, ...compressed, ...tail];
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
      contentType: result.contentType,
      extension: `${result.extension}${suffix}`,
    };
  }

  if (request.format === 'markdown')
    throw new FerryError('unsupported_format', `format markdown is only for knowledge_base`);
  const writer = getWriter(request.format);
  const estimatedRecords = options.estimate ? await estimateRows(database, scoped, zones, datamap) : null;
  const counter = new RecordCounter(writer.input, {
    headerLines: writer.input === 'csv' ? 1 : 0,
    onCount: (records, _bytes) => options.onProgress?.({ records, bytes: bytes(), estimatedRecords }),
  });
  const fields = selectedFields(dataset, scoped);
  const format = writer.create({ dataset: request.dataset, fields, metadata, bom: request.bom });
  const source = datasetStream(database, scoped, writer, zones, anonymizeKey, datamap);
  const stages = [source, counter, format, ...compressed, ...tail];
  await pipeline(stages as unknown as [Readable, Writable], options.signal ? { signal: options.signal } : {});
  options.onProgress?.({ records: counter.count, bytes: bytes(), estimatedRecords });
  return {
    exportId,
    records: counter.count,
    contentType: writer.contentType,
    extension: `${writer.extension}${suffix}`,
  };
}
