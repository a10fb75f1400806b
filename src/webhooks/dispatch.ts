import { randomUUID } from 'node:crypto';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import type { Mailer } from '../deliver/mailer.ts';
import { notifyFailure } from '../deliver/notify.ts';
import type { Logger } from '../lib/logger.ts';
import type { OutboundPolicy } from '../lib/ssrf.ts';
import { emitEvent, type WebhookQueue, WEBHOOK_DELIVER_JOB } from './emit.ts';
import { postWebhook, type PostResult, WEBHOOK_TIMEOUT_MS } from './post.ts';
import { DISABLE_AFTER_EXHAUSTED, DISABLE_AFTER_FAILING_MS, retryDelay } from './schedule.ts';
import { signedHeaders } from './signing.ts';
import { webhookDb, type WebhookDB } from './tables.ts';

/** What the dispatcher needs; the composition root builds it once, tests pass a clock. */
export interface WebhookDispatchOptions {
  readonly database: Database;
  /** Opens the endpoints' sealed signing secrets. */
  readonly secrets: SecretBox;
  readonly outbound: OutboundPolicy;
  readonly now?: () => Date;
  /** Jitter source, [0, 1). */
  readonly random?: () => number;
  readonly timeoutMs?: number;
  /** Retry delays; default WEBHOOK_RETRY_DELAYS. */
  readonly schedule?: readonly number[];
  /** Emails tenant admins when an endpoint is disabled. */
  readonly mailer?: Mailer;
  /** When present, retries are handed to it as delayed `webhooks.deliver` jobs. */
  readonly queue?: WebhookQueue;
  readonly logger?: Logger;
}

export type AttemptOutcome =
  | { readonly status: 'delivered'; readonly statusCode: number }
  | {
      readonly status: 'retrying';
      readonly statusCode: number | null;
      readonly error: string;
      readonly nextAttemptAt: Date;
    }
  | { readonly status: 'failed'; readonly statusCode: number | null; readonly error: string }
  /** Not attempted: delivered or failed already, not due yet, or leased by another worker. */
  | { readonly status: 'skipped' };

interface Claimed {
  id: string;
  tenant_id: string;
  endpoint_id: string;
  event: string;
  payload: string;
  attempts: number;
}

/**
 * Attempts every due message (up to `limit`, four at a time) and returns how many
 * were attempted. Safe to run from several workers at once: each message is leased
 * with `FOR UPDATE SKIP LOCKED`, and a lease that outlives its worker (a crash after
 * the POST, before the attempt was recorded) expires, so the message is sent again
 * with the same `webhook-id`.
 */
export async function deliverDueMessages(options: WebhookDispatchOptions, limit = 20): Promise<number> {
  const db = webhookDb(options.database);
  const now = clock(options)();
  const ids = await db
    .selectFrom('webhook_messages')
    .select('id')
    .where('status', '=', 'pending')
    .where('next_attempt_at', '<=', now)
    .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', now)]))
    .orderBy('next_attempt_at')
    .limit(limit)
    .execute();
  let attempted = 0;
  const queue = ids.map((r) => r.id);
  const worker = async () => {
    for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
      const outcome = await attemptMessage(options, id);
      if (outcome.status !== 'skipped') attempted++;
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return attempted;
}

/**
 * Attempts one message if it is pending, due and not leased by another worker:
 * signs it (with the previous secret too during a rotation), POSTs it, records the
 * attempt, and moves the message on: delivered on a 2xx; on a 410 failed and its
 * endpoint disabled; otherwise scheduled again, or failed once the schedule is used
 * up. The job handler of `webhooks.deliver` and the outbox poller both call this.
 */
export async function attemptMessage(
  options: WebhookDispatchOptions,
  messageId: string,
): Promise<AttemptOutcome> {
  const db = webhookDb(options.database);
  const now = clock(options)();
  const leaseMs = (options.timeoutMs ?? WEBHOOK_TIMEOUT_MS) + 60_000;
  const claimed = (await db
    .updateTable('webhook_messages')
    .set({ locked_until: new Date(now.getTime() + leaseMs) })
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('webhook_messages')
        .select('id')
        .where('id', '=', messageId)
        .where('status', '=', 'pending')
        .where('next_attempt_at', '<=', now)
        .where((w) => w.or([w('locked_until', 'is', null), w('locked_until', '<=', now)]))
        .forUpdate()
        .skipLocked(),
    )
    .returning(['id', 'tenant_id', 'endpoint_id', 'event', 'payload', 'attempts'])
    .executeTakeFirst()) as Claimed | undefined;
  if (!claimed) return { status: 'skipped' };

  const endpoint = await db
    .selectFrom('webhook_endpoints')
    .selectAll()
    .where('id', '=', claimed.endpoint_id)
    .executeTakeFirstOrThrow();
  if (endpoint.status !== 'active') {
    const error = `the endpoint is disabled: ${endpoint.disabled_reason ?? 'disabled'}`;
    await finishMessage(db, claimed.id, { status: 'failed', error, at: now });
    return { status: 'failed', statusCode: null, error };
  }

  const secrets = [await options.secrets.open(endpoint.secret_sealed)];
  if (
    endpoint.previous_secret_sealed &&
    endpoint.previous_secret_expires_at &&
    new Date(endpoint.previous_secret_expires_at) > now
  )
    secrets.push(await options.secrets.open(endpoint.previous_secret_sealed));
  const headers = signedHeaders(claimed.id, now, claimed.payload, secrets);
  const result = await postWebhook(endpoint.url, headers, claimed.payload, {
    outbound: options.outbound,
    timeoutMs: options.timeoutMs,
  });

  const attempt = claimed.attempts + 1;
  const ok = result.statusCode !== null && result.statusCode >= 200 && result.statusCode < 300;
  await db
    .insertInto('webhook_attempts')
    .values({
      id: randomUUID(),
      message_id: claimed.id,
      attempt,
      started_at: now,
      status_code: result.statusCode,
      latency_ms: result.latencyMs,
      outcome: ok ? 'success' : 'failure',
      error: result.error,
      response_excerpt: result.excerpt,
    })
    .execute();

  if (ok) {
    await finishMessage(db, claimed.id, { status: 'delivered', at: now, attempts: attempt });
    await db
      .updateTable('webhook_endpoints')
      .set({ consecutive_failures: 0, failing_since: null })
      .where('id', '=', endpoint.id)
      .execute();
    return { status: 'delivered', statusCode: result.statusCode! };
  }

  const error = result.error ?? `HTTP ${result.statusCode}`;
  options.logger?.warn(
    { webhook_id: endpoint.id, message_id: claimed.id, attempt, status: result.statusCode, error },
    'webhook attempt failed',
  );
  const failingSince = endpoint.failing_since ? new Date(endpoint.failing_since) : now;
  await db
    .updateTable('webhook_endpoints')
    .set({ failing_since: failingSince })
    .where('id', '=', endpoint.id)
    .execute();

  if (result.statusCode === 410) {
    await finishMessage(db, claimed.id, { status: 'failed', error, at: now, attempts: attempt });
    await disableEndpoint(options, endpoint.id, 'the endpoint answered 410 Gone', claimed.id);
    return { status: 'failed', statusCode: 410, error };
  }

  const delay = retryDelay(attempt, {
    schedule: options.schedule,
    random: options.random,
    retryAfterMs: result.retryAfterMs,
  });
  const failingTooLong = now.getTime() - failingSince.getTime() >= DISABLE_AFTER_FAILING_MS;
  if (delay === null || failingTooLong) {
    await finishMessage(db, claimed.id, { status: 'failed', error, at: now, attempts: attempt });
    const updated = await db
      .updateTable('webhook_endpoints')
      .set((eb) => ({ consecutive_failures: eb('consecutive_failures', '+', 1) }))
      .where('id', '=', endpoint.id)
      .returning('consecutive_failures')
      .executeTakeFirstOrThrow();
    await noticeExhausted(options, endpoint, claimed, attempt, error);
    if (failingTooLong)
      await disableEndpoint(
        options,
        endpoint.id,
        'deliveries have failed for 5 days without a success',
        claimed.id,
      );
    else if (updated.consecutive_failures >= DISABLE_AFTER_EXHAUSTED)
      await disableEndpoint(
        options,
        endpoint.id,
        `${updated.consecutive_failures} messages in a row failed after all retries`,
        claimed.id,
      );
    return { status: 'failed', statusCode: result.statusCode, error };
  }
  const nextAttemptAt = new Date(now.getTime() + delay);
  await db
    .updateTable('webhook_messages')
    .set({ attempts: attempt, next_attempt_at: nextAttemptAt, locked_until: null, last_error: error })
    .where('id', '=', claimed.id)
    .execute();
  if (options.queue)
    await options.queue.send(WEBHOOK_DELIVER_JOB, { id: claimed.id }, { startAfter: nextAttemptAt });
  return { status: 'retrying', statusCode: result.statusCode, error, nextAttemptAt };
}

async function finishMessage(
  db: WebhookDB,
  id: string,
  outcome: { status: 'delivered' | 'failed'; at: Date; error?: string; attempts?: number },
): Promise<void> {
  await db
    .updateTable('webhook_messages')
    .set({
      status: outcome.status,
      locked_until: null,
      next_attempt_at: null,
      ...(outcome.attempts !== undefined ? { attempts: outcome.attempts } : {}),
      ...(outcome.status === 'delivered'
        ? { delivered_at: outcome.at, last_error: null }
        : { failed_at: outcome.at, last_error: outcome.error ?? null }),
    })
    .where('id', '=', id)
    .execute();
}

/** A message that used up its retries is announced to the tenant's other endpoints. */
async function noticeExhausted(
  options: WebhookDispatchOptions,
  endpoint: { id: string; url: string; tenant_id: string },
  message: Claimed,
  attempts: number,
  error: string,
): Promise<void> {
  // A failed delivery.failed notice is not announced again: no cascades.
  if (message.event === 'delivery.failed') return;
  await emitEvent(
    options.database,
    endpoint.tenant_id,
    'delivery.failed',
    {
      data: {
        destination: 'webhook',
        webhook_id: endpoint.id,
        url: endpoint.url,
        message_id: message.id,
        event: message.event,
        attempts,
        reason: error,
        endpoint_disabled: false,
      },
    },
    { now: options.now, excludeEndpointIds: [endpoint.id], queue: options.queue },
  );
}

/**
 * Disables an endpoint: its pending messages fail, a `delivery.failed` event goes to
 * the tenant's other endpoints, and the tenant's admins get an email (when SMTP is
 * configured). `POST /api/v1/webhooks/{id}/enable` turns it back on.
 */
export async function disableEndpoint(
  options: WebhookDispatchOptions,
  endpointId: string,
  reason: string,
  lastMessageId?: string,
): Promise<void> {
  const db = webhookDb(options.database);
  const now = clock(options)();
  const endpoint = await db
    .updateTable('webhook_endpoints')
    .set({ status: 'disabled', disabled_at: now, disabled_reason: reason, updated_at: now })
    .where('id', '=', endpointId)
    .where('status', '=', 'active')
    .returning(['id', 'tenant_id', 'url', 'description'])
    .executeTakeFirst();
  if (!endpoint) return;
  await db
    .updateTable('webhook_messages')
    .set({
      status: 'failed',
      failed_at: now,
      next_attempt_at: null,
      locked_until: null,
      last_error: `endpoint disabled: ${reason}`,
    })
    .where('endpoint_id', '=', endpointId)
    .where('status', '=', 'pending')
    .execute();
  options.logger?.warn({ webhook_id: endpointId, reason }, 'webhook endpoint disabled');
  await emitEvent(
    options.database,
    endpoint.tenant_id,
    'delivery.failed',
    {
      data: {
        destination: 'webhook',
        webhook_id: endpoint.id,
        url: endpoint.url,
        message_id: lastMessageId ?? null,
        reason,
        endpoint_disabled: true,
      },
    },
    { now: options.now, excludeEndpointIds: [endpoint.id], queue: options.queue },
  );
  if (!options.mailer) return;
  const admins = await db
    .selectFrom('team_members')
    .select('email')
    .where('tenant_id', '=', endpoint.tenant_id)
    .where('role', '=', 'admin')
    .orderBy('email')
    .execute();
  try {
    await notifyFailure(options.mailer, {
      to: admins.map((a) => a.email),
      subject: `Webhook ${endpoint.url}`,
      reason: `${reason}. Ferry disabled the endpoint and stopped sending to it.`,
      occurredAt: now,
      action:
        `Fix the receiver, then re-enable it with POST /api/v1/webhooks/${endpoint.id}/enable. ` +
        `The delivery log is at GET /api/v1/webhooks/${endpoint.id}/deliveries.`,
    });
  } catch (err) {
    // The endpoint stays disabled either way; the notice is best effort and logged.
    options.logger?.error({ err, webhook_id: endpointId }, 'could not email the webhook-disabled notice');
  }
}

/**
 * Polls the outbox every `intervalMs` and attempts due messages, until stopped.
 * For processes without a job queue (and as a safety net next to one).
 */
export function startWebhookPoller(
  options: WebhookDispatchOptions,
  intervalMs = 1_000,
): { stop(): Promise<void> } {
  let stopped = false;
  let running: Promise<unknown> = Promise.resolve();
  const tick = () => {
    if (stopped) return;
    running = deliverDueMessages(options)
      .catch((err: unknown) => options.logger?.error({ err }, 'webhook outbox poll failed'))
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, intervalMs);
      });
  };
  let timer = setTimeout(tick, intervalMs);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

function clock(options: WebhookDispatchOptions): () => Date {
  return options.now ?? (() => new Date());
}

export type { PostResult };
