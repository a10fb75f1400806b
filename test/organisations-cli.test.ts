/**
 * `ferry orgs …` as an operator runs it against the test schema: organisations, client tenants,
 * members and organisation keys that the server then honours, the aggregated export written to a
 * file that `sha256sum -c` verifies, and every refusal as one clear line with a non-zero exit.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { seed } from '../src/seed/seed.ts';
import { runFerry } from './support/cli.ts';
import { bearer, createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { createTestDatabase, type TestDatabase, testsDialect } from './support/databases.ts';

const run = promisify(execFile);
const SECRET = 'orgs-cli-test-secret-key-0123456789abcdef';

describe.skipIf(!testsDialect('postgres'))('ferry orgs', () => {
  let t: TestDatabase;
  let app: FerryApp;
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  let home: TestTenant;
  let outside: TestTenant;
  let clients: { id: string; slug: string }[];
  let orgId: string;

  const ferry = (...args: string[]) => runFerry(['orgs', ...args], { env });
  /** A refusal: a non-zero exit and one line on stderr, naming what was wrong. */
  const refused = async (args: string[], message: RegExp) => {
    const res = await ferry(...args);
    expect(res.code, res.stdout).not.toBe(0);
    expect(res.stderr.trimEnd().split('\n'), res.stderr).toHaveLength(1);
    expect(res.stderr).toMatch(/^ferry: /);
    expect(res.stderr).toMatch(message);
  };

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-orgs-cli-'));
    env = {
      ...process.env,
      ...t.env,
      FERRY_DATA_DIR: dataDir,
      FERRY_SECRET_KEY: SECRET,
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'silent',
    };
    // The server shares the command line's key pepper.
    app = await buildApp({ database: t.database, config: loadConfig(env as Record<string, string>) });
    const seeded = await seed(t.database, {
      tenants: 2,
      conversations: 5,
      messagesPerConversation: 3,
      seed: 21,
      since: new Date('2026-08-01T00:00:00Z'),
      until: new Date('2026-09-01T00:00:00Z'),
      secretKey: SECRET,
    });
    clients = seeded.tenants.map((x) => ({ id: x.id, slug: x.slug }));
    home = await createTenant(t.database, 'agency');
    outside = await createTenant(t.database, 'pro');
  }, 180_000);
  afterAll(async () => {
    await app?.close();
    await t?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('creates an organisation, links client tenants and refuses what the rules forbid', {
    timeout: 120_000,
  }, async () => {
    await refused(['create', '--name', 'Shop', '--home-tenant', outside.slug], /agency plan/);
    await refused(
      ['create', '--name', 'Nowhere', '--home-tenant', 'no-such-tenant'],
      /tenant "no-such-tenant" does not exist/,
    );
    const created = await ferry('create', '--name', 'Northwind Agency', '--home-tenant', home.slug, '--json');
    expect(created.code, created.stderr).toBe(0);
    orgId = JSON.parse(created.stdout).id;
    for (const client of clients) {
      const added = await ferry('add-tenant', home.slug, client.slug);
      expect(added.code, added.stderr).toBe(0);
      expect(added.stdout).toContain(`tenant ${client.slug} is now a client tenant of "Northwind Agency"`);
    }
    await refused(['add-tenant', orgId, home.slug], /home tenant/);
    await refused(
      ['add-tenant', 'no-such-org', clients[0]!.slug],
      /organisation "no-such-org" does not exist/,
    );
    const listed = await ferry('list', '--json');
    expect(JSON.parse(listed.stdout)).toEqual([
      expect.objectContaining({
        id: orgId,
        client_tenants: 2,
        home_tenant: { id: home.id, slug: home.slug },
      }),
    ]);
  });

  it('makes members and organisation keys the server honours', { timeout: 120_000 }, async () => {
    const member = await ferry(
      'members',
      'set',
      orgId,
      `manager@${home.slug}.example`,
      '--admin',
      '--default-role',
      'analyst',
      '--tenant-role',
      `${clients[1]!.slug}=admin`,
      '--json',
    );
    expect(member.code, member.stderr).toBe(0);
    expect(JSON.parse(member.stdout)).toMatchObject({
      admin: true,
      default_role: 'analyst',
      tenant_roles: { [clients[1]!.id]: 'admin' },
    });
    await refused(['members', 'set', orgId, `admin@${outside.slug}.example`], /no team member/);
    await refused(
      ['keys', 'create', '--org', orgId, '--role', 'analyst', '--tenant-role', 'oops'],
      /--tenant-role: "oops"/,
    );
    await refused(
      ['keys', 'create', '--org', orgId, '--role', 'analyst', '--tenant-role', `${outside.slug}=admin`],
      /not a client tenant/,
    );
    const created = await ferry(
      'keys',
      'create',
      '--org',
      orgId,
      '--role',
      'analyst',
      '--tenant-role',
      `${clients[0]!.slug}=admin`,
      '--json',
    );
    expect(created.code, created.stderr).toBe(0);
    const key = JSON.parse(created.stdout) as { id: string; key: string };
    const keysIn = (tenant: string) =>
      app.inject({ url: '/api/v1/api-keys', headers: { ...bearer(key.key), 'ferry-tenant': tenant } });
    expect((await keysIn(clients[0]!.id)).statusCode).toBe(200);
    expect((await keysIn(clients[1]!.id)).statusCode).toBe(403);
    expect((await keysIn(outside.id)).json().code).toBe('tenant_not_in_organisation');
    const show = JSON.parse((await ferry('show', orgId, '--json')).stdout);
    expect(show.tenants.map((x: { id: string }) => x.id).sort()).toEqual(
      [home.id, ...clients.map((c) => c.id)].sort(),
    );
    expect(show.keys.map((k: { id: string }) => k.id)).toContain(key.id);
    expect(JSON.stringify(show)).not.toContain(key.key);
    const roles = await ferry(
      'keys',
      'roles',
      '--org',
      orgId,
      key.id,
      '--tenant-role',
      `${clients[0]!.slug}=none`,
    );
    expect(roles.code, roles.stderr).toBe(0);
    expect((await keysIn(clients[0]!.id)).statusCode).toBe(403);
    expect((await ferry('keys', 'revoke', '--org', orgId, key.id)).code).toBe(0);
    expect((await keysIn(home.id)).statusCode).toBe(401);
  });

  it('writes the aggregated export to a file that sha256sum verifies', { timeout: 180_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-orgs-export-'));
    try {
      const out = path.join(dir, 'agency.zip');
      const res = await ferry(
        'export',
        orgId,
        '--datasets',
        'conversations,team_members',
        '--pii',
        'full',
        '--out',
        out,
      );
      expect(res.code, res.stderr).toBe(0);
      expect(res.stderr).toMatch(/^wrote .*agency\.zip/m);
      await run('unzip', ['-q', out, '-d', path.join(dir, 'x')]);
      const [root] = await readdir(path.join(dir, 'x'));
      const rootDir = path.join(dir, 'x', root!);
      await run('sha256sum', ['--quiet', '-c', 'checksums.sha256'], { cwd: rootDir });
      expect((await readdir(path.join(rootDir, 'tenants'))).sort()).toEqual(
        [home.slug, ...clients.map((c) => c.slug)].sort(),
      );
      await refused(
        ['export', orgId, '--tenants', outside.id, '--out', path.join(dir, 'other.zip')],
        /not a tenant of your organisation/,
      );
      await refused(['export', orgId, '--out', out], /already exists/);
      // Recorded in each client tenant's trail, as the operator.
      const trail = await t.database.db
        .selectFrom('audit_events' as never)
        .select(['tenant_id' as never, 'actor' as never])
        .where('action' as never, '=', 'export.completed' as never)
        .execute();
      expect(trail).toEqual(expect.arrayContaining(clients.map((c) => ({ tenant_id: c.id, actor: 'cli' }))));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('cuts a tenant off when it is removed', { timeout: 60_000 }, async () => {
    const created = JSON.parse(
      (await ferry('keys', 'create', '--org', orgId, '--role', 'manager', '--json')).stdout,
    ) as { key: string };
    const inClient = () =>
      app.inject({
        url: '/api/v1/exports',
        headers: { ...bearer(created.key), 'ferry-tenant': clients[1]!.id },
      });
    expect((await inClient()).statusCode).toBe(200);
    expect((await ferry('remove-tenant', orgId, clients[1]!.slug)).code).toBe(0);
    expect((await inClient()).json().code).toBe('tenant_not_in_organisation');
    await refused(['remove-tenant', orgId, clients[1]!.slug], /is not a client tenant/);
  });
});
