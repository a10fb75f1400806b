import type { WebSocket } from 'ws';
import { recordAudit } from '../auth/audit.ts';
import type { AuthContext } from '../auth/context.ts';
import { resolveApiKey } from '../auth/keys.ts';
import { keyInRequestedTenant } from '../auth/organisations.ts';
import { refuseAddress, refusingList } from '../auth/ip-allowlist.ts';
import { authorize, authorizeExport } from '../auth/policy.ts';
import { canSee } from '../export-requests/service.ts';
import type { Database } from '../db/database.ts';
import type { ExportScope } from '../domain/export-scope.ts';
import type { ErrorCode } from '../domain/error-catalog.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { Logger } from '../lib/logger.ts';
import type { PiiLevel } from '../domain/pii-level.ts';
import type { AuthLimiter } from './auth-limiter.ts';
import type { Attachment, ConnectionStats, StreamHub, Subscriber } from './hub.ts';
import type { SubscriptionRules } from './present.ts';
import { type AuthMessage, parseClientMessage, type SubscribeMessage } from './protocol.ts';
import { STREAM_RETENTION_DAYS } from './retention.ts';
import type { Position } from './outbox.ts';

/** WebSocket close codes the stream uses (4xxx: application codes, mirroring HTTP statuses). */
export const CLOSE = {
  normal: 1000,
  goingAway: 1001,
  policy: 1008,
  internal: 1011,
  lagging: 4008,
  unauthorized: 4401,
  forbidden: 4403,
  rateLimited: 4429,
} as const;

/** Client messages that may wait while an earlier one (auth, subscribe) is handled. */
const MAX_PENDING_MESSAGES = 16;
/** Invalid messages tolerated on one connection before it is closed. */
const MAX_INVALID_MESSAGES = 20;

export interface SessionDeps {
  readonly hub: StreamHub;
  readonly database: Database;
  readonly limiter: AuthLimiter;
  readonly address: string;
  readonly userAgent: string | null;
  readonly logger: Pick<Logger, 'info' | 'warn' | 'error'>;
}

interface ErrorBody {
  code: ErrorCode;
  message: string;
  [extra: string]: unknown;
}

/**
 * One WebSocket connection of the live stream: authenticate, subscribe, then events.
 * Everything handed to the socket but not yet written to the network is counted; a
 * live subscriber over its limits is told `stream_lagging` and disconnected, a
 * replaying one is simply paused, so memory per connection stays bounded.
 */
export function openStreamSession(socket: WebSocket, deps: SessionDeps): ConnectionStats {
  const { hub, database, limiter, logger } = deps;
  const { maxBufferedEvents, maxBufferedBytes } = hub.options;
  const stats: ConnectionStats = {
    bufferedEvents: 0,
    bufferedBytes: 0,
    peakBufferedEvents: 0,
    peakBufferedBytes: 0,
    lagged: false,
  };
  hub.connections.add(stats);
  let auth: AuthContext | null = null;
  let access: { pii: PiiLevel; scope: ExportScope | undefined } | null = null;
  let attachment: Attachment | null = null;
  /** Stops the `exports` stream's progress notices, while subscribed to it. */
  let stopExports: (() => void) | null = null;
  let closed = false;
  let invalidCount = 0;
  let pending = 0;
  let queue: Promise<void> = Promise.resolve();
  let waiters: (() => void)[] = [];
  let alive = true;

  const hasRoom = () =>
    stats.bufferedEvents <= maxBufferedEvents / 2 && stats.bufferedBytes <= maxBufferedBytes / 2;

  const release = () => {
    if (!closed && !hasRoom()) return;
    const ready = waiters;
    waiters = [];
    for (const resolve of ready) resolve();
  };

  /** Sends a text message; false (and `stream_lagging`) when it would pass the buffer limits. */
  function send(text: string, limited = true): boolean {
    if (closed || socket.readyState !== socket.OPEN) return false;
    const bytes = Buffer.byteLength(text);
    const full =
      stats.bufferedEvents + 1 > maxBufferedEvents ||
      (stats.bufferedBytes + bytes > maxBufferedBytes && stats.bufferedEvents > 0);
    if (limited && full) {
      lag();
      return false;
    }
    stats.bufferedEvents++;
    stats.bufferedBytes += bytes;
    stats.peakBufferedEvents = Math.max(stats.peakBufferedEvents, stats.bufferedEvents);
    stats.peakBufferedBytes = Math.max(stats.peakBufferedBytes, stats.bufferedBytes);
    socket.send(text, () => {
      stats.bufferedEvents--;
      stats.bufferedBytes -= bytes;
      release();
    });
    return true;
  }

  const sendJson = (body: Record<string, unknown>, limited = true) => send(JSON.stringify(body), limited);

  function sendError(body: ErrorBody, limited = true): void {
    sendJson({ type: 'error', ...body }, limited);
  }

  function close(code: number, reason: string): void {
    if (closed) return;
    closed = true;
    attachment?.detach();
    attachment = null;
    stopExports?.();
    stopExports = null;
    release();
    clearTimeout(authTimer);
    clearInterval(heartbeat);
    socket.close(code, reason);
  }

  function lag(): void {
    if (stats.lagged || closed) return;
    stats.lagged = true;
    const last = attachment?.lastEventId() ?? null;
    sendError(
      {
        code: 'stream_lagging',
        message:
          `the connection fell behind: more than ${maxBufferedEvents} events or ${maxBufferedBytes} bytes ` +
          'were waiting to be sent. Reconnect and subscribe with last_event_id to resume.',
        last_event_id: last === null ? null : String(last),
      },
      false,
    );
    close(CLOSE.lagging, 'stream lagging');
  }

  function refuse(
    code: 'unauthorized' | 'forbidden' | 'ip_not_allowed' | 'rate_limited',
    message: string,
    closeCode: number,
  ) {
    sendError({ code, message }, false);
    close(closeCode, code);
  }

  function invalidMessage(body: ErrorBody): void {
    sendError(body);
    if (++invalidCount >= MAX_INVALID_MESSAGES)
      close(CLOSE.policy, `more than ${MAX_INVALID_MESSAGES} invalid messages`);
  }

  const authTimer = setTimeout(() => {
    if (!auth)
      refuse(
        'unauthorized',
        `no auth message within ${Math.round(hub.options.authTimeoutMs / 1000)} seconds`,
        CLOSE.unauthorized,
      );
  }, hub.options.authTimeoutMs);
  authTimer.unref();

  const heartbeat = setInterval(() => {
    if (!alive) {
      closed = true;
      attachment?.detach();
      socket.terminate();
      return;
    }
    alive = false;
    socket.ping();
  }, hub.options.heartbeatMs);
  heartbeat.unref();

  socket.on('pong', () => {
    alive = true;
  });
  socket.on('close', () => {
    hub.connections.delete(stats);
    closed = true;
    attachment?.detach();
    attachment = null;
    release();
    clearTimeout(authTimer);
    clearInterval(heartbeat);
  });

  if (limiter.blocked(deps.address)) {
    refuse(
      'rate_limited',
      'too many failed authentications from this address; wait a minute',
      CLOSE.rateLimited,
    );
    return stats;
  }

  socket.on('message', (data, isBinary) => {
    if (closed) return;
    if (isBinary) {
      invalidMessage({ code: 'malformed_request', message: 'send JSON text messages, not binary frames' });
      return;
    }
    if (++pending > MAX_PENDING_MESSAGES) {
      close(CLOSE.policy, 'too many messages at once');
      return;
    }
    const text = (
      Array.isArray(data) ? Buffer.concat(data) : data instanceof ArrayBuffer ? Buffer.from(data) : data
    ).toString('utf8');
    queue = queue
      .then(() => (closed ? undefined : handle(text)))
      .catch((err: unknown) => {
        logger.error({ err }, 'stream message handling failed');
        sendError({ code: 'internal', message: 'the server failed to handle the message' }, false);
        close(CLOSE.internal, 'internal error');
      })
      .finally(() => {
        pending--;
      });
  });

  async function handle(text: string): Promise<void> {
    const parsed = parseClientMessage(text);
    if (!parsed.ok) {
      const { code, message, ...extra } = parsed.error;
      return invalidMessage({ code, message, ...extra });
    }
    const message = parsed.message;
    if (message.type === 'ping') {
      sendJson({
        type: 'pong',
        ...(message.id !== undefined ? { id: message.id } : {}),
        timestamp: new Date().toISOString(),
      });
      return;
    }
    if (message.type === 'auth') return authenticate(message);
    if (!auth || !access)
      return refuse('unauthorized', 'send {"type":"auth", ...} before anything else', CLOSE.unauthorized);
    if (message.type === 'subscribe')
      return message.stream === 'exports'
        ? subscribeExports(message, auth)
        : subscribe(message, auth, access);
    const last = attachment?.lastEventId() ?? null;
    attachment?.detach();
    attachment = null;
    stopExports?.();
    stopExports = null;
    sendJson({ type: 'unsubscribed', last_event_id: last === null ? null : String(last) });
  }

  async function authenticate(message: AuthMessage): Promise<void> {
    if (auth) {
      invalidMessage({ code: 'conflict', message: 'this connection is already authenticated' });
      return;
    }
    const resolved = await resolveApiKey(database, message.token);
    // An organisation key may name a client tenant of its organisation (docs/organisations.md).
    const acting =
      'auth' in resolved && resolved.auth.tenantId !== message.tenantId
        ? await keyInRequestedTenant(database, resolved, message.tenantId, {
            ip: deps.address,
            userAgent: deps.userAgent,
            route: 'GET /api/v1/stream/export',
          }).catch((err: unknown) => {
            if (err instanceof FerryError) return null;
            throw err;
          })
        : 'auth' in resolved
          ? resolved
          : null;
    const verified = acting?.auth ?? null;
    if (closed) return;
    if (!verified || verified.tenantId !== message.tenantId) {
      limiter.fail(deps.address);
      return refuse(
        'unauthorized',
        'the token is not a valid API key of this tenant (unknown, expired or revoked key, or another tenant)',
        CLOSE.unauthorized,
      );
    }
    // The upgrade carries no credential: the allow-lists are checked here, before anything is sent.
    const homeRefused = 'auth' in resolved ? refusingList(resolved.allowLists, deps.address) : null;
    const refused =
      homeRefused ?? (acting && acting !== resolved ? refusingList(acting.allowLists, deps.address) : null);
    if (refused) {
      const error = await refuseAddress(database, {
        tenantId: homeRefused && 'auth' in resolved ? resolved.auth.tenantId : verified.tenantId,
        actor: homeRefused && 'auth' in resolved ? resolved.auth.actor : verified.actor,
        ip: deps.address,
        userAgent: deps.userAgent,
        list: refused,
        route: 'GET /api/v1/stream/export',
      });
      if (closed) return;
      return refuse('ip_not_allowed', error.message, CLOSE.forbidden);
    }
    const ctx: AuthContext = { ...verified, ip: deps.address, userAgent: deps.userAgent };
    try {
      authorize(ctx, 'stream:read');
      access = streamAccess(ctx);
    } catch (err) {
      if (err instanceof FerryError && err.code === 'forbidden')
        return refuse('forbidden', err.message, CLOSE.forbidden);
      throw err;
    }
    auth = ctx;
    clearTimeout(authTimer);
    sendJson({ type: 'authenticated', tenant_id: ctx.tenantId, role: ctx.role });
  }

  /**
   * The `exports` stream: progress of every export the key may read (the same rule as
   * `GET /api/v1/exports/{id}`), live only, at most one notice a second per export.
   */
  async function subscribeExports(message: SubscribeMessage, caller: AuthContext): Promise<void> {
    if (stopExports)
      return invalidMessage({
        code: 'conflict',
        message: 'this connection is already subscribed to exports',
      });
    if (message.siteUrls || message.includeMessages || !message.realTime || message.lastEventId !== null)
      return invalidMessage({
        code: 'invalid_parameter',
        message: 'filters and last_event_id apply to the conversations stream; the exports stream takes none',
        parameter: 'filters',
      });
    try {
      authorize(caller, 'exports:read');
    } catch (err) {
      if (err instanceof FerryError && err.code === 'forbidden')
        return invalidMessage({ code: 'forbidden', message: err.message });
      throw err;
    }
    const stop = await hub.watchExports((notice) => {
      if (notice.tenant_id !== caller.tenantId || !canSee(caller, notice)) return;
      sendJson({
        type: 'export.progress',
        export_id: notice.export_id,
        status: notice.status,
        datasets: notice.datasets,
        records: notice.records,
        records_estimated: notice.records_estimated,
        bytes: notice.bytes,
        percentage: notice.percentage,
        eta_seconds: notice.eta_seconds,
        at: notice.at,
      });
    });
    if (closed) {
      stop();
      return;
    }
    stopExports = stop;
    sendJson({ type: 'subscribed', stream: 'exports' });
  }

  async function subscribe(
    message: SubscribeMessage,
    caller: AuthContext,
    granted: { pii: PiiLevel; scope: ExportScope | undefined },
  ): Promise<void> {
    if (attachment) {
      invalidMessage({
        code: 'conflict',
        message: 'this connection is already subscribed; send {"type":"unsubscribe"} first',
      });
      return;
    }
    const tenantId = caller.tenantId;
    const sites = await hub.store.sites(tenantId);
    let siteIds: Set<string> | null = null;
    if (message.siteUrls) {
      const unknown = message.siteUrls.find((url) => !sites.has(url));
      if (unknown !== undefined)
        return invalidMessage({
          code: 'invalid_parameter',
          message: `filters.site_urls: "${unknown.slice(0, 200)}" is not a site of this tenant (accepted: ${[...sites.keys()].join(', ')})`,
          parameter: 'filters.site_urls',
          accepted: [...sites.keys()],
        });
      siteIds = new Set(message.siteUrls.map((url) => sites.get(url)!));
    }
    const scope = granted.scope;
    if (scope?.kind === 'site') {
      const own = sites.get(scope.site_url);
      siteIds = new Set(own && (!siteIds || siteIds.has(own)) ? [own] : []);
    }

    let after: Position | null = null;
    if (message.lastEventId !== null) {
      const found =
        message.lastEventId === 0
          ? { tx: 0n, seq: 0 }
          : await hub.store.positionOf(tenantId, message.lastEventId);
      if (!found) {
        const latest = await hub.store.lastSeq();
        return invalidMessage(
          message.lastEventId > latest
            ? {
                code: 'invalid_parameter',
                message: `last_event_id: there is no event ${message.lastEventId} (the latest is ${latest})`,
                parameter: 'last_event_id',
              }
            : {
                code: 'gone',
                message:
                  `last_event_id: event ${message.lastEventId} is not in this tenant's stream any more ` +
                  `(events are kept ${STREAM_RETENTION_DAYS} days). Export the data you missed, then ` +
                  'subscribe without last_event_id.',
                parameter: 'last_event_id',
              },
        );
      }
      after = found;
    }
    if (closed) return;

    const rules: SubscriptionRules = {
      tenantId,
      siteIds,
      includeMessages: message.includeMessages,
      pii: granted.pii,
      scope,
    };
    const subscriber: Subscriber = {
      rules,
      deliver: (_event, text) => send(text),
      ready: () =>
        hasRoom() || closed ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve)),
      get closed() {
        return closed;
      },
    };
    const current = await hub.attach(subscriber, after, message.realTime, message.lastEventId);
    if (closed) {
      current.detach();
      return;
    }
    attachment = current;
    sendJson({
      type: 'subscribed',
      stream: message.stream,
      filters: {
        site_urls: message.siteUrls,
        include_messages: message.includeMessages,
        real_time: message.realTime,
      },
      last_event_id: message.lastEventId === null ? null : String(message.lastEventId),
    });
    recordAudit(database, {
      tenantId,
      actor: caller.actor,
      action: 'export.stream',
      dataType: 'conversations',
      ip: caller.ip,
      userAgent: caller.userAgent,
      success: true,
    }).catch((err: unknown) => logger.warn({ err }, 'could not record the stream audit entry'));
    current.start().then(
      (outcome) => {
        if (outcome !== 'complete' || attachment !== current) return;
        attachment = null;
        const last = current.lastEventId();
        sendJson({ type: 'replay_complete', last_event_id: last === null ? null : String(last) });
      },
      (err: unknown) => {
        if (closed) return;
        logger.error({ err }, 'stream replay failed');
        sendError(
          {
            code: 'service_unavailable',
            message: 'reading the stream failed; reconnect and resume with last_event_id',
          },
          false,
        );
        close(CLOSE.internal, 'stream failed');
      },
    );
  }

  return stats;
}

/**
 * The anonymization level and scope of a stream caller, by the export rules for
 * messages: roles that may see personal data get message text as is, others (analysts)
 * get it scrubbed at `complete`; agents only see their own conversations.
 */
export function streamAccess(auth: AuthContext): { pii: PiiLevel; scope: ExportScope | undefined } {
  try {
    return authorizeExport(auth, { dataset: 'messages', pii: 'full' });
  } catch (err) {
    if (!(err instanceof FerryError) || err.code !== 'forbidden') throw err;
    return authorizeExport(auth, { dataset: 'messages', pii: 'complete' });
  }
}
