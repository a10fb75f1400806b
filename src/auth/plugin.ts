import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import type { AuthContext } from './context.ts';
import { CLIENT_POLICY, clientKey, recordFailure } from './failure-throttle.ts';
import { refuseAddress, refusingList } from './ip-allowlist.ts';
import { bindApiKeyPepper, type RejectedKey, resolveApiKey } from './keys.ts';
import { effectiveLimits, type PlanLimits } from './limits.ts';
import { keyInRequestedTenant, TENANT_HEADER } from './organisations.ts';
import {
  consumeRateLimit,
  dropFinishedWindows,
  evaluateRateLimit,
  type RateLimitResult,
} from './rate-limit.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller, once `app.authenticate` ran; null on unauthenticated routes. */
    auth: AuthContext | null;
    /** The limits of the caller's tenant, once `app.authenticate` ran. */
    limits: PlanLimits | null;
  }
  interface FastifyInstance {
    /**
     * The onRequest hook of routes that need a caller (it runs before the body is read or
     * validated, so a caller who may not call learns nothing of the route's input rules):
     * 401 `unauthorized` when the Bearer key is missing, malformed, unknown or revoked,
     * 401 `api_key_expired` when it has expired; 403 `ip_not_allowed` from an address
     * outside the tenant's or the key's IP allow-list; 403 `tenant_not_in_organisation` for a
     * `Ferry-Tenant` the key may not act in; 429 `rate_limited` over the key's limits.
     */
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  }
}

export interface AuthOptions {
  readonly database: Database;
  readonly config: Pick<Config, 'secretKey' | 'dataDir' | 'previousSecretKeys'> & {
    readonly enterpriseRateLimit?: number | undefined;
  };
  /** The clock (tests move it); defaults to the system clock. */
  readonly now?: (() => Date) | undefined;
}

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;
const BASIC = /^Basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i;

/** Routes that also take Basic authentication (any user name, the API key as password): the OData feed, for BI tools that offer nothing else. */
const takesBasic = (request: FastifyRequest) => (request.routeOptions.url ?? '').startsWith('/odata/');

/** The API key of an Authorization header, or null when the header has another shape. */
function presentedKey(header: string, basic: boolean): string | null {
  const bearer = BEARER.exec(header);
  if (bearer) return bearer[1]!;
  const credentials = basic ? BASIC.exec(header) : null;
  if (!credentials) return null;
  const decoded = Buffer.from(credentials[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon === -1 ? null : decoded.slice(colon + 1);
}

const REJECTIONS: Record<Exclude<RejectedKey['rejected'], 'expired'>, string> = {
  malformed: 'the bearer token is not a Ferry API key (fy_live_ followed by 43 letters and digits)',
  unknown: 'the API key is not valid',
  revoked: 'the API key was revoked',
};

/** Why a key was refused, as its holder is told (expired and revoked only to a caller holding the whole key). */
function rejectionMessage(rejected: RejectedKey): string {
  if (rejected.rejected !== 'expired') return REJECTIONS[rejected.rejected];
  const at = rejected.expiredAt ? ` at ${rejected.expiredAt.toISOString()}` : '';
  return rejected.replacedBy
    ? `the API key expired${at}: it was rotated, use the key that replaced it (${rejected.replacedBy}…)`
    : `the API key expired${at}; rotate it or create a new one`;
}

/**
 * Installs authentication on the app (before the route plugins, so every route sees
 * `app.authenticate`): binds the key pepper derived from FERRY_SECRET_KEY or the
 * per-install key file, decorates `request.auth`, and counts each authenticated request
 * against its key's rate limit, answering with the X-RateLimit-* headers.
 */
export async function installAuth(app: FastifyInstance, options: AuthOptions): Promise<void> {
  const { database, config } = options;
  const now = options.now ?? (() => new Date());
  bindApiKeyPepper(database, () => loadOrCreateSecretKey(config), config.previousSecretKeys);

  app.decorateRequest('auth', null);
  app.decorateRequest('limits', null);
  // Client addresses locked out after too many failed authentications, as this process
  // learnt them (the count itself is shared by every process in `auth_failures`).
  const lockedClients = new Map<string, number>();
  const lockout = (reply: FastifyReply, seconds: number) => {
    reply.header('retry-after', String(seconds));
    return new FerryError(
      'rate_limited',
      `too many failed authentications from this address; retry after ${seconds} seconds`,
    );
  };
  app.decorate('authenticate', async (request: FastifyRequest, reply: FastifyReply) => {
    const at = now();
    const key = clientKey(request.ip);
    const lockedUntil = lockedClients.get(key);
    if (lockedUntil !== undefined) {
      if (lockedUntil > at.getTime()) throw lockout(reply, Math.ceil((lockedUntil - at.getTime()) / 1000));
      lockedClients.delete(key);
    }
    const basic = takesBasic(request);
    const failed = async (message: string, code: UnauthorizedCode = 'unauthorized') => {
      const seconds = await recordFailure(database, key, at, CLIENT_POLICY);
      if (seconds > 0) {
        lockedClients.set(key, at.getTime() + seconds * 1000);
        return lockout(reply, seconds);
      }
      return unauthorized(reply, message, basic, code);
    };
    const header = request.headers.authorization;
    if (!header)
      throw unauthorized(reply, 'no credentials: send the header Authorization: Bearer <API key>', basic);
    const presented = presentedKey(header, basic);
    if (presented === null)
      throw await failed(
        basic
          ? 'the Authorization header must be "Bearer <API key>", or Basic with the API key as the password'
          : 'the Authorization header must be "Bearer <API key>"',
      );
    const resolved = await resolveApiKey(database, presented, at, { countRequest: true });
    if (!('auth' in resolved))
      throw await failed(
        rejectionMessage(resolved),
        resolved.rejected === 'expired' ? 'api_key_expired' : 'unauthorized',
      );
    const userAgent = request.headers['user-agent'];
    const client = {
      ip: request.ip ?? null,
      userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 512) : null,
      route: `${request.method} ${request.routeOptions.url ?? request.url}`,
      occurredAt: at,
    };
    // An organisation key may act in a client tenant of its organisation (docs/organisations.md).
    const acting = await keyInRequestedTenant(database, resolved, request.headers[TENANT_HEADER], client);
    // A closed account (the tenant acted in, or the organisation key's own) reads and exports only.
    const closing = acting.tenantStatus === 'closing' || resolved.tenantStatus === 'closing';
    if (closing && !allowedWhileClosed(request))
      throw new FerryError(
        'account_closed',
        'the account is closed: during its grace period it can be read, exported and reopened (POST /api/v1/account/reopen)',
      );
    const refused = refusingList(resolved.allowLists, request.ip);
    if (refused)
      throw await refuseAddress(database, {
        tenantId: resolved.auth.tenantId,
        actor: resolved.auth.actor,
        ...client,
        list: refused,
      });
    // In a client tenant, that tenant's allow-list applies as well.
    if (acting !== resolved && refusingList(acting.allowLists, request.ip))
      throw await refuseAddress(database, {
        tenantId: acting.auth.tenantId,
        actor: acting.auth.actor,
        ...client,
        list: 'tenant',
      });
    request.auth = Object.freeze({ ...acting.auth, ip: client.ip, userAgent: client.userAgent });
    // The limits are those of the tenant acted in; the requests are counted on the key.
    const limits = effectiveLimits(acting.auth.plan, acting.limitOverrides, {
      enterpriseRateLimit: config.enterpriseRateLimit,
    });
    request.limits = limits;
    // The key lookup counted this request already (one statement); a key found valid there
    // always has counts, the fallback only covers a key that changed in between.
    const rate = resolved.rate
      ? evaluateRateLimit(resolved.rate.counts, limits.rateLimitPerHour, resolved.rate.windows)
      : await consumeRateLimit(database, resolved.auth.apiKeyId!, limits.rateLimitPerHour, at);
    if (resolved.rate?.counts.burst === 1) await dropFinishedWindows(database, resolved.auth.apiKeyId!, at);
    setRateLimitHeaders(reply, rate);
    if (!rate.allowed) {
      reply.header('retry-after', String(rate.retryAfter));
      const which =
        rate.exceeded === 'hour'
          ? `its hourly limit of ${rate.limit} requests`
          : `its burst limit of ${rate.burst} requests per 5 minutes`;
      throw new FerryError(
        'rate_limited',
        `this API key used ${which}; retry after ${rate.retryAfter} seconds`,
      );
    }
  });
}

/** What a closed account in its grace period may still do: read, take its data out, reopen. */
function allowedWhileClosed(request: FastifyRequest): boolean {
  if (request.method === 'GET' || request.method === 'HEAD') return true;
  const path = request.routeOptions.url ?? request.url;
  return (
    path === '/api/v1/exports' ||
    path === '/api/v1/exports/estimate' ||
    path === '/api/export/request' ||
    path.startsWith('/api/v1/account/')
  );
}

function setRateLimitHeaders(reply: FastifyReply, rate: RateLimitResult): void {
  reply.header('x-ratelimit-limit', String(rate.limit));
  reply.header('x-ratelimit-remaining', String(rate.remaining));
  reply.header('x-ratelimit-reset', String(rate.reset));
  reply.header('x-ratelimit-burst', String(rate.burst));
}

type UnauthorizedCode = 'unauthorized' | 'api_key_expired';

function unauthorized(
  reply: FastifyReply,
  message: string,
  basic = false,
  code: UnauthorizedCode = 'unauthorized',
): FerryError {
  reply.header(
    'www-authenticate',
    basic ? 'Basic realm="ferry", Bearer realm="ferry"' : 'Bearer realm="ferry"',
  );
  return new FerryError(code, message);
}
