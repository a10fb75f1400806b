import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Config } from '../../src/config/config.ts';
import type { Database } from '../../src/db/database.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { pgliteDatabase } from '../../src/db/pglite-database.ts';
import { postgresDatabase } from '../../src/db/postgres-database.ts';
import { jobsSchema } from '../../src/jobs/queue.ts';
import { DEFAULT_TEST_DATABASE_URL } from './database-url.ts';
import { type Dialect, selectDialects } from './dialects.ts';

export type { Dialect } from './dialects.ts';

/**
 * PostgreSQL used by the tests; every test database lives in a schema of its own. The
 * global setup (postgres-server.ts) points FERRY_TEST_DATABASE_URL at an embedded server
 * when the configured one is not reachable.
 */
export const TEST_DATABASE_URL = process.env.FERRY_TEST_DATABASE_URL ?? DEFAULT_TEST_DATABASE_URL;

/** The dialects this run tests; database suites loop over them: `for (const dialect of DIALECTS)`. */
export const DIALECTS = selectDialects(process.env.FERRY_TEST_DIALECTS);

/**
 * Whether this run tests `dialect`. A suite written for one database skips itself
 * otherwise: `describe.skipIf(!testsDialect('postgres'))(...)`.
 */
export function testsDialect(dialect: Dialect): boolean {
  return DIALECTS.includes(dialect);
}

/**
 * `dialect` when this run tests it, else the first one it does: for a suite that needs
 * a database but not a particular one.
 */
export function preferDialect(dialect: Dialect): Dialect {
  return testsDialect(dialect) ? dialect : DIALECTS[0]!;
}

export interface TestDatabase {
  dialect: Dialect;
  database: Database;
  /** The PostgreSQL schema (postgres only). */
  schema: string | undefined;
  /** The variables that point a Ferry config (or a child process) at this database: none for PGlite. */
  env: Record<string, string>;
  drop(): Promise<void>;
}

export interface TestDatabaseOptions {
  /** Apply the migrations (default true). */
  migrate?: boolean;
  /** PGlite only: rows per keyset-paged COPY (default 1000); small values split every query into many pages. */
  pageRows?: number;
}

/** A fresh, migrated database: in-memory PGlite, or a new schema in PostgreSQL. */
export async function createTestDatabase(
  dialect: Dialect,
  options: TestDatabaseOptions = {},
): Promise<TestDatabase> {
  if (dialect === 'pglite') {
    const migrate = options.migrate ?? true;
    const database = await pgliteDatabase({
      pageRows: options.pageRows ?? 1000,
      loadDataDir: migrate ? await migratedPglite() : undefined,
    });
    // On a copy of the migrated files this only confirms that nothing is pending.
    if (migrate) await migrateToLatest(database.db);
    return { dialect, database, schema: undefined, env: {}, drop: () => database.close() };
  }
  const schema = `ferry_test_${randomBytes(6).toString('hex')}`;
  const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
  await admin.exec(`CREATE SCHEMA ${schema}`);
  await admin.close();
  const database = postgresDatabase({ connectionString: TEST_DATABASE_URL, schema, max: 4 });
  if (options.migrate ?? true) await migrateToLatest(database.db);
  return {
    dialect,
    database,
    schema,
    env: { DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: schema },
    async drop() {
      await database.close();
      const cleanup = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
      await cleanup.exec(`DROP SCHEMA ${schema} CASCADE`);
      await cleanup.close();
    },
  };
}

let template: Promise<Blob> | undefined;

/**
 * The files of a freshly migrated PGlite database. Migrating takes PGlite about two seconds
 * and most suites start one or more databases, so the first test process to need it saves a
 * copy (keyed by the migrations' contents) in the temporary folder and every later one starts
 * from that copy. Written under a unique name and renamed into place, so concurrent workers
 * never read half a file.
 */
function migratedPglite(): Promise<Blob> {
  template ??= (async () => {
    const dir = path.join(import.meta.dirname, '../../src/db/migrations');
    const hash = createHash('sha256');
    for (const name of readdirSync(dir).sort()) hash.update(name).update(readFileSync(path.join(dir, name)));
    hash.update(readFileSync(path.join(import.meta.dirname, '../../src/db/migrate.ts')));
    const file = path.join(tmpdir(), `ferry-pglite-migrated-${hash.digest('hex').slice(0, 16)}.tar`);
    try {
      return new Blob([await readFile(file)]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const fresh = await pgliteDatabase();
    await migrateToLatest(fresh.db);
    const dump = await fresh.pglite.dumpDataDir('none');
    await fresh.close();
    const partial = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    await writeFile(partial, Buffer.from(await dump.arrayBuffer()));
    await rename(partial, file);
    return dump;
  })();
  return template;
}

/**
 * Drops the job queue's schema that a config on PostgreSQL created next to the test
 * schema (a PGlite queue lives and dies with its database). Without a test schema there is
 * nothing of the test's own to drop.
 */
export async function dropJobsSchema(config: Config): Promise<void> {
  if (!config.databaseUrl || !config.databaseSchema) return;
  const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
  await admin.exec(`DROP SCHEMA IF EXISTS ${jobsSchema(config)} CASCADE`);
  await admin.close();
}
