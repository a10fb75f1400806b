import { randomUUID } from 'node:crypto';
import { type AddressInfo, createServer } from 'node:net';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import {
  createTestDatabase,
  preferDialect,
  TEST_DATABASE_URL,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';
import { ALL_DIALECTS, selectDialects } from './support/dialects.ts';
import { createTenant } from './support/fixtures/auth.ts';
import { ensureTestPostgres } from './support/postgres-server.ts';
import { waitForExport } from './support/wait.ts';

describe('FERRY_TEST_DIALECTS', () => {
  it('selects every dialect when unset or empty', () => {
    expect(selectDialects(undefined)).toEqual(ALL_DIALECTS);
    expect(selectDialects('')).toEqual(ALL_DIALECTS);
    expect(selectDialects(' , ')).toEqual(ALL_DIALECTS);
  });

  it('narrows to the named dialects, in the usual order', () => {
    expect(selectDialects('pglite')).toEqual(['pglite']);
    expect(selectDialects(' postgres ')).toEqual(['postgres']);
    expect(selectDialects('postgres,pglite')).toEqual(['pglite', 'postgres']);
  });

  it('fails loudly on an unknown name', () => {
    expect(() => selectDialects('pglite,mysql')).toThrow(/unknown dialect 'mysql'/);
    expect(() => selectDialects('PGlite')).toThrow(/known: pglite, postgres/);
  });
});

describe('waiting for an export', () => {
  let t: TestDatabase;
  let tenantId: string;
  beforeAll(async () => {
    t = await createTestDatabase(preferDialect('pglite'));
    tenantId = (await createTenant(t.database)).id;
  });
  afterAll(() => t?.drop());

  async function exportIn(status: string): Promise<string> {
    const id = randomUUID();
    await sql`INSERT INTO export_requests (id, tenant_id, actor, status, kind, datasets, config, retention_days,
        error_code, error_message)
      VALUES (${id}, ${tenantId}, 'test', ${status}, 'dataset', ${['sites']}::text[], '{}'::jsonb, 7,
        ${status === 'failed' ? 'internal' : null}, ${status === 'failed' ? 'disk full' : null})`.execute(
      t.database.db,
    );
    return id;
  }

  it('returns the stored row once it is in a target state', async () => {
    const id = await exportIn('running');
    const waiting = waitForExport(t.database, id, ['completed']);
    await sql`UPDATE export_requests SET status = 'completed' WHERE id = ${id}`.execute(t.database.db);
    expect(await waiting).toMatchObject({ id, status: 'completed', attempts: 0, records_done: 0 });
  });

  it('fails at once, with the stored error, when the target cannot be reached any more', async () => {
    const id = await exportIn('failed');
    const started = Date.now();
    await expect(waitForExport(t.database, id, ['completed'], { timeoutMs: 30_000 })).rejects.toThrow(
      /can no longer be completed; last state of export .*"status":"failed".*"error_message":"disk full"/,
    );
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('says which state it was stuck in when the time runs out', async () => {
    const id = await exportIn('running');
    await expect(
      waitForExport(t.database, id, ['completed'], { timeoutMs: 100, context: () => 'worker output' }),
    ).rejects.toThrow(
      /timed out after 100 ms waiting for export .* to be completed\nlast state of export .*"status":"running".*\nworker output/,
    );
  });
});

describe.skipIf(!testsDialect('postgres'))('a PostgreSQL for the tests', () => {
  const closed = async () => {
    // A port that was free a moment ago: nothing answers there.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise((resolve) => probe.close(resolve));
    return `postgres://postgres@127.0.0.1:${port}/test`;
  };

  it('uses the configured server when it answers', async () => {
    const server = await ensureTestPostgres({ url: TEST_DATABASE_URL, ci: true, log: () => {} });
    expect(server).toMatchObject({ url: TEST_DATABASE_URL, embedded: false });
  });

  it("refuses to fall back on CI, which tests against the machine's server", async () => {
    await expect(ensureTestPostgres({ url: await closed(), ci: true, log: () => {} })).rejects.toThrow(
      /not reachable at postgres:\/\/postgres@127\.0\.0\.1:\d+\/test/,
    );
  });

  it('starts an embedded PostgreSQL with a test database when none answers, and removes it afterwards', async () => {
    const lines: string[] = [];
    const server = await ensureTestPostgres({
      url: await closed(),
      ci: false,
      log: (line) => lines.push(line),
    });
    try {
      expect(server.embedded).toBe(true);
      expect(lines.join('\n')).toMatch(/starting an embedded PostgreSQL/);
      const database = postgresDatabase({ connectionString: server.url, max: 1 });
      try {
        const rows = await sql<{ name: string }>`select current_database() as name`.execute(database.db);
        expect(rows.rows[0]?.name).toBe('test');
      } finally {
        await database.close();
      }
    } finally {
      await server.stop();
    }
    const client = new pg.Client({ connectionString: server.url, connectionTimeoutMillis: 2000 });
    client.on('error', () => {});
    await expect(client.connect()).rejects.toThrow(/ECONNREFUSED/);
    await client.end().catch(() => {});
  });
});
