import { hostname } from 'node:os';
import { pino } from 'pino';

export type Logger = pino.Logger;

export const REDACTED = '[Redacted]';

/**
 * Keys whose values never reach a log line, at any depth: credential headers,
 * passwords, secrets, tokens, credentials, encryption keys and key hashes. `token` only as a suffix,
 * so counters such as `tokens_used` stay readable.
 */
const SECRET_KEY =
  /^(authorization|proxy-authorization|cookie|set-cookie|x-api-key)$|password|passphrase|secret|credential|token$|api[-_]?key|private[-_]?key|encryption[-_]?keys?$|key[-_]?hash/i;

/** Query parameters that make a URL a bearer credential (signed links, S3 presigned URLs). */
const SIGNED_QUERY =
  /(^|[?&])(signature|x-amz-signature|x-amz-credential|x-amz-security-token|token|access_token|_csrf)=/i;

/** Depth beyond which nested values are not inspected but replaced, so no secret hides deep down. */
const MAX_DEPTH = 8;

/** Replaces the query of a signed URL; other URLs are returned unchanged. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q === -1 || !SIGNED_QUERY.test(url.slice(q))) return url;
  return `${url.slice(0, q)}?${REDACTED}`;
}

/**
 * Returns a copy of a plain value with secrets replaced. Only plain objects and
 * arrays are walked; other objects (errors, requests) go through their serializers.
 */
export function redact(value: unknown, key = '', depth = 0): unknown {
  if (key && SECRET_KEY.test(key)) return REDACTED;
  if (typeof value === 'string') return /url$/i.test(key) ? redactUrl(value) : value;
  if (value === null || typeof value !== 'object') return value;
  if (depth >= MAX_DEPTH) return '[Truncated]';
  if (Array.isArray(value)) return value.map((v) => redact(v, '', depth + 1));
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redact(v, k, depth + 1);
  return out;
}

/**
 * Child bindings bypass the log formatter, so the usual secret names are also
 * redacted by path (top level and one level down) for them.
 */
const BINDING_SECRETS = [
  'authorization',
  'cookie',
  'x-api-key',
  'apiKey',
  'api_key',
  'password',
  'password_hash',
  'secret',
  'secretKey',
  'secret_key',
  'token',
  'access_token',
  'refresh_token',
  'credentials',
  'privateKey',
  'private_key',
  'encryptionKeys',
  'encryptionKeyCommand',
  'masterKey',
  'dataKey',
  'wrapped',
  'key_hash',
];
const REDACT_PATHS = BINDING_SECRETS.flatMap((name) => [`["${name}"]`, `*["${name}"]`]);

/** Top-level keys that have their own serializer and must reach it unchanged. */
const SERIALIZED = new Set(['req', 'res', 'err', 'error']);

interface RequestLike {
  method?: string;
  url?: string;
  host?: string;
  ip?: string;
  socket?: { remotePort?: number };
}

const serializers = {
  req: (req: RequestLike) => ({
    method: req.method,
    url: typeof req.url === 'string' ? redactUrl(req.url) : req.url,
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  }),
  res: (reply: { statusCode?: number }) => ({ statusCode: reply.statusCode }),
  err: serializeError,
  error: serializeError,
};

/** pino's error serializer, with secrets redacted from the error's own properties. */
function serializeError(err: Error): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(pino.stdSerializers.err(err))) out[k] = redact(v, k, 1);
  return out;
}

/**
 * Ferry's logger: JSON lines at the configured level, with secrets redacted from
 * every logged object and from child bindings. Also used as Fastify's logger.
 */
export function createLogger(
  config: { readonly logLevel: pino.LevelWithSilent },
  destination?: pino.DestinationStream,
): Logger {
  return pino(
    {
      level: config.logLevel,
      base: { service: 'ferry', pid: process.pid, hostname: hostname() },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers,
      redact: { paths: REDACT_PATHS, censor: REDACTED },
      formatters: {
        level: (label) => ({ level: label }),
        bindings: (bindings) => redact(bindings) as Record<string, unknown>,
        log: (object) => {
          const out: Record<string, unknown> = {};
          for (const [k, v] of Object.entries(object)) out[k] = SERIALIZED.has(k) ? v : redact(v, k);
          return out;
        },
      },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}
