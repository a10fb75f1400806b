import { PGlite, type Transaction } from '@electric-sql/pglite';
import { Kysely, PGliteDialect } from 'kysely';
import { Readable } from 'node:stream';
import {
  type CopyQuery,
  type Database,
  type DbSession,
  type SessionMode,
  copySql,
  literal,
  quoteIdent,
  rangeFrom,
} from './database.ts';
import type { DB } from './schema.ts';

export interface PgliteOptions {
  /** Directory for the database files; in memory when absent. */
  dataDir?: string | undefined;
  /** Rows per COPY page when streaming exports (PGlite materialises each COPY). */
  pageRows?: number;
  /** Starts from a copy of another database's files (`PGlite.dumpDataDir` output) instead of an empty one. */
  loadDataDir?: Blob | undefined;
}

/** Bytes of CSV gathered before each COPY FROM; PGlite takes COPY input as one blob. */
const COPY_IN_CHUNK = 8 * 1024 * 1024;

export async function pgliteDatabase(options: PgliteOptions = {}): Promise<Database & { pglite: PGlite }> {
  const pglite = new PGlite(options.dataDir, options.loadDataDir ? { loadDataDir: options.loadDataDir } : {});
  await pglite.waitReady;
  // Its one session, like every PostgreSQL connection, uses standard strings whatever the
  // database default (see SESSION_OPTIONS in postgres-database.ts).
  await pglite.exec('SET standard_conforming_strings = on');
  const db = new Kysely<DB>({ dialect: new PGliteDialect({ pglite }) });
  const pageRows = options.pageRows ?? 20_000;

  const copyPages = (query: CopyQuery) => pagedCopy(pglite, query, pageRows);

  return {
    kind: 'pglite',
    db,
    pglite,
    copyOut(query: CopyQuery): Readable {
      // One process and one connection: there is no other session to share a snapshot with.
      if (query.snapshot) throw new Error('PGlite cannot read in an exported snapshot');
      return Readable.from(copyPages(query), { objectMode: false });
    },
    async copyIn(table, columns, csv) {
      const statement = `COPY ${quoteIdent(table)} (${columns.map(quoteIdent).join(', ')}) FROM '/dev/blob' WITH (FORMAT csv)`;
      await blobCopyIn(pglite, statement, csv);
    },
    async exec(sql: string) {
      await pglite.exec(sql);
    },
    session<T>(mode: SessionMode, work: (session: DbSession) => Promise<T>): Promise<T> {
      // PGlite has one connection: its transaction holds the instance, so every read of the
      // session sees one state whatever the isolation level, and nothing else runs meanwhile.
      return pglite.transaction(async (tx) => {
        if (mode === 'snapshot') await tx.exec('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY');
        return work({
          db: new Kysely<DB>({ dialect: new PGliteDialect({ pglite: transactionAsInstance(tx) }) }),
          copyOut: (query) => pagedCopy(tx, query, pageRows),
          copyIn: (target, options, source) =>
            blobCopyIn(tx, `COPY ${target} FROM '/dev/blob' WITH (${options})`, source),
          exec: async (sql) => {
            await tx.exec(sql);
          },
        });
      });
    },
    async close() {
      await db.destroy();
      if (!pglite.closed) await pglite.close();
    },
  };
}

type Queryable = Pick<Transaction, 'query'>;

/** A COPY query as keyset pages of COPYs: PGlite materialises each COPY's output in memory. */
async function* pagedCopy(pg: Queryable, query: CopyQuery, pageRows: number): AsyncGenerator<Buffer> {
  let after: string | null = query.range?.after ?? null;
  const end = query.range?.through ?? null;
  let first = true;
  const keyText = query.key.map((k) => `(${k})::text`).join(', ');
  for (;;) {
    // The key of the last row of this page; none means this is the last page.
    const bound = await pg.query<unknown[]>(
      `SELECT ${keyText} ${rangeFrom(query, { after, through: end })} ORDER BY ${query.key.join(', ')} OFFSET ${pageRows - 1} LIMIT 1`,
      [],
      { rowMode: 'array' },
    );
    const row = bound.rows[0] as (string | null)[] | undefined;
    const through = row ? row.map((v) => literal(v)).join(', ') : end;
    const header = first && (query.header ?? false);
    const result = await pg.query(copySql(query, { after, through }, header, "'/dev/blob'"));
    first = false;
    if (result.blob && result.blob.size > 0) yield Buffer.from(await result.blob.arrayBuffer());
    if (!row) return;
    after = through;
  }
}

/** Runs a `COPY … FROM '/dev/blob'` statement per ~8 MiB of input: PGlite takes COPY input as one blob. */
async function blobCopyIn(
  pg: Queryable,
  statement: string,
  source: AsyncIterable<string | Buffer>,
): Promise<void> {
  let parts: (string | Buffer)[] = [];
  let size = 0;
  const flush = async () => {
    if (size === 0) return;
    const blob = new Blob(parts as BlobPart[]);
    parts = [];
    size = 0;
    await pg.query(statement, [], { blob });
  };
  // Chunks end on row boundaries (producers yield whole rows), so each blob is valid input.
  for await (const chunk of source) {
    parts.push(chunk);
    size += chunk.length;
    if (size >= COPY_IN_CHUNK) await flush();
  }
  await flush();
}

/**
 * A transaction seen as a PGlite instance by Kysely's dialect, which only queries it: the
 * session's Kysely then runs on the transaction, not on the instance it holds (which would
 * wait for the transaction to end).
 */
function transactionAsInstance(tx: Transaction): PGlite {
  const instance = {
    closed: false,
    ready: true,
    waitReady: Promise.resolve(),
    query: tx.query.bind(tx),
    exec: tx.exec.bind(tx),
    close: async () => {},
    transaction: () => {
      throw new Error('a session is already a transaction');
    },
  };
  return instance as unknown as PGlite;
}
