import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { createTestDatabase, dropJobsSchema, type TestDatabase, testsDialect } from './support/databases.ts';

const run = promisify(execFile);
const REPO = new URL('..', import.meta.url).pathname;

const VIP = {
  export_name: 'VIP Customer Conversations',
  filters: {
    customer_segments: ['enterprise', 'vip'],
    satisfaction_score: { min: 4 },
    conversation_value: { min: 1000 },
  },
  columns: [
    'conversation_id',
    'customer_name',
    'start_timestamp',
    'satisfaction_score',
    'attributed_revenue',
    'escalated',
  ],
  format: 'csv',
  schedule: 'weekly',
};

/** `ferry configs ...` as a user runs it, against the test schema. */
describe.skipIf(!testsDialect('postgres'))('ferry configs', () => {
  let t: TestDatabase;
  let tenant: TestTenant;
  let env: Record<string, string>;
  let dir: string;

  const ferry = async (...args: string[]) => {
    try {
      const { stdout, stderr } = await run('npx', ['ferry', 'configs', ...args], {
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
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-configs-cli-'));
    env = {
      ...t.env,
      FERRY_DATA_DIR: dir,
      FERRY_SECRET_KEY: 'configs-cli-test-secret-0123456789abcdef',
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'silent',
    };
    tenant = await createTenant(t.database, 'pro');
  });
  afterAll(async () => {
    await t?.drop();
    await dropJobsSchema(loadConfig(env));
  });

  it('creates from a file, refuses a bad definition in one line, lists, shows, updates, runs and deletes', {
    timeout: 240_000,
  }, async () => {
    const file = path.join(dir, 'vip.json');
    writeFileSync(file, JSON.stringify(VIP));
    const created = await ferry('create', '--tenant', tenant.slug, '--file', file);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^saved export configuration [0-9a-f-]{36}: VIP Customer Conversations/);
    const shownJson = await ferry('show', '--tenant', tenant.slug, 'VIP Customer Conversations', '--json');
    const saved = JSON.parse(shownJson.stdout) as { id: string; schedule_id: string; definition: unknown };
    expect(saved.definition).toEqual(VIP);
    expect(saved.schedule_id).toMatch(/^[0-9a-f-]{36}$/);

    const bad = await ferry(
      'create',
      '--tenant',
      tenant.slug,
      '--json',
      '{"export_name": "Bad", "columns": ["conversation_id", "shoe_size"]}',
    );
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/^ferry: .*shoe_size.*accepted: .*conversation_id/);
    const notJson = await ferry('create', '--tenant', tenant.slug, '--json', '{"export_name": ');
    expect(notJson.code).toBe(1);
    expect(notJson.stderr).toMatch(/^ferry: definition: --json is not JSON/);

    const list = await ferry('list', '--tenant', tenant.slug);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^ID\s+NAME\s+WRITES\s+SCHEDULE\s+LAST RUN/);
    expect(list.stdout).toContain('VIP Customer Conversations');

    const shown = await ferry('show', '--tenant', tenant.slug, 'vip customer conversations');
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain(`export configuration ${saved.id}: VIP Customer Conversations`);
    expect(shown.stdout).toContain('writes    conversations.csv');

    const updated = await ferry('update', '--tenant', tenant.slug, saved.id, '--json', '{"schedule": null}');
    expect(updated.code, updated.stderr).toBe(0);
    expect(updated.stdout).toContain('schedule  -');
    const schedules = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM schedules WHERE tenant_id = ${tenant.id}`.execute(t.database.db);
    expect(schedules.rows[0]!.n).toBe(0);

    const queued = await ferry('run', '--tenant', tenant.slug, 'VIP Customer Conversations');
    expect(queued.code, queued.stderr).toBe(0);
    const exportId = /^queued export ([0-9a-f-]{36}) \(queued\)/.exec(queued.stdout)?.[1];
    expect(exportId).toBeDefined();
    const row = await sql<{ status: string; config: { saved_config: { id: string } } }>`
      SELECT status, config FROM export_requests WHERE id = ${exportId!}`.execute(t.database.db);
    expect(row.rows[0]!.config.saved_config.id).toBe(saved.id);

    const deleted = await ferry('delete', '--tenant', tenant.slug, saved.id);
    expect(deleted.code, deleted.stderr).toBe(0);
    const gone = await ferry('show', '--tenant', tenant.slug, saved.id);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/^ferry: no export configuration/);
  });
});
