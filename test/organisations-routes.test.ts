/**
 * Organisation keys and the tenant boundary, on the real app with its job queue and store:
 * every route of the served OpenAPI document, called with an organisation key and
 * `Ferry-Tenant` set to a tenant outside the organisation or to a random id, is refused with
 * 403 `tenant_not_in_organisation` and changes no row of the outside tenant; the key reaches
 * each of its tenants with its role there; removing a tenant cuts access at once.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTenantAllowListAsOperator } from '../src/auth/ip-allowlist.ts';
import { TENANT_REFUSED_ACTION } from '../src/auth/organisations.ts';
import { isErrorCode } from '../src/domain/error-catalog.ts';
import { removeOrganisationTenant } from '../src/organisations/admin.ts';
import type { Organisation } from '../src/organisations/model.ts';
import { bearer, createTenant, keysByRole, type TestTenant } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, requestExport } from './support/fixtures/export-jobs.ts';
import { OPERATOR, organisationKey, organisationOf, tenantDigest } from './support/fixtures/organisations.ts';
import { DIALECTS } from './support/databases.ts';

type Schema = Record<string, unknown> & {
  $ref?: string;
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  anyOf?: Schema[];
  oneOf?: Schema[];
  enum?: unknown[];
  examples?: unknown[];
};
interface Parameter {
  name: string;
  in: string;
  required?: boolean;
  schema?: Schema;
}
interface Operation {
  security?: unknown[];
  parameters?: (Parameter | { $ref: string })[];
  requestBody?: { content: Record<string, { schema: Schema }> };
}
interface OpenApi {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema>; parameters: Record<string, Parameter> };
}

/** Bodies valid against their routes' schemas, where a generated one would not be. */
const VALID_BODIES: Record<string, unknown> = {
  'post /api/v1/webhooks': { url: 'https://203.0.113.10/hook', events: ['export.completed'] },
  'post /api/v1/schedules': {
    name: 'Walked schedule',
    frequency: { type: 'weekly', days: ['mon'] },
    time: '02:30',
    timezone: 'Europe/Berlin',
    datasets: [{ dataset: 'conversations', mode: 'window', days: 7 }],
    format: 'csv',
    targets: [{ type: 'email', name: 'inbox', recipients: ['ops@example.com'] }],
  },
  'post /api/v1/exports': { datasets: ['conversations'], format: 'csv' },
  'post /api/v1/organisation/exports': { datasets: ['conversations'], format: 'csv' },
  'post /api/v1/api-keys': { role: 'analyst', name: 'walk' },
  'post /api/v1/organisation/keys': { role: 'analyst', name: 'walk' },
};
VALID_BODIES['patch /api/v1/schedules/{id}'] = VALID_BODIES['post /api/v1/schedules'];
VALID_BODIES['post /api/export/request'] = VALID_BODIES['post /api/v1/exports'];

for (const dialect of DIALECTS) {
  describe(`organisation keys at the tenant boundary on ${dialect}`, () => {
    let h: ExportHarness;
    let doc: OpenApi;
    let organisation: Organisation;
    /** The organisation's home tenant (no data), and its clients: A (seeded data) and B. */
    let home: TestTenant;
    let clientA: TestTenant;
    let clientB: TestTenant;
    let outside: TestTenant;
    let outsideKeys: Record<string, string>;
    let clientBKeys: Record<string, string>;
    /** Analyst at home and by default; analyst in A, admin in B. */
    let orgKey: { id: string; key: string };
    /** Real ids of the outside tenant, for path parameters. */
    let outsideIds: { export: string; webhook: string };

    beforeAll(async () => {
      h = await exportHarness(dialect, { conversations: 10 });
      home = h.other;
      clientA = h.tenant;
      clientB = await createTenant(h.database, 'pro');
      outside = await createTenant(h.database, 'pro');
      organisation = await organisationOf(h.database, home, [clientA, clientB]);
      orgKey = await organisationKey(h.database, organisation, 'analyst', {
        [clientA.id]: 'analyst',
        [clientB.id]: 'admin',
      });
      outsideKeys = await keysByRole(h.database, outside);
      clientBKeys = await keysByRole(h.database, clientB);
      const exported = await requestExport(h.app, outsideKeys.admin!, { datasets: ['team_members'] });
      const hook = await h.app.inject({
        method: 'POST',
        url: '/api/v1/webhooks',
        headers: bearer(outsideKeys.admin!),
        payload: VALID_BODIES['post /api/v1/webhooks'] as object,
      });
      outsideIds = { export: exported.id, webhook: hook.json().id ?? randomUUID() };
      doc = (await h.app.inject('/openapi.json')).json();
    }, 180_000);
    afterAll(async () => {
      await h?.close();
    });

    const as = (key: string, tenant?: string) => ({
      ...bearer(key),
      ...(tenant ? { 'ferry-tenant': tenant } : {}),
    });

    function resolve<T>(item: T | { $ref: string }): T {
      if (typeof item === 'object' && item !== null && '$ref' in item && typeof item.$ref === 'string') {
        const [, , section, name] = item.$ref.split('/');
        return (doc.components as unknown as Record<string, Record<string, T>>)[section!]![name!]!;
      }
      return item as T;
    }

    /** A value valid for a schema: its example, first enum value or a plain value of its type. */
    function sample(schema: Schema | undefined, depth = 0): unknown {
      if (!schema || depth > 6) return 'x';
      const s = resolve<Schema>(schema);
      if (s.examples?.length) return s.examples[0];
      if (s.const !== undefined) return s.const;
      if (s.enum?.length) return s.enum[0];
      const branches = s.anyOf ?? s.oneOf;
      if (branches?.length) return sample(branches[0], depth + 1);
      const type = Array.isArray(s.type) ? s.type.find((t) => t !== 'null') : s.type;
      if (type === 'integer' || type === 'number') return typeof s.minimum === 'number' ? s.minimum : 1;
      if (type === 'boolean') return false;
      if (type === 'array')
        return Array.from({ length: typeof s.minItems === 'number' ? s.minItems : 0 }, () =>
          sample(s.items, depth + 1),
        );
      if (type === 'object') {
        const out: Record<string, unknown> = {};
        for (const name of s.required ?? []) out[name] = sample(s.properties?.[name], depth + 1);
        return out;
      }
      if (s.format === 'uuid') return randomUUID();
      if (s.format === 'date-time') return '2026-08-01T00:00:00Z';
      if (s.format === 'date') return '2026-08-01';
      return 'x'.repeat(typeof s.minLength === 'number' ? Math.max(1, s.minLength) : 1);
    }

    /** Path values: the outside tenant's own resources where the route names one. */
    function pathValue(route: string, name: string, schema: Schema | undefined): string {
      const s = schema ? resolve<Schema>(schema) : undefined;
      if (s && s.format !== 'uuid' && (s.type === 'integer' || s.type === 'number')) return String(sample(s));
      if (name === 'dataset') return 'conversations';
      if (name === 'code') return 'not_found';
      if (name === 'set') return 'conversations';
      if (route.includes('/webhooks/')) return outsideIds.webhook;
      return outsideIds.export;
    }

    function requestOf(route: string, method: string, op: Operation) {
      let url = route;
      const query: string[] = [];
      for (const p of (op.parameters ?? []).map((x) => resolve<Parameter>(x))) {
        if (p.in === 'path')
          url = url.replace(`{${p.name}}`, encodeURIComponent(pathValue(route, p.name, p.schema)));
        else if (p.in === 'query' && p.required)
          query.push(`${p.name}=${encodeURIComponent(String(sample(p.schema)))}`);
      }
      const schema = op.requestBody?.content['application/json']?.schema;
      const body = op.requestBody ? (VALID_BODIES[`${method} ${route}`] ?? sample(schema)) : undefined;
      return { url: query.length ? `${url}?${query.join('&')}` : url, body };
    }

    it('refuses every route for a tenant outside the organisation and for a random id, and changes nothing there', async () => {
      const operations = Object.entries(doc.paths).flatMap(([route, item]) =>
        Object.entries(item).map(([method, op]) => ({ route, method, op })),
      );
      // Every route the app serves is in the document (test/openapi.test.ts holds it to that).
      expect(operations.length).toBeGreaterThan(100);
      expect(operations.map((o) => `${o.method} ${o.route}`)).toEqual(
        expect.arrayContaining(['get /api/v1/organisation', 'post /api/v1/organisation/exports']),
      );
      const before = await tenantDigest(h.database, outside.id);
      const refusedBefore = await refusals();
      let authenticated = 0;
      let refusedCount = 0;
      const exceptions: string[] = [];
      for (const { route, method, op } of operations) {
        const { url, body } = requestOf(route, method, op);
        for (const tenant of [outside.id, randomUUID()]) {
          const where = `${method.toUpperCase()} ${url} (Ferry-Tenant ${tenant === outside.id ? 'outside' : 'random'})`;
          const res = await h.app.inject({
            method: method.toUpperCase() as 'GET',
            url,
            headers: as(orgKey.key, tenant),
            ...(body !== undefined ? { payload: body as object } : {}),
          });
          expect(res.statusCode, `${where}: ${res.body}`).toBeLessThan(500);
          if (op.security) {
            authenticated++;
            if (res.statusCode === 403) {
              refusedCount++;
              if (method !== 'head') expect(res.json().code, where).toBe('tenant_not_in_organisation');
              expect(res.headers['content-type'], where).toMatch(/^application\/problem\+json/);
              continue;
            }
            // The one exception: a body refused by the route's schema, which Fastify checks before the
            // credentials of a route that authenticates in preHandler. Such a request never reaches a
            // tenant: it is refused the same way without any credentials at all.
            expect(res.statusCode, `${where}: ${res.body}`).toBe(400);
            const anonymous = await h.app.inject({
              method: method.toUpperCase() as 'GET',
              url,
              ...(body !== undefined ? { payload: body as object } : {}),
            });
            expect(anonymous.statusCode, `${where} without credentials`).toBe(400);
            exceptions.push(where);
            continue;
          }
          // Routes without credentials are not tenant-scoped (health, the error catalog, schemas, the
          // receipt keys, signed download links, the WebSocket upgrade): the header changes nothing there.
          const plain = await h.app.inject({
            method: method.toUpperCase() as 'GET',
            url,
            ...(body !== undefined ? { payload: body as object } : {}),
          });
          expect(res.statusCode, `${where}: same answer as without the header`).toBe(plain.statusCode);
          if (res.statusCode >= 400 && method !== 'head') expect(isErrorCode(res.json().code)).toBe(true);
        }
      }
      expect(authenticated).toBeGreaterThan(150);
      // The bodies sent are valid, so no route needed the exception.
      expect(exceptions, exceptions.join('\n')).toEqual([]);
      // The outside tenant has rows to protect: members, keys, an export, a webhook, its audit trail.
      expect(Object.values(before).filter((v) => !v.startsWith('0:')).length).toBeGreaterThan(5);
      expect(refusedCount).toBe(authenticated - exceptions.length);
      expect(await tenantDigest(h.database, outside.id)).toEqual(before);
      // Each refusal is audited in the key's own tenant, none in the outside tenant.
      expect((await refusals()) - refusedBefore).toBe(refusedCount);
    }, 600_000);

    async function refusals(tenantId = home.id): Promise<number> {
      const row = await h.database.db
        .selectFrom('audit_events' as never)
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('tenant_id' as never, '=', tenantId as never)
        .where('action' as never, '=', TENANT_REFUSED_ACTION as never)
        .executeTakeFirstOrThrow();
      return Number(row.n);
    }

    it('reaches each of its tenants with its role there', async () => {
      // Analyst in A: no full-PII export, no keys; admin in B: both.
      const full = { datasets: ['conversations'], format: 'csv', pii: 'full' };
      const inA = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: as(orgKey.key, clientA.id),
        payload: full,
      });
      expect(inA.statusCode, inA.body).toBe(403);
      expect(inA.json()).toMatchObject({ code: 'forbidden' });
      expect(inA.json().detail).toMatch(/the analyst role may not export personal data/);
      const anonymised = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: as(orgKey.key, clientA.id),
        payload: { ...full, pii: 'enhanced' },
      });
      expect(anonymised.statusCode, anonymised.body).toBe(202);
      const inB = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: as(orgKey.key, clientB.id),
        payload: full,
      });
      expect(inB.statusCode, inB.body).toBe(202);
      const bExport = inB.json().id as string;
      // The export is B's: B's own admin sees it, A's does not, the key sees it only through B.
      expect(
        (await h.app.inject({ url: `/api/v1/exports/${bExport}`, headers: as(clientBKeys.admin!) }))
          .statusCode,
      ).toBe(200);
      expect(
        (await h.app.inject({ url: `/api/v1/exports/${bExport}`, headers: as(h.keys.admin) })).statusCode,
      ).toBe(404);
      expect(
        (await h.app.inject({ url: `/api/v1/exports/${bExport}`, headers: as(orgKey.key) })).statusCode,
      ).toBe(404);
      expect(
        (await h.app.inject({ url: `/api/v1/exports/${bExport}`, headers: as(orgKey.key, clientB.id) }))
          .statusCode,
      ).toBe(200);

      const keyInA = await h.app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        headers: as(orgKey.key, clientA.id),
        payload: { role: 'analyst' },
      });
      expect(keyInA.statusCode).toBe(403);
      const keyInB = await h.app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        headers: as(orgKey.key, clientB.id),
        payload: { role: 'analyst', name: 'made by the agency' },
      });
      expect(keyInB.statusCode, keyInB.body).toBe(201);
      expect(keyInB.json().created_by).toBe(`org_key:${orgKey.id}`);
      const listedInB = await h.app.inject({ url: '/api/v1/api-keys', headers: as(clientBKeys.admin!) });
      expect(listedInB.json().data.map((k: { id: string }) => k.id)).toContain(keyInB.json().id);

      // The acts are in B's own trail, naming the organisation key.
      const trail = await h.app.inject({ url: '/api/v1/audit', headers: as(clientBKeys.admin!) });
      const actions = (trail.json().data as { actor: string; action: string; target_id: string }[]).filter(
        (e) => e.actor === `org_key:${orgKey.id}`,
      );
      expect(actions.map((e) => e.action)).toEqual(
        expect.arrayContaining(['export.requested', 'api_key.created']),
      );
      // The limits are those of the tenant acted in (pro in B, agency at home).
      const usageB = await h.app.inject({ url: '/api/v1/usage', headers: as(orgKey.key, clientB.id) });
      expect(usageB.statusCode).toBe(200);
      expect(usageB.json()).toMatchObject({ tenant_id: clientB.id, plan: 'pro' });
      expect(usageB.headers['x-ratelimit-limit']).toBe('5000');
      // Home: the key's own role (analyst) without the header, and with its own tenant named.
      const usageHome = await h.app.inject({ url: '/api/v1/usage', headers: as(orgKey.key) });
      expect(usageHome.statusCode).toBe(403);
      expect(
        (await h.app.inject({ url: '/api/v1/usage', headers: as(orgKey.key, home.id) })).statusCode,
      ).toBe(403);
    });

    it('refuses the same way a key of no organisation that names another tenant', async () => {
      const before = await refusals(clientA.id);
      const res = await h.app.inject({ url: '/api/v1/exports', headers: as(h.keys.admin, clientB.id) });
      expect(res.statusCode).toBe(403);
      expect(res.json().code).toBe('tenant_not_in_organisation');
      const unknown = await h.app.inject({ url: '/api/v1/exports', headers: as(h.keys.admin, randomUUID()) });
      expect(unknown.json()).toMatchObject({ code: 'tenant_not_in_organisation' });
      // The same detail shape whether the tenant exists or not.
      expect(unknown.json().detail.replace(/"[^"]+"/, '""')).toBe(res.json().detail.replace(/"[^"]+"/, '""'));
      expect((await refusals(clientA.id)) - before).toBe(2);
      // Its own tenant named is its own tenant.
      expect(
        (await h.app.inject({ url: '/api/v1/exports', headers: as(h.keys.admin, clientA.id) })).statusCode,
      ).toBe(200);
      // A malformed or repeated header is refused too, never a server error.
      for (const value of ['not-a-uuid', `${clientA.id},${clientB.id}`, 'x'.repeat(5000)]) {
        const odd = await h.app.inject({ url: '/api/v1/usage', headers: as(orgKey.key, value) });
        expect(odd.statusCode, value.slice(0, 40)).toBe(403);
        expect(odd.json().code).toBe('tenant_not_in_organisation');
      }
      // A blank header names no tenant: the key acts in its own (where the analyst reads no usage).
      const blank = await h.app.inject({ url: '/api/v1/usage', headers: as(orgKey.key, ' ') });
      expect(blank.json()).toMatchObject({ code: 'forbidden' });
    });

    it("applies the client tenant's IP allow-list to the organisation key", async () => {
      await setTenantAllowListAsOperator(h.database, clientB.id, ['203.0.113.0/24'], new Date());
      try {
        const res = await h.app.inject({ url: '/api/v1/api-keys', headers: as(orgKey.key, clientB.id) });
        expect(res.statusCode).toBe(403);
        expect(res.json().code).toBe('ip_not_allowed');
        const trail = await h.database.db
          .selectFrom('audit_events' as never)
          .select(['actor' as never, 'tenant_id' as never])
          .where('action' as never, '=', 'ip.refused' as never)
          .where('tenant_id' as never, '=', clientB.id as never)
          .execute();
        expect(trail).toEqual([{ actor: `org_key:${orgKey.id}`, tenant_id: clientB.id }]);
        // Elsewhere the key still works.
        expect(
          (await h.app.inject({ url: '/api/v1/exports', headers: as(orgKey.key, clientA.id) })).statusCode,
        ).toBe(200);
      } finally {
        await setTenantAllowListAsOperator(h.database, clientB.id, [], new Date());
      }
    });

    it('reads and exports only while the key’s own account is closed', async () => {
      await h.database.db
        .updateTable('tenants')
        .set({ status: 'closing' })
        .where('id', '=', home.id)
        .execute();
      try {
        const write = await h.app.inject({
          method: 'POST',
          url: '/api/v1/api-keys',
          headers: as(orgKey.key, clientB.id),
          payload: { role: 'analyst' },
        });
        expect(write.statusCode).toBe(403);
        expect(write.json().code).toBe('account_closed');
        expect(
          (await h.app.inject({ url: '/api/v1/api-keys', headers: as(orgKey.key, clientB.id) })).statusCode,
        ).toBe(200);
      } finally {
        await h.database.db
          .updateTable('tenants')
          .set({ status: 'active' })
          .where('id', '=', home.id)
          .execute();
      }
    });

    it('cuts access to a tenant at once when it leaves the organisation', async () => {
      expect(
        (await h.app.inject({ url: '/api/v1/api-keys', headers: as(orgKey.key, clientB.id) })).statusCode,
      ).toBe(200);
      await removeOrganisationTenant(h.database, organisation, clientB.id, OPERATOR, new Date());
      const res = await h.app.inject({ url: '/api/v1/api-keys', headers: as(orgKey.key, clientB.id) });
      expect(res.statusCode).toBe(403);
      expect(res.json().code).toBe('tenant_not_in_organisation');
      const org = await h.app.inject({ url: '/api/v1/organisation', headers: as(orgKey.key) });
      expect(org.json().tenants.map((t: { id: string }) => t.id)).not.toContain(clientB.id);
    });
  });
}
