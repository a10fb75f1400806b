import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { literal } from '../src/db/database.ts';
import { migrateToLatest, splitStatements } from '../src/db/migrate.ts';
import { openDatabase } from '../src/db/open.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import {
  createTestDatabase,
  DIALECTS,
  TEST_DATABASE_URL,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';

describe('splitStatements', () => {
  it('keeps dollar-quoted bodies whole', () => {
    const parts = splitStatements(
      'CREATE TABLE a (x int);\nCREATE FUNCTION f() RETURNS int AS $$\nSELECT 1;\n$$ LANGUAGE sql;\nSELECT 2;',
    );
    expect(parts).toHaveLength(3);
    expect(parts[1]).toContain('SELECT 1;');
  });
});

describe('literal', () => {
  it('doubles quotes and refuses NUL', () => {
    expect(literal("O'Brien")).toBe("'O''Brien'");
    expect(literal(null)).toBe('NULL');
    expect(() => literal('a\0b')).toThrow(/NUL/);
  });
});

for (const dialect of DIALECTS) {
  describe(`database on ${dialect}`, () => {
    let t: TestDatabase;
    beforeAll(async () => {
      t = await createTestDatabase(dialect);
    });
    afterAll(() => t.drop());

    it('migrates idempotently', async () => {
      const again = await migrateToLatest(t.database.db);
      expect(again.applied).toEqual([]);
      const tables = await t.database.db.introspection.getTables();
      expect(tables.map((x) => x.name)).toEqual(
        expect.arrayContaining(['conversations', 'messages', 'tenants']),
      );
    });

    it('loads rows with copyIn and streams them back with keyset-paged copyOut', async () => {
      const tenant = '00000000-0000-4000-8000-000000000001';
      await t.database.db
        .insertInto('tenants')
        .values({ id: tenant, name: 'Acme', slug: 'acme', plan: 'pro', timezone: 'UTC', home_country: 'DE' })
        .execute();
      async function* rows() {
        for (let i = 0; i < 2500; i++) {
          const id = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
          yield `${id},${tenant},"Site ""${i}""",https://s${i}.example.com\n`;
        }
      }
      await t.database.copyIn('sites', ['id', 'tenant_id', 'name', 'url'], rows());
      const out = t.database.copyOut({
        projection: 'name',
        from: `FROM sites WHERE tenant_id = ${literal(tenant)}{{KEY_RANGE}}`,
        key: ['id'],
        options: 'FORMAT csv',
        header: true,
      });
      const chunks: Buffer[] = [];
      for await (const chunk of out) chunks.push(chunk as Buffer);
      const lines = Buffer.concat(chunks).toString('utf8').trimEnd().split('\n');
      expect(lines[0]).toBe('name');
      expect(lines).toHaveLength(2501);
      expect(lines[1]).toBe('"Site ""0"""');
      expect(lines[2500]).toBe('"Site ""2499"""');
      expect(new Set(lines).size).toBe(2501);
    });
  });
}

describe.skipIf(!testsDialect('postgres'))('prepared statements on postgres', () => {
  let t: TestDatabase;
  let one: ReturnType<typeof postgresDatabase>;
  beforeAll(async () => {
    t = await createTestDatabase('postgres', { migrate: false });
    await t.database.exec('CREATE TABLE prep (id int PRIMARY KEY, label text)');
    await t.database.exec("INSERT INTO prep VALUES (1, 'one'), (2, 'two')");
    // One connection, so what it prepared can be read back on it.
    one = postgresDatabase({ connectionString: TEST_DATABASE_URL, schema: t.schema!, max: 1 });
  });
  afterAll(async () => {
    await one.close();
    await t.drop();
  });

  const select = (id: number) =>
    one.db
      .selectFrom('prep' as never)
      .selectAll()
      .where('id' as never, '=', id as never)
      .executeTakeFirst();
  const prepared = async () =>
    (
      await sql<{ runs: number }>`
        SELECT generic_plans + custom_plans AS runs FROM pg_prepared_statements
        WHERE name LIKE 'ferry%' AND statement LIKE '%"prep"%'`.execute(one.db)
    ).rows;

  it('prepares a parameterized query once per connection and reuses it', async () => {
    expect(await select(1)).toEqual({ id: 1, label: 'one' });
    expect(await select(2)).toEqual({ id: 2, label: 'two' });
    expect(await select(1)).toEqual({ id: 1, label: 'one' });
    expect(await prepared()).toEqual([{ runs: 3 }]);
  });

  it('sends every query unnamed with DATABASE_PREPARED_STATEMENTS=off', async () => {
    const config = loadConfig({
      ...t.env,
      DATABASE_POOL_SIZE: '1',
      DATABASE_PREPARED_STATEMENTS: 'off',
    });
    const unnamed = await openDatabase(config, { migrate: false });
    try {
      for (const id of [1, 2, 1])
        await unnamed.db
          .selectFrom('prep' as never)
          .selectAll()
          .where('id' as never, '=', id as never)
          .executeTakeFirst();
      const held = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM pg_prepared_statements`.execute(unnamed.db);
      expect(held.rows[0]!.n).toBe(0);
    } finally {
      await unnamed.close();
    }
  });

  it('runs a statement again after a migration changed its result type under it', async () => {
    expect(await select(1)).toEqual({ id: 1, label: 'one' });
    // Another process (a migration) drops a column the prepared statement returns.
    await t.database.exec('ALTER TABLE prep ADD COLUMN extra int');
    await t.database.exec('ALTER TABLE prep DROP COLUMN label');
    expect(await select(1)).toEqual({ id: 1, extra: null });
    expect(await select(2)).toEqual({ id: 2, extra: null });
  });
});
