import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../src/auth/context.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import {
  authTestConfig,
  bearer,
  createTenant,
  keysByRole,
  type TestTenant,
} from './support/fixtures/auth.ts';
import { createTestDatabase, preferDialect, type TestDatabase } from './support/databases.ts';

/** Shapes a script relies on being the same everywhere (issue: consistency of lists and errors). */
describe('API consistency', () => {
  let t: TestDatabase;
  let app: FerryApp;
  let tenant: TestTenant;
  let keys: Record<Role, string>;

  beforeAll(async () => {
    t = await createTestDatabase(preferDialect('pglite'));
    app = await buildApp({ database: t.database, config: authTestConfig() });
    tenant = await createTenant(t.database, 'pro');
    keys = await keysByRole(t.database, tenant);
  });
  afterAll(async () => {
    await app?.close();
    await t?.drop();
  });

  it('answers every list with its rows under data, and under the deprecated items for one release', async () => {
    for (const url of ['/api/v1/api-keys', '/api/v1/audit', '/api/v1/schedules', '/api/v1/webhooks']) {
      const res = await app.inject({ url, headers: bearer(keys.admin) });
      expect(res.statusCode, url).toBe(200);
      const body = res.json() as { data: unknown[]; items: unknown[] };
      expect(Array.isArray(body.data), url).toBe(true);
      expect(body.items, url).toEqual(body.data);
    }
    const listed = (await app.inject({ url: '/api/v1/api-keys', headers: bearer(keys.admin) })).json() as {
      data: { role: string }[];
    };
    expect(listed.data.map((k) => k.role).sort()).toEqual(['admin', 'agent', 'analyst', 'manager']);
  });

  it('marks items deprecated in the OpenAPI document', async () => {
    const doc = (await app.inject('/openapi.json')).json() as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    const lists = [
      '/api/v1/api-keys',
      '/api/v1/audit',
      '/api/v1/schedules',
      '/api/v1/schedules/{id}/runs',
      '/api/v1/webhooks',
      '/api/v1/webhooks/{id}/deliveries',
    ];
    for (const path of lists) {
      const ok = doc.paths[path]?.get?.responses['200'] as {
        content: Record<string, { schema: { properties: Record<string, { deprecated?: boolean }> } }>;
      };
      const schema = ok.content['application/json']!.schema;
      expect(schema.properties.data, path).toBeDefined();
      expect(schema.properties.data!.deprecated, path).toBeUndefined();
      expect(schema.properties.items!.deprecated, path).toBe(true);
    }
  });

  it('says how to send a body that came without a Content-Type', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/api-keys',
      headers: bearer(keys.admin),
      payload: Buffer.from('{"role":"analyst"}'),
    });
    expect(res.statusCode).toBe(415);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.json()).toMatchObject({
      code: 'unsupported_media_type',
      detail:
        'the request body was sent without a Content-Type header; send it as JSON with the header Content-Type: application/json',
    });
    const form = await app.inject({
      method: 'POST',
      url: '/api/v1/api-keys',
      headers: { ...bearer(keys.admin), 'content-type': 'application/x-www-form-urlencoded' },
      payload: 'role=analyst',
    });
    expect(form.statusCode).toBe(415);
    expect(form.json().detail).toMatch(
      /^the request body was sent as "application\/x-www-form-urlencoded"; send it as JSON with the header Content-Type: application\/json$/,
    );
  });

  it('reports every invalid parameter, not only the first', async () => {
    const body = await app.inject({
      method: 'POST',
      url: '/api/v1/api-keys',
      headers: bearer(keys.admin),
      payload: { role: 'owner', name: 5, colour: 'blue' },
    });
    expect(body.statusCode).toBe(400);
    const problem = body.json() as {
      code: string;
      detail: string;
      errors: { parameter: string; in: string }[];
    };
    expect(problem.code).toBe('invalid_parameter');
    expect(problem.errors.map((e) => e.parameter).sort()).toEqual(['colour', 'name', 'role']);
    for (const e of problem.errors) expect(e.in).toBe('body');
    for (const name of ['colour', 'name', 'role']) expect(problem.detail).toContain(`${name}: `);

    const query = await app.inject({ url: '/api/v1/audit?limit=0&sort=up', headers: bearer(keys.admin) });
    expect(query.statusCode).toBe(400);
    expect(
      (query.json() as { errors: { parameter: string }[] }).errors.map((e) => e.parameter).sort(),
    ).toEqual(['limit', 'sort']);
  });

  it('answers unsupported_format for a format Ferry has but the dataset does not (Parquet of the knowledge base)', async () => {
    expect(() =>
      parseExportRequest({ tenantId: tenant.id, dataset: 'knowledge_base', format: 'parquet' }),
    ).toThrow(
      expect.objectContaining({
        code: 'unsupported_format',
        message: 'format: knowledge_base exports as json, markdown, xml, not parquet',
      }),
    );
    // A format nobody has stays a plain invalid parameter.
    expect(() =>
      parseExportRequest({ tenantId: tenant.id, dataset: 'knowledge_base', format: 'xlsx' }),
    ).toThrow(expect.objectContaining({ code: 'invalid_parameter' }));
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/exports',
      headers: bearer(keys.admin),
      payload: { datasets: ['knowledge_base'], format: 'parquet' },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'unsupported_format' });
  });
});
