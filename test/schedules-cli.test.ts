import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobsSchema } from '../src/jobs/queue.ts';
import { scheduleDb } from '../src/schedules/tables.ts';
import { SCHEDULE_RUN_QUEUE } from '../src/schedules/tick.ts';
import { loadConfig } from '../src/config/config.ts';
import { createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { createTestDatabase, dropJobsSchema, type TestDatabase, testsDialect } from './support/databases.ts';

const run = promisify(execFile);
const REPO = new URL('..', import.meta.url).pathname;

/** `ferry schedules ...` as a user runs it, against the test schema. */
describe.skipIf(!testsDialect('postgres'))('ferry schedules', () => {
  let t: TestDatabase;
  let tenant: TestTenant;
  let env: Record<string, string>;
  let dir: string;

  const ferry = async (...args: string[]) => {
    try {
      const { stdout, stderr } = await run('npx', ['ferry', 'schedules', ...args], {
        cwd: REPO,
        env: { ...process.env, ...env },
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-schedules-cli-'));
    env = {
      ...t.env,
      FERRY_DATA_DIR: dir,
      FERRY_SECRET_KEY: 'schedules-cli-test-secret-0123456789abcdef',
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'silent',
    };
    tenant = await createTenant(t.database, 'pro');
  });
  afterAll(async () => {
    await t?.drop();
    await dropJobsSchema(loadConfig(env));
  });

  it('creates (from export_config or flags), lists, pauses, resumes, runs, shows history and deletes', {
    timeout: 240_000,
  }, async () => {
    const file = path.join(dir, 'backup.json');
    writeFileSync(
      file,
      JSON.stringify({
        export_config: {
          name: 'Daily Backup to S3',
          schedule: '0 2 * * *',
          data_types: ['conversations', 'analytics'],
          format: 'csv',
          compression: 'gzip',
          destination: {
            type: 's3',
            bucket: 'acme-backups',
            prefix: 'daily-exports/',
            access_key_id: 'AKIAIOSFODNN7EXAMPLE',
            secret_access_key: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
            region: 'us-east-1',
          },
          retention: { local: '7_days', s3: '1_year' },
        },
      }),
    );
    const fromFile = await ferry('create', '--tenant', tenant.slug, '--file', file, '--json');
    expect(fromFile.code, fromFile.stderr).toBe(0);
    const backup = JSON.parse(fromFile.stdout);
    expect(backup).toMatchObject({ name: 'Daily Backup to S3', cron: '0 2 * * *', status: 'active' });
    expect(backup.targets[0].secret_access_key).toBe('••••EKEY');
    expect(fromFile.stdout).not.toContain('wJalrXUtnFEMI');

    const fromFlags = await ferry(
      'create',
      '--tenant',
      tenant.id,
      '--name',
      'Weekly analytics',
      '--frequency',
      'weekly:mon,fri',
      '--time',
      '06:00',
      '--timezone',
      'UTC',
      '--datasets',
      'conversations,analytics:window:previous_day,messages:window:7',
    );
    expect(fromFlags.code, fromFlags.stderr).toBe(0);
    expect(fromFlags.stdout).toMatch(/created schedule [0-9a-f-]{36}: Weekly analytics \(active\)/);
    expect(fromFlags.stdout).toContain('weekly monday,friday 06:00 UTC');
    expect(fromFlags.stdout).toContain(
      'conversations:incremental, analytics:window:previous_day, messages:window:7d',
    );

    const bad = await ferry(
      'create',
      '--tenant',
      tenant.slug,
      '--name',
      'x',
      '--frequency',
      'daily',
      '--time',
      '25:61',
      '--datasets',
      'conversations',
    );
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^ferry: time: must be a time of day as HH:MM/m);

    const list = await ferry('list', '--tenant', tenant.slug);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^ID\s+NAME\s+STATUS\s+WHEN\s+NEXT RUN\s+LAST RUN/);
    expect(list.stdout).toContain('Daily Backup to S3');
    expect(list.stdout).toContain('Weekly analytics');

    const paused = await ferry('pause', '--tenant', tenant.slug, backup.id);
    expect(paused.stdout).toContain(`paused schedule ${backup.id}: Daily Backup to S3 (paused)`);
    expect(paused.stdout).toContain('next run  -');
    const resumed = await ferry('resume', '--tenant', tenant.slug, backup.id, '--json');
    expect(JSON.parse(resumed.stdout)).toMatchObject({ status: 'active', next_run_at: expect.any(String) });

    const queued = await ferry('run', '--tenant', tenant.slug, backup.id);
    expect(queued.code, queued.stderr).toBe(0);
    expect(queued.stdout).toMatch(/^queued run 1 \([0-9a-f-]{36}\) queued/);
    // The follow-up command it prints works as printed.
    const followUp = /follow it with `ferry schedules ([^`]+)`/.exec(queued.stdout)?.[1];
    expect(followUp).toBe(`history --tenant ${tenant.slug} ${backup.id}`);
    const followed = await ferry(...followUp!.split(' '));
    expect(followed.code, followed.stderr).toBe(0);
    expect(followed.stdout).toMatch(/^RUN\s+STATUS/);
    const runs = await scheduleDb(t.database)
      .selectFrom('schedule_runs')
      .selectAll()
      .where('schedule_id', '=', backup.id)
      .execute();
    expect(runs).toMatchObject([{ run_number: 1, trigger: 'manual', actor: 'cli', status: 'queued' }]);
    const jobs = await t.database.db
      .withTables<{ job: { name: string; data: { id: string } } }>()
      .selectFrom(`${jobsSchema(loadConfig(env))}.job` as 'job')
      .select('data')
      .where('name', '=', SCHEDULE_RUN_QUEUE)
      .execute();
    expect(jobs.map((j) => j.data.id)).toEqual([runs[0]!.id]);

    const history = await ferry('history', '--tenant', tenant.slug, backup.id, '--json');
    expect(JSON.parse(history.stdout)).toMatchObject([{ id: runs[0]!.id, status: 'queued', run_number: 1 }]);
    const table = await ferry('history', '--tenant', tenant.slug, backup.id);
    expect(table.stdout).toMatch(
      /^RUN\s+STATUS\s+DUE\s+FINISHED\s+RECORDS\s+DELETIONS\s+BYTES\s+SHA-256\s+DELIVERIES/,
    );

    const deleted = await ferry('delete', '--tenant', tenant.slug, backup.id);
    expect(deleted.stdout).toContain(`deleted schedule ${backup.id}`);
    const after = await ferry('list', '--tenant', tenant.slug, '--json');
    expect(JSON.parse(after.stdout).map((s: { name: string }) => s.name)).toEqual(['Weekly analytics']);
    const missing = await ferry('delete', '--tenant', tenant.slug, backup.id);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`no schedule "${backup.id}" in this tenant`);
  });
});
