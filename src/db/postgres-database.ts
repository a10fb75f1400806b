import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type CopyQuery, type Database, copySql, quoteIdent } from './database.ts';
import type { DB } from './schema.ts';

// Return timestamps as Date and bigint counts as numbers (counts never exceed 2^53).
pg.types.setTypeParser(20, (v) => Number(v));

export interface PostgresOptions {
  connectionString: string;
  /** Schema that holds Ferry's tables; it becomes the connection's search_path. */
  schema?: string | undefined;
  max?: number;
}

export function postgresDatabase(options: PostgresOptions): Database & { pool: pg.Pool } {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max ?? 10,
    ...(options.schema ? { options: `-c search_path=${options.schema}` } : {}),
  });
  // An idle client that errors (server restart) must not crash the process.
  pool.on('error', () => {});
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
          const stream = client.query(copyTo(copySql(query)));
          let released = false;
          const release = (err?: Error) => {
            if (released) return;
            released = true;
            client.release(err);
          };
          pipeline(stream, out).then(
            () => release(),
            (err: Error) => {
              release(err);
              out.destroy(err);
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
    async close() {
      await db.destroy();
    },
  };
}
