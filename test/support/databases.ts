import { randomBytes } from 'node:crypto';
import type { Database } from '../../src/db/database.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { pgliteDatabase } from '../../src/db/pglite-database.ts';
import { postgresDatabase } from '../../src/db/postgres-database.ts';

/** PostgreSQL used by the tests; every test database lives in a schema of its own. */
export const TEST_DATABASE_URL =
  process.env.FERRY_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export const DIALECTS = ['pglite', 'postgres'] as const;
export type Dialect = (typeof DIALECTS)[number];

export interface TestDatabase {
  database: Database;
  /** The PostgreSQL schema (postgres only). */
  schema: string | undefined;
  drop(): Promise<void>;
}

/** A fresh, migrated database: in-memory PGlite, or a new schema in PostgreSQL. */
export async function createTestDatabase(
  dialect: Dialect,
  options: { migrate?: boolean } = {},
): Promise<TestDatabase> {
  if (dialect === 'pglite') {
    const database = await pgliteDatabase({ pageRows: 1000 });
    if (options.migrate ?? true) await migrateToLatest(database.db);
    return { database, schema: undefined, drop: () => database.close() };
  }
  const schema = `ferry_test_${randomBytes(6).toString('hex')}`;
  const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
  await admin.exec(`CREATE SCHEMA ${schema}`);
  await admin.close();
  const database = postgresDatabase({ connectionString: TEST_DATABASE_URL, schema, max: 4 });
  if (options.migrate ?? true) await migrateToLatest(database.db);
  return {
    database,
    schema,
    async drop() {
      await database.close();
      const cleanup = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
      await cleanup.exec(`DROP SCHEMA ${schema} CASCADE`);
      await cleanup.close();
    },
  };
}
