import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit } from '../src/auth/audit.ts';
import type { Plan } from '../src/auth/context.ts';
import { MANUAL_EXPORTS_METRIC, monthlyExports, monthWindow, planLimits } from '../src/auth/quotas.ts';
import { authDb } from '../src/auth/tables.ts';
import { loadConfig } from '../src/config/config.ts';
import { openDatabase } from '../src/db/open.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { cliAuth } from '../src/export-requests/local-export.ts';
import { getExport, listExports } from '../src/export-requests/service.ts';
import { createLogger } from '../src/lib/logger.ts';
import { DIALECTS, TEST_DATABASE_URL } from './support/databases.ts';

const exec = promisify(execFile);
const BIN = path.resolve('bin/ferry.js');

for (const dialect of DIALECTS) {
  describe(`ferry export leaves the same record as an API export (${dialect})`, () => {
    let env: NodeJS.ProcessEnv;
    let work: string;
    const schema = `ferry_cli_rec_${process.pid}_${Date.now()}`;

    async function ferry(...args: string[]) {
      try {
        const { stdout, stderr } = await exec(process.execPath, [BIN, ...args], { env, maxBuffer: 64 << 20 });
        return { code: 0, stdout, stderr };
      } catch (err) {
        const e = err as { code: number; stdout: string; stderr: string };
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
      }
    }

    /** Opens the database the CLI used (after it exited: PGlite holds one process at a time). */
    async function inspect<T>(fn: (database: Awaited<ReturnType<typeof openDatabase>>) => Promise<T>) {
      const database = await openDatabase(loadConfig(env));
      try {
        return await fn(database);
      } finally {
        await database.close();
      }
    }

    beforeAll(async () => {
      work = await mkdtemp(path.join(tmpdir(), 'ferry-cli-rec-'));
      env = {
        ...process.env,
        FERRY_DATA_DIR: work,
        LOG_LEVEL: 'silent',
        ...(dialect === 'postgres' ? { DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: schema } : {}),
      };
      if (dialect === 'pglite') delete env.DATABASE_URL;
    });
    afterAll(async () => {
      if (dialect === 'postgres') {
        const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
        await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await admin.close();
      }
      await rm(work, { recursive: true, force: true });
    });

    it('lists, audits and counts every CLI export, and refuses one over the monthly quota', async () => {
      expect((await ferry('migrate')).code).toBe(0);
      const seeded = await ferry('seed', '--tenants', '1', '--conversations', '12', '--seed', '3');
      expect(seeded.code).toBe(0);
      // Not a terminal: progress comes as lines, one per phase at least.
      expect(seeded.stderr).toMatch(/^seed: accounts \(0\/\d+ messages, 0%\)$/m);
      expect(seeded.stderr).toMatch(/^seed: messages \(/m);
      expect(seeded.stderr).toMatch(/^seed: done \(\d+\/\d+ messages, 100%\)$/m);
      const [tenant] = JSON.parse((await ferry('tenants', '--json')).stdout) as {
        id: string;
        slug: string;
        plan: string;
      }[];
      const plan = tenant!.plan as Plan;
      const limit = planLimits(plan).exportsPerMonth!;
      expect(limit).toBeGreaterThan(3);

      const file = path.join(work, 'conversations.csv');
      const toFile = await ferry(
        'export',
        '--tenant',
        tenant!.slug,
        '--dataset',
        'conversations',
        '--format',
        'csv',
        '--out',
        file,
      );
      expect(toFile.code, toFile.stderr).toBe(0);
      const piped = await ferry(
        'export',
        '--tenant',
        tenant!.slug,
        '--dataset',
        'messages',
        '--format',
        'ndjson',
        '--out',
        '-',
      );
      expect(piped.code, piped.stderr).toBe(0);
      expect(piped.stderr).toBe('');
      const zip = path.join(work, 'company.zip');
      const pkg = await ferry(
        'export',
        '--tenant',
        tenant!.slug,
        '--package',
        'zip',
        '--datasets',
        'conversations',
        '--out',
        zip,
      );
      expect(pkg.code, pkg.stderr).toBe(0);

      const auth = cliAuth({ id: tenant!.id, plan });
      await inspect(async (database) => {
        const deps = {
          database,
          config: loadConfig(env),
          queue: undefined,
          store: undefined,
          signer: undefined,
          now: () => new Date(),
          logger: createLogger({ logLevel: 'silent' }),
        };
        const { data } = await listExports(deps as never, auth, {});
        expect(data).toHaveLength(3);
        expect(data.map((e) => e.status)).toEqual(['completed', 'completed', 'completed']);
        expect(data.map((e) => e.datasets.join(','))).toEqual(['conversations', 'messages', 'conversations']);
        const [packaged, streamed, written] = data;
        expect(packaged!.kind).toBe('package');
        expect(streamed!.files[0]).toMatchObject({ records: piped.stdout.trimEnd().split('\n').length });
        const bytes = await readFile(file);
        expect(written!.files[0]).toMatchObject({
          name: 'conversations.csv',
          bytes: bytes.length,
          records: 12,
        });
        expect(toFile.stderr).toContain(written!.files[0]!.sha256);
        expect(written!.progress).toMatchObject({ records: 12, percentage: 100 });
        expect(written!.links.download).toBeUndefined();
        expect((await getExport(deps as never, auth, written!.id)).id).toBe(written!.id);

        const audit = await listAudit(database, auth, { limit: 50 });
        const exports = audit.items.filter((e) => e.action.startsWith('export.'));
        expect(exports.filter((e) => e.action === 'export.requested')).toHaveLength(3);
        expect(exports.filter((e) => e.action === 'export.completed')).toHaveLength(3);
        expect(new Set(exports.map((e) => e.actor))).toEqual(new Set(['cli']));
        expect(await monthlyExports(database, tenant!.id, new Date())).toBe(3);

        // Use up the plan's month.
        await authDb(database)
          .insertInto('usage_counters')
          .values({
            tenant_id: tenant!.id,
            metric: MANUAL_EXPORTS_METRIC,
            period_start: monthWindow(new Date()).start,
            shard: 100,
            count: limit - 3,
          })
          .execute();
      });

      const refused = await ferry(
        'export',
        '--tenant',
        tenant!.slug,
        '--dataset',
        'conversations',
        '--out',
        path.join(work, 'x.csv'),
      );
      expect(refused.code).toBe(1);
      const lines = refused.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^ferry: .*${limit}.*export`));
      await inspect(async (database) => {
        expect(await monthlyExports(database, tenant!.id, new Date())).toBe(limit);
      });
    }, 120_000);
  });
}
