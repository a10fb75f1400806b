/**
 * The edge of the HTTP app: answers that Fastify's router and Node's HTTP parser used to
 * write themselves are problem documents with a request id, and hostile values (NUL
 * characters, numbers beyond range, text that is not UTF-8) are refused as invalid
 * parameters before they reach the database. test/openapi-fuzz.test.ts sends the same
 * kinds of values to every operation.
 */
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../src/auth/context.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { createLogger } from '../src/lib/logger.ts';
import { authTestConfig, bearer, createTenant, keysByRole } from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, preferDialect, type TestDatabase } from './support/databases.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';

/** Sends raw bytes to a listening server and resolves with everything it answered. */
function rawRequest(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(answer));
    socket.write(bytes);
  });
}

/** Status line, headers (lower-cased names) and JSON body of a raw HTTP answer. */
function parseRaw(answer: string) {
  const [head, body] = answer.split('\r\n\r\n') as [string, string];
  const [statusLine, ...lines] = head.split('\r\n');
  const headers = Object.fromEntries(
    lines.map((line) => [
      line.slice(0, line.indexOf(':')).toLowerCase(),
      line.slice(line.indexOf(':') + 1).trim(),
    ]),
  );
  return { status: Number(statusLine!.split(' ')[1]), headers, body: JSON.parse(body) };
}

describe('answers the router and the HTTP parser give', () => {
  let t: TestDatabase;
  let app: FerryApp;
  const lines: Record<string, unknown>[] = [];
  let port: number;

  beforeAll(async () => {
    t = await createTestDatabase(preferDialect('pglite'));
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
        done();
      },
    });
    app = await buildApp({
      database: t.database,
      config: authTestConfig({ LOG_LEVEL: 'info' }),
      logger: createLogger({ logLevel: 'info' }, sink),
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    port = (app.server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await app.close();
    await t.drop();
  });

  const logged = (requestId: string) => lines.filter((l) => l.request_id === requestId);

  it('answers a path parameter longer than the router allows with a 414 problem, logged', async () => {
    const res = await app.inject(`/api/v1/exports/${'a'.repeat(200)}`);
    expect(res.statusCode).toBe(414);
    expect(res.headers['content-type']).toBe(PROBLEM);
    const body = res.json();
    expect(body).toMatchObject({ code: 'uri_too_long', status: 414, type: '/problems/uri_too_long' });
    expect(body.request_id).toBe(res.headers['x-request-id']);
    expect(logged(body.request_id).map((l) => l.code)).toContain('uri_too_long');
  });

  it('answers a path that is not UTF-8 with a 400 problem that repeats no query value', async () => {
    for (const url of [
      '/api/v1/exports/%c0%ae',
      '/api/v1/downloads/%c0%ae/f?expires=1999999999&signature=S3cr3tS1gnature',
    ]) {
      const res = await app.inject(url);
      expect(res.statusCode, url).toBe(400);
      expect(res.headers['content-type']).toBe(PROBLEM);
      const body = res.json();
      expect(body).toMatchObject({ code: 'malformed_request', request_id: res.headers['x-request-id'] });
      expect(res.body).not.toContain('S3cr3tS1gnature');
      expect(res.body).not.toContain('1999999999');
      expect(body.instance).toBe(url.split('?')[0]);
      const log = logged(body.request_id);
      expect(log.map((l) => l.code)).toContain('malformed_request');
      expect(JSON.stringify(log)).not.toContain('S3cr3tS1gnature');
    }
  });

  it('answers unknown routes, methods and media types with problems', async () => {
    const cases = [
      { method: 'GET', url: '/nope?signature=S3cr3tS1gnature', status: 404, code: 'not_found' },
      { method: 'OPTIONS', url: '/api/v1/exports', status: 404, code: 'not_found' },
      { method: 'PUT', url: '/healthz', status: 404, code: 'not_found' },
    ] as const;
    for (const c of cases) {
      const res = await app.inject({ method: c.method, url: c.url });
      expect(res.statusCode, c.url).toBe(c.status);
      expect(res.headers['content-type']).toBe(PROBLEM);
      expect(res.json()).toMatchObject({ code: c.code, request_id: res.headers['x-request-id'] });
      expect(res.body).not.toContain('S3cr3tS1gnature');
    }
  });

  it('answers a request the HTTP parser rejects with a problem and a request id, and logs it', async () => {
    const broken = parseRaw(await rawRequest(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n'));
    expect(broken.status).toBe(400);
    expect(broken.headers['content-type']).toBe(PROBLEM);
    expect(broken.body).toMatchObject({ code: 'malformed_request', status: 400 });
    expect(broken.headers['x-request-id']).toBe(broken.body.request_id);
    expect(logged(broken.body.request_id).map((l) => l.code)).toContain('malformed_request');

    const huge = parseRaw(
      await rawRequest(port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`),
    );
    expect(huge.status).toBe(431);
    expect(huge.headers['content-type']).toBe(PROBLEM);
    expect(huge.body).toMatchObject({ code: 'headers_too_large', status: 431 });
    expect(huge.headers['x-request-id']).toBe(huge.body.request_id);
  });
});

for (const dialect of DIALECTS) {
  describe(`hostile parameter values on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let keys: Record<Role, string>;
    let webhookId: string;
    let scheduleId: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      app = await buildApp({
        database: t.database,
        config: authTestConfig({ FERRY_OUTBOUND_ALLOW: '203.0.113.10', ...t.env }),
      });
      keys = await keysByRole(t.database, await createTenant(t.database, 'enterprise'));
      webhookId = (await post('/api/v1/webhooks', { url: 'https://203.0.113.10/hook', events: ['*'] })).json()
        .id;
      const created = await post('/api/v1/schedules', schedule());
      expect(created.statusCode, created.body).toBe(201);
      scheduleId = created.json().id;
    });
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    const schedule = (extra: Record<string, unknown> = {}) => ({
      name: 'Weekly',
      frequency: { type: 'weekly', days: ['mon'] },
      time: '02:30',
      datasets: [{ dataset: 'conversations', mode: 'full' }],
      targets: [
        {
          type: 's3',
          bucket: 'acme-exports',
          region: 'us-east-1',
          access_key_id: 'AKIAIOSFODNN7EXAMPLE',
          secret_access_key: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
        },
      ],
      ...extra,
    });
    const post = (url: string, payload: object) =>
      app.inject({ method: 'POST', url, headers: bearer(keys.admin), payload });

    /** Expects a 400 invalid_parameter that names `parameter`. */
    function expectInvalid(res: Awaited<ReturnType<typeof post>>, parameter: string, what: string) {
      expect(res.statusCode, `${what}: ${res.body}`).toBe(400);
      expect(res.headers['content-type']).toBe(PROBLEM);
      const body = res.json();
      expect(body.code, what).toBe('invalid_parameter');
      expect(body.errors?.[0]?.parameter, what).toBe(parameter);
    }

    it('refuses NUL characters in query strings, naming the parameter', async () => {
      for (const [url, parameter] of [
        ['/api/v1/audit?action=%00', 'action'],
        ['/api/v1/export/conversations?site_url=%00', 'site_url'],
        ['/api/v1/export/conversations?site_url=https%3A%2F%2Fa.example%00x', 'site_url'],
        ['/api/v1/exports?dataset=%00', 'dataset'],
        ['/api/v1/exports?status=a%00', 'status[0]'],
      ] as const) {
        expectInvalid(await app.inject({ url, headers: bearer(keys.admin) }), parameter, url);
      }
    });

    it('refuses NUL characters and lone surrogates in JSON bodies, naming the field', async () => {
      const cases: [string, object, string][] = [
        ['/api/v1/api-keys', { role: 'analyst', name: 'a\u0000b' }, 'name'],
        ['/api/v1/webhooks', { url: 'https://203.0.113.10/hook', description: '\u0000' }, 'description'],
        ['/api/v1/schedules', schedule({ name: 'x\u0000' }), 'name'],
        [
          '/api/v1/exports',
          { datasets: ['conversations'], filters: { status: 'a\u0000' } },
          'filters.status',
        ],
        ['/api/v1/api-keys', { role: 'analyst', name: 'x\ud800' }, 'name'],
      ];
      for (const [url, payload, parameter] of cases) expectInvalid(await post(url, payload), parameter, url);
      // PATCH too, and a key of a free-form object.
      const patch = await app.inject({
        method: 'PATCH',
        url: `/api/v1/schedules/${scheduleId}`,
        headers: bearer(keys.admin),
        payload: { name: '\u0000' },
      });
      expectInvalid(patch, 'name', 'PATCH schedule');
    });

    it('refuses numbers out of range on every list and page, naming the parameter', async () => {
      const lists = [
        '/api/v1/exports',
        '/api/v1/audit',
        '/api/v1/schedules',
        `/api/v1/webhooks/${webhookId}/deliveries`,
        `/api/v1/schedules/${scheduleId}/runs`,
      ];
      for (const list of lists)
        for (const value of ['Infinity', '-Infinity', '1e309', '99999999999999999999', 'NaN'])
          expectInvalid(
            await app.inject({ url: `${list}?limit=${value}`, headers: bearer(keys.admin) }),
            'limit',
            `${list}?limit=${value}`,
          );
      for (const value of ['99999999999999999999', '1e20', '9007199254740991', 'Infinity'])
        expectInvalid(
          await app.inject({
            url: `/api/v1/export/conversations?page=${value}`,
            headers: bearer(keys.admin),
          }),
          'page',
          `page=${value}`,
        );
      for (const value of ['1e20', '3000000000', 'Infinity'])
        expectInvalid(
          await app.inject({
            url: `/api/v1/schedules/${scheduleId}/runs?before=${value}`,
            headers: bearer(keys.admin),
          }),
          'before',
          `before=${value}`,
        );
      // The largest accepted values still work.
      const last = await app.inject({
        url: `/api/v1/schedules/${scheduleId}/runs?before=2147483647`,
        headers: bearer(keys.admin),
      });
      expect(last.statusCode, last.body).toBe(200);
      const far = await app.inject({
        url: '/api/v1/export/conversations?page=1000000000',
        headers: bearer(keys.admin),
      });
      expect(far.statusCode, far.body).toBe(200);
    });

    it('refuses numbers out of range in JSON bodies', async () => {
      const huge = await app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: { ...bearer(keys.admin), 'content-type': 'application/json' },
        payload: '{"datasets":["conversations"],"filters":{"status":99999999999999999999}}',
      });
      expectInvalid(huge, 'filters.status', 'filter 1e20');
      const infinite = await app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        headers: { ...bearer(keys.admin), 'content-type': 'application/json' },
        payload: '{"role":"analyst","expires_in_days":1e309}',
      });
      expectInvalid(infinite, 'expires_in_days', 'expires_in_days 1e309');
    });

    it('names every hostile parameter of a request at once', async () => {
      const res = await app.inject({
        url: '/api/v1/audit?action=%00&limit=Infinity&cursor=%ff',
        headers: bearer(keys.admin),
      });
      expect(res.statusCode, res.body).toBe(400);
      const names = (res.json().errors as { parameter: string }[]).map((e) => e.parameter);
      expect(names.sort()).toEqual(['action', 'cursor', 'limit']);
    });

    it('refuses query text whose percent-escapes are not UTF-8, and keeps valid escapes', async () => {
      for (const value of ['%ff', '%c0%ae', '%ed%a0%80', '%', 'ok%e2%82'])
        expectInvalid(
          await app.inject({ url: `/api/v1/audit?action=${value}`, headers: bearer(keys.admin) }),
          'action',
          `action=${value}`,
        );
      const valid = await app.inject({
        url: '/api/v1/audit?action=export.%E2%82%AC+x',
        headers: bearer(keys.admin),
      });
      expect(valid.statusCode, valid.body).toBe(200);
    });

    it('answers 10 KB values with a 4xx or a result, never a 5xx', async () => {
      const long = 'x'.repeat(10_240);
      const answers = await Promise.all([
        app.inject({ url: `/api/v1/export/conversations?site_url=${long}`, headers: bearer(keys.admin) }),
        app.inject({ url: `/api/v1/export/conversations?status=${long}`, headers: bearer(keys.admin) }),
        app.inject({ url: `/api/v1/audit?action=${long}`, headers: bearer(keys.admin) }),
        app.inject({ url: `/api/v1/exports?dataset=${long}`, headers: bearer(keys.admin) }),
        post('/api/v1/api-keys', { role: 'analyst', name: long }),
        post('/api/v1/webhooks', { url: 'https://203.0.113.10/hook', description: long }),
      ]);
      for (const res of answers) {
        expect(res.statusCode, res.body.slice(0, 300)).toBeLessThan(500);
        if (res.statusCode >= 400) expect(res.headers['content-type']).toBe(PROBLEM);
      }
    });
  });
}
