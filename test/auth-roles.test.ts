import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../src/auth/context.ts';
import { createApiKey } from '../src/auth/keys.ts';
import { ROLE_ACTIONS } from '../src/auth/policy.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import {
  authTestConfig,
  bearer,
  createTenant,
  keysByRole,
  type TestTenant,
} from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';

interface Case {
  name: string;
  method: 'GET' | 'POST' | 'DELETE';
  url: (ctx: { keyId: string }) => string;
  body?: Record<string, unknown>;
  /** Status per role. */
  expect: Record<Role, number>;
}

const CASES: Case[] = [
  {
    name: 'create a key',
    method: 'POST',
    url: () => '/api/v1/api-keys',
    body: { role: 'analyst', name: 'made by a test' },
    expect: { admin: 201, manager: 403, analyst: 403, agent: 403 },
  },
  {
    name: 'list keys',
    method: 'GET',
    url: () => '/api/v1/api-keys',
    expect: { admin: 200, manager: 403, analyst: 403, agent: 403 },
  },
  {
    name: 'show a key',
    method: 'GET',
    url: ({ keyId }) => `/api/v1/api-keys/${keyId}`,
    expect: { admin: 200, manager: 403, analyst: 403, agent: 403 },
  },
  {
    name: 'revoke a key',
    method: 'DELETE',
    url: ({ keyId }) => `/api/v1/api-keys/${keyId}`,
    expect: { admin: 200, manager: 403, analyst: 403, agent: 403 },
  },
  {
    name: 'read usage',
    method: 'GET',
    url: () => '/api/v1/usage',
    expect: { admin: 200, manager: 200, analyst: 403, agent: 403 },
  },
  {
    name: 'read the audit log',
    method: 'GET',
    url: () => '/api/v1/audit',
    expect: { admin: 200, manager: 200, analyst: 403, agent: 403 },
  },
];

for (const dialect of DIALECTS) {
  describe(`roles against the key, usage and audit endpoints on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let tenant: TestTenant;
    let other: TestTenant;
    let keys: Record<Role, string>;
    let otherKeys: Record<Role, string>;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      app = await buildApp({ database: t.database, config: authTestConfig() });
      tenant = await createTenant(t.database, 'pro');
      other = await createTenant(t.database, 'starter');
      keys = await keysByRole(t.database, tenant);
      otherKeys = await keysByRole(t.database, other);
    });
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    const rows = CASES.flatMap((c) =>
      (['admin', 'manager', 'analyst', 'agent'] as const).map((role) => ({
        ...c,
        role,
        status: c.expect[role],
      })),
    );
    it.each(rows)('$role: $name → $status', async (c) => {
      // A fresh key to show or revoke, so that revoking never touches the callers' keys.
      const target = await createApiKey(t.database, { tenantId: tenant.id, role: 'analyst', name: 'target' });
      const res = await app.inject({
        method: c.method,
        url: c.url({ keyId: target.id }),
        headers: bearer(keys[c.role]),
        ...(c.body ? { payload: c.body } : {}),
      });
      expect(res.statusCode, res.body).toBe(c.status);
      if (c.status === 403) {
        expect(res.headers['content-type']).toBe(PROBLEM);
        expect(res.json()).toMatchObject({ code: 'forbidden', status: 403 });
        expect(res.json().detail).toMatch(new RegExp(`the ${c.role} role may not`));
      }
    });

    it('a created key is returned once, listed without the key, and works', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        headers: bearer(keys.admin),
        payload: { role: 'manager', name: 'reporting', expires_in_days: 30, scopes: ['usage:read'] },
      });
      expect(res.statusCode).toBe(201);
      const created = res.json();
      expect(created.key).toMatch(/^fy_live_[0-9A-Za-z]{43}$/);
      expect(created).toMatchObject({
        role: 'manager',
        name: 'reporting',
        status: 'active',
        scopes: ['usage:read'],
      });
      expect(created.created_by).toMatch(/^api_key:/);

      const list = await app.inject({ url: '/api/v1/api-keys', headers: bearer(keys.admin) });
      expect(list.statusCode).toBe(200);
      expect(list.body).not.toContain(created.key);
      expect(list.body).not.toContain(created.key.slice(16));
      const listed = list.json().items.find((k: { id: string }) => k.id === created.id);
      expect(listed).toMatchObject({ prefix: created.prefix, name: 'reporting' });
      expect(listed).not.toHaveProperty('key');
      expect(listed).not.toHaveProperty('key_hash');

      // The scoped key may read usage but nothing else its role would allow.
      const usage = await app.inject({ url: '/api/v1/usage', headers: bearer(created.key) });
      expect(usage.statusCode).toBe(200);
      const audit = await app.inject({ url: '/api/v1/audit', headers: bearer(created.key) });
      expect(audit.statusCode).toBe(403);
      expect(audit.json().detail).toMatch(/limited to the scopes usage:read/);
    });

    it('an agent key must name a team member of the tenant', async () => {
      const missing = await app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        headers: bearer(keys.admin),
        payload: { role: 'agent' },
      });
      expect(missing.statusCode).toBe(400);
      expect(missing.json()).toMatchObject({
        code: 'invalid_parameter',
        errors: [{ parameter: 'team_member_id' }],
      });
      const foreign = await app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        headers: bearer(keys.admin),
        payload: { role: 'agent', team_member_id: other.members.agent },
      });
      expect(foreign.statusCode).toBe(400);
      const ok = await app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        headers: bearer(keys.admin),
        payload: { role: 'agent', team_member_id: tenant.members.agent },
      });
      expect(ok.statusCode).toBe(201);
      expect(ok.json().team_member_id).toBe(tenant.members.agent);
    });

    it('rejects unknown body fields and bad values with invalid_parameter', async () => {
      for (const payload of [
        { role: 'root' },
        { role: 'admin', scopes: ['everything'] },
        { role: 'admin', expires_in_days: 0 },
        { role: 'admin', tenant_id: other.id },
      ]) {
        const res = await app.inject({
          method: 'POST',
          url: '/api/v1/api-keys',
          headers: bearer(keys.admin),
          payload,
        });
        expect(res.statusCode, JSON.stringify(payload)).toBe(400);
        expect(res.json().code).toBe('invalid_parameter');
      }
    });

    it('refuses a key whose scopes go beyond its role, naming them and what the role allows', async () => {
      for (const [payload, above] of [
        [
          { role: 'analyst', scopes: ['exports:read', 'keys:manage'] },
          '"keys:manage" is above the analyst role',
        ],
        [
          { role: 'manager', scopes: ['webhooks:manage', 'keys:manage'] },
          '"webhooks:manage", "keys:manage" are above the manager role',
        ],
        [
          { role: 'agent', team_member_id: tenant.members.agent, scopes: ['audit:read'] },
          '"audit:read" is above',
        ],
      ] as const) {
        const res = await app.inject({
          method: 'POST',
          url: '/api/v1/api-keys',
          headers: bearer(keys.admin),
          payload,
        });
        expect(res.statusCode, JSON.stringify(payload)).toBe(400);
        const problem = res.json();
        expect(problem.code).toBe('invalid_parameter');
        expect(problem.errors[0].parameter).toBe('scopes');
        expect(problem.detail).toContain(above);
        expect(problem.errors[0].accepted).toEqual([...ROLE_ACTIONS[payload.role]]);
      }
      const within = await app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        headers: bearer(keys.admin),
        payload: { role: 'analyst', scopes: ['exports:read', 'schedules:read'] },
      });
      expect(within.statusCode, within.body).toBe(201);
    });

    it("a key of tenant A cannot see, show or revoke tenant B's keys (404)", async () => {
      const victim = await createApiKey(t.database, { tenantId: other.id, role: 'admin', name: 'victim' });
      const list = await app.inject({ url: '/api/v1/api-keys', headers: bearer(keys.admin) });
      expect(list.json().items.map((k: { id: string }) => k.id)).not.toContain(victim.id);
      for (const method of ['GET', 'DELETE'] as const) {
        const res = await app.inject({
          method,
          url: `/api/v1/api-keys/${victim.id}`,
          headers: bearer(keys.admin),
        });
        expect(res.statusCode).toBe(404);
        expect(res.json().code).toBe('not_found');
      }
      // The victim's key still works.
      const still = await app.inject({ url: '/api/v1/api-keys', headers: bearer(victim.key) });
      expect(still.statusCode).toBe(200);
      expect(still.json().items.map((k: { id: string }) => k.id)).toContain(victim.id);
      // An unknown id of the right shape is 404 too; a malformed id is 400.
      const unknown = await app.inject({
        method: 'DELETE',
        url: '/api/v1/api-keys/00000000-0000-4000-8000-000000000000',
        headers: bearer(keys.admin),
      });
      expect(unknown.statusCode).toBe(404);
      const malformed = await app.inject({
        method: 'DELETE',
        url: '/api/v1/api-keys/abc',
        headers: bearer(keys.admin),
      });
      expect(malformed.statusCode).toBe(400);
    });

    it('usage and audit only show the caller tenant', async () => {
      const usage = await app.inject({ url: '/api/v1/usage', headers: bearer(otherKeys.admin) });
      expect(usage.json()).toMatchObject({ tenant_id: other.id, plan: 'starter' });
      const audit = await app.inject({ url: '/api/v1/audit', headers: bearer(otherKeys.admin) });
      const ours = await app.inject({ url: '/api/v1/audit', headers: bearer(keys.admin) });
      const theirIds = new Set(audit.json().items.map((e: { id: string }) => e.id));
      expect(ours.json().items.length).toBeGreaterThan(0);
      for (const e of ours.json().items) expect(theirIds.has(e.id)).toBe(false);
    });

    it('revoking a key through the API stops it at once', async () => {
      const created = await createApiKey(t.database, { tenantId: tenant.id, role: 'manager' });
      expect((await app.inject({ url: '/api/v1/usage', headers: bearer(created.key) })).statusCode).toBe(200);
      const res = await app.inject({
        method: 'DELETE',
        url: `/api/v1/api-keys/${created.id}`,
        headers: bearer(keys.admin),
      });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ status: 'revoked' });
      const after = await app.inject({ url: '/api/v1/usage', headers: bearer(created.key) });
      expect(after.statusCode).toBe(401);
      expect(after.json().code).toBe('unauthorized');
    });

    it('the OpenAPI document declares the bearer scheme and the new routes', async () => {
      const doc = (await app.inject({ url: '/openapi.json' })).json();
      expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
      expect(Object.keys(doc.paths)).toEqual(
        expect.arrayContaining([
          '/api/v1/api-keys',
          '/api/v1/api-keys/{id}',
          '/api/v1/usage',
          '/api/v1/audit',
        ]),
      );
    });
  });
}
