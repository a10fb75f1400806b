import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { pipeline as pipelineCallback, Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type CopyQuery, type Database, type KeyRange, literal, rangeFrom } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, DatasetDeclaration } from '../datamap/types.ts';
import { getWriter } from '../format/registry.ts';
import type { FieldSpec, FormatWriter } from '../format/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import { compressionCodec } from '../packaging/compression.ts';
import { prepareEnrichment } from './enrichment.ts';
import { buildExportQuery, selectedFields } from './query.ts';
import { RecordCounter } from './record-counter.ts';
import type { ExportRequest } from './request.ts';
import { exportMetadata, loadTenant, type TenantInfo, type Zones, zonesFor } from './tenant.ts';

/**
 * Page mode of the export engine: one page of a tabular dataset, streamed. Before a
 * byte is written the page is planned with small key-only queries (the key of its last
 * row, whether rows follow, the total), so an HTTP response can send the next cursor
 * in its headers; then one COPY bounded on both sides by keys streams the rows. A page
 * is a key range, never `OFFSET n LIMIT m` over the data: a row inserted or deleted
 * while a client walks the pages cannot shift a row out of every page.
 */

export const PAGE_SIZE = { min: 1, max: 10_000, default: 1000 } as const;

/** The highest page number of offset paging: its offset (page × size) stays well inside bigint. */
export const MAX_PAGE = 1_000_000_000;

export interface PageOptions {
  /** Rows per page, 1-10,000 (default 1,000). */
  pageSize?: number | undefined;
  /** 1-based page number (offset paging); cannot be combined with `cursor`. */
  page?: number | undefined;
  /** A `nextCursor` of an earlier page of the same dataset and tenant: the page after it. */
  cursor?: string | undefined;
  /** Rows to skip before the page (OData's `$skip`); cannot be combined with `page` or `cursor`. */
  offset?: number | undefined;
  exportId?: string | undefined;
  /** Key for keyed-hash pseudonyms. Default: derived from `secret` and the paging session, else random. */
  anonymizeKey?: string | undefined;
  /** Server secret from which each paging session's pseudonym key is derived (see sessionAnonymizeKey). */
  secret?: string | undefined;
  /** The data map the dataset is declared in (default: the reference map). */
  datamap?: DataMap | undefined;
}

export interface StreamOutcome {
  records: number;
  /** Records per COPY source, in order. */
  perSource?: number[];
  /** Bytes written (after compression). */
  bytes: number;
  sha256: string;
}

/** A planned page: what the headers say, and the stream that writes it. */
export interface PlannedPage {
  readonly exportId: string;
  readonly dataset: string;
  /** Rows matching the request's filters over all pages. */
  readonly total: number;
  readonly pageCount: number;
  readonly pageSize: number;
  /** The page number in offset mode, null in cursor mode. */
  readonly page: number | null;
  /** Cursor of the page after this one (also given on the last page, to pick up rows added later). */
  readonly nextCursor: string | null;
  /** True when no row follows this page. */
  readonly endOfStream: boolean;
  readonly contentType: string;
  /** Format extension without compression, e.g. `csv`. */
  readonly extension: string;
  /** Compression suffix, e.g. `.gz`, or empty. */
  readonly compressionSuffix: string;
  write(out: Writable, options?: { signal?: AbortSignal | undefined }): Promise<StreamOutcome>;
}

/** Cursors are base64url JSON: opaque to clients, readable in a support ticket. */
export function encodeToken(payload: Record<string, unknown>): string {
  return Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url');
}

export function decodeToken(text: string, param: string): Record<string, unknown> {
  if (/^[A-Za-z0-9_-]{1,8192}$/.test(text)) {
    try {
      const value: unknown = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
      if (value && typeof value === 'object' && !Array.isArray(value))
        return value as Record<string, unknown>;
    } catch {
      // falls through to the error below
    }
  }
  throw invalid(param, 'is not a cursor issued by Ferry (pass X-Next-Cursor back unchanged)');
}

/** Ties a cursor to its tenant and dataset without putting the tenant id in it. */
export function cursorOwner(tenantId: string, dataset: string): string {
  return createHash('sha256').update(`${tenantId}\0${dataset}`).digest('base64url').slice(0, 16);
}

export function newSession(): string {
  return randomBytes(12).toString('base64url');
}

/**
 * The pseudonym key of a paging session or change feed: every page of one session
 * pseudonymizes alike (so pages join), different sessions do not correlate, and the
 * key never leaves the server (the cursor only holds the session id).
 */
export function sessionAnonymizeKey(secret: string, tenantId: string, session: string): string {
  return createHmac('sha256', secret)
    .update(`ferry export session v1\0${tenantId}\0${session}`)
    .digest('hex');
}

export function anonymizeKeyFor(
  options: Pick<PageOptions, 'anonymizeKey' | 'secret'>,
  tenantId: string,
  session: string,
): string {
  if (options.anonymizeKey) return options.anonymizeKey;
  if (options.secret) return sessionAnonymizeKey(options.secret, tenantId, session);
  return randomBytes(16).toString('hex');
}

export function checkPageSize(value: number | undefined, param = 'page_size'): number {
  const size = value ?? PAGE_SIZE.default;
  if (!Number.isInteger(size) || size < PAGE_SIZE.min || size > PAGE_SIZE.max)
    throw invalid(param, `must be an integer from ${PAGE_SIZE.min} to ${PAGE_SIZE.max}, got ${value}`);
  return size;
}

/** A dataset that can be paged: a table or a computed dataset with an ordering key. */
export function pageableDataset(name: string, datamap: DataMap = REFERENCE_DATAMAP): DatasetDeclaration {
  const dataset = datamap.datasets[name];
  if (!dataset) throw invalid('dataset', `unknown dataset "${name}"`, Object.keys(datamap.datasets));
  if (dataset.kind === 'document')
    throw new FerryError(
      'unsupported_format',
      `dataset ${name} is one JSON document and is not paged; request it without page or cursor`,
    );
  return dataset;
}

/** Adds a WHERE condition to a COPY query at its key-range marker. */
export function narrowQuery(query: CopyQuery, condition: string): CopyQuery {
  return { ...query, from: query.from.replace('{{KEY_RANGE}}', ` AND (${condition}){{KEY_RANGE}}`) };
}

export type KeyValues = readonly (string | null)[];

export function keyLiteral(values: KeyValues): string {
  return values.map((v) => literal(v)).join(', ');
}

/** Key values (as text) of the rows at `offset` in key order within a range. */
export async function keysAt(
  database: Database,
  query: CopyQuery,
  range: KeyRange,
  at: { offset: number; limit: number; descending?: boolean },
): Promise<KeyValues[]> {
  const columns = query.key.map((k, i) => `(${k})::text AS k${i}`).join(', ');
  const order = query.key.map((k) => (at.descending ? `${k} DESC` : k)).join(', ');
  const text = `SELECT ${columns} ${rangeFrom(query, range)} ORDER BY ${order} OFFSET ${at.offset} LIMIT ${at.limit}`;
  const result = await sql.raw<Record<string, string | null>>(text).execute(database.db);
  return result.rows.map((row) => query.key.map((_, i) => row[`k${i}`] ?? null));
}

export async function countRows(database: Database, query: CopyQuery, range: KeyRange = {}): Promise<number> {
  const result = await sql
    .raw<{ n: number | string }>(`SELECT count(*) AS n ${rangeFrom(query, range)}`)
    .execute(database.db);
  return Number(result.rows[0]?.n ?? 0);
}

/**
 * The bounds of the next page after `after`: the key of its last row, whether more rows
 * follow, and whether the page has any row at all. Two small key-only queries at most.
 */
export async function pageBounds(
  database: Database,
  query: CopyQuery,
  after: KeyValues | null,
  size: number,
): Promise<{ last: KeyValues | null; more: boolean }> {
  const range = { after: after ? keyLiteral(after) : null };
  const full = await keysAt(database, query, range, { offset: size - 1, limit: 2 });
  if (full.length > 0) return { last: full[0]!, more: full.length > 1 };
  const tail = await keysAt(database, query, range, { offset: 0, limit: 1, descending: true });
  return { last: tail[0] ?? null, more: false };
}

/** The COPY of exactly the rows in (after, last]; an empty page still gives a CSV header. */
export function boundedQuery(query: CopyQuery, after: KeyValues | null, last: KeyValues | null): CopyQuery {
  if (!last) return narrowQuery(query, 'false');
  return { ...query, range: { after: after ? keyLiteral(after) : null, through: keyLiteral(last) } };
}

/** SQLSTATE class 22 (data exception): a tampered cursor value that does not fit the key's type. */
export function isDataException(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('22');
}

export interface FormattedStream {
  sources: readonly CopyQuery[];
  writer: FormatWriter;
  fields: readonly FieldSpec[];
  dataset: string;
  metadata: Record<string, unknown>;
  request: ExportRequest;
}

/** Streams COPY queries one after the other through the format writer, compression and a hash into `out`. */
export async function streamFormatted(
  database: Database,
  spec: FormattedStream,
  out: Writable,
  signal?: AbortSignal,
): Promise<StreamOutcome> {
  const { writer, request } = spec;
  const perSource: number[] = [];
  async function* rows(): AsyncGenerator<Buffer> {
    for (const [i, query] of spec.sources.entries()) {
      // Only the first source carries the CSV header.
      const counter = new RecordCounter(writer.input, {
        headerLines: i === 0 && writer.input === 'csv' ? 1 : 0,
      });
      const counted = pipelineCallback(database.copyOut(query), counter, () => {});
      for await (const chunk of counted) yield chunk as Buffer;
      perSource.push(counter.count);
    }
  }
  const format = writer.create({
    dataset: spec.dataset,
    fields: spec.fields,
    metadata: spec.metadata,
    bom: request.bom,
  });
  const compression = compressionCodec(request.compression).create();
  const hasher = new MeteredHash();
  const stages = [
    Readable.from(rows(), { objectMode: false }),
    format,
    ...(compression ? [compression] : []),
    hasher,
    out,
  ];
  await pipeline(stages as unknown as [Readable, Writable], signal ? { signal } : {});
  return {
    records: perSource.reduce((a, b) => a + b, 0),
    perSource,
    bytes: hasher.bytes,
    sha256: hasher.sha256,
  };
}

/** The tenant, zones and writer of a tabular request, validated. */
export async function prepareTabular(
  database: Database,
  request: ExportRequest,
  datamap: DataMap = REFERENCE_DATAMAP,
): Promise<{
  tenant: TenantInfo;
  scoped: ExportRequest;
  dataset: DatasetDeclaration;
  zones: Zones;
  writer: FormatWriter;
}> {
  const dataset = pageableDataset(request.dataset, datamap);
  if (request.format === 'markdown')
    throw new FerryError('unsupported_format', 'format markdown is only for knowledge_base');
  const writer = getWriter(request.format);
  const tenant = await loadTenant(database, request.tenantId);
  const scoped: ExportRequest = { ...request, tenantId: tenant.id };
  return { tenant, scoped, dataset, zones: zonesFor(request, tenant), writer };
}

interface PageCursor {
  owner: string;
  key: KeyValues;
  session: string;
  /** Rows counted when the walk started, so later pages need not count again. */
  total: number | null;
}

function readPageCursor(text: string, owner: string, keyLength: number): PageCursor {
  const token = decodeToken(text, 'cursor');
  const key = token.k;
  if (
    token.v !== 1 ||
    token.t !== 'page' ||
    typeof token.s !== 'string' ||
    !Array.isArray(key) ||
    key.length !== keyLength ||
    !key.every((v) => typeof v === 'string' && !v.includes('\0'))
  )
    throw invalid('cursor', 'is not a page cursor issued by Ferry (pass X-Next-Cursor back unchanged)');
  if (token.o !== owner)
    throw invalid('cursor', 'was issued for another dataset or account; start again without a cursor');
  const total = typeof token.n === 'number' && Number.isInteger(token.n) && token.n >= 0 ? token.n : null;
  return { owner, key: key as string[], session: token.s, total };
}

function pageCursor(owner: string, key: KeyValues, session: string, total: number): string {
  return encodeToken({ v: 1, t: 'page', o: owner, k: key, s: session, n: total });
}

/**
 * Plans one page of a tabular dataset (cursor or offset mode) without writing anything.
 * `write` then streams exactly the planned key range.
 */
export async function planPage(
  database: Database,
  request: ExportRequest,
  options: PageOptions = {},
): Promise<PlannedPage> {
  const size = checkPageSize(options.pageSize);
  if (options.page !== undefined && options.cursor !== undefined)
    throw invalid('page', 'cannot be combined with cursor; use one way of paging');
  if (
    options.page !== undefined &&
    (!Number.isInteger(options.page) || options.page < 1 || options.page > MAX_PAGE)
  )
    throw invalid('page', `must be a whole number from 1 to ${MAX_PAGE}, got ${options.page}`);
  if (options.offset !== undefined && (options.page !== undefined || options.cursor !== undefined))
    throw invalid('offset', 'cannot be combined with page or cursor');
  if (options.offset !== undefined && (!Number.isSafeInteger(options.offset) || options.offset < 0))
    throw invalid('offset', `must be a whole number from 0, got ${options.offset}`);
  const { tenant, scoped, dataset, zones, writer } = await prepareTabular(database, request, options.datamap);
  const owner = cursorOwner(tenant.id, dataset.name);
  const exportId = options.exportId ?? randomUUID();
  const keyLength = buildExportQuery(dataset, scoped, {
    ...zones,
    anonymizeKey: '0'.repeat(32),
    input: 'csv',
  }).key.length;
  const given = options.cursor !== undefined ? readPageCursor(options.cursor, owner, keyLength) : null;
  const session = given?.session ?? newSession();
  const anonymizeKey = anonymizeKeyFor(options, tenant.id, session);
  const query = buildExportQuery(dataset, scoped, { ...zones, anonymizeKey, input: writer.input });

  let after: KeyValues | null = given?.key ?? null;
  let bounds: { last: KeyValues | null; more: boolean };
  let total: number;
  try {
    // A cursor walk counts once, on its first page: counting every page would cost a scan
    // of the whole dataset per page.
    total = given?.total ?? (await countRows(database, query));
    let beyond = false;
    const skip = options.page !== undefined ? (options.page - 1) * size : (options.offset ?? 0);
    if (skip > 0) {
      const previous = await keysAt(database, query, {}, { offset: skip - 1, limit: 1 });
      after = previous[0] ?? null;
      beyond = !after;
    }
    bounds = beyond ? { last: null, more: false } : await pageBounds(database, query, after, size);
  } catch (err) {
    if (given && isDataException(err))
      throw invalid('cursor', 'does not fit this dataset; start again without a cursor');
    throw err;
  }
  // Enriched fields read lookup tables, filled for this page's rows before it is written.
  if (bounds.last)
    await prepareEnrichment(database, dataset, scoped, zones, boundedQuery(query, after, bounds.last).range);
  const resumeAt = bounds.last ?? after;
  const nextCursor = resumeAt ? pageCursor(owner, resumeAt, session, total) : null;
  const pageCount = Math.ceil(total / size);
  const fields = selectedFields(dataset, scoped);
  const metadata = {
    ...exportMetadata(scoped, tenant, exportId, zones.timezone),
    next_cursor: nextCursor,
    end_of_stream: !bounds.more,
    paging: {
      page_size: size,
      ...(options.page !== undefined ? { page: options.page } : {}),
      total_records: total,
      page_count: pageCount,
    },
  };
  const source = boundedQuery(query, after, bounds.last);
  return {
    exportId,
    dataset: dataset.name,
    total,
    pageCount,
    pageSize: size,
    page: options.page ?? (given ? null : 1),
    nextCursor,
    endOfStream: !bounds.more,
    contentType: writer.contentType,
    extension: writer.extension,
    compressionSuffix: compressionCodec(request.compression).suffix,
    write: (out, opts = {}) =>
      streamFormatted(
        database,
        { sources: [source], writer, fields, dataset: dataset.name, metadata, request: scoped },
        out,
        opts.signal,
      ),
  };
}

/** Plans and writes one page. */
export async function exportPage(
  database: Database,
  request: ExportRequest,
  out: Writable,
  options: PageOptions & { signal?: AbortSignal } = {},
): Promise<Omit<PlannedPage, 'write'> & StreamOutcome> {
  const plan = await planPage(database, request, options);
  const outcome = await plan.write(out, { signal: options.signal });
  const { write: _write, ...rest } = plan;
  return { ...rest, ...outcome };
}
