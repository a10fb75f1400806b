import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Writable } from 'node:stream';
import { type CopyQuery, type Database, literal } from '../db/database.ts';
import type { DatasetDeclaration, DatasetField } from '../datamap/types.ts';
import type { FieldSpec } from '../format/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { compressionCodec } from '../packaging/compression.ts';
import { SQL_TYPES } from '../transform/anonymize.ts';
import { csvGuardSql } from '../transform/csv-guard.ts';
import {
  anonymizeKeyFor,
  boundedQuery,
  countRows,
  cursorOwner,
  decodeToken,
  encodeToken,
  isDataException,
  type KeyValues,
  keyLiteral,
  keysAt,
  narrowQuery,
  newSession,
  type PageOptions,
  pageBounds,
  prepareTabular,
  type StreamOutcome,
  streamFormatted,
} from './paging.ts';
import { prepareEnrichment } from './enrichment.ts';
import { buildExportQuery, selectedFields } from './query.ts';
import { COPY_OPTIONS, timestampSql } from './render-sql.ts';
import type { ExportRequest } from './request.ts';
import { exportMetadata } from './tenant.ts';

/**
 * The change feed (incremental exports): the rows of a dataset written since a
 * checkpoint, plus tombstones for the rows deleted since. docs/incremental.md has the
 * argument in full; in short:
 *
 * A run covers a window [lo, hi) of transaction ids. `hi` is the `xmin` of the snapshot
 * taken when the run starts: every transaction with a smaller id (subtransactions
 * included) had finished by then, every later write gets an id >= hi. A row belongs to
 * the run whose window holds the id of the transaction that last wrote it (its `xmin`);
 * a tombstone, to the window holding its deleting transaction. The next run starts at
 * lo = hi, so the windows tile the id line: a write committed during a run is in that run
 * (if its id < hi) or in a later one, never in none. A long transaction only holds the
 * window back. The first run (no checkpoint) is a full export without tombstones.
 *
 * Within a run, tombstones come first, then rows (key order): a row present in a run is
 * its latest version in that window, so any delete of it in the same window preceded it.
 */

/** A position in the change feed. Stored by schedules as the string `encodeChangeCursor` gives. */
export interface ChangeCursor {
  readonly dataset: string;
  /** Fingerprint of tenant and dataset; a cursor only works where it was issued. */
  readonly owner: string;
  /** Window start (a 64-bit transaction id as text); '0' = from the beginning. */
  readonly lo: string;
  /** Window end of the run in progress; null = the next call starts a new run. */
  readonly hi: string | null;
  readonly phase: 'tombstones' | 'records';
  /** Key (text values) of the last item written in the current phase. */
  readonly after: KeyValues | null;
  /** Pseudonym session: every run of a feed pseudonymizes alike. */
  readonly session: string;
}

export interface ChangeOptions extends Pick<PageOptions, 'anonymizeKey' | 'secret' | 'exportId' | 'datamap'> {
  /** Changes (tombstones and rows) per call; the whole rest of the run when absent. */
  limit?: number | undefined;
  /** Parameter name used in error messages. */
  param?: string | undefined;
}

export interface PlannedChanges {
  readonly exportId: string;
  readonly dataset: string;
  /** Tombstones and rows in the whole run (at planning time). */
  readonly total: number;
  readonly nextCursor: ChangeCursor;
  /** True when this call reaches the end of the run: the consumer is caught up. */
  readonly endOfStream: boolean;
  readonly contentType: string;
  readonly extension: string;
  readonly compressionSuffix: string;
  write(out: Writable, options?: { signal?: AbortSignal | undefined }): Promise<ChangeOutcome>;
}

export interface ChangeOutcome extends StreamOutcome {
  /** Rows written (upserts), not counting tombstones. */
  records: number;
  tombstones: number;
}

const TWO_32 = 4_294_967_296n;
/** A checkpoint older than this many transactions cannot be placed on the 32-bit xmin circle. */
const MAX_WINDOW = TWO_32 - 1_000_000n;

/** Column names of the tabular change format (CSV, XML, Parquet). */
export const OP_FIELD = '_op';
export const DELETED_AT_FIELD = '_deleted_at';

export function encodeChangeCursor(cursor: ChangeCursor): string {
  return encodeToken({
    v: 1,
    t: 'changes',
    d: cursor.dataset,
    o: cursor.owner,
    lo: cursor.lo,
    hi: cursor.hi,
    p: cursor.phase === 'tombstones' ? 'd' : 'r',
    k: cursor.after,
    s: cursor.session,
  });
}

const XID = /^\d{1,20}$/;

/**
 * Reads a cursor given back by a client or a schedule. `'0'` and `''` mean "from the
 * beginning" (null). A cursor of another tenant or dataset is refused.
 */
export function decodeChangeCursor(
  text: string,
  expected: { tenantId: string; dataset: string },
  param = 'updated_since',
): ChangeCursor | null {
  if (text === '' || text === '0') return null;
  const token = decodeToken(text, param);
  const { lo, hi, k } = token;
  const valid =
    token.v === 1 &&
    token.t === 'changes' &&
    typeof token.d === 'string' &&
    typeof token.o === 'string' &&
    typeof token.s === 'string' &&
    typeof lo === 'string' &&
    XID.test(lo) &&
    (hi === null || (typeof hi === 'string' && XID.test(hi))) &&
    (token.p === 'd' || token.p === 'r') &&
    (k === null || (Array.isArray(k) && k.every((v) => typeof v === 'string' && !v.includes('\0'))));
  if (!valid)
    throw invalid(param, 'is not a change cursor issued by Ferry (pass X-Next-Cursor back unchanged)');
  if (token.d !== expected.dataset || token.o !== cursorOwner(expected.tenantId, expected.dataset))
    throw invalid(param, 'was issued for another dataset or account; start again with updated_since=0');
  return {
    dataset: token.d,
    owner: token.o as string,
    lo: lo as string,
    hi: hi as string | null,
    phase: token.p === 'd' ? 'tombstones' : 'records',
    after: k as string[] | null,
    session: token.s as string,
  };
}

/** The dataset's main table, its record id column and the field that exports it (for tombstones). */
function trackedSource(
  dataset: DatasetDeclaration,
  param: string,
): { table: string; idColumn: string; idField: DatasetField } {
  if (dataset.kind !== 'table' || !dataset.changeFeed)
    throw invalid(
      param,
      `dataset ${dataset.name} is computed from other data and has no change feed; export it by date range instead`,
    );
  const idColumn = dataset.changeFeed.idColumn;
  const idField = dataset.fields.find((f) => f.sql === `t.${idColumn}`);
  if (!idField) throw new FerryError('internal', `dataset ${dataset.name} does not export its record id`);
  return { table: dataset.source, idColumn, idField };
}

/** SQL: the 64-bit id of the transaction that last wrote row `t`, from its 32-bit xmin and a recent reference. */
function rowXid(reference: bigint): string {
  const low = reference % TWO_32;
  return `(${reference} - ((${low} - t.xmin::text::bigint + ${TWO_32}) % ${TWO_32}))`;
}

/** Rows last written by a transaction in [lo, hi). Reserved xids (< 3) only in the first run. */
function windowCondition(lo: bigint, hi: bigint, reference: bigint): string {
  const xid = rowXid(reference);
  return `t.xmin::text::bigint >= 3 AND ${xid} >= ${lo} AND ${xid} < ${hi}`;
}

async function snapshot(database: Database): Promise<{ xmin: bigint; xmax: bigint }> {
  const result = await sql<{ xmin: string; xmax: string }>`
    SELECT pg_snapshot_xmin(s)::text AS xmin, pg_snapshot_xmax(s)::text AS xmax
    FROM (SELECT pg_current_snapshot() AS s) q`.execute(database.db);
  const row = result.rows[0]!;
  return { xmin: BigInt(row.xmin), xmax: BigInt(row.xmax) };
}

interface Shapes {
  /** Writer fields: the dataset's, plus `_op` / `_deleted_at` in tabular formats. */
  fields: FieldSpec[];
  tombstones: (from: string, header: boolean) => CopyQuery;
  records: (query: CopyQuery, header: boolean) => CopyQuery;
}

/**
 * How tombstones and rows look in each format. JSON and NDJSON: rows as in a normal
 * export, tombstones `{"_deleted":true,"<id field>":...,"deleted_at":...}`. CSV, XML and
 * Parquet: a leading `_op` column (`upsert` | `delete`) and a trailing `_deleted_at`;
 * a delete carries only the id.
 */
function shapes(
  request: ExportRequest,
  fields: readonly DatasetField[],
  idField: DatasetField,
  timezone: string,
  input: 'csv' | 'ndjson',
): Shapes {
  const deletedAt = timestampSql('d.deleted_at', timezone);
  const objects = request.format === 'json' || request.format === 'ndjson';
  const tabularFields: FieldSpec[] = [
    {
      name: OP_FIELD,
      type: 'string',
      description: 'upsert: the row as it is now; delete: the row was deleted.',
    },
    ...fields,
    { name: DELETED_AT_FIELD, type: 'timestamp', description: 'When the row was deleted (deletes only).' },
  ];
  if (input === 'csv') {
    const guard = request.csvGuard && request.format === 'csv';
    const idCell = idField.type === 'string' && guard ? csvGuardSql('d.record_id') : 'd.record_id';
    const cells = fields.map((f) => `${f.name === idField.name ? idCell : 'NULL'} AS "${f.name}"`);
    return {
      fields: tabularFields,
      tombstones: (from, header) => ({
        projection: [`'delete' AS "${OP_FIELD}"`, ...cells, `${deletedAt} AS "${DELETED_AT_FIELD}"`].join(
          ', ',
        ),
        from,
        key: ['d.seq'],
        options: COPY_OPTIONS.csv,
        header,
      }),
      records: (query, header) => ({
        ...query,
        projection: `'upsert' AS "${OP_FIELD}", ${query.projection}, NULL AS "${DELETED_AT_FIELD}"`,
        header,
      }),
    };
  }
  // Compact JSON like the rows' row_to_json (json_build_object would add spaces).
  const id = `${JSON.stringify(idField.name).replaceAll("'", "''")}:' || to_json(d.record_id)::text || '`;
  const tombstone = objects
    ? `'{"_deleted":true,${id},"deleted_at":' || to_json(${deletedAt})::text || '}'`
    : `'{"${OP_FIELD}":"delete",${id},"${DELETED_AT_FIELD}":' || to_json(${deletedAt})::text || '}'`;
  return {
    fields: objects ? [...fields] : tabularFields,
    tombstones: (from) => ({ projection: tombstone, from, key: ['d.seq'], options: COPY_OPTIONS.ndjson }),
    records: (query) =>
      objects
        ? query
        : { ...query, projection: `'{"${OP_FIELD}":"upsert",' || substr(${query.projection}, 2)` },
  };
}

/**
 * Plans one call of the change feed: the next `limit` changes after `since` (or the
 * rest of the run). Nothing is written until `write`.
 */
export async function planChanges(
  database: Database,
  request: ExportRequest,
  since: ChangeCursor | null,
  options: ChangeOptions = {},
): Promise<PlannedChanges> {
  const param = options.param ?? 'updated_since';
  const limit = options.limit;
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1))
    throw invalid('page_size', `must be a whole number from 1, got ${limit}`);
  const { tenant, scoped, dataset, zones, writer } = await prepareTabular(database, request, options.datamap);
  // Enriched fields read lookup tables that are filled before the query runs.
  await prepareEnrichment(database, dataset, scoped, zones);
  const { table, idColumn, idField } = trackedSource(dataset, param);
  const owner = cursorOwner(tenant.id, dataset.name);
  if (since && (since.dataset !== dataset.name || since.owner !== owner))
    throw invalid(param, 'was issued for another dataset or account; start again with updated_since=0');
  const exportId = options.exportId ?? randomUUID();
  const session = since?.session ?? newSession();
  const anonymizeKey = anonymizeKeyFor(options, tenant.id, session);

  const now = await snapshot(database);
  const lo = BigInt(since?.lo ?? '0');
  const firstRun = lo === 0n;
  const hi = since?.hi != null ? BigInt(since.hi) : now.xmin;
  if (!firstRun && (now.xmax - lo > MAX_WINDOW || hi < lo))
    throw new FerryError(
      'gone',
      `${param}: this checkpoint is too old to resume (over 4 billion transactions ago); start again with updated_since=0`,
    );
  let phase = since?.hi != null ? since.phase : firstRun ? 'records' : 'tombstones';
  let after = since?.hi != null ? since.after : null;

  const fields = selectedFields(dataset, scoped);
  if (!fields.some((f) => f.name === idField.name))
    throw invalid('columns', `a change feed needs the record id; add ${idField.name} to columns`, [
      idField.name,
    ]);
  const shape = shapes(scoped, fields, idField, zones.timezone, writer.input);
  const base = buildExportQuery(dataset, scoped, { ...zones, anonymizeKey, input: writer.input });
  const records = firstRun ? base : narrowQuery(base, windowCondition(lo, hi, now.xmax));
  // A tombstone whose record exists again is stale: the row came back after the delete
  // (transaction ids do not follow commit order), and its current version is sent as a row.
  const idType = SQL_TYPES[idField.type];
  const tombstoneFrom =
    `FROM deleted_records d WHERE d.tenant_id = ${literal(tenant.id)} AND d.table_name = ${literal(table)}` +
    ` AND d.xid >= ${literal(String(lo))}::xid8 AND d.xid < ${literal(String(hi))}::xid8` +
    ` AND NOT EXISTS (SELECT 1 FROM ${table} x WHERE x.tenant_id = d.tenant_id AND x.${idColumn} = d.record_id::${idType})` +
    '{{KEY_RANGE}}';
  const tombstoneKeys: CopyQuery = shape.tombstones(tombstoneFrom, false);

  const sources: { kind: 'tombstones' | 'records'; query: CopyQuery }[] = [];
  let budget = limit ?? Number.POSITIVE_INFINITY;
  let more = false;
  let total: number;
  let next: { phase: 'tombstones' | 'records'; after: KeyValues | null } | null = null;
  try {
    total = (firstRun ? 0 : await countRows(database, tombstoneKeys)) + (await countRows(database, records));
    if (phase === 'tombstones') {
      if (budget === Number.POSITIVE_INFINITY) {
        sources.push({ kind: 'tombstones', query: { ...tombstoneKeys, range: rangeAfter(after) } });
      } else {
        const bounds = await pageBounds(database, tombstoneKeys, after, budget);
        if (bounds.last) {
          sources.push({ kind: 'tombstones', query: boundedQuery(tombstoneKeys, after, bounds.last) });
          budget -= await countRows(database, tombstoneKeys, {
            after: after ? keyLiteral(after) : null,
            through: keyLiteral(bounds.last),
          });
        }
        if (bounds.more) {
          more = true;
          next = { phase: 'tombstones', after: bounds.last };
        }
      }
      phase = 'records';
      after = null;
    }
    if (!more && budget > 0) {
      if (budget === Number.POSITIVE_INFINITY) {
        sources.push({ kind: 'records', query: { ...records, range: rangeAfter(after) } });
      } else {
        const bounds = await pageBounds(database, records, after, budget);
        if (bounds.last) sources.push({ kind: 'records', query: boundedQuery(records, after, bounds.last) });
        if (bounds.more) {
          more = true;
          next = { phase: 'records', after: bounds.last };
        }
      }
    } else if (!more) {
      // The page is full of tombstones: the run ends here only if no row is left.
      const anyRow = await keysAt(database, records, rangeAfter(after), { offset: 0, limit: 1 });
      if (anyRow.length > 0) {
        more = true;
        next = { phase: 'records', after };
      }
    }
  } catch (err) {
    if (since && isDataException(err))
      throw invalid(param, 'does not fit this dataset; start again with updated_since=0');
    throw err;
  }

  const nextCursor: ChangeCursor = more
    ? { dataset: dataset.name, owner, lo: String(lo), hi: String(hi), ...next!, session }
    : { dataset: dataset.name, owner, lo: String(hi), hi: null, phase: 'tombstones', after: null, session };
  const encoded = encodeChangeCursor(nextCursor);
  const metadata = {
    ...exportMetadata(scoped, tenant, exportId, zones.timezone),
    next_cursor: encoded,
    end_of_stream: !more,
    changes: { first_run: firstRun, total_changes: total, ...(limit ? { page_size: limit } : {}) },
  };

  // The first source of a CSV writes the header; an empty call still writes one.
  const queries = sources.map((s, i) =>
    s.kind === 'tombstones'
      ? { kind: s.kind, query: { ...shape.tombstones(tombstoneFrom, i === 0), range: s.query.range } }
      : { kind: s.kind, query: shape.records(s.query, i === 0) },
  );
  const empty = narrowQuery(base, 'false');
  if (queries.length === 0) queries.push({ kind: 'records', query: shape.records(empty, true) });
  if (queries.some((q) => q.kind === 'tombstones' && q.query.range === undefined))
    throw new FerryError('internal', 'tombstone page without a range');

  return {
    exportId,
    dataset: dataset.name,
    total,
    nextCursor,
    endOfStream: !more,
    contentType: writer.contentType,
    extension: writer.extension,
    compressionSuffix: compressionCodec(request.compression).suffix,
    async write(out, opts = {}) {
      const outcome = await streamFormatted(
        database,
        {
          sources: queries.map((q) => q.query),
          writer,
          fields: shape.fields,
          dataset: dataset.name,
          metadata,
          request: scoped,
        },
        out,
        opts.signal,
      );
      const tombstones = queries.reduce(
        (n, q, i) => n + (q.kind === 'tombstones' ? (outcome.perSource?.[i] ?? 0) : 0),
        0,
      );
      return { ...outcome, records: outcome.records - tombstones, tombstones };
    },
  };
}

function rangeAfter(after: KeyValues | null): { after: string | null } {
  return { after: after ? keyLiteral(after) : null };
}

/**
 * The change feed in one call, for schedules: the rows changed since `since` (null =
 * everything) and tombstones, written to `out`, with the cursor to store for next time.
 */
export async function exportChanges(
  database: Database,
  request: ExportRequest,
  since: ChangeCursor | null,
  out: Writable,
  options: ChangeOptions & { signal?: AbortSignal } = {},
): Promise<{
  records: number;
  tombstones: number;
  bytes: number;
  sha256: string;
  nextCursor: ChangeCursor;
  endOfStream: boolean;
  exportId: string;
}> {
  const plan = await planChanges(database, request, since, options);
  const outcome = await plan.write(out, { signal: options.signal });
  return {
    ...outcome,
    nextCursor: plan.nextCursor,
    endOfStream: plan.endOfStream,
    exportId: plan.exportId,
  };
}
