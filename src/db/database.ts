import type { Kysely } from 'kysely';
import type { Readable } from 'node:stream';
import type { DB } from './schema.ts';

export type DatabaseKind = 'postgres' | 'pglite';

/**
 * A query whose output is streamed with `COPY (...) TO STDOUT`. The statement is
 * `SELECT <projection> <from> ORDER BY <key>`, where `from` holds FROM, JOINs and a
 * WHERE clause with `{{KEY_RANGE}}` standing where an extra `AND ...` key predicate
 * may be inserted. `key` lists ordering expressions that are unique together.
 * PostgreSQL runs it as one COPY; PGlite, whose COPY output is materialised in
 * memory, runs it as keyset pages of COPYs. Memory stays flat either way.
 */
export interface CopyQuery {
  readonly projection: string;
  readonly from: string;
  readonly key: readonly string[];
  /** COPY options without HEADER, e.g. `FORMAT csv`. */
  readonly options: string;
  /** Emit a header line (once, before the first row). */
  readonly header?: boolean;
  /**
   * Only the rows whose key lies in this range (page mode). A range bounded on both
   * sides returns the same rows however the adapter splits its work.
   */
  readonly range?: KeyRange;
  /**
   * Read in this exported snapshot (`pg_export_snapshot()` of a transaction that is still
   * open), so several COPYs on their own connections see one instant (partitioned exports).
   * PostgreSQL only.
   */
  readonly snapshot?: string;
}

/** The database port: Kysely for queries plus the two bulk paths Kysely lacks. */
export interface Database {
  readonly kind: DatabaseKind;
  readonly db: Kysely<DB>;
  /** Streams the bytes of `COPY (query) TO STDOUT WITH (options)`. */
  copyOut(query: CopyQuery): Readable;
  /** Loads CSV (RFC 4180, no header) chunks into `table (columns)` with COPY FROM. */
  copyIn(table: string, columns: readonly string[], csv: AsyncIterable<string | Buffer>): Promise<void>;
  /** Runs one or more SQL statements without parameters (migrations, DDL). */
  exec(sql: string): Promise<void>;
  /**
   * Runs `work` on one connection inside one transaction: `snapshot` is a
   * `REPEATABLE READ READ ONLY` transaction (every read sees the same instant, as pg_dump's),
   * `write` a read-write one that commits when `work` resolves and rolls back when it throws.
   * Inside, use only the session: on PGlite the instance is held for the whole transaction.
   */
  session<T>(mode: SessionMode, work: (session: DbSession) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export type SessionMode = 'snapshot' | 'write';

/** One connection in one transaction (see `Database.session`). */
export interface DbSession {
  /** Kysely on the session's connection; do not start a transaction with it (the session is one). */
  readonly db: Kysely<DB>;
  /** Streams a COPY query's bytes; PGlite pages it by key as `Database.copyOut` does. */
  copyOut(query: CopyQuery): AsyncIterable<Buffer>;
  /** Runs `COPY <target> FROM STDIN WITH (<options>)` with the given bytes (whole rows per chunk on PGlite). */
  copyIn(target: string, options: string, source: AsyncIterable<Buffer | string>): Promise<void>;
  /** Runs SQL without parameters (several statements allowed). */
  exec(sql: string): Promise<void>;
}

const KEY_RANGE = '{{KEY_RANGE}}';

export interface KeyRange {
  /** SQL literal list of the key after which rows start (exclusive). */
  after?: string | null;
  /** SQL literal list of the key where rows end (inclusive). */
  through?: string | null;
}

/**
 * The FROM/WHERE part of a query restricted to a key range. With a key of several columns,
 * the range also bounds the first column alone (`k1 >= a1`, `k1 <= b1`, implied by the row
 * comparison): PostgreSQL estimates a row comparison's selectivity poorly, and with both
 * bounds given it took a page of 10,000 messages for a third of the table and scanned
 * another index for 1.8 s instead of the key's index for 7 ms.
 */
export function rangeFrom(query: CopyQuery, range: KeyRange = {}): string {
  const key = query.key.join(', ');
  const first = query.key.length > 1 ? query.key[0] : undefined;
  let predicate = '';
  if (range.after) {
    predicate += ` AND (${key}) > (${range.after})`;
    const bound = first && firstLiteral(range.after);
    if (bound) predicate += ` AND ${first} >= ${bound}`;
  }
  if (range.through) {
    predicate += ` AND (${key}) <= (${range.through})`;
    const bound = first && firstLiteral(range.through);
    if (bound) predicate += ` AND ${first} <= ${bound}`;
  }
  return query.from.replace(KEY_RANGE, predicate);
}

/** The first value of a literal list made by `literal()` (`'a', 'b'`), or null when it is not a quoted text. */
function firstLiteral(list: string): string | null {
  const match = /^\s*(E?'(?:[^']|'')*')\s*(?:,|$)/.exec(list);
  return match ? match[1]! : null;
}

/** The full COPY statement for a key range of the query. */
export function copySql(
  query: CopyQuery,
  range: KeyRange = query.range ?? {},
  header = query.header ?? false,
  target = 'STDOUT',
): string {
  const select = `SELECT ${query.projection} ${rangeFrom(query, range)} ORDER BY ${query.key.join(', ')}`;
  return `COPY (${select}) TO ${target} WITH (${query.options}${header ? ', HEADER' : ''})`;
}
/**
 * Quotes a value as a SQL literal, for COPY statements, which take no parameters. Text
 * with a backslash becomes an escape string (`E'…'`, backslashes doubled), whose meaning
 * does not depend on `standard_conforming_strings`: in a plain `'…'` literal a backslash
 * escapes the next character when that setting is off, so `x\'` would end the literal.
 * Connections also turn it on, for SQL quoted by hand (migrations).
 */
export function literal(value: string | number | boolean | Date | null): string {
  if (value === null) return 'NULL';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`not a finite number: ${value}`);
    return String(value);
  }
  if (typeof value === 'boolean') return value ? 'TRUE' : 'FALSE';
  const text = value instanceof Date ? value.toISOString() : value;
  if (text.includes('\0')) throw new Error('a SQL literal cannot contain a NUL character');
  const quoted = text.replaceAll("'", "''");
  return text.includes('\\') ? `E'${quoted.replaceAll('\\', '\\\\')}'` : `'${quoted}'`;
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
