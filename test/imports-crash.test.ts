import { spawn } from 'node:child_process';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EntityReport } from '../src/imports/engine.ts';
import { seed } from '../src/seed/seed.ts';
import { runFerry } from './support/cli.ts';
import { createTestDatabase, type TestDatabase, testsDialect } from './support/databases.ts';
import { comparePackages, emptyTenantLike, exportPackageDir, idMap } from './support/imports.ts';
import { until } from './support/wait.ts';

const BIN = path.join(new URL('..', import.meta.url).pathname, 'bin/ferry.js');
const SECRET = 'import-crash-secret-key-0123456789abcdef';

/**
 * A worker killed (SIGKILL) in the middle of an import: the import resumes after its last
 * committed batch, and the tenant ends up exactly as after an uninterrupted import, with the
 * same report.
 */
describe.skipIf(!testsDialect('postgres'))('an import killed midway resumes (PostgreSQL)', () => {
  let t: TestDatabase;
  let env: NodeJS.ProcessEnv;
  let source: string;
  let pkg: string;

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    const summary = await seed(t.database, {
      tenants: 1,
      conversations: 120,
      messagesPerConversation: 8,
      seed: 41,
      since: new Date('2025-09-01T00:00:00Z'),
      until: new Date('2026-09-01T00:00:00Z'),
      secretKey: SECRET,
    });
    source = summary.tenants[0]!.id;
    pkg = await exportPackageDir(t.database, source);
    env = {
      ...process.env,
      ...t.env,
      FERRY_SECRET_KEY: SECRET,
      FERRY_DEMO: 'off',
      FERRY_IMPORT_BATCH_SIZE: '25',
      LOG_LEVEL: 'silent',
    };
  }, 180_000);

  afterAll(async () => {
    await t?.drop();
  });

  it('continues after its last committed batch and equals an uninterrupted import', async () => {
    const killed = await emptyTenantLike(t.database, source);
    const child = spawn(
      process.execPath,
      [BIN, 'import', 'apply', '--tenant', killed, '--source', 'ferry', pkg],
      {
        env,
        stdio: 'ignore',
      },
    );
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('exit', (_code, signal) => resolve(signal)),
    );
    // Kill it once some messages are committed (the package has ~1,000 in batches of 25).
    const row = await until('the import to commit message batches', async () => {
      const { rows } = await sql<{
        id: string;
        items_done: number;
        phase: string | null;
      }>`SELECT id, items_done::int, phase
        FROM imports WHERE tenant_id = ${killed}`.execute(t.database.db);
      return rows[0]?.phase === 'messages' && rows[0].items_done > 0 ? rows[0] : undefined;
    });
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    const stopped = await sql<{
      status: string;
      items_done: number;
    }>`SELECT status, items_done::int FROM imports WHERE id = ${row.id}`.execute(t.database.db);
    expect(stopped.rows[0]!.status).toBe('running');
    const partial = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM messages WHERE tenant_id = ${killed}`.execute(t.database.db);
    const total = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM messages WHERE tenant_id = ${source}`.execute(t.database.db);
    expect(partial.rows[0]!.n).toBeGreaterThan(0);
    expect(partial.rows[0]!.n).toBeLessThan(total.rows[0]!.n);

    const resumed = await runFerry(['import', 'resume', row.id, '--tenant', killed, '--json'], { env });
    expect(resumed.code, resumed.stderr).toBe(0);
    const report = JSON.parse(resumed.stdout) as {
      status: string;
      report: { entities: Record<string, EntityReport> };
    };
    expect(report.status).toBe('completed');

    const whole = await emptyTenantLike(t.database, source);
    const straight = await runFerry(
      ['import', 'apply', '--tenant', whole, '--source', 'ferry', pkg, '--json'],
      { env },
    );
    expect(straight.code, straight.stderr).toBe(0);
    const expected = JSON.parse(straight.stdout) as { report: { entities: Record<string, EntityReport> } };
    const counts = (r: { entities: Record<string, EntityReport> }) =>
      Object.fromEntries(
        Object.entries(r.entities).map(([k, v]) => [
          k,
          [v.created, v.updated, v.unchanged, v.conflicts, v.rejected],
        ]),
      );
    // The resumed import's report counts each item once, as the uninterrupted one does.
    expect(counts(report.report)).toEqual(counts(expected.report));

    for (const tenant of [killed, whole]) {
      const ids = await idMap(t.database, tenant);
      ids.set(source, tenant);
      const { differences, compared } = comparePackages(pkg, await exportPackageDir(t.database, tenant), ids);
      expect(differences, tenant === killed ? 'the resumed import' : 'the uninterrupted import').toEqual([]);
      expect(compared).toBeGreaterThan(100);
    }
  }, 300_000);
});
