/**
 * The stream's wire protocol: JSON text messages, one object each, with a `type`.
 * See docs/stream.md. Parsing names the offending field and the accepted values; it
 * never throws on client input.
 */

export const CLIENT_MESSAGE_TYPES = ['auth', 'subscribe', 'unsubscribe', 'ping'] as const;
export const STREAMS = ['conversations', 'exports'] as const;
const SUBSCRIBE_FIELDS = ['type', 'stream', 'filters', 'last_event_id'];
const FILTER_FIELDS = ['site_urls', 'include_messages', 'real_time'];
const MAX_SITE_URLS = 100;
const MAX_TEXT = 2048;

export interface AuthMessage {
  readonly type: 'auth';
  readonly token: string;
  readonly tenantId: string;
}

export interface SubscribeMessage {
  readonly type: 'subscribe';
  /** `conversations`: the outbox's events; `exports`: progress of the exports the key may read. */
  readonly stream: (typeof STREAMS)[number];
  /** Only events of these sites; all sites when absent. */
  readonly siteUrls: readonly string[] | null;
  readonly includeMessages: boolean;
  /** Keep streaming after the replay; false ends the subscription once caught up. */
  readonly realTime: boolean;
  /** Resume after this event id (replay, then live). */
  readonly lastEventId: number | null;
}

export type ClientMessage =
  | AuthMessage
  | SubscribeMessage
  | { readonly type: 'unsubscribe' }
  | { readonly type: 'ping'; readonly id?: string | number | undefined };

/** A problem with a client message, sent back as `{"type":"error", ...}`. */
export interface ProtocolError {
  readonly code: 'malformed_request' | 'invalid_parameter';
  readonly message: string;
  readonly parameter?: string;
  readonly accepted?: readonly string[];
}

export type Parsed = { ok: true; message: ClientMessage } | { ok: false; error: ProtocolError };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function fail(parameter: string, message: string, accepted?: readonly string[]): Parsed {
  const suffix = accepted ? ` (accepted: ${accepted.join(', ')})` : '';
  return {
    ok: false,
    error: {
      code: 'invalid_parameter',
      message: `${parameter}: ${message}${suffix}`,
      parameter,
      ...(accepted ? { accepted } : {}),
    },
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function unknownField(
  value: Record<string, unknown>,
  allowed: readonly string[],
  prefix: string,
): Parsed | null {
  const extra = Object.keys(value).find((k) => !allowed.includes(k));
  return extra === undefined
    ? null
    : fail(
        `${prefix}${extra}`,
        'unknown field',
        allowed.filter((f) => f !== 'type'),
      );
}

/** Parses one text frame. */
export function parseClientMessage(text: string): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return {
      ok: false,
      error: {
        code: 'malformed_request',
        message: `the message is not valid JSON: ${(err as Error).message}`,
      },
    };
  }
  if (!isObject(value))
    return { ok: false, error: { code: 'malformed_request', message: 'the message must be a JSON object' } };
  const type = value.type;
  if (typeof type !== 'string' || !(CLIENT_MESSAGE_TYPES as readonly string[]).includes(type))
    return fail(
      'type',
      typeof type === 'string' ? `unknown message type "${type.slice(0, 64)}"` : 'missing',
      CLIENT_MESSAGE_TYPES,
    );
  switch (type) {
    case 'auth':
      return parseAuth(value);
    case 'subscribe':
      return parseSubscribe(value);
    case 'unsubscribe':
      return unknownField(value, ['type'], '') ?? { ok: true, message: { type: 'unsubscribe' } };
    default: {
      const id = value.id;
      if (id !== undefined && typeof id !== 'number' && !(typeof id === 'string' && id.length <= 128))
        return fail('id', 'must be a number or a string of up to 128 characters');
      return unknownField(value, ['type', 'id'], '') ?? { ok: true, message: { type: 'ping', id } };
    }
  }
}

function parseAuth(value: Record<string, unknown>): Parsed {
  const extra = unknownField(value, ['type', 'token', 'tenant_id'], '');
  if (extra) return extra;
  if (typeof value.token !== 'string' || value.token.length === 0 || value.token.length > MAX_TEXT)
    return fail('token', 'must be an API key (a non-empty string)');
  if (typeof value.tenant_id !== 'string' || !UUID.test(value.tenant_id))
    return fail('tenant_id', 'must be the tenant id (a UUID)');
  return { ok: true, message: { type: 'auth', token: value.token, tenantId: value.tenant_id.toLowerCase() } };
}

function parseSubscribe(value: Record<string, unknown>): Parsed {
  const extra = unknownField(value, SUBSCRIBE_FIELDS, '');
  if (extra) return extra;
  if (typeof value.stream !== 'string' || !(STREAMS as readonly string[]).includes(value.stream))
    return fail('stream', typeof value.stream === 'string' ? 'unknown stream' : 'missing', STREAMS);
  const filters = value.filters ?? {};
  if (!isObject(filters)) return fail('filters', 'must be an object');
  const extraFilter = unknownField(filters, FILTER_FIELDS, 'filters.');
  if (extraFilter) return extraFilter;

  let siteUrls: string[] | null = null;
  if (filters.site_urls !== undefined && filters.site_urls !== null) {
    const urls = filters.site_urls;
    if (
      !Array.isArray(urls) ||
      urls.some((u) => typeof u !== 'string' || u.length === 0 || u.length > MAX_TEXT)
    )
      return fail('filters.site_urls', 'must be an array of site URLs');
    if (urls.length === 0) return fail('filters.site_urls', 'must name at least one site, or be left out');
    if (urls.length > MAX_SITE_URLS) return fail('filters.site_urls', `at most ${MAX_SITE_URLS} sites`);
    siteUrls = [...new Set(urls as string[])];
  }
  for (const flag of ['include_messages', 'real_time'] as const) {
    if (filters[flag] !== undefined && typeof filters[flag] !== 'boolean')
      return fail(`filters.${flag}`, 'must be true or false');
  }

  let lastEventId: number | null = null;
  const last = value.last_event_id;
  if (last !== undefined && last !== null) {
    const n = typeof last === 'string' && /^[0-9]{1,16}$/.test(last) ? Number(last) : last;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0)
      return fail('last_event_id', 'must be the id of an event received earlier (a non-negative integer)');
    lastEventId = n;
  }
  return {
    ok: true,
    message: {
      type: 'subscribe',
      stream: value.stream as SubscribeMessage['stream'],
      siteUrls,
      includeMessages: filters.include_messages === true,
      realTime: filters.real_time !== false,
      lastEventId,
    },
  };
}
