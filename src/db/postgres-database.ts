import { Kysely, PostgresDialect } from 'kysely';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  type CopyQuery,
  type Database,
  type DbSession,
  type SessionMode,
  copySql,
  literal,
  quoteIdent,
} from './database.ts';
import type { DB } from './schema.ts';

// Return timestamps as Date and bigint counts as numbers (counts never exceed 2^53).
pg.types.setTypeParser(20, (v) => Number(v));

export interface PostgresOptions {
  connectionString: string;
  /** Schema that holds Ferry's tables; it becomes the connection's search_path. */
  schema?: string | undefined;
  max?: number | undefined;
  /** Named prepared statements (default on); off for poolers that cannot keep them. */
  preparedStatements?: boolean | undefined;
}

/**
 * Settings every connection starts with, whatever the server, database or role default
 * says: SQL written by hand (migrations, COPY statements) means what it says only with
 * standard strings, where a backslash inside `'…'` is an ordinary character.
 */
export const SESSION_OPTIONS = '-c standard_conforming_strings=on';

export function postgresDatabase(options: PostgresOptions): Database & { pool: pg.Pool } {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max ?? 10,
    options: options.schema ? `${SESSION_OPTIONS} -c search_path=${options.schema}` : SESSION_OPTIONS,
  });
  // An idle client that errors (server restart) must not crash the process.
  pool.on('error', () => {});
  if (options.preparedStatements ?? true) pool.on('connect', (client) => preparedStatements(client));
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });

  return {
    kind: 'postgres',
    db,
    pool,
    copyOut(query: CopyQuery): Readable {
      const out = new PassThrough();
      pool
        .connect()
        .then((client) => {
          let released = false;
          const release = (err?: Error) => {
            if (released) return;
            released = true;
            client.release(err);
          };
          // Destroyed before the connection came (the export was stopped): run nothing.
          if (out.destroyed) return release();
          if (query.snapshot) return snapshotCopy(client, query, out, release);
          const stream = client.query(copyTo(copySql(query)));
          // The cancelled statement's error arrives after the pipeline has let go of the stream.
          stream.on('error', () => {});
          let ended = false;
          stream.once('end', () => {
            ended = true;
          });
          // A reader that goes away (cancel, shutdown, a failed stage) does not stop the
          // server by closing its end of the socket: PostgreSQL keeps running the COPY to
          // its last row. Cancel the statement on the server, then drop the connection.
          out.once('close', () => {
            if (ended) return;
            const stopped = new Error('the COPY was cancelled: its reader went away');
            void cancelBackend(options, client)
              .catch(() => {})
              .finally(() => {
                stream.destroy();
                release(stopped);
              });
          });
          pipeline(stream, out).then(
            () => release(),
            (err: Error) => {
              // Stopped by the reader: the close handler cancels the statement and releases.
              if (out.destroyed && !ended) return;
              // The COPY itself failed (or the reader failed after its end): nothing to cancel.
              ended = true;
              out.destroy(err);
              release(err);
            },
          );
        })
        .catch((err: Error) => out.destroy(err));
      return out;
    },
    async copyIn(table, columns, csv) {
      const client = await pool.connect();
      try {
        const cols = columns.map(quoteIdent).join(', ');
        const sink = client.query(
          copyFrom(`COPY ${quoteIdent(table)} (${cols}) FROM STDIN WITH (FORMAT csv)`),
        );
        await pipeline(csv, sink);
        client.release();
      } catch (err) {
        client.release(err as Error);
        throw err;
      }
    },
    async exec(sql: string) {
      await pool.query(sql);
    },
    async session<T>(mode: SessionMode, work: (session: DbSession) => Promise<T>): Promise<T> {
      const client = await pool.connect();
      let failed: Error | undefined;
      try {
        await client.query(
          mode === 'snapshot'
            ? 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY'
            : 'BEGIN ISOLATION LEVEL READ COMMITTED',
        );
        // Kysely on this one connection: a pool whose only client is the session's.
        const single = {
          connect: async () => ({
            query: (...args: unknown[]) => (client.query as (...a: unknown[]) => unknown)(...args),
            release: () => {},
          }),
          end: async () => {},
        };
        const result = await work({
          db: new Kysely<DB>({ dialect: new PostgresDialect({ pool: single as unknown as pg.Pool }) }),
          async *copyOut(query) {
            const stream = client.query(copyTo(copySql(query)));
            for await (const chunk of stream) yield chunk as Buffer;
          },
          async copyIn(target, copyOptions, source) {
            await pipeline(source, client.query(copyFrom(`COPY ${target} FROM STDIN WITH (${copyOptions})`)));
          },
          async exec(sql) {
            await client.query(sql);
          },
        });
        await client.query('COMMIT');
        return result;
      } catch (err) {
        failed = err as Error;
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        // A connection whose COPY broke off mid-stream is not reused.
        client.release(failed && !(failed as { code?: string }).code ? failed : undefined);
      }
    },
    async close() {
      await db.destroy();
    },
  };
}

/**
 * A COPY read in an exported snapshot: its own `REPEATABLE READ READ ONLY` transaction that
 * imports the snapshot first. A reader that goes away closes the connection, which ends the
 * transaction and the statement with it.
 */
function snapshotCopy(
  client: pg.PoolClient,
  query: CopyQuery,
  out: PassThrough,
  release: (err?: Error) => void,
): void {
  const run = async () => {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await client.query(`SET TRANSACTION SNAPSHOT ${literal(query.snapshot!)}`);
    const stream = client.query(copyTo(copySql(query)));
    stream.on('error', () => {});
    await pipeline(stream, out, { end: false });
    await client.query('COMMIT');
    out.end();
  };
  out.once('close', () => release(new Error('the COPY was stopped: its reader went away')));
  run().then(
    () => release(),
    (err: Error) => {
      out.destroy(err);
      release(err);
    },
  );
}

/**
 * Cancels the statement a pooled connection is running, through a connection of its own
 * (the pool may be exhausted by the exports it is stopping): `pg_cancel_backend` of the
 * connection's backend process.
 */
async function cancelBackend(options: PostgresOptions, client: pg.PoolClient): Promise<void> {
  const pid = (client as unknown as { processID?: number }).processID;
  if (!pid) return;
  const canceller = new pg.Client({ connectionString: options.connectionString });
  canceller.on('error', () => {});
  try {
    await canceller.connect();
    await canceller.query('SELECT pg_cancel_backend($1)', [pid]);
  } finally {
    await canceller.end().catch(() => {});
  }
}

/** Named statements kept per connection; beyond this, queries are sent unnamed (planned each time). */
const MAX_PREPARED = 500;

/**
 * Makes the connection prepare each parameterized statement once and reuse it: the
 * query text gets a name derived from its hash, so PostgreSQL parses it once per
 * connection and, after a few runs, keeps a generic plan instead of planning it on
 * every call. On the API's request path planning cost as much as executing (the
 * key lookup, the quota count, the job insert; see docs/benchmarks.md). node-postgres
 * prepares named statements itself; Kysely does not name its queries, hence this.
 */
function preparedStatements(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
  const names = new Set<string>();
  /** Statements whose result type changed under them (a migration ran): sent unnamed from then on. */
  const stale = new Set<string>();
  (client as { query: unknown }).query = (text: unknown, values?: unknown, callback?: unknown) => {
    if (typeof text === 'string' && Array.isArray(values) && values.length > 0 && callback === undefined) {
      const name = statementName(text);
      if (!stale.has(name) && (names.has(name) || names.size < MAX_PREPARED)) {
        names.add(name);
        return query({ name, text, values }).catch((err: unknown) => {
          // A migration from another process changed a table under a prepared statement
          // (a column dropped or retyped): PostgreSQL refuses to run its old plan. Outside a
          // transaction, running the text unnamed is the same query, planned afresh.
          if (
            !(
              err instanceof Error &&
              (err as { code?: string }).code === '0A000' &&
              /cached plan/.test(err.message)
            )
          )
            throw err;
          stale.add(name);
          return query(text, values);
        });
      }
    }
    return query(text, values, callback);
  };
}

/** Statement names by query text, shared by all connections (bounded: cleared when full). */
const statementNames = new Map<string, string>();

function statementName(text: string): string {
  let name = statementNames.get(text);
  if (name === undefined) {
    name = `ferry_${createHash('sha1').update(text).digest('base64url')}`;
    if (statementNames.size >= 4 * MAX_PREPARED) statementNames.clear();
    statementNames.set(text, name);
  }
  return name;
}
