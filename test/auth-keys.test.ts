import { sql } from 'kysely';
import { Type } from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, isWellFormedKey, listApiKeys, revokeApiKey, verifyApiKey } from '../src/auth/keys.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import type { RoutePlugin } from '../src/http/types.ts';
import { authTestConfig, bearer, createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';

/** A route that only answers authenticated callers, echoing who they are. */
const whoami: RoutePlugin = async (app) => {
  app.get(
    '/test/whoami',
    {
      preHandler: app.authenticate,
      schema: {
        response: {
          200: Type.Object({
            tenantId: Type.String(),
            role: Type.String(),
            actor: Type.String(),
            teamMemberId: Type.Union([Type.String(), Type.Null()]),
            ip: Type.Union([Type.String(), Type.Null()]),
            userAgent: Type.Union([Type.String(), Type.Null()]),
          }),
        },
      },
    },
    async (request) => request.auth!,
  );
};

for (const dialect of DIALECTS) {
  describe(`API keys on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let tenant: TestTenant;
    let clock = new Date('2030-01-01T10:00:00Z');

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      app = await buildApp({
        database: t.database,
        config: authTestConfig(),
        routes: [whoami],
        now: () => clock,
      });
      tenant = await createTenant(t.database);
    });
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    it('shows the key once and stores only a keyed hash of it', async () => {
      const created = await createApiKey(
        t.database,
        { tenantId: tenant.id, role: 'admin', name: 'ops' },
        clock,
      );
      expect(created.key).toMatch(/^fy_live_[0-9A-Za-z]{43}$/);
      expect(isWellFormedKey(created.key)).toBe(true);
      expect(created.key.startsWith(created.prefix)).toBe(true);
      expect(created.prefix).toHaveLength('fy_live_'.length + 8);

      // Scan every column of every stored key as text: the key (or its secret part) never appears.
      const rows = await sql<{ row: string }>`SELECT api_keys::text AS row FROM api_keys`.execute(
        t.database.db,
      );
      const secretPart = created.key.slice('fy_live_'.length);
      expect(rows.rows.length).toBeGreaterThan(0);
      for (const { row } of rows.rows) {
        expect(row).not.toContain(created.key);
        expect(row).not.toContain(secretPart);
        expect(row).not.toContain(secretPart.slice(8));
      }
      const listed = await listApiKeys(t.database, tenant.id);
      const mine = listed.find((k) => k.id === created.id)!;
      expect(mine).toMatchObject({ prefix: created.prefix, name: 'ops', role: 'admin' });
      expect(JSON.stringify(listed)).not.toContain(secretPart);
    });

    it('two keys never collide', async () => {
      const a = await createApiKey(t.database, { tenantId: tenant.id, role: 'analyst' }, clock);
      const b = await createApiKey(t.database, { tenantId: tenant.id, role: 'analyst' }, clock);
      expect(a.key).not.toBe(b.key);
      expect(a.id).not.toBe(b.id);
    });

    it('a valid key authenticates with its tenant, role, team member, IP and user agent', async () => {
      const created = await createApiKey(
        t.database,
        { tenantId: tenant.id, role: 'agent', teamMemberId: tenant.members.agent },
        clock,
      );
      const res = await app.inject({
        url: '/test/whoami',
        headers: { ...bearer(created.key), 'user-agent': 'curl/8.0' },
      });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({
        tenantId: tenant.id,
        role: 'agent',
        actor: `api_key:${created.id}`,
        teamMemberId: tenant.members.agent,
        ip: '127.0.0.1',
        userAgent: 'curl/8.0',
      });
      const auth = await verifyApiKey(t.database, created.key, clock);
      expect(auth).toMatchObject({ tenantId: tenant.id, plan: 'pro', ip: null, userAgent: null, scopes: [] });
    });

    const refused: [string, () => Promise<Record<string, string>>, RegExp, string?][] = [
      ['no Authorization header', async () => ({}), /no credentials/],
      ['a Basic header', async () => ({ authorization: 'Basic dXNlcjpwYXNz' }), /Bearer/],
      ['a malformed token', async () => bearer('fy_live_short'), /not a Ferry API key/],
      ['a token of another shape', async () => bearer(`sk_${'a'.repeat(48)}`), /not a Ferry API key/],
      ['an unknown key', async () => bearer(`fy_live_${'A'.repeat(43)}`), /not valid/],
      [
        'a key whose secret part was changed',
        async () => {
          const { key } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' }, clock);
          const last = key.at(-1) === 'a' ? 'b' : 'a';
          return bearer(key.slice(0, -1) + last);
        },
        /not valid/,
      ],
      [
        'a revoked key',
        async () => {
          const { key, id } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' }, clock);
          await revokeApiKey(t.database, tenant.id, id, clock);
          return bearer(key);
        },
        /revoked/,
      ],
      [
        'an expired key',
        async () => {
          const { key } = await createApiKey(
            t.database,
            { tenantId: tenant.id, role: 'admin', expiresAt: new Date(clock.getTime() + 60_000) },
            clock,
          );
          clock = new Date(clock.getTime() + 61_000);
          return bearer(key);
        },
        /expired/,
        'api_key_expired',
      ],
    ];
    it.each(refused)('%s answers 401 problem+json', async (_name, headers, detail, code = 'unauthorized') => {
      const res = await app.inject({ url: '/test/whoami', headers: await headers() });
      expect(res.statusCode).toBe(401);
      expect(res.headers['content-type']).toBe(PROBLEM);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="ferry"');
      expect(res.json()).toMatchObject({ code, status: 401 });
      expect(res.json().detail).toMatch(detail);
    });

    it('a revoked key stops working on the next request', async () => {
      const { key, id } = await createApiKey(t.database, { tenantId: tenant.id, role: 'manager' }, clock);
      expect((await app.inject({ url: '/test/whoami', headers: bearer(key) })).statusCode).toBe(200);
      await revokeApiKey(t.database, tenant.id, id, clock);
      expect((await app.inject({ url: '/test/whoami', headers: bearer(key) })).statusCode).toBe(401);
      expect(await verifyApiKey(t.database, key, clock)).toBeNull();
    });

    it('refuses bad input when creating a key', async () => {
      const other = await createTenant(t.database);
      await expect(createApiKey(t.database, { tenantId: tenant.id, role: 'agent' })).rejects.toThrow(
        /team_member_id: an agent key must be bound/,
      );
      await expect(
        createApiKey(t.database, { tenantId: tenant.id, role: 'agent', teamMemberId: other.members.agent }),
      ).rejects.toThrow(/no team member .* in this tenant/);
      await expect(
        createApiKey(t.database, { tenantId: tenant.id, role: 'owner' as 'admin' }),
      ).rejects.toThrow(/role: unknown role "owner"/);
      await expect(
        createApiKey(t.database, { tenantId: tenant.id, role: 'admin', scopes: ['everything'] }),
      ).rejects.toThrow(/scopes: unknown scope "everything"/);
      await expect(
        createApiKey(t.database, { tenantId: tenant.id, role: 'admin', expiresAt: new Date(0) }),
      ).rejects.toThrow(/expires_at: must be in the future/);
      await expect(
        createApiKey(t.database, { tenantId: '00000000-0000-0000-0000-000000000000', role: 'admin' }),
      ).rejects.toMatchObject({ code: 'not_found' });
    });

    it('other roles may be bound to a team member too', async () => {
      const created = await createApiKey(t.database, {
        tenantId: tenant.id,
        role: 'manager',
        teamMemberId: tenant.members.manager,
        scopes: ['exports:read'],
      });
      expect(created).toMatchObject({ teamMemberId: tenant.members.manager, scopes: ['exports:read'] });
      const auth = await verifyApiKey(t.database, created.key);
      expect(auth).toMatchObject({
        role: 'manager',
        teamMemberId: tenant.members.manager,
        scopes: ['exports:read'],
      });
    });
  });
}
