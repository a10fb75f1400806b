import { STATUS_CODES } from 'node:http';
import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifySchema, RouteOptions } from 'fastify';
import type { Config } from '../config/config.ts';
import { problemResponses } from './problem.ts';
import { RESPONSE_HEADERS, type ResponseHeader, responseHeaders } from './responses.ts';

/**
 * Collects every route's schemas into an OpenAPI 3.1 document. Registered on the
 * root instance before the routes, so it sees all of them; shared schemas added
 * with `addSchema` become `components.schemas` under their `$id`. What every
 * operation shares (error responses, the bearer scheme, rate-limit and request-id
 * headers) is added by `documentOperation`, so route schemas declare only their own.
 */
export async function registerOpenApi(app: FastifyInstance, config: Config, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Ferry API',
        version,
        description:
          'Data export, backup and portability for AI customer-support platforms. Errors are RFC 9457 ' +
          '`application/problem+json` documents with a stable `code` (see `GET /problems`). Authenticated ' +
          'operations count against the API key’s rate limit and answer with `X-RateLimit-*` headers.',
        license: { name: 'MIT', identifier: 'MIT' },
      },
      ...(config.publicUrl ? { servers: [{ url: config.publicUrl }] } : {}),
      tags: [
        { name: 'health', description: 'Liveness and readiness probes' },
        { name: 'errors', description: 'The catalog of error codes that problem documents carry' },
        { name: 'api-keys', description: 'API keys of the tenant (admin)' },
        { name: 'usage', description: 'Plan quotas and what is used' },
        { name: 'audit', description: 'The audit trail of exports, downloads and key changes' },
        { name: 'exports', description: 'Export requests, paged exports, the change feed and downloads' },
        {
          name: 'odata',
          description: 'The OData v4 feed for Excel, Power BI and other BI tools (read-only)',
        },
        {
          name: 'compliance',
          description: 'The export endpoints under the paths of the data-portability checklist',
        },
        { name: 'stream', description: 'The live stream of conversation events (WebSocket)' },
        { name: 'webhooks', description: 'Webhook endpoints and their delivery log (admin)' },
        { name: 'schedules', description: 'Scheduled exports and their runs' },
        { name: 'deletions', description: 'Selective deletion of conversations, customers and documents' },
        {
          name: 'organisation',
          description:
            'Agency organisations: the client tenants an organisation key or member may act in (with the `Ferry-Tenant` header), organisation-wide usage, members, keys and the aggregated export',
        },
        {
          name: 'export-configs',
          description: 'Saved export configurations: named definitions, run now or on their schedule',
        },
        {
          name: 'receipts',
          description: 'The public keys that verify signed receipts of data subject requests',
        },
      ],
      components: {
        securitySchemes: {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            description: 'An API key: `Authorization: Bearer fy_live_...` (see docs/auth.md)',
          },
          basic: {
            type: 'http',
            scheme: 'basic',
            description:
              'The OData feed only: any user name and an API key as the password, for BI tools that offer Basic authentication (see docs/odata.md)',
          },
        },
      },
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
    transform: ({ schema, url, route }) => ({
      schema: documentOperation(schema, route, app.authenticate) as FastifySchema,
      url,
    }),
    transformObject: (document) =>
      'openapiObject' in document
        ? shareCommonParts(document.openapiObject as OpenApiObject)
        : document.swaggerObject,
  });
}

type ResponseEntry = Record<string, unknown>;

const RATE_LIMIT_HEADERS: ResponseHeader[] = [
  'X-RateLimit-Limit',
  'X-RateLimit-Remaining',
  'X-RateLimit-Reset',
  'X-RateLimit-Burst',
];

/** The header an organisation key names the tenant it acts in with (docs/organisations.md). */
const FERRY_TENANT_HEADER = {
  'ferry-tenant': {
    type: 'string',
    maxLength: 64,
    description:
      'Organisation keys: the id of the client tenant to act in (see `GET /api/v1/organisation`); without it ' +
      'the key acts in its own tenant. Any tenant outside the organisation is refused with 403 ' +
      '`tenant_not_in_organisation`.',
  },
};

const REQUEST_ID_HEADER = {
  'x-request-id': {
    type: 'string',
    maxLength: 128,
    description:
      'Your own request id (letters, digits, `.` `_` `:` `-`), echoed in `X-Request-Id`, problem ' +
      'documents and the server logs',
  },
};

/**
 * The documented form of one route's schema (the route's own schema is not changed):
 * - error responses (`application/problem+json`) that any such route can answer:
 *   400 when it takes parameters or a body, 413 and 415 with a body, 401, 403 and 429
 *   when it authenticates, 500 always;
 * - the bearer security requirement when `authenticate` runs as its onRequest or
 *   preHandler hook;
 * - `X-Request-Id` on every response (but a 101), the `X-RateLimit-*` headers on every response of
 *   an authenticated route but 401, `Retry-After` on its 429, `WWW-Authenticate` on 401;
 * - the optional `X-Request-Id` request header, and `Ferry-Tenant` on authenticated routes (so
 *   they list 400 as well);
 * - for HEAD routes, responses without content.
 */
export function documentOperation(
  schema: FastifySchema | undefined,
  route: Pick<RouteOptions, 'method' | 'onRequest' | 'preHandler'>,
  authenticate: unknown,
): FastifySchema | undefined {
  if (!schema || schema.hide) return schema;
  const authenticated = [route.onRequest, route.preHandler].flat().includes(authenticate as never);
  const head = route.method === 'HEAD';
  // Every authenticated operation takes the Ferry-Tenant header.
  const takesInput = Boolean(
    schema.params || schema.querystring || schema.body || schema.headers || authenticated,
  );
  const statuses = [
    ...(takesInput ? [400] : []),
    ...(schema.body ? [413, 415] : []),
    ...(authenticated ? [401, 403, 429] : []),
    500,
  ];
  const declared: Record<string, ResponseEntry> = {
    ...(problemResponses(...statuses) as Record<string, ResponseEntry>),
    ...((schema.response ?? {}) as Record<string, ResponseEntry>),
  };
  const response = Object.fromEntries(
    Object.entries(declared).map(([status, entry]) => [
      status,
      documentResponse(Number(status), entry, { authenticated, head }),
    ]),
  );
  return {
    ...schema,
    headers: withRequestIdHeader(schema.headers as ResponseEntry | undefined, authenticated),
    response,
    ...(authenticated && !schema.security ? { security: [{ bearer: [] }] } : {}),
    ...(head ? { summary: `${schema.summary ?? ''} (headers only, no body)`.trim() } : {}),
  };
}

function documentResponse(
  status: number,
  entry: ResponseEntry,
  { authenticated, head }: { authenticated: boolean; head: boolean },
): ResponseEntry {
  // A 101 is the WebSocket handshake, answered outside Fastify's reply.
  const names: ResponseHeader[] = status === 101 ? [] : ['X-Request-Id'];
  if (authenticated && status !== 401) names.push(...RATE_LIMIT_HEADERS);
  if (authenticated && status === 429) names.push('Retry-After');
  if (status === 401) names.push('WWW-Authenticate');
  const headers = { ...responseHeaders(...names), ...(entry.headers as ResponseEntry | undefined) };
  const description =
    typeof entry.description === 'string' ? entry.description : (STATUS_CODES[status] ?? `HTTP ${status}`);
  // A HEAD answer has no content; `type: 'null'` tells @fastify/swagger to document none.
  if (head) return { type: 'null', description, headers };
  if ('content' in entry || entry.type === 'null') return { ...entry, description, headers };
  // A bare schema: its `description` (if any) describes the body, so the response's goes aside.
  return { ...entry, 'x-response-description': description, headers };
}

function withRequestIdHeader(headers: ResponseEntry | undefined, authenticated: boolean): ResponseEntry {
  const base = headers ?? { type: 'object', properties: {} };
  return {
    ...base,
    properties: {
      ...(base.properties as ResponseEntry | undefined),
      ...(authenticated ? FERRY_TENANT_HEADER : {}),
      ...REQUEST_ID_HEADER,
    },
  };
}

/** Headers sent on many responses: declared once in `components.headers` and referenced. */
const SHARED_HEADERS: ResponseHeader[] = [
  'X-Request-Id',
  ...RATE_LIMIT_HEADERS,
  'Retry-After',
  'WWW-Authenticate',
];

interface OpenApiObject {
  components?: Record<string, Record<string, unknown>>;
  paths?: Record<
    string,
    Record<
      string,
      { parameters?: ({ in?: string; name?: string } | { $ref: string })[]; responses?: unknown }
    >
  >;
}

/**
 * Replaces the copies of the shared response headers and of the `X-Request-Id` request
 * header in every operation by references to `components.headers` and `components.parameters`.
 */
export function shareCommonParts<T extends OpenApiObject>(doc: T): T {
  doc.components ??= {};
  const components = doc.components;
  components.headers = Object.fromEntries(
    SHARED_HEADERS.map((name) => {
      const { type, description } = RESPONSE_HEADERS[name];
      return [name, { description, schema: { type } }];
    }),
  );
  components.parameters = {
    RequestId: { in: 'header', name: 'x-request-id', required: false, ...withoutSchemaDescription() },
    FerryTenant: {
      in: 'header',
      name: 'ferry-tenant',
      required: false,
      ...withoutSchemaDescription(FERRY_TENANT_HEADER['ferry-tenant']),
    },
  };
  const shared = new Set<string>(SHARED_HEADERS);
  for (const item of Object.values(doc.paths ?? {})) {
    for (const operation of Object.values(item)) {
      if (typeof operation !== 'object' || operation === null || !('responses' in operation)) continue;
      operation.parameters = operation.parameters?.map((p) =>
        'in' in p && p.in === 'header' && p.name === 'x-request-id'
          ? { $ref: '#/components/parameters/RequestId' }
          : 'in' in p && p.in === 'header' && p.name === 'ferry-tenant'
            ? { $ref: '#/components/parameters/FerryTenant' }
            : p,
      );
      for (const response of Object.values((operation.responses ?? {}) as Record<string, ResponseEntry>)) {
        const headers = response.headers as Record<string, unknown> | undefined;
        for (const name of Object.keys(headers ?? {}))
          if (shared.has(name)) headers![name] = { $ref: `#/components/headers/${name}` };
      }
    }
  }
  return doc;
}

function withoutSchemaDescription(
  header: { description: string; type: string; maxLength: number } = REQUEST_ID_HEADER['x-request-id'],
) {
  const { description, ...schema } = header;
  return { description, schema };
}
