/**
 * Text Ferry inlines into SQL (COPY takes no bind parameters) must mean the same whatever
 * `standard_conforming_strings` the server, database or role defaults to. With the setting
 * off, a backslash in a plain '…' literal escapes the next character, so a site URL
 * ending in `\'` used to end the literal early and break the export with a syntax error.
 * Each database here defaults the setting to off in a way that touches no other suite: a
 * role of its own on PostgreSQL, a data directory of its own on PGlite.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, literal } from '../src/db/database.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { pgliteDatabase } from '../src/db/pglite-database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { seed } from '../src/seed/seed.ts';
import { authTestConfig, bearer, keysByRole, withMembers } from './support/fixtures/auth.ts';
import { DIALECTS, type Dialect, TEST_DATABASE_URL } from './support/databases.ts';

const TRICKY = ["x\\'", '\\', "\\'; SELECT 1; --", 'a\\nb', "O'Brien", "\\\\''"];

/** A database whose sessions default to standard_conforming_strings = off. */
async function nonStandardDatabase(dialect: Dialect): Promise<{ database: Database; drop(): Promise<void> }> {
  if (dialect === 'pglite') {
    const dir = await mkdtemp(path.join(tmpdir(), 'ferry-scs-'));
    const setup = await pgliteDatabase({ dataDir: dir });
    // PGlite applies no per-database settings at start, but reads postgresql.auto.conf.
    await setup.exec('ALTER SYSTEM SET standard_conforming_strings = off');
    await setup.close();
    const database = await pgliteDatabase({ dataDir: dir });
    return {
      database,
      async drop() {
        await database.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `ferry_test_scs_${randomBytes(6).toString('hex')}`;
  const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
  await admin.exec(
    `CREATE ROLE ${name} LOGIN; ALTER ROLE ${name} SET standard_conforming_strings = off; CREATE SCHEMA ${name} AUTHORIZATION ${name}`,
  );
  const url = new URL(TEST_DATABASE_URL);
  url.username = name;
  url.password = '';
  const database = postgresDatabase({ connectionString: url.toString(), schema: name, max: 2 });
  return {
    database,
    async drop() {
      await database.close();
      await admin.exec(`DROP SCHEMA ${name} CASCADE; DROP OWNED BY ${name}; DROP ROLE ${name}`);
      await admin.close();
    },
  };
}

describe('literal', () => {
  it('writes text with a backslash as an escape string, and other text as a plain one', () => {
    expect(literal("x\\'")).toBe("E'x\\\\'''");
    expect(literal('C:\\dir')).toBe("E'C:\\\\dir'");
    expect(literal("O'Brien")).toBe("'O''Brien'");
  });
});

for (const dialect of DIALECTS) {
  describe(`SQL literals where standard_conforming_strings defaults to off, on ${dialect}`, () => {
    let database: Database;
    let drop: () => Promise<void>;

    beforeAll(async () => {
      ({ database, drop } = await nonStandardDatabase(dialect));
      await migrateToLatest(database.db);
    });
    afterAll(async () => {
      await drop?.();
    });

    it('runs every connection with standard strings', async () => {
      for (let i = 0; i < 3; i++) {
        const { rows } = await sql<{
          standard_conforming_strings: string;
        }>`SHOW standard_conforming_strings`.execute(database.db);
        expect(rows[0]!.standard_conforming_strings).toBe('on');
      }
    });

    it('quotes text so that it reads back unchanged even in a session with the setting off', async () => {
      await database.db.transaction().execute(async (trx) => {
        await sql`SET LOCAL standard_conforming_strings = off`.execute(trx);
        for (const text of TRICKY) {
          const { rows } = await sql.raw<{ v: string }>(`SELECT ${literal(text)} AS v`).execute(trx);
          expect(rows[0]!.v, text).toBe(text);
        }
      });
      for (const text of TRICKY) {
        const { rows } = await sql.raw<{ v: string }>(`SELECT ${literal(text)} AS v`).execute(database.db);
        expect(rows[0]!.v, text).toBe(text);
      }
    });

    describe('over HTTP', () => {
      let app: FerryApp;
      let key: string;
      let siteUrl: string;
      let expected: number;

      beforeAll(async () => {
        const summary = await seed(database, {
          tenants: 1,
          conversations: 12,
          messagesPerConversation: 2,
          seed: 3,
          since: new Date('2026-08-01T00:00:00Z'),
          until: new Date('2026-09-01T00:00:00Z'),
          secretKey: 'sql-literals-test-secret-key-0123456789',
        });
        const tenant = await withMembers(database, summary.tenants[0]!);
        key = (await keysByRole(database, tenant)).admin;
        const site = await database.db
          .selectFrom('conversations')
          .select(['site_id', (eb) => eb.fn.countAll<number>().as('n')])
          .where('tenant_id', '=', tenant.id)
          .groupBy('site_id')
          .orderBy('n', 'desc')
          .executeTakeFirstOrThrow();
        expected = Number(site.n);
        siteUrl = "https://shop.example/x\\'";
        await database.db.updateTable('sites').set({ url: siteUrl }).where('id', '=', site.site_id).execute();
        app = await buildApp({ database, config: authTestConfig() });
      });
      afterAll(async () => {
        await app?.close();
      });

      it("treats site_url=…x%5C%27 as a value: the site's conversations, not a syntax error", async () => {
        const res = await app.inject({
          url: `/api/v1/export/conversations?format=ndjson&site_url=${encodeURIComponent(siteUrl)}`,
          headers: bearer(key),
        });
        expect(res.statusCode, res.body.slice(0, 300)).toBe(200);
        const rows = res.body
          .split('\n')
          .filter(Boolean)
          .map((line) => JSON.parse(line) as { site_url: string });
        expect(rows).toHaveLength(expected);
        expect(new Set(rows.map((r) => r.site_url))).toEqual(new Set([siteUrl]));
      });
    });
  });
}
