import { type TObject, type TSchema, Type } from 'typebox';

interface HeaderSchema {
  readonly type: 'string' | 'integer';
  readonly description: string;
}

/**
 * The response headers of the API, each described once. Route schemas name the ones
 * their responses carry (`jsonResponse`, `responseHeaders`); the OpenAPI document adds
 * the ones every response carries (src/http/openapi.ts).
 */
export const RESPONSE_HEADERS = {
  'X-Request-Id': {
    type: 'string',
    description:
      'Identifier of the request in the server logs: the caller’s own `X-Request-Id` when it is plain ' +
      '(letters, digits, `.` `_` `:` `-`, up to 128), else a new UUID',
  },
  'X-RateLimit-Limit': { type: 'integer', description: 'Requests the API key may make per hour' },
  'X-RateLimit-Remaining': { type: 'integer', description: 'Requests the API key has left this hour' },
  'X-RateLimit-Reset': { type: 'integer', description: 'When the hour ends, in Unix seconds' },
  'X-RateLimit-Burst': { type: 'integer', description: 'Requests the API key may make per 5 minutes' },
  'Retry-After': {
    type: 'integer',
    description: '`rate_limited`: seconds until the window that refused the request ends',
  },
  'WWW-Authenticate': {
    type: 'string',
    description:
      'The scheme to authenticate with: `Bearer realm="ferry"` (the OData feed also offers `Basic realm="ferry"`)',
  },
  Location: { type: 'string', description: 'The URL of the created resource' },
  'Idempotent-Replayed': {
    type: 'string',
    description: '`true` when the answer is the stored first answer to the same `Idempotency-Key`',
  },
  'Cache-Control': { type: 'string', description: 'Not stored by caches' },
  'Content-Disposition': {
    type: 'string',
    description: '`attachment; filename="…"` (RFC 6266, with `filename*` for non-ASCII names)',
  },
  'Content-Encoding': { type: 'string', description: '`gzip` with `compression=gzip`' },
  'Content-Length': { type: 'integer', description: 'Bytes in the body' },
  'Content-Range': {
    type: 'string',
    description: '206: `bytes first-last/size`; 416: `bytes */size`',
  },
  'Accept-Ranges': { type: 'string', description: '`bytes`: Range requests resume a download' },
  ETag: { type: 'string', description: 'Strong validator of the file (its SHA-256); send it as `If-Range`' },
  'Repr-Digest': { type: 'string', description: 'SHA-256 of the whole file (RFC 9530): `sha-256=:base64:`' },
  'X-Content-Type-Options': { type: 'string', description: '`nosniff`' },
  'X-Total-Records': {
    type: 'integer',
    description: 'Rows matching the filters over all pages (change feed: changes in the current run)',
  },
  'X-Page-Count': { type: 'integer', description: 'Pages of page_size rows' },
  'X-Export-ID': { type: 'string', description: 'Id of this export request, as recorded in the audit log' },
  'X-Next-Cursor': {
    type: 'string',
    description: 'Pass back as cursor (or updated_since) for the next page',
  },
  'X-End-Of-Stream': {
    type: 'string',
    description: '`true` when nothing follows this page (change feed: caught up), else `false`',
  },
  Link: {
    type: 'string',
    description: 'RFC 8288 link to the next page, `rel="next"`; absent on the last page',
  },
  'OData-Version': { type: 'string', description: 'The OData protocol version of the answer: `4.0`' },
  'Preference-Applied': {
    type: 'string',
    description: "`odata.maxpagesize=N`: the page size taken from the request's `Prefer` header",
  },
  Upgrade: { type: 'string', description: '`websocket`' },
  Connection: { type: 'string', description: '`Upgrade`' },
  'Sec-WebSocket-Accept': { type: 'string', description: 'The handshake answer (RFC 6455)' },
} as const satisfies Record<string, HeaderSchema>;

export type ResponseHeader = keyof typeof RESPONSE_HEADERS;

/** The `headers` of a route response: each named header with its schema and description. */
export function responseHeaders(...names: ResponseHeader[]): Record<string, HeaderSchema> {
  return Object.fromEntries(names.map((name) => [name, RESPONSE_HEADERS[name]]));
}

/**
 * A JSON response with headers, in the form Fastify serializes (`content`) and
 * @fastify/swagger documents (`description`, `headers`).
 */
export function jsonResponse<T extends TSchema>(
  schema: T,
  options: { description: string; headers?: ResponseHeader[] },
) {
  return {
    description: options.description,
    headers: responseHeaders(...(options.headers ?? [])),
    content: { 'application/json': { schema } },
  };
}

/**
 * The body of a list response: the rows under `data`, the list key of every list route.
 * `items`, the old key of some lists, carries the same rows for one more release and is
 * marked `deprecated` in the OpenAPI document.
 */
export function listResponse<T extends TSchema, E extends Record<string, TSchema> = Record<never, TSchema>>(
  row: T,
  extra?: E,
): TObject {
  return Type.Object(
    {
      data: Type.Array(row),
      items: Type.Array(row, {
        deprecated: true,
        description: 'Deprecated alias of `data` (the same rows), removed in the next minor release',
      }),
      ...(extra ?? {}),
    },
    { additionalProperties: false },
  );
}

/** A list response body (see `listResponse`): `{ data, items, ...rest }`. */
export function listBody<T, E extends object>(rows: T[], rest?: E): { data: T[]; items: T[] } & E {
  return { data: rows, items: rows, ...(rest ?? ({} as E)) };
}
