import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBackups } from '../src/backup/catalog.ts';
import { backupContext } from '../src/backup/context.ts';
import { type BackupContext, verifyBackup } from '../src/backup/service.ts';
import type { Config } from '../src/config/config.ts';
import { seed } from '../src/seed/seed.ts';
import { testAdapters } from './support/keyring.ts';
import { tenantRows } from './support/backup.ts';
import { runFerry } from './support/cli.ts';
import { createTestDatabase, type TestDatabase, testsDialect } from './support/databases.ts';
import { authTestConfig } from './support/fixtures/auth.ts';

const SECRET = 'backup-crash-secret-key-0123456789abcdef';
const BIN = path.join(new URL('..', import.meta.url).pathname, 'bin/ferry.js');

/** Starts `ferry …` and kills it (SIGKILL) `afterMs` after `started()` resolves, or lets it finish; resolves with how it ended. */
function runAndKill(
  args: string[],
  env: NodeJS.ProcessEnv,
  afterMs: number,
  started: () => Promise<void> = async () => {},
): Promise<'killed' | 'finished'> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: 'ignore' });
    let timer: NodeJS.Timeout | undefined;
    let exited = false;
    void started().then(() => {
      if (!exited) timer = setTimeout(() => child.kill('SIGKILL'), afterMs);
    }, reject);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      exited = true;
      clearTimeout(timer);
      resolve(signal === 'SIGKILL' ? 'killed' : code === 0 ? 'finished' : 'killed');
    });
  });
}

/** Random points of the work of a run (after `startMs` of process start), which takes about `workMs`: early, middle, late. */
const points = (startMs: number, workMs: number) =>
  [0.15, 0.45, 0.8].map((f) => Math.round(startMs + workMs * f * (0.75 + Math.random() / 2)));

/** How long `ferry …` takes. */
async function timed(args: string[], env: NodeJS.ProcessEnv): Promise<{ ms: number; stdout: string }> {
  const started = Date.now();
  const result = await runFerry(args, { env });
  if (result.code !== 0) throw new Error(result.stderr);
  return { ms: Date.now() - started, stdout: result.stdout };
}

describe.skipIf(!testsDialect('postgres'))(
  'backups and restores killed at random points (PostgreSQL)',
  () => {
    let t: TestDatabase;
    let config: Config;
    let env: NodeJS.ProcessEnv;
    let ctx: BackupContext;
    let tenantId: string;
    let slug: string;

    beforeAll(async () => {
      t = await createTestDatabase('postgres');
      const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-crash-'));
      env = {
        ...process.env,
        ...t.env,
        FERRY_DATA_DIR: dataDir,
        FERRY_SECRET_KEY: SECRET,
        LOG_LEVEL: 'silent',
        FERRY_DEMO: 'off',
      };
      config = authTestConfig({ ...t.env, FERRY_DATA_DIR: dataDir, FERRY_SECRET_KEY: SECRET });
      const keys = await testAdapters(t.database, config);
      ctx = backupContext({ database: t.database, config, store: keys.store, secrets: keys.secrets });
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 1500,
        messagesPerConversation: 8,
        seed: 77,
        since: new Date('2025-01-01T00:00:00Z'),
        until: new Date('2026-06-01T00:00:00Z'),
        secretKey: SECRET,
      });
      tenantId = summary.tenants[0]!.id;
      slug = (
        await sql<{ slug: string }>`SELECT slug FROM tenants WHERE id = ${tenantId}`.execute(t.database.db)
      ).rows[0]!.slug;
    }, 240_000);
    afterAll(async () => t?.drop());

    it('leaves every listed backup complete and verifiable, and nothing half-listed', async () => {
      // The points are measured from the moment the run's `running` row appears, not from process
      // start: how long a process takes to start varies more than the backup itself takes.
      const count = async () =>
        Number(
          (
            await sql<{ n: string }>`SELECT count(*) AS n FROM backups WHERE tenant_id = ${tenantId}`.execute(
              t.database.db,
            )
          ).rows[0]!.n,
        );
      const started = async () => {
        const before = await count();
        return async () => {
          while ((await count()) === before) await new Promise((r) => setTimeout(r, 5));
        };
      };
      let seenAt = 0;
      const calibrate = await started();
      const calibration = runAndKill(['backup', 'create', '--tenant', slug], env, 600_000, async () => {
        await calibrate();
        seenAt = Date.now();
      });
      expect(await calibration).toBe('finished');
      const work = Date.now() - seenAt;
      const outcomes: string[] = [];
      for (const at of points(0, work))
        outcomes.push(await runAndKill(['backup', 'create', '--tenant', slug], env, at, await started()));
      expect(outcomes).toContain('killed');
      const listed = await listBackups(t.database.db, tenantId);
      const all = await listBackups(t.database.db, tenantId, { all: true });
      // A killed run is listed only if it had finished its backup before the signal (its process
      // was ending); otherwise at most a `running` row is left. Each listed one is whole.
      expect(listed.length).toBeGreaterThanOrEqual(1 + outcomes.filter((o) => o === 'finished').length);
      expect(listed.length).toBeLessThanOrEqual(1 + outcomes.length);
      expect(all.filter((b) => b.status === 'completed').length).toBe(listed.length);
      expect(all.filter((b) => b.status === 'running').length).toBeLessThanOrEqual(
        outcomes.filter((o) => o === 'killed').length,
      );
      for (const b of listed)
        expect((await verifyBackup(ctx, { tenantId, backupId: b.id, level: 'full', actor: 'test' })).ok).toBe(
          true,
        );
      // A new backup after the crashes is whole too.
      const after = await runFerry(['backup', 'create', '--tenant', slug, '--json'], { env });
      expect(after.code, after.stderr).toBe(0);
      const id = JSON.parse(after.stdout).id as string;
      expect((await verifyBackup(ctx, { tenantId, backupId: id, level: 'full', actor: 'test' })).ok).toBe(
        true,
      );
    }, 300_000);

    it('leaves the restore target as it was or fully restored', async () => {
      const compare = { skip: ['audit_events', 'tenants'], ignore: ['updated_at', 'last_updated'] };
      const backupId = (await listBackups(t.database.db, tenantId))[0]!.id;
      const atBackup = await tenantRows(t.database, tenantId, compare);
      // Change the tenant so "as it was" and "restored" differ.
      await sql`DELETE FROM conversations WHERE id IN (
      SELECT id FROM conversations WHERE tenant_id = ${tenantId} ORDER BY start_timestamp DESC LIMIT 50)`.execute(
        t.database.db,
      );
      const changed = await tenantRows(t.database, tenantId, compare);
      expect(changed).not.toEqual(atBackup);

      const args = ['backup', 'restore', backupId, '--tenant', slug, '--replace', '--yes'];
      const start = (await timed(['backup', 'list', '--tenant', slug], env)).ms;
      let state = changed;
      // A restore (with its backup of the current state first) takes a few backups' time.
      for (const at of points(start, 4000)) {
        const outcome = await runAndKill(args, env, at);
        const now = await tenantRows(t.database, tenantId, compare);
        if (outcome === 'finished') expect(now).toEqual(atBackup);
        else expect([JSON.stringify(state), JSON.stringify(atBackup)]).toContain(JSON.stringify(now));
        state = now;
      }
      const finished = await runFerry(args, { env });
      expect(finished.code, finished.stderr).toBe(0);
      expect(await tenantRows(t.database, tenantId, compare)).toEqual(atBackup);
    }, 300_000);
  },
);
