/**
 * Organisations as their operators and admins run them: the rules of linking tenants, the
 * organisation route with the caller's role per tenant, organisation-wide usage against the
 * tenants' own usage, members and organisation keys through the API (roles changed or taken
 * away with the next request), and the live stream for a client tenant.
 */
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addOrganisationTenant, createOrganisation } from '../src/organisations/admin.ts';
import type { Organisation } from '../src/organisations/model.ts';
import { bearer, createTenant, keysByRole, type TestTenant } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, requestExport } from './support/fixtures/export-jobs.ts';
import { OPERATOR, organisationKey, organisationOf } from './support/fixtures/organisations.ts';
import { connectStream } from './support/fixtures/stream.ts';
import { DIALECTS } from './support/databases.ts';

for (const dialect of DIALECTS) {
  describe(`organisations on ${dialect}`, () => {
    let h: ExportHarness;
    let organisation: Organisation;
    let home: TestTenant;
    let clientA: TestTenant;
    let clientB: TestTenant;
    let keysA: Record<string, string>;
    let keysB: Record<string, string>;
    /** Admin everywhere: an organisation admin. */
    let adminKey: { id: string; key: string };
    /** Analyst by default, none in B. */
    let analystKey: { id: string; key: string };

    beforeAll(async () => {
      h = await exportHarness(dialect, { conversations: 6 });
      home = h.other;
      clientA = h.tenant;
      clientB = await createTenant(h.database, 'starter');
      organisation = await organisationOf(h.database, home, [clientA, clientB]);
      adminKey = await organisationKey(h.database, organisation, 'admin');
      analystKey = await organisationKey(h.database, organisation, 'analyst', { [clientB.id]: 'none' });
      keysA = h.keys;
      keysB = await keysByRole(h.database, clientB);
    }, 180_000);
    afterAll(async () => {
      await h?.close();
    });

    const as = (key: string, tenant?: string) => ({
      ...bearer(key),
      ...(tenant ? { 'ferry-tenant': tenant } : {}),
    });

    it('links a tenant to at most one organisation, with an agency-plan home of no other', async () => {
      const starter = await createTenant(h.database, 'starter');
      await expect(
        createOrganisation(h.database, { name: 'Small shop', homeTenant: starter.id }, OPERATOR, new Date()),
      ).rejects.toMatchObject({ code: 'invalid_parameter', message: expect.stringMatching(/agency plan/) });
      await expect(
        createOrganisation(h.database, { name: 'Again', homeTenant: home.slug }, OPERATOR, new Date()),
      ).rejects.toMatchObject({ code: 'conflict' });
      await expect(
        createOrganisation(
          h.database,
          { name: 'Client as home', homeTenant: clientA.id },
          OPERATOR,
          new Date(),
        ),
      ).rejects.toMatchObject({ code: 'conflict' });
      await expect(
        addOrganisationTenant(h.database, organisation, home.id, OPERATOR, new Date()),
      ).rejects.toMatchObject({ code: 'invalid_parameter' });
      const rivalHome = await createTenant(h.database, 'agency');
      const rival = await createOrganisation(
        h.database,
        { name: 'Rival', homeTenant: rivalHome.id },
        OPERATOR,
        new Date(),
      );
      await expect(
        addOrganisationTenant(h.database, rival, clientA.id, OPERATOR, new Date()),
      ).rejects.toMatchObject({
        code: 'conflict',
        message: expect.stringMatching(/already a client tenant/),
      });
      // Linking again changes nothing.
      expect(
        (await addOrganisationTenant(h.database, organisation, clientA.slug, OPERATOR, new Date())).added,
      ).toBe(false);
      // Both trails record the link.
      const trail = await h.app.inject({
        url: '/api/v1/audit?action=organisation.tenant_added',
        headers: as(keysA.admin!),
      });
      expect(trail.json().data).toEqual([
        expect.objectContaining({ actor: 'cli', target_id: organisation.id }),
      ]);
    });

    it('lists its tenants with the caller’s role in each, to organisation keys only', async () => {
      const res = await h.app.inject({ url: '/api/v1/organisation', headers: as(analystKey.key) });
      expect(res.statusCode, res.body).toBe(200);
      const body = res.json();
      expect(body).toMatchObject({
        id: organisation.id,
        home_tenant_id: home.id,
        you: { principal: 'key', id: analystKey.id, admin: false },
      });
      const roles = Object.fromEntries(
        body.tenants.map((t: { id: string; role: string | null }) => [t.id, t.role]),
      );
      expect(roles).toEqual({ [home.id]: 'analyst', [clientA.id]: 'analyst', [clientB.id]: null });
      expect(body.tenants[0]).toMatchObject({ id: home.id, home: true });
      // With Ferry-Tenant the answer is the same organisation.
      expect(
        (await h.app.inject({ url: '/api/v1/organisation', headers: as(analystKey.key, clientA.id) })).json()
          .id,
      ).toBe(organisation.id);
      const plain = await h.app.inject({ url: '/api/v1/organisation', headers: as(keysA.admin!) });
      expect(plain.statusCode).toBe(403);
      expect(plain.json().code).toBe('forbidden');
      // No role in B: refused there, whatever the route.
      const inB = await h.app.inject({ url: '/api/v1/exports', headers: as(analystKey.key, clientB.id) });
      expect(inB.statusCode).toBe(403);
      expect(inB.json()).toMatchObject({
        code: 'forbidden',
        detail: expect.stringMatching(/no role in tenant/),
      });
    });

    it('sums the tenants’ own usage into the organisation’s', async () => {
      await requestExport(h.app, keysA.admin!, { datasets: ['team_members'] });
      await requestExport(h.app, keysA.admin!, { datasets: ['sites'] });
      await requestExport(h.app, keysB.admin!, { datasets: ['team_members'] });
      await requestExport(
        h.app,
        adminKey.key,
        { datasets: ['team_members'] },
        { 'ferry-tenant': clientB.id },
      );
      const res = await h.app.inject({ url: '/api/v1/organisation/usage', headers: as(adminKey.key) });
      expect(res.statusCode, res.body).toBe(200);
      const body = res.json() as {
        tenants: { tenant: { id: string }; usage: { quotas: { quota: string; used: number | null }[] } }[];
        total: { quota: string; used: number | null }[];
      };
      expect(body.tenants.map((t) => t.tenant.id)).toEqual([home.id, clientA.id, clientB.id]);
      // Each tenant's line is what the tenant's own admin reads, and the total is their sum.
      const own: Record<string, string> = {
        [home.id]: h.otherKeys.admin,
        [clientA.id]: keysA.admin!,
        [clientB.id]: keysB.admin!,
      };
      const sums: Record<string, number> = {};
      for (const tenant of body.tenants) {
        const direct = (
          await h.app.inject({ url: '/api/v1/usage', headers: as(own[tenant.tenant.id]!) })
        ).json();
        const counted = (q: { quota: string }) =>
          ['exports_per_month', 'concurrent_jobs', 'active_schedules'].includes(q.quota);
        expect(tenant.usage.quotas.filter(counted), tenant.tenant.id).toEqual(direct.quotas.filter(counted));
        for (const q of direct.quotas.filter(counted)) sums[q.quota] = (sums[q.quota] ?? 0) + (q.used ?? 0);
      }
      expect(Object.fromEntries(body.total.map((t) => [t.quota, t.used]))).toEqual(sums);
      expect(sums.exports_per_month).toBeGreaterThanOrEqual(4);
      // An analyst reads no usage: no tenant listed, nothing summed.
      const analyst = (
        await h.app.inject({ url: '/api/v1/organisation/usage', headers: as(analystKey.key) })
      ).json();
      expect(analyst.tenants).toEqual([]);
    });

    it('lets an organisation admin manage members and their roles, and nobody else', async () => {
      const memberId = home.members.manager;
      const put = (key: string, id: string, payload: object) =>
        h.app.inject({ method: 'PUT', url: `/api/v1/organisation/members/${id}`, headers: as(key), payload });
      const refused = await put(analystKey.key, memberId, { default_role: 'analyst' });
      expect(refused.statusCode).toBe(403);
      const added = await put(adminKey.key, memberId, {
        admin: false,
        default_role: 'analyst',
        tenant_roles: { [clientB.slug]: 'admin', [clientA.id]: 'none' },
      });
      expect(added.statusCode, added.body).toBe(200);
      expect(added.json()).toMatchObject({
        id: memberId,
        home_role: 'manager',
        admin: false,
        default_role: 'analyst',
        tenant_roles: { [clientB.id]: 'admin', [clientA.id]: 'none' },
      });
      const listed = await h.app.inject({ url: '/api/v1/organisation/members', headers: as(adminKey.key) });
      expect(listed.json().data.map((m: { id: string }) => m.id)).toEqual([memberId]);
      // Roles an organisation cannot give, tenants it does not manage, members of other tenants.
      expect((await put(adminKey.key, memberId, { default_role: 'agent' })).statusCode).toBe(400);
      const outside = await createTenant(h.database, 'pro');
      const foreign = await put(adminKey.key, memberId, { tenant_roles: { [outside.id]: 'admin' } });
      expect(foreign.statusCode).toBe(400);
      expect(foreign.json().detail).toMatch(/not a client tenant/);
      expect((await put(adminKey.key, clientA.members.admin, { default_role: 'analyst' })).statusCode).toBe(
        404,
      );
      const removed = await h.app.inject({
        method: 'DELETE',
        url: `/api/v1/organisation/members/${memberId}`,
        headers: as(adminKey.key),
      });
      expect(removed.statusCode).toBe(200);
      expect(
        (await h.app.inject({ url: '/api/v1/organisation/members', headers: as(adminKey.key) })).json().data,
      ).toEqual([]);
      const trail = await h.app.inject({
        url: '/api/v1/audit?action=organisation.member_changed',
        headers: as(h.otherKeys.admin),
      });
      expect(trail.json().data[0]).toMatchObject({ actor: `api_key:${adminKey.id}`, target_id: memberId });
    });

    it('creates organisation keys whose roles change or end with the next request', async () => {
      const created = await h.app.inject({
        method: 'POST',
        url: '/api/v1/organisation/keys',
        headers: as(adminKey.key),
        payload: { role: 'manager', name: 'reporting', tenant_roles: { [clientA.id]: 'analyst' } },
      });
      expect(created.statusCode, created.body).toBe(201);
      const key = created.json() as {
        id: string;
        key: string;
        role: string;
        tenant_roles: Record<string, string>;
      };
      expect(key).toMatchObject({ role: 'manager', tenant_roles: { [clientA.id]: 'analyst' } });
      const auditIn = (tenant: string) =>
        h.app.inject({ url: '/api/v1/audit', headers: as(key.key, tenant) });
      // Manager in B (the default) reads the audit log there; analyst in A does not.
      expect((await auditIn(clientB.id)).statusCode).toBe(200);
      expect((await auditIn(clientA.id)).statusCode).toBe(403);
      const changed = await h.app.inject({
        method: 'PUT',
        url: `/api/v1/organisation/keys/${key.id}/tenant-roles`,
        headers: as(adminKey.key),
        payload: { tenant_roles: { [clientA.id]: 'manager', [clientB.id]: 'none' } },
      });
      expect(changed.statusCode, changed.body).toBe(200);
      expect((await auditIn(clientA.id)).statusCode).toBe(200);
      expect((await auditIn(clientB.id)).statusCode).toBe(403);
      const listed = await h.app.inject({ url: '/api/v1/organisation/keys', headers: as(adminKey.key) });
      expect(listed.json().data.map((k: { id: string }) => k.id)).toEqual(
        expect.arrayContaining([key.id, adminKey.id, analystKey.id]),
      );
      expect(listed.body).not.toContain(key.key);
      const agent = await h.app.inject({
        method: 'POST',
        url: '/api/v1/organisation/keys',
        headers: as(adminKey.key),
        payload: { role: 'agent' },
      });
      expect(agent.statusCode).toBe(400);
      const revoked = await h.app.inject({
        method: 'DELETE',
        url: `/api/v1/organisation/keys/${key.id}`,
        headers: as(adminKey.key),
      });
      expect(revoked.json()).toMatchObject({ status: 'revoked' });
      expect((await auditIn(clientA.id)).statusCode).toBe(401);
      // A key of the home tenant that is not the organisation's is not found here.
      const notOurs = await h.app.inject({
        method: 'DELETE',
        url: `/api/v1/organisation/keys/${await keyIdOf(h.otherKeys.admin)}`,
        headers: as(adminKey.key),
      });
      expect(notOurs.statusCode).toBe(404);
    });

    async function keyIdOf(key: string): Promise<string> {
      const row = await h.database.db
        .selectFrom('api_keys' as never)
        .select('id' as never)
        .where('prefix' as never, '=', key.slice(0, 16) as never)
        .executeTakeFirstOrThrow();
      return (row as { id: string }).id;
    }

    it('opens the live stream of a client tenant to its organisation key, and of no other', async () => {
      await h.app.listen({ host: '127.0.0.1', port: 0 });
      const { port } = h.app.server.address() as AddressInfo;
      const url = `ws://127.0.0.1:${port}/api/v1/stream/export`;
      const client = await connectStream(url);
      client.send({ type: 'auth', token: analystKey.key, tenant_id: clientA.id });
      expect(await client.next()).toMatchObject({
        type: 'authenticated',
        tenant_id: clientA.id,
        role: 'analyst',
      });
      client.socket.close();
      const outside = await createTenant(h.database, 'pro');
      for (const tenant of [outside.id, clientB.id]) {
        const refused = await connectStream(url);
        refused.send({ type: 'auth', token: analystKey.key, tenant_id: tenant });
        expect((await refused.closed).code).toBe(4401);
      }
    });
  });
}
