import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { CopyQuery } from '../src/db/database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { createTestDatabase, TEST_DATABASE_URL, type TestDatabase } from './support/databases.ts';

async function until(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return check();
}

describe('a COPY whose reader goes away stops (postgres)', () => {
  let t: TestDatabase;
  const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
  beforeAll(async () => {
    t = await createTestDatabase('postgres');
  });
  afterAll(async () => {
    await admin.close();
    await t.drop();
  });

  async function active(marker: string): Promise<number> {
    const rows = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE query LIKE ${`%${marker}%`} AND query NOT LIKE '%pg_stat_activity%' AND state = 'active'`.execute(
      admin.db,
    );
    return rows.rows[0]!.n;
  }

  it('cancels the statement on the server, also before its first row', async () => {
    const marker = `copy_cancel_${Date.now()}`;
    // Sorted after a sleep per row: the server works for a minute before it sends a byte,
    // so it never notices a closed socket by writing to it.
    const query: CopyQuery = {
      projection: `g, '${marker}'`,
      from: `FROM (SELECT g FROM generate_series(1, 1200) g WHERE pg_sleep(0.05) IS NOT NULL) s WHERE true{{KEY_RANGE}}`,
      key: ['g'],
      options: 'FORMAT csv',
    };
    const out = t.database.copyOut(query);
    out.on('error', () => {});
    expect(await until(async () => (await active(marker)) === 1, 5_000)).toBe(true);
    out.destroy();
    expect(await until(async () => (await active(marker)) === 0, 5_000)).toBe(true);
    // The pool still serves queries.
    await sql`SELECT 1`.execute(t.database.db);
  }, 30_000);
});

describe('a COPY whose reader goes away stops (pglite)', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase('pglite');
  });
  afterAll(() => t.drop());

  it('runs no further page', async () => {
    const pglite = (t.database as unknown as { pglite: { query: (...args: unknown[]) => unknown } }).pglite;
    const spy = vi.spyOn(pglite, 'query');
    const out = t.database.copyOut({
      projection: `g`,
      from: `FROM generate_series(1, 200000) g WHERE true{{KEY_RANGE}}`,
      key: ['g'],
      options: 'FORMAT csv',
    });
    await new Promise<void>((resolve, reject) => {
      out.once('data', () => resolve());
      out.once('error', reject);
    });
    out.pause();
    out.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const after = spy.mock.calls.length;
    await new Promise((r) => setTimeout(r, 1_000));
    expect(spy.mock.calls.length).toBe(after);
    expect(after).toBeLessThan(20);
    spy.mockRestore();
  }, 30_000);
});
