import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authDb } from '../src/auth/tables.ts';
import { loadConfig } from '../src/config/config.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { bearer, createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { createTestDatabase, type TestDatabase, testsDialect } from './support/databases.ts';

const run = promisify(execFile);
const execute = run;
const REPO = new URL('..', import.meta.url).pathname;

/** `ferry keys ...` as a user runs it, against the test schema. */
describe.skipIf(!testsDialect('postgres'))('ferry keys', () => {
  let t: TestDatabase;
  let app: FerryApp;
  let tenant: TestTenant;
  let env: Record<string, string>;

  const ferry = async (...args: string[]) => {
    try {
      const { stdout } = await run('npx', ['ferry', 'keys', ...args], {
        cwd: REPO,
        env: { ...process.env, ...env },
      });
      return { code: 0, stdout, stderr: '' };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-cli-'));
    env = {
      ...t.env,
      FERRY_DATA_DIR: dataDir,
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'silent',
    };
    // The server shares the CLI's data dir, and so its key pepper.
    app = await buildApp({ database: t.database, config: loadConfig(env) });
    tenant = await createTenant(t.database, 'pro');
  });
  afterAll(async () => {
    await app?.close();
    await t?.drop();
  });

  it('creates a key that the server accepts, lists it without the key, and revokes it', {
    timeout: 120_000,
  }, async () => {
    const created = await ferry(
      'create',
      '--tenant',
      tenant.slug,
      '--role',
      'admin',
      '--name',
      'ops',
      '--json',
    );
    expect(created.code, created.stderr).toBe(0);
    const key = JSON.parse(created.stdout);
    expect(key.key).toMatch(/^fy_live_[0-9A-Za-z]{43}$/);
    expect(key).toMatchObject({ role: 'admin', name: 'ops', createdBy: 'cli' });

    const ok = await app.inject({ url: '/api/v1/api-keys', headers: bearer(key.key) });
    expect(ok.statusCode).toBe(200);

    // --json prints what GET /api/v1/api-keys answers: the same snake_case keys.
    const json = JSON.parse((await ferry('list', '--tenant', tenant.slug, '--json')).stdout) as object[];
    const api = (await app.inject({ url: '/api/v1/api-keys', headers: bearer(key.key) })).json() as {
      data: object[];
    };
    expect(json).toEqual(api.data.map((k) => ({ ...k, last_used_at: expect.anything() })));
    expect(json[0]).toMatchObject({ id: key.id, created_by: 'cli', team_member_id: null, status: 'active' });
    expect(JSON.stringify(json)).not.toMatch(/createdBy|teamMemberId/);

    const listed = await ferry('list', '--tenant', tenant.id);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(key.prefix);
    expect(listed.stdout).toContain('active');
    expect(listed.stdout).not.toContain(key.key.slice(16));

    const revoked = await ferry('revoke', '--tenant', tenant.slug, key.id);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toContain(`revoked API key ${key.id}`);
    expect((await app.inject({ url: '/api/v1/api-keys', headers: bearer(key.key) })).statusCode).toBe(401);

    const actions = await authDb(t.database)
      .selectFrom('audit_events')
      .select(['action', 'actor'])
      .where('target_id', '=', key.id)
      .orderBy('occurred_at')
      .execute();
    expect(actions).toEqual([
      { action: 'api_key.created', actor: 'cli' },
      { action: 'api_key.revoked', actor: 'cli' },
    ]);
  });

  it('prints the key once in plain output, and refuses bad input with one clear line', {
    timeout: 120_000,
  }, async () => {
    const created = await ferry(
      'create',
      '--tenant',
      tenant.slug,
      '--role',
      'agent',
      '--team-member',
      tenant.members.agent,
      '--expires-in-days',
      '7',
    );
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/key {5}fy_live_[0-9A-Za-z]{43}\n/);
    expect(created.stdout).toMatch(/only time the key is shown/);
    expect(created.stdout).toMatch(/expires 20\d\d-/);

    const agent = await ferry('create', '--tenant', tenant.slug, '--role', 'agent');
    expect(agent.code).toBe(1);
    // (npx may print its own warnings first)
    expect(agent.stderr).toMatch(
      new RegExp(
        `^ferry: --team-member <id>: an agent key must be bound to a team member of the tenant \\(list them with \`ferry team-members --tenant ${tenant.slug}\`\\)$`,
        'm',
      ),
    );
    const role = await ferry('create', '--tenant', tenant.slug, '--role', 'owner');
    expect(role.code).not.toBe(0);
    expect(role.stderr).toMatch(/--role must be one of admin, manager, analyst, agent/);
    const unknown = await ferry('revoke', '--tenant', tenant.slug, '00000000-0000-4000-8000-000000000000');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/does not exist in this tenant/);
  });

  it('lists the team members an agent key can be bound to', { timeout: 120_000 }, async () => {
    const run = async (...args: string[]) => {
      const { stdout } = await execute('npx', ['ferry', 'team-members', ...args], {
        cwd: REPO,
        env: { ...process.env, ...env },
      });
      return stdout;
    };
    const json = JSON.parse(await run('--tenant', tenant.slug, '--json')) as Record<string, string>[];
    expect(json.map((m) => m.id).sort()).toEqual(Object.values(tenant.members).sort());
    for (const member of json) expect(Object.keys(member).sort()).toEqual(['email', 'id', 'name', 'role']);
    const table = await run('--tenant', tenant.slug);
    expect(table).toMatch(/^ID +NAME +EMAIL +ROLE$/m);
    expect(table).toContain(tenant.members.agent);
  });
});
