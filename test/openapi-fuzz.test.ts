/**
 * Hostile input on every operation of the served OpenAPI document: each path, query and
 * header parameter and each JSON body field gets NUL characters, numbers beyond every
 * range, wrong types, 10 KB strings and text that is not UTF-8, one at a time, with the
 * other parameters valid and an admin key (so requests get past authentication to the
 * handlers and the database). No answer may be a 5xx; every error is problem+json with a
 * catalog code and the request id, and no answer repeats a download link's signature.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isErrorCode } from '../src/domain/error-catalog.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, requestExport } from './support/fixtures/export-jobs.ts';
import { preferDialect } from './support/databases.ts';

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
  in: 'path' | 'query' | 'header';
  required?: boolean;
  schema?: Schema;
  examples?: Record<string, { value: unknown }>;
}
interface Operation {
  parameters?: (Parameter | { $ref: string })[];
  requestBody?: { content: Record<string, { schema: Schema }> };
}
interface OpenApi {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema>; parameters?: Record<string, Parameter> };
}

/** Query and path values, as sent on the wire (already percent-encoded). */
const TEXT_VALUES: readonly [string, string][] = [
  ['NUL', 'a%00b'],
  ['1e309', '1e309'],
  ['Infinity', 'Infinity'],
  ['-Infinity', '-Infinity'],
  ['NaN', 'NaN'],
  ['huge integer', '99999999999999999999'],
  ['large integer', '9007199254740993'],
  ['beyond int4', '3000000000'],
  ['negative', '-1'],
  ['fraction', '0.5'],
  ['wrong type', 'not-a-number'],
  ['boolean', 'true'],
  ['empty', ''],
  ['10 KB string', 'x'.repeat(10_240)],
  ['invalid UTF-8', '%ff%fe'],
  ['overlong UTF-8', '%c0%ae'],
  ['encoded surrogate', '%ed%a0%80'],
  ['lone percent', '%'],
  ['quote and backslash', 'x%5C%27%22'],
];

/** Header values: the same hostility within what HTTP lets a header carry. */
const HEADER_VALUES: readonly [string, string][] = [
  ['1e309', '1e309'],
  ['huge integer', '99999999999999999999'],
  ['wrong type', 'not-a-number'],
  ['empty', ''],
  ['10 KB string', 'x'.repeat(10_240)],
  ['huge range', 'bytes=99999999999999999999-'],
  ['range 1e309', 'bytes=0-1e309'],
  ['percent escapes', '%ff%00'],
];

/** JSON body values, as JSON text (so `1e309` arrives as the parser reads it), or raw bytes. */
const BODY_VALUES: readonly [string, string | Buffer][] = [
  ['NUL', '"a\\u0000b"'],
  ['lone surrogate', '"\\ud800"'],
  ['1e309', '1e309'],
  ['-1e309', '-1e309'],
  ['huge integer', '99999999999999999999'],
  ['beyond int4', '3000000000'],
  ['negative', '-1'],
  ['fraction', '0.5'],
  ['boolean', 'true'],
  ['null', 'null'],
  ['array', '[]'],
  ['object', '{}'],
  ['nested NUL key', '{"a\\u0000":"b"}'],
  ['empty string', '""'],
  ['10 KB string', JSON.stringify('x'.repeat(10_240))],
  ['invalid UTF-8', Buffer.from([0x22, 0xc0, 0xae, 0xff, 0x22])],
];

/** Valid bodies that reach deep into the handlers; other operations get one built from their schema. */
const VALID_BODIES: Record<string, unknown> = {
  'post /api/v1/webhooks': {
    url: 'https://203.0.113.10/hook',
    events: ['export.completed'],
    description: 'fuzz',
  },
  'post /api/v1/schedules': {
    name: 'Fuzzed schedule',
    frequency: { type: 'weekly', days: ['mon'] },
    time: '02:30',
    timezone: 'Europe/Berlin',
    datasets: [{ dataset: 'conversations', mode: 'window', days: 7 }],
    format: 'csv',
    targets: [
      {
        type: 's3',
        name: 'backups',
        bucket: 'acme-exports',
        prefix: 'daily/',
        region: 'us-east-1',
        access_key_id: 'AKIAIOSFODNN7EXAMPLE',
        secret_access_key: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
      },
    ],
    notifications: { success: ['admin@example.com'], failure: [] },
    retention: { local_days: 7 },
  },
  'post /api/v1/exports': {
    datasets: ['conversations'],
    format: 'csv',
    from: '2026-08-01',
    to: '2026-09-01',
    filters: { status: 'resolved' },
    columns: ['conversation_id'],
    pii: 'basic',
    timezone: 'UTC',
  },
  'post /api/v1/api-keys': { role: 'analyst', name: 'fuzz', expires_in_days: 30 },
};
VALID_BODIES['patch /api/v1/schedules/{id}'] = VALID_BODIES['post /api/v1/schedules'];
VALID_BODIES['post /api/export/request'] = VALID_BODIES['post /api/v1/exports'];

const MARK = '__fuzzed_value__';

interface Failure {
  request: string;
  status: number;
  why: string;
}

describe('OpenAPI fuzz', () => {
  let h: ExportHarness;
  let doc: OpenApi;
  /** Path parameter values of real resources of the tenant, by parameter and path prefix. */
  let ids: { export: string; file: string; webhook: string; schedule: string; key: string };
  let link: { expires: string; signature: string };

  beforeAll(async () => {
    h = await exportHarness(preferDialect('pglite'), {
      workers: true,
      conversations: 5,
      limits: { rate_limit_per_hour: 1_000_000, concurrent_jobs: 1_000, exports_per_month: null },
      env: { FERRY_OUTBOUND_ALLOW: '203.0.113.10', FERRY_PUBLIC_URL: 'http://127.0.0.1' },
    });
    doc = (await h.app.inject('/openapi.json')).json();
    const done = await requestExport(h.app, h.keys.admin, { datasets: ['conversations'], format: 'csv' });
    const exported = await h.waitForExport(done.id);
    expect(exported.status).toBe('completed');
    const linkRes = await h.app.inject({ url: `/api/v1/exports/${done.id}/download`, headers: admin() });
    const url = new URL(linkRes.json().url);
    link = { expires: url.searchParams.get('expires')!, signature: url.searchParams.get('signature')! };
    const created = async (url: string, payload: unknown) => {
      const res = await h.app.inject({ method: 'POST', url, headers: admin(), payload: payload as object });
      expect(res.statusCode, `${url}: ${res.body}`).toBeLessThan(300);
      return res.json().id as string;
    };
    ids = {
      export: done.id,
      file: exported.files[0]!.id,
      webhook: await created('/api/v1/webhooks', VALID_BODIES['post /api/v1/webhooks']),
      schedule: await created('/api/v1/schedules', VALID_BODIES['post /api/v1/schedules']),
      key: await created('/api/v1/api-keys', VALID_BODIES['post /api/v1/api-keys']),
    };
  }, 180_000);
  afterAll(async () => {
    await h?.close();
  });

  const admin = () => bearer(h.keys.admin);

  /** A valid value for a path parameter: a real resource where the route names one. */
  function pathValue(route: string, name: string): string {
    if (name === 'dataset') return 'conversations';
    if (name === 'code') return 'not_found';
    if (name === 'exportId') return ids.export;
    if (name === 'fileId') return ids.file;
    if (route.includes('/webhooks/')) return ids.webhook;
    if (route.includes('/schedules/')) return ids.schedule;
    if (route.includes('/api-keys/')) return ids.key;
    return ids.export;
  }

  function resolve<T>(item: T | { $ref: string }): T {
    if (typeof item === 'object' && item !== null && '$ref' in item && typeof item.$ref === 'string') {
      const [, , section, name] = item.$ref.split('/');
      return (doc.components as unknown as Record<string, Record<string, T>>)[section!]![name!]!;
    }
    return item as T;
  }

  /** A valid value for a schema: its example, default, first enum value or a plain value of its type. */
  function sample(schema: Schema | undefined, depth = 0): unknown {
    if (!schema || depth > 6) return 'x';
    const s = resolve<Schema>(schema);
    if (s.examples?.length) return s.examples[0];
    if (s.default !== undefined) return s.default;
    if (s.const !== undefined) return s.const;
    if (s.enum?.length) return s.enum[0];
    const branches = s.anyOf ?? s.oneOf;
    if (branches?.length) return sample(branches[0], depth + 1);
    const type = Array.isArray(s.type) ? s.type.find((t) => t !== 'null') : s.type;
    switch (type) {
      case 'integer':
      case 'number':
        return typeof s.minimum === 'number' ? s.minimum : 1;
      case 'boolean':
        return false;
      case 'array':
        return Array.from({ length: typeof s.minItems === 'number' ? s.minItems : 0 }, () =>
          sample(s.items, depth + 1),
        );
      case 'object': {
        const out: Record<string, unknown> = {};
        for (const name of s.required ?? []) out[name] = sample(s.properties?.[name], depth + 1);
        return out;
      }
      default:
        if (s.format === 'uuid') return randomUUID();
        if (s.format === 'date-time') return '2026-08-01T00:00:00Z';
        if (s.format === 'date') return '2026-08-01';
        return 'x'.repeat(typeof s.minLength === 'number' ? Math.max(1, s.minLength) : 1);
    }
  }

  /** Every field of a body worth fuzzing: each value in the valid body, and each declared top-level property. */
  function bodyFields(body: unknown, schema: Schema | undefined): string[][] {
    const fields: string[][] = [];
    const walk = (value: unknown, at: string[]) => {
      if (at.length > 0) fields.push(at);
      if (Array.isArray(value)) for (const [i, v] of value.entries()) walk(v, [...at, String(i)]);
      else if (typeof value === 'object' && value !== null)
        for (const [k, v] of Object.entries(value)) walk(v, [...at, k]);
    };
    walk(body, []);
    const top = schema ? resolve<Schema>(schema) : undefined;
    const object = top?.properties
      ? top
      : (top?.anyOf ?? top?.oneOf ?? []).find((b) => resolve<Schema>(b).properties);
    for (const name of Object.keys(object ? (resolve<Schema>(object).properties ?? {}) : {}))
      if (!fields.some((f) => f.length === 1 && f[0] === name)) fields.push([name]);
    return fields;
  }

  function withField(body: unknown, field: string[], value: unknown): unknown {
    const copy = structuredClone(body) as Record<string, unknown>;
    let at: Record<string, unknown> = copy;
    for (const part of field.slice(0, -1)) at = at[part] as Record<string, unknown>;
    at[field.at(-1)!] = value;
    return copy;
  }

  it('answers hostile values on every parameter and body field without a 5xx, as problem+json', async () => {
    const failures: Failure[] = [];
    let sent = 0;
    const check = async (
      method: string,
      url: string,
      headers: Record<string, string>,
      payload?: string | Buffer,
    ) => {
      sent++;
      const res = await h.app.inject({
        method: method.toUpperCase() as 'GET',
        url,
        headers: {
          ...admin(),
          ...(payload !== undefined ? { 'content-type': 'application/json' } : {}),
          ...headers,
        },
        ...(payload !== undefined ? { payload } : {}),
      });
      const request = `${method.toUpperCase()} ${url.slice(0, 160)}${payload ? ` ${String(payload).slice(0, 160)}` : ''}`;
      const fail = (why: string) => failures.push({ request, status: res.statusCode, why });
      if (res.statusCode >= 500) fail(`server error: ${res.body.slice(0, 300)}`);
      if (res.body.includes(link.signature)) fail('echoes the signature of a download link');
      if (res.statusCode < 400) return;
      if (!String(res.headers['content-type']).startsWith('application/problem+json'))
        return fail(`not problem+json: ${res.headers['content-type']}`);
      if (!res.headers['x-request-id']) fail('no X-Request-Id');
      if (method === 'head') return;
      const body = res.json() as { code?: string; status?: number; request_id?: string };
      if (!body.code || !isErrorCode(body.code)) fail(`code ${body.code} is not in the catalog`);
      if (body.status !== res.statusCode) fail(`problem status ${body.status}`);
      if (body.request_id !== res.headers['x-request-id']) fail('request_id differs from X-Request-Id');
    };

    for (const [route, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        const params = (op.parameters ?? []).map((p) => resolve<Parameter>(p));
        const valid = (p: Parameter): string => {
          if (p.in === 'path') return pathValue(route, p.name);
          if (p.name === 'expires') return link.expires;
          if (p.name === 'signature') return link.signature;
          const example = p.examples ? Object.values(p.examples)[0]?.value : undefined;
          return String(example ?? sample(p.schema));
        };
        const build = (target?: Parameter, raw?: string, repeat = false) => {
          let path = route;
          const query: string[] = [];
          const headers: Record<string, string> = {};
          for (const p of params) {
            const hostile = p === target;
            if (!hostile && p.in !== 'path' && !p.required) continue;
            const value = hostile ? raw! : encodeURIComponent(valid(p));
            if (p.in === 'path') path = path.replace(`{${p.name}}`, value);
            else if (p.in === 'query') {
              query.push(`${encodeURIComponent(p.name)}=${value}`);
              if (hostile && repeat) query.push(`${encodeURIComponent(p.name)}=${value}`);
            } else headers[p.name] = hostile ? raw! : valid(p);
          }
          return { url: query.length ? `${path}?${query.join('&')}` : path, headers };
        };
        const body = op.requestBody?.content['application/json'];
        const validBody = body ? (VALID_BODIES[`${method} ${route}`] ?? sample(body.schema)) : undefined;
        const validPayload = validBody === undefined ? undefined : JSON.stringify(validBody);

        for (const p of params) {
          const values = p.in === 'header' ? HEADER_VALUES : TEXT_VALUES;
          for (const [, raw] of values) {
            const { url, headers } = build(p, raw);
            await check(method, url, headers, validPayload);
          }
          if (p.in === 'query') {
            const { url, headers } = build(p, '1', true);
            await check(method, url, headers, validPayload);
          }
        }
        if (!body) continue;
        const { url, headers } = build();
        for (const field of bodyFields(validBody, body.schema)) {
          const marked = JSON.stringify(withField(validBody, field, MARK));
          const [before, after] = marked.split(`"${MARK}"`) as [string, string];
          for (const [, value] of BODY_VALUES) {
            const payload =
              typeof value === 'string'
                ? before + value + after
                : Buffer.concat([Buffer.from(before), value, Buffer.from(after)]);
            await check(method, url, headers, payload);
          }
        }
        for (const [, value] of BODY_VALUES) await check(method, url, headers, value);
      }
    }
    expect(sent).toBeGreaterThan(1_000);
    expect(failures, JSON.stringify(failures.slice(0, 40), null, 2)).toEqual([]);
  }, 600_000);
});
