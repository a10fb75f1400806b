import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Type } from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import type { RoutePlugin } from '../src/http/types.ts';
import { FerryError, invalid } from '../src/domain/ferry-error.ts';
import { createLogger, REDACTED } from '../src/lib/logger.ts';
import {
  createTestDatabase,
  DIALECTS,
  preferDialect,
  TEST_DATABASE_URL,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';
import { until } from './support/wait.ts';
import { pgliteDatabase } from '../src/db/pglite-database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';

/** A logger whose JSON lines are kept for assertions. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: createLogger({ logLevel: 'info' }, stream), lines };
}

/** Routes that exist only in this test, to exercise validation and error handling. */
const testRoutes: RoutePlugin = async (app) => {
  app.get(
    '/test/exports',
    {
      schema: {
        querystring: Type.Object(
          {
            format: Type.Enum(['csv', 'json', 'ndjson']),
            limit: Type.Optional(Type.Integer({ minimum: 1 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ format: Type.String(), limit: Type.Optional(Type.Integer()) }) },
      },
    },
    async (request) => request.query,
  );
  app.post(
    '/test/body',
    {
      schema: {
        body: Type.Object(
          { count: Type.Integer(), items: Type.Array(Type.Object({ name: Type.String() })) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ count: Type.Integer() }) },
      },
    },
    async (request) => ({ count: request.body.count }),
  );
  app.get('/test/crash', { schema: { response: { 200: Type.Object({}) } } }, async () => {
    throw new Error('connection to db-internal.example:5432 failed: password authentication for "ferry"');
  });
  app.get('/test/gone', { schema: { response: { 200: Type.Object({}) } } }, async () => {
    throw new FerryError('gone', 'the download link expired at 2026-01-01T00:00:00Z');
  });
  app.get('/test/invalid', { schema: { response: { 200: Type.Object({}) } } }, async () => {
    throw invalid('compression', 'unknown compression "rar"', ['none', 'gzip', 'zstd']);
  });
  app.get('/test/uncatalogued', { schema: { response: { 200: Type.Object({}) } } }, async () => {
    // @ts-expect-error a code outside the error catalog does not compile; the handler still guards it
    throw new FerryError('made_up_code', 'a message that names internals');
  });
};

for (const dialect of DIALECTS) {
  describe(`health routes on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      app = await buildApp({ database: t.database, config: loadConfig({ LOG_LEVEL: 'silent' }) });
    });
    afterAll(async () => {
      await app.close();
      await t.drop();
    });

    it('GET /healthz says the process is up, with the version', async () => {
      const res = await app.inject('/healthz');
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ status: 'ok', version: expect.stringMatching(/^\d+\.\d+\.\d+/) });
    });

    it('GET /readyz answers 200 while the database answers', async () => {
      const res = await app.inject('/readyz');
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ status: 'ready', database: 'ok' });
    });

    it('GET /readyz answers 503 problem+json once the database is gone; /healthz stays 200', async () => {
      // A connection of its own, so that closing it leaves the test database to drop.
      const own =
        dialect === 'pglite'
          ? await pgliteDatabase({})
          : postgresDatabase({ connectionString: TEST_DATABASE_URL, schema: t.schema, max: 1 });
      const local = await buildApp({ database: own, config: loadConfig({ LOG_LEVEL: 'silent' }) });
      try {
        expect((await local.inject('/readyz')).statusCode).toBe(200);
        await own.close();
        const res = await local.inject('/readyz');
        expect(res.statusCode).toBe(503);
        expect(res.headers['content-type']).toBe(PROBLEM);
        expect(res.json()).toMatchObject({
          type: '/problems/service_unavailable',
          status: 503,
          code: 'service_unavailable',
          instance: '/readyz',
          request_id: res.headers['x-request-id'],
        });
        expect((await local.inject('/healthz')).statusCode).toBe(200);
      } finally {
        await local.close();
      }
    });
  });
}

describe('HTTP app', () => {
  let t: TestDatabase;
  let app: FerryApp;
  let lines: Record<string, unknown>[];
  beforeAll(async () => {
    t = await createTestDatabase(preferDialect('pglite'));
    const captured = capturedLogger();
    lines = captured.lines;
    app = await buildApp({
      database: t.database,
      config: loadConfig({ LOG_LEVEL: 'info' }),
      logger: captured.logger,
      routes: [testRoutes],
    });
  });
  afterAll(async () => {
    await app.close();
    await t.drop();
  });

  it('serves an OpenAPI 3.1 document describing the routes and the problem schema', async () => {
    const res = await app.inject('/openapi.json');
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info).toMatchObject({ title: 'Ferry API', version: expect.any(String) });
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/healthz', '/readyz', '/problems/{code}']),
    );
    expect(doc.paths['/openapi.json']).toBeUndefined();
    // Every operation declares a 2xx response with a schema (HEAD: without content), but the
    // WebSocket handshake, whose success is 101. test/openapi.test.ts checks the rest.
    for (const [route, item] of Object.entries<Record<string, { responses: Record<string, unknown> }>>(
      doc.paths,
    )) {
      for (const [method, op] of Object.entries(item)) {
        if (op.responses['101']) continue;
        const ok = Object.entries(op.responses).find(([status]) => status.startsWith('2'));
        expect(ok, `${method} ${route} documents no 2xx response`).toBeDefined();
        if (method === 'head') expect(JSON.stringify(ok![1])).not.toContain('"content"');
        else expect(JSON.stringify(ok![1])).toContain('"schema"');
      }
    }
    expect(doc.paths['/readyz'].get.responses['503'].content['application/problem+json'].schema).toEqual({
      $ref: '#/components/schemas/Problem',
    });
    expect(doc.components.schemas.Problem.required).toEqual(
      expect.arrayContaining(['type', 'title', 'status', 'detail', 'instance', 'code']),
    );
    // Every $ref resolves inside the document.
    for (const [, ref] of JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g))
      expect(doc.components.schemas[ref!], `dangling $ref ${ref}`).toBeDefined();
    // The test routes document their query parameters with the accepted values.
    const format = doc.paths['/test/exports'].get.parameters.find(
      (p: { name: string }) => p.name === 'format',
    );
    expect(format).toMatchObject({
      in: 'query',
      required: true,
      schema: { enum: ['csv', 'json', 'ndjson'] },
    });
  });

  it('serves the API reference at /docs with its assets from the package', async () => {
    const page = await app.inject('/docs');
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.body).toContain('swagger-ui');
    const bundle = await app.inject('/docs/static/swagger-ui-bundle.js');
    expect(bundle.statusCode).toBe(200);
    expect(bundle.body.length).toBeGreaterThan(100_000);
  });

  it('answers an unknown route with a 404 problem', async () => {
    const res = await app.inject('/no/such/route?signature=abc');
    expect(res.statusCode).toBe(404);
    expect(res.headers['content-type']).toBe(PROBLEM);
    expect(res.json()).toEqual({
      type: '/problems/not_found',
      title: 'Not found',
      status: 404,
      detail: 'no route GET /no/such/route',
      instance: '/no/such/route',
      code: 'not_found',
      request_id: res.headers['x-request-id'],
    });
  });

  it('names the parameter and the accepted values when an enum query parameter is wrong', async () => {
    const res = await app.inject('/test/exports?format=pdf');
    expect(res.statusCode).toBe(400);
    expect(res.headers['content-type']).toBe(PROBLEM);
    const body = res.json();
    expect(body).toMatchObject({ code: 'invalid_parameter', status: 400, title: 'Invalid parameter' });
    expect(body.detail).toContain('format');
    expect(body.detail).toContain('csv, json, ndjson');
    expect(body.errors).toEqual([
      {
        parameter: 'format',
        in: 'query',
        message: 'must be one of: csv, json, ndjson',
        accepted: ['csv', 'json', 'ndjson'],
      },
    ]);
  });

  it('coerces query strings to the declared types and rejects unknown parameters', async () => {
    const ok = await app.inject('/test/exports?format=csv&limit=10');
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({ format: 'csv', limit: 10 });

    const low = await app.inject('/test/exports?format=csv&limit=0');
    expect(low.statusCode).toBe(400);
    expect(low.json().errors).toEqual([{ parameter: 'limit', in: 'query', message: 'must be >= 1' }]);

    const unknown = await app.inject('/test/exports?format=csv&limt=10');
    expect(unknown.statusCode).toBe(400);
    expect(unknown.json().errors).toEqual([
      { parameter: 'limt', in: 'query', message: 'is not a known parameter' },
    ]);
  });

  it('rejects unknown body fields instead of dropping them, and does not coerce JSON types', async () => {
    const extra = await app.inject({
      method: 'POST',
      url: '/test/body',
      payload: { count: 1, items: [], admin: true },
    });
    expect(extra.statusCode).toBe(400);
    expect(extra.json().errors).toEqual([
      { parameter: 'admin', in: 'body', message: 'is not a known parameter' },
    ]);

    const text = await app.inject({ method: 'POST', url: '/test/body', payload: { count: '1', items: [] } });
    expect(text.statusCode).toBe(400);
    expect(text.json().errors).toEqual([{ parameter: 'count', in: 'body', message: 'must be integer' }]);

    const nested = await app.inject({
      method: 'POST',
      url: '/test/body',
      payload: { count: 1, items: [{}] },
    });
    expect(nested.json().errors).toEqual([
      { parameter: 'items[0].name', in: 'body', message: 'is required' },
    ]);

    const ok = await app.inject({
      method: 'POST',
      url: '/test/body',
      payload: { count: 2, items: [{ name: 'a' }] },
    });
    expect(ok.statusCode).toBe(200);
  });

  it('answers a body that is not JSON with malformed_request', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/test/body',
      headers: { 'content-type': 'application/json' },
      payload: '{"count": ',
    });
    expect(res.statusCode).toBe(400);
    expect(res.headers['content-type']).toBe(PROBLEM);
    expect(res.json().code).toBe('malformed_request');
  });

  it('answers a FerryError with its catalog status and its message', async () => {
    const gone = await app.inject('/test/gone');
    expect(gone.statusCode).toBe(410);
    expect(gone.json()).toMatchObject({
      code: 'gone',
      title: 'Gone',
      detail: 'the download link expired at 2026-01-01T00:00:00Z',
    });

    const bad = await app.inject('/test/invalid');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().errors).toEqual([
      {
        parameter: 'compression',
        message: 'unknown compression "rar" (accepted: none, gzip, zstd)',
        accepted: ['none', 'gzip', 'zstd'],
      },
    ]);
  });

  it('hides the message of an unexpected error and logs it with the request id', async () => {
    const res = await app.inject('/test/crash');
    expect(res.statusCode).toBe(500);
    expect(res.headers['content-type']).toBe(PROBLEM);
    const body = res.json();
    expect(body).toMatchObject({ code: 'internal', status: 500, type: '/problems/internal' });
    for (const leak of ['db-internal', 'password', '5432', 'Error', 'at ', '.ts'])
      expect(res.body).not.toContain(leak);
    const logged = lines.find((l) => l.request_id === body.request_id && l.level === 'error');
    expect(logged?.err).toMatchObject({ message: expect.stringContaining('db-internal.example') });
  });

  it('reports a FerryError with a code missing from the catalog as internal', async () => {
    const res = await app.inject('/test/uncatalogued');
    expect(res.statusCode).toBe(500);
    expect(res.json().code).toBe('internal');
    expect(res.body).not.toContain('internals');
  });

  it('keeps a plain caller request id and replaces one that could forge log lines', async () => {
    const kept = await app.inject({ url: '/healthz', headers: { 'x-request-id': 'client-42.a' } });
    expect(kept.headers['x-request-id']).toBe('client-42.a');
    const replaced = await app.inject({ url: '/nope', headers: { 'x-request-id': 'x\n{"level":"fatal"}' } });
    expect(replaced.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(replaced.json().request_id).toBe(replaced.headers['x-request-id']);
  });

  it('resolves a problem type to its catalog entry', async () => {
    const res = await app.inject('/problems/not_found');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ code: 'not_found', status: 404, title: 'Not found' });
    const missing = await app.inject('/problems/no_such_code');
    expect(missing.statusCode).toBe(404);
    expect(missing.json().code).toBe('not_found');
    const all = await app.inject('/problems');
    expect(all.json().map((e: { code: string }) => e.code)).toContain('quota_exceeded');
  });

  it('logs request URLs with the query of signed links redacted', async () => {
    await app.inject('/no/such/file.zip?expires=1700000000&signature=c2VjcmV0');
    const logged = lines.filter((l) => JSON.stringify(l).includes('/no/such/file.zip'));
    expect(logged.length).toBeGreaterThan(0);
    expect(JSON.stringify(logged)).not.toContain('c2VjcmV0');
    expect(JSON.stringify(logged)).toContain(`/no/such/file.zip?${REDACTED}`);
  });
});

describe('logger', () => {
  it('redacts credentials, secrets and signed URLs at any depth and keeps the rest', () => {
    const { logger, lines } = capturedLogger();
    logger.info(
      {
        headers: {
          authorization: 'Bearer sk_live_1',
          cookie: 'sid=2',
          'x-api-key': 'k3',
          accept: 'text/csv',
        },
        user: { email_verified: true, password_hash: '$argon2id$4', settings: { client_secret: 's5' } },
        delivery: {
          credentials: { user: 'u', pass: 'p6' },
          url: 'https://s3.example/b/x?X-Amz-Signature=a7&X-Amz-Date=1',
        },
        webhook: { url: 'https://hooks.example/ferry?team=support' },
        session: { token: 't8', refresh_token: 't9' },
        usage: { tokens_used: 1234 },
        list: [{ apiKey: 'k10' }],
      },
      'delivery attempt',
    );
    const line = lines[0]!;
    const text = JSON.stringify(line);
    for (const secret of ['sk_live_1', 'sid=2', 'k3', '$argon2id$4', 's5', 'p6', 'a7', 't8', 't9', 'k10'])
      expect(text).not.toContain(secret);
    expect(line).toMatchObject({
      level: 'info',
      msg: 'delivery attempt',
      headers: { authorization: REDACTED, cookie: REDACTED, 'x-api-key': REDACTED, accept: 'text/csv' },
      user: { email_verified: true, password_hash: REDACTED, settings: { client_secret: REDACTED } },
      delivery: { credentials: REDACTED, url: `https://s3.example/b/x?${REDACTED}` },
      webhook: { url: 'https://hooks.example/ferry?team=support' },
      usage: { tokens_used: 1234 },
    });
  });

  it('redacts secrets in child bindings and in logged errors', () => {
    const { logger, lines } = capturedLogger();
    const err = Object.assign(new Error('upload failed'), { config: { secretAccessKey: 'AKIA-secret' } });
    logger.child({ password: 'hunter2' }).error({ err }, 'upload failed');
    const text = JSON.stringify(lines[0]);
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('AKIA-secret');
    expect(lines[0]).toMatchObject({ err: { message: 'upload failed' } });
  });
});

const REPO = path.resolve(import.meta.dirname, '..');

interface RunningServer {
  child: ChildProcess;
  url: string;
  port: number;
  /** The server's own pid (npx runs it as a grandchild). */
  pid: number;
  stdout(): string;
  logs(): Record<string, unknown>[];
  waitForLog(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

/** Spawns `npx ferry serve --port 0` and resolves once it prints where it listens. */
async function startServer(env: Record<string, string>): Promise<RunningServer> {
  const {
    DATABASE_URL: _url,
    DATABASE_SCHEMA: _schema,
    PORT: _port,
    HOST: _host,
    ...inherited
  } = process.env;
  const child = spawn('npx', ['ferry', 'serve', '--port', '0', '--host', '127.0.0.1'], {
    cwd: REPO,
    env: { ...inherited, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const waiters: (() => void)[] = [];
  child.stdout!.on('data', (chunk) => {
    out += chunk;
    for (const wake of waiters.splice(0)) wake();
  });
  child.stderr!.on('data', (chunk) => {
    err += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const logs = () =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const untilPrinted = async <T>(find: () => T | undefined, what: string): Promise<T> => {
    for (;;) {
      const found = find();
      if (found !== undefined) return found;
      const stopped = await Promise.race([
        new Promise<false>((resolve) => waiters.push(() => resolve(false))),
        exited.then(() => true),
      ]);
      if (stopped && find() === undefined)
        throw new Error(`ferry serve exited before ${what}\nstdout:\n${out}\nstderr:\n${err}`);
    }
  };
  const banner = await untilPrinted(
    () => /ferry: listening on (http:\/\/[^\s]+) \(pid (\d+)\)/.exec(out) ?? undefined,
    'listening',
  );
  const url = banner[1]!;
  return {
    child,
    url,
    port: Number(new URL(url).port),
    pid: Number(banner[2]),
    stdout: () => out,
    logs,
    waitForLog: (match) => untilPrinted(() => logs().find(match), 'the expected log line'),
    exited,
  };
}

/** Resolves when a new connection to the port is refused (the server stopped accepting). */
async function waitUntilRefused(port: number): Promise<void> {
  const refused = () =>
    new Promise<true | undefined>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(undefined);
      });
      socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED' || undefined));
    });
  await until(`port ${port} to refuse connections`, refused, { timeoutMs: 15_000 });
}

describe('ferry serve (spawned)', () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-serve-'));
    dirs.push(dir);
    return dir;
  };
  afterAll(() => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('answers over HTTP, and on SIGTERM finishes an in-flight request, then exits 0', async () => {
    const server = await startServer({ FERRY_DATA_DIR: tempDir(), FERRY_DEMO: 'off' });
    children.push(server.child);
    expect(server.stdout()).toContain(`${server.url}/docs`);
    expect(server.stdout()).toContain('none yet');

    const health = await fetch(`${server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok' });
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);

    // A request whose body is still arriving when the signal comes.
    const rest = '"the rest of the upload"}';
    const head = '{"part":';
    const socket = net.connect(server.port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk;
    });
    const responded = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write(
      'POST /slow-upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
        `Content-Length: ${head.length + rest.length}\r\n\r\n${head}`,
    );
    await server.waitForLog(
      (l) => l.msg === 'incoming request' && (l.req as { url?: string })?.url === '/slow-upload',
    );

    process.kill(server.pid, 'SIGTERM');
    await server.waitForLog(
      (l) => l.msg === 'shutting down: finishing in-flight requests' && l.signal === 'SIGTERM',
    );
    await waitUntilRefused(server.port);
    expect(received).toBe('');

    socket.write(rest);
    await responded;
    const [headers, body] = received.split('\r\n\r\n') as [string, string];
    expect(headers).toMatch(/^HTTP\/1\.1 404 /);
    expect(headers.toLowerCase()).toContain('connection: close');
    expect(JSON.parse(body)).toMatchObject({ code: 'not_found', instance: '/slow-upload' });

    expect(await server.exited).toBe(0);
    expect(server.logs().some((l) => l.msg === 'stopped')).toBe(true);
  }, 120_000);

  it.skipIf(!testsDialect('postgres'))(
    'seeds one demo tenant into an empty PostgreSQL database, and only once',
    async () => {
      const schema = `ferry_serve_${Math.random().toString(16).slice(2, 10)}`;
      const env = { FERRY_DATA_DIR: tempDir(), DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: schema };
      const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
      try {
        const first = await startServer(env);
        children.push(first.child);
        const demo = /Demo tenant +(.+) \(slug (\S+), id ([0-9a-f-]{36})\)/.exec(first.stdout());
        expect(demo, first.stdout()).not.toBeNull();
        expect(first.stdout()).toContain('ferry tenants');
        process.kill(first.pid, 'SIGTERM');
        expect(await first.exited).toBe(0);

        const tenants = await admin.db
          .withSchema(schema)
          .selectFrom('tenants')
          .select(['id', 'slug', 'name'])
          .execute();
        expect(tenants).toEqual([{ id: demo![3], slug: demo![2], name: demo![1] }]);

        const second = await startServer(env);
        children.push(second.child);
        expect(second.stdout()).not.toContain('creating a demo tenant');
        expect(second.stdout()).toMatch(/Tenants +1\b/);
        process.kill(second.pid, 'SIGTERM');
        expect(await second.exited).toBe(0);
      } finally {
        await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await admin.close();
      }
    },
    180_000,
  );
});
