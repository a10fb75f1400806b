import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { FastifyInstance, LightMyRequestResponse, RouteOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import { compose, type Ferry } from '../src/compose.ts';
import { registeredWebRoutes } from '../src/web/plugin.ts';
import type { Config } from '../src/config/config.ts';
import { seed } from '../src/seed/seed.ts';
import { authTestConfig, bearer, createTenant } from './support/fixtures/auth.ts';
import { getExport } from './support/fixtures/export-jobs.ts';
import { waitForExport } from './support/wait.ts';

/**
 * The OpenAPI document of the server as `ferry serve` builds it (compose: embedded
 * database, job queue and workers, object store, live stream): valid against the
 * official OpenAPI 3.1 schema, listing every route, and matching what the server
 * actually answers (statuses, headers, content types).
 */

// Every route the app registers, seen by an onRoute hook installed on the instance the
// moment it is created, before any plugin or route.
const registered = vi.hoisted(() => [] as RouteOptions[]);
vi.mock('fastify', async (importOriginal) => {
  const actual = await importOriginal<typeof import('fastify')>();
  const create = ((options?: object) => {
    const app = actual.default(options as never) as unknown as FastifyInstance;
    app.addHook('onRoute', (route) => {
      registered.push({ ...route });
    });
    return app;
  }) as unknown as typeof actual.default;
  return { ...actual, default: create };
});

const SECRET = 'openapi-test-secret-key-0123456789abcdef';
const PROBLEM = 'application/problem+json';
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
/** Headers of the transport rather than of the API: set on any response. */
const TRANSPORT_HEADERS = new Set([
  'content-length',
  'content-type',
  'date',
  'connection',
  'transfer-encoding',
]);

interface Header {
  $ref?: string;
  schema?: object;
}
interface Parameter {
  in: string;
  name: string;
  schema: object;
}
interface Response {
  description: string;
  headers?: Record<string, Header>;
  content?: Record<string, { schema: object }>;
}
interface Operation {
  summary?: string;
  security?: Record<string, string[]>[];
  parameters?: (Parameter | { $ref: string })[];
  requestBody?: { content: Record<string, { schema: object }> };
  responses: Record<string, Response>;
}
interface Document {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: {
    schemas: Record<string, object>;
    parameters: Record<string, Parameter>;
    headers: Record<string, Header>;
  };
}

const openapiPath = (url: string) => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
const methodsOf = (route: RouteOptions) => [route.method].flat().map((m) => m.toLowerCase());

function operations(doc: Document): { path: string; method: string; op: Operation }[] {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    METHODS.filter((m) => item[m]).map((method) => ({ path, method, op: item[method]! })),
  );
}

/** The parameters of an operation, references to `components.parameters` resolved. */
function parametersOf(doc: Document, op: Operation): Parameter[] {
  return (op.parameters ?? []).map((p) =>
    '$ref' in p ? doc.components.parameters[p.$ref.replace('#/components/parameters/', '')]! : p,
  );
}

/** The routes Fastify added by itself: a HEAD for each GET, sharing its handler. */
function isAutomaticHead(route: RouteOptions): boolean {
  return (
    route.method === 'HEAD' &&
    registered.some((r) => r.method === 'GET' && r.url === route.url && r.handler === route.handler)
  );
}

/** The documented routes: all but the reference UI (/docs) and the document itself. */
/** API operations: not the /docs UI, the document itself, or the dashboard's pages and assets (src/web/). */
function documentable(route: RouteOptions): boolean {
  const page = registeredWebRoutes().some((r) => r.url === route.url) || route.url.startsWith('/assets/');
  // A route may hide itself when another documents it (/odata/v4/ is /odata/v4 with a slash).
  const hidden = (route.schema as { hide?: boolean } | undefined)?.hide === true;
  return !route.url.startsWith('/docs') && route.url !== '/openapi.json' && !page && !hidden;
}

describe('OpenAPI document of the served app', () => {
  let config: Config;
  let ferry: Ferry;
  let doc: Document;
  let admin: string;
  let limited: string;
  let authenticate: unknown;

  beforeAll(async () => {
    config = authTestConfig({ FERRY_SECRET_KEY: SECRET, FERRY_ENTERPRISE_RATE_LIMIT: '24' });
    ferry = await compose(config);
    authenticate = ferry.app.authenticate;
    const now = Date.now();
    const seeded = await seed(ferry.database, {
      tenants: 1,
      conversations: 3,
      messagesPerConversation: 2,
      seed: 11,
      since: new Date(now - 10 * 86_400_000),
      until: new Date(now - 86_400_000),
      secretKey: SECRET,
    });
    const tenantId = seeded.tenants[0]!.id;
    await ferry.database.db
      .updateTable('tenants')
      .set({ plan: 'agency' })
      .where('id', '=', tenantId)
      .execute();
    admin = (await createApiKey(ferry.database, { tenantId, role: 'admin' })).key;
    const enterprise = await createTenant(ferry.database, 'enterprise');
    limited = (await createApiKey(ferry.database, { tenantId: enterprise.id, role: 'admin' })).key;
    const res = await ferry.app.inject('/openapi.json');
    expect(res.statusCode).toBe(200);
    doc = res.json() as Document;
  });

  afterAll(async () => {
    await ferry?.close();
    await rm(config.dataDir, { recursive: true, force: true });
  });

  it('is valid against the official OpenAPI 3.1 schema, with every $ref resolving', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc) as unknown as Record<string, unknown>);
    expect(result.errors ?? [], 'OpenAPI validation errors').toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
  });

  it('is refused by the same validator once broken (the check is live)', async () => {
    const broken = structuredClone(doc);
    broken.paths['/healthz']!.get!.responses = { 200: { content: {} } as unknown as Response };
    expect((await new Validator().validate(broken as unknown as Record<string, unknown>)).valid).toBe(false);
    const dangling = structuredClone(doc) as unknown as {
      components: { schemas: Record<string, unknown> };
    } & Record<string, unknown>;
    delete dangling.components.schemas.Problem;
    expect((await new Validator().validate(dangling)).valid).toBe(false);
  });

  it('has Schema Objects that compile as JSON Schema 2020-12 in strict mode', () => {
    const ajv = new Ajv2020({ strict: true, allowUnionTypes: true, validateFormats: true });
    addFormats.default(ajv);
    ajv.addFormat('binary', true);
    // Keywords of the OpenAPI 3.1 schema dialect on top of JSON Schema 2020-12.
    for (const keyword of ['example', 'discriminator', 'xml', 'externalDocs']) ajv.addKeyword(keyword);
    // Ajv knows OpenAPI 3.0's `nullable`, which 3.1 dropped for `type: [..., 'null']`.
    ajv.removeKeyword('nullable');
    const local = (schema: object) =>
      JSON.parse(JSON.stringify(schema).replaceAll('"#/components/schemas/', '"urn:ferry:schema:'));
    for (const [name, schema] of Object.entries(doc.components.schemas))
      ajv.addSchema(local(schema), `urn:ferry:schema:${name}`);
    const schemas: [string, object][] = [
      ...Object.entries(doc.components.schemas),
      ...Object.entries(doc.components.parameters).map(([n, p]): [string, object] => [n, p.schema]),
      ...Object.entries(doc.components.headers).map(([n, h]): [string, object] => [n, h.schema!]),
    ];
    for (const { path, method, op } of operations(doc)) {
      const at = `${method.toUpperCase()} ${path}`;
      for (const p of op.parameters ?? [])
        if ('schema' in p) schemas.push([`${at} ${p.in} ${p.name}`, p.schema]);
      for (const [type, media] of Object.entries(op.requestBody?.content ?? {}))
        schemas.push([`${at} body ${type}`, media.schema]);
      for (const [status, response] of Object.entries(op.responses)) {
        for (const [type, media] of Object.entries(response.content ?? {}))
          schemas.push([`${at} ${status} ${type}`, media.schema]);
        for (const [name, header] of Object.entries(response.headers ?? {}))
          if (header.schema) schemas.push([`${at} ${status} header ${name}`, header.schema]);
      }
    }
    expect(schemas.length).toBeGreaterThan(200);
    for (const [where, schema] of schemas) {
      expect(() => ajv.compile(local(schema)), where).not.toThrow();
    }
  });

  it('documents every route the server registers, and no other', () => {
    const routes = registered.filter(documentable);
    const hidden = registered.filter((r) => !documentable(r));
    expect(hidden.length, 'the /docs UI and /openapi.json are registered').toBeGreaterThan(3);
    for (const route of hidden) expect(doc.paths[openapiPath(route.url)], route.url).toBeUndefined();

    const expected = new Set<string>();
    for (const route of routes) {
      if (isAutomaticHead(route)) continue;
      for (const method of methodsOf(route)) expected.add(`${method} ${openapiPath(route.url)}`);
    }
    const documented = new Set(operations(doc).map(({ path, method }) => `${method} ${path}`));
    expect(
      [...expected].filter((op) => !documented.has(op)),
      'routes missing from the document',
    ).toEqual([]);
    // A documented operation is a registered route (HEAD of a GET included where the GET opts in).
    const registeredOps = new Set(
      routes.flatMap((r) => methodsOf(r).map((m) => `${m} ${openapiPath(r.url)}`)),
    );
    expect(
      [...documented].filter((op) => !registeredOps.has(op)),
      'documented but not served',
    ).toEqual([]);
    expect(documented.size).toBeGreaterThanOrEqual(40);
    expect(documented).toContain('get /api/v1/stream/export');
    expect(documented).toContain('head /api/v1/downloads/{exportId}/{fileId}');
    expect(documented).toContain('head /api/v1/export/{dataset}');
  });

  it('requires the bearer key exactly on the operations that authenticate', () => {
    let secured = 0;
    for (const route of registered.filter(documentable)) {
      const op = doc.paths[openapiPath(route.url)]?.[methodsOf(route)[0]!];
      if (!op) continue; // automatic HEAD routes
      const authenticates = [route.onRequest, route.preHandler].flat().includes(authenticate as never);
      const where = `${route.method} ${route.url}`;
      if (authenticates) {
        secured++;
        // The OData feed also takes the key as a Basic password (BI tools).
        expect(op.security, where).toEqual(
          route.url.startsWith('/odata/') ? [{ bearer: [] }, { basic: [] }] : [{ bearer: [] }],
        );
      } else expect(op.security, where).toBeUndefined();
    }
    expect(secured).toBeGreaterThanOrEqual(30);
  });

  it('documents every error as an application/problem+json Problem, with the statuses each operation can raise', () => {
    for (const { path, method, op } of operations(doc)) {
      const where = `${method.toUpperCase()} ${path}`;
      const statuses = Object.keys(op.responses);
      for (const status of statuses.filter((s) => Number(s) >= 400)) {
        const response = op.responses[status]!;
        if (method === 'head') expect(response.content, `${where} ${status}`).toBeUndefined();
        else
          expect(response.content, `${where} ${status}`).toEqual({
            [PROBLEM]: { schema: { $ref: '#/components/schemas/Problem' } },
          });
        expect(response.description, `${where} ${status}`).not.toBe('Default Response');
      }
      const must = ['500'];
      if (parametersOf(doc, op).some((p) => p.name !== 'x-request-id') || op.requestBody) must.push('400');
      if (op.requestBody) must.push('413', '415');
      if (op.security) must.push('401', '403', '429');
      // A resource named in the path may not exist; the signed download answers 403 instead
      // (so ids cannot be probed) and an unknown dataset is an invalid parameter.
      const resource = /\{(id|code)\}/.test(path);
      if (resource) must.push('404');
      expect(statuses, where).toEqual(expect.arrayContaining(must));
      expect(
        statuses.some((s) => /^(1|2|3)\d\d$/.test(s)),
        `${where}: no success response`,
      ).toBe(true);
    }
  });

  it('declares the request id on every response and the rate-limit headers on authenticated operations', () => {
    const rateLimit = [
      'X-RateLimit-Limit',
      'X-RateLimit-Remaining',
      'X-RateLimit-Reset',
      'X-RateLimit-Burst',
    ];
    for (const { path, method, op } of operations(doc)) {
      const where = `${method.toUpperCase()} ${path}`;
      expect(
        parametersOf(doc, op).map((p) => `${p.in}:${p.name}`),
        where,
      ).toContain('header:x-request-id');
      for (const [status, response] of Object.entries(op.responses)) {
        const names = Object.keys(response.headers ?? {});
        if (status !== '101') expect(names, `${where} ${status}`).toContain('X-Request-Id');
        if (!op.security) continue;
        if (status === '401') expect(names, `${where} 401`).toContain('WWW-Authenticate');
        else expect(names, `${where} ${status}`).toEqual(expect.arrayContaining(rateLimit));
        if (status === '429') expect(names, `${where} 429`).toContain('Retry-After');
      }
    }
  });

  it('declares the headers of paged exports, export requests and file downloads', () => {
    const headersOf = (path: string, method: string, status: string) =>
      Object.keys(doc.paths[path]?.[method]?.responses[status]?.headers ?? {});
    const page = [
      'Content-Disposition',
      'Content-Encoding',
      'Cache-Control',
      'X-Total-Records',
      'X-Page-Count',
      'X-Export-ID',
      'X-Next-Cursor',
      'X-End-Of-Stream',
      'Link',
    ];
    for (const method of ['get', 'head'])
      expect(headersOf('/api/v1/export/{dataset}', method, '200')).toEqual(expect.arrayContaining(page));
    expect(doc.paths['/api/v1/export/{dataset}']!.head!.responses['200']!.content).toBeUndefined();
    for (const path of ['/api/v1/exports', '/api/export/request', '/api/v1/exports/{id}/repeat'])
      expect(headersOf(path, 'post', '202')).toEqual(
        expect.arrayContaining(['Location', 'Idempotent-Replayed']),
      );
    expect(headersOf('/api/v1/exports/{id}/download', 'get', '302')).toContain('Location');
    const file = ['Content-Disposition', 'Accept-Ranges', 'ETag', 'Repr-Digest', 'Cache-Control'];
    const download = '/api/v1/downloads/{exportId}/{fileId}';
    expect(headersOf(download, 'get', '200')).toEqual(expect.arrayContaining(file));
    expect(headersOf(download, 'get', '206')).toEqual(expect.arrayContaining([...file, 'Content-Range']));
    expect(headersOf(download, 'get', '416')).toContain('Content-Range');
    expect(headersOf(download, 'head', '200')).toEqual(expect.arrayContaining(file));
    const parameters = parametersOf(doc, doc.paths[download]!.get!).map((p) => `${p.in}:${p.name}`);
    expect(parameters).toEqual(expect.arrayContaining(['header:range', 'header:if-range']));
  });

  it('documents each status, header and content type the server actually answers with', async () => {
    const templates = Object.keys(doc.paths).map((path) => ({
      path,
      pattern: new RegExp(
        `^${path
          .split(/\{[^}]+\}/)
          .map((part) => part.replace(/[.*+?^$()|[\]\\]/g, '\\$&'))
          .join('[^/]+')}$`,
      ),
    }));
    const answered = new Set<string>();
    const check = (method: string, url: string, res: LightMyRequestResponse) => {
      const pathname = url.split('?')[0]!;
      // A static path wins over a template, as in the router (/odata/v4/$metadata, not {set}).
      const path = (
        templates.find((t) => t.path === pathname) ?? templates.find((t) => t.pattern.test(pathname))
      )?.path;
      const where = `${method} ${url} → ${res.statusCode}`;
      const op = path ? doc.paths[path]![method.toLowerCase()] : undefined;
      expect(op, `${where}: not documented`).toBeDefined();
      const response = op!.responses[String(res.statusCode)];
      expect(response, `${where}: status not documented`).toBeDefined();
      answered.add(`${method.toLowerCase()} ${path} ${res.statusCode}`);
      const declared = new Set(Object.keys(response!.headers ?? {}).map((h) => h.toLowerCase()));
      const undeclared = Object.keys(res.headers).filter(
        (h) => !TRANSPORT_HEADERS.has(h) && !declared.has(h),
      );
      expect(undeclared, `${where}: headers not declared`).toEqual([]);
      const type = String(res.headers['content-type'] ?? '')
        .split(';')[0]!
        .trim();
      if (method === 'HEAD' || res.statusCode === 302) expect(response!.content, where).toBeUndefined();
      else if (type) {
        const media = Object.keys(response!.content ?? {});
        expect(media.includes(type) || media.includes('*/*'), `${where}: ${type} not in ${media}`).toBe(true);
      }
    };
    const send = async (method: string, url: string, headers: Record<string, string> = {}, body?: object) => {
      const res = await ferry.app.inject({
        method: method as 'GET',
        url,
        headers,
        ...(body ? { payload: body } : {}),
      });
      check(method, url, res);
      return res;
    };

    // Every operation, with and without the key, on resources that do not exist.
    const sample: Record<string, string> = { dataset: 'conversations', code: 'no_such_code' };
    for (const { path, method, op } of operations(doc)) {
      const url = path.replace(/\{([^}]+)\}/g, (_, name: string) => sample[name] ?? randomUUID());
      const body = op.requestBody ? {} : undefined;
      await send(method.toUpperCase(), url, {}, body);
      await send(method.toUpperCase(), url, bearer(admin), body);
    }

    // Pages of a dataset with rows: every page header, gzip, HEAD.
    const page = '/api/v1/export/conversations?page_size=1';
    const first = await send('GET', page, bearer(admin));
    expect(first.statusCode, first.body).toBe(200);
    expect(first.headers.link).toBeDefined();
    expect((await send('GET', `${page}&compression=gzip`, bearer(admin))).headers['content-encoding']).toBe(
      'gzip',
    );
    await send('HEAD', page, bearer(admin));
    await send('GET', `${page}&page_size=0`, bearer(admin));
    await send('GET', '/api/v1/export/knowledge_base?format=markdown', bearer(admin));
    await send('GET', '/api/v1/stream/export');
    // A request refused after the handler chose gzip: the problem itself is not compressed.
    await send('GET', '/api/v1/export/conversations?compression=gzip&cursor=bogus', bearer(admin));

    // An export from request to download, as a client runs it.
    const created = await send(
      'POST',
      '/api/v1/exports',
      { ...bearer(admin), 'idempotency-key': 'openapi-test' },
      { datasets: ['conversations'], format: 'csv' },
    );
    expect(created.statusCode, created.body).toBe(202);
    const replayed = await send(
      'POST',
      '/api/v1/exports',
      { ...bearer(admin), 'idempotency-key': 'openapi-test' },
      { datasets: ['conversations'], format: 'csv' },
    );
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    await send('POST', '/api/v1/exports', bearer(admin), { datasets: ['conversations'], color: 'red' });
    const id = (created.json() as { id: string }).id;
    await waitForExport(ferry.database, id, ['completed']);
    const done = await getExport(ferry.app, admin, id);
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    await send('GET', `/api/v1/exports/${id}`, bearer(admin));
    await send('GET', `/api/export/status/${id}`, bearer(admin));
    await send('GET', `/api/v1/exports/${id}/download?redirect=true`, bearer(admin));
    const link = await send('GET', `/api/v1/exports/${id}/download`, bearer(admin));
    const url = (link.json() as { url: string }).url;
    const signed = url.slice(url.indexOf('/api/'));
    expect((await send('GET', signed)).statusCode).toBe(200);
    expect((await send('GET', signed, { range: 'bytes=1-' })).statusCode).toBe(206);
    expect((await send('GET', signed, { range: 'bytes=999999999-' })).statusCode).toBe(416);
    expect((await send('HEAD', signed)).statusCode).toBe(200);
    await send('GET', `${signed.replace(/signature=[^&]+/, 'signature=x')}`);
    await send('POST', `/api/v1/exports/${id}/repeat`, bearer(admin));
    await send('DELETE', `/api/v1/exports/${id}`, bearer(admin));

    // A key over its burst limit (24 an hour, 4 per 5 minutes): 429 with Retry-After.
    let limitedRes: LightMyRequestResponse | undefined;
    for (let i = 0; i < 12 && limitedRes?.statusCode !== 429; i++)
      limitedRes = await send('GET', '/api/v1/usage', bearer(limited));
    expect(limitedRes?.statusCode).toBe(429);
    expect(limitedRes?.headers['retry-after']).toBeDefined();

    // The probes reached the interesting answers, so the checks above covered them.
    for (const expected of [
      'get /api/v1/export/{dataset} 200',
      'head /api/v1/export/{dataset} 200',
      'get /api/v1/export/{dataset} 400',
      'get /api/v1/export/{dataset} 401',
      'post /api/v1/exports 202',
      'get /api/v1/exports/{id}/download 302',
      'get /api/v1/downloads/{exportId}/{fileId} 206',
      'get /api/v1/downloads/{exportId}/{fileId} 403',
      'get /api/v1/downloads/{exportId}/{fileId} 416',
      'get /api/v1/schedules/{id} 404',
      'get /api/v1/stream/export 426',
      'get /api/v1/usage 429',
    ])
      expect(answered, expected).toContain(expected);
  });
});
