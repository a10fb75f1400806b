import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { literal } from '../src/db/database.ts';
import { migrateToLatest, splitStatements } from '../src/db/migrate.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

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
