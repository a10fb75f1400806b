import { createHash, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { ALL_EVENTS, type EventBody, envelope } from './events.ts';
import { webhookDb } from './tables.ts';

/** The job that attempts one webhook message: payload `{ id: <message id> }`. */
export const WEBHOOK_DELIVER_JOB = 'webhooks.deliver';

/** Enough of a job queue to hand a message to a worker (pg-boss's `send`). */
export interface WebhookQueue {
  send(name: string, data: { id: string }, options?: { startAfter?: Date }): Promise<string | null>;
}

export interface EmitOptions {
  readonly now?: () => Date;
  /**
   * Send only to these endpoints (active ones of the tenant), whatever their events
   * filter: the webhook delivery target uses it.
   */
  readonly endpointIds?: readonly string[];
  /** Skip these endpoints (a notice about an endpoint is not sent to that endpoint). */
  readonly excludeEndpointIds?: readonly string[];
  /** Hand each message to a worker at once; without it the outbox poller picks it up. */
  readonly queue?: WebhookQueue;
  /**
   * Makes emitting idempotent: one message per endpoint and key, however often the
   * event is emitted with it. A message that exists already is returned as it is (its
   * body, attempts and schedule unchanged) and not handed to the queue again. The
   * webhook delivery target keys its message by scheduled file and target.
   */
  readonly key?: string;
}

export interface EmittedMessage {
  readonly id: string;
  readonly endpointId: string;
}

/** A message id (the `webhook-id` header): `msg_` and 32 hex digits. */
export function newMessageId(): string {
  return `msg_${randomUUID().replaceAll('-', '')}`;
}

/** The id of the one message for an endpoint and an idempotency key (`EmitOptions.key`). */
export function keyedMessageId(tenantId: string, endpointId: string, key: string): string {
  const digest = createHash('sha256').update(`${tenantId}\n${endpointId}\n${key}`).digest('hex');
  return `msg_${digest.slice(0, 32)}`;
}

/**
 * Records an event for every active endpoint of the tenant that subscribes to it:
 * one outbox row per endpoint, due now, with the exact body that every attempt will
 * sign and send (with a `key`, the row that key made earlier if there is one).
 * Returns the messages; delivering them is the dispatcher's job
 * (`deliverDueMessages`, or a `webhooks.deliver` job when a queue is given).
 */
export async function emitEvent(
  database: Database,
  tenantId: string,
  event: string,
  body: EventBody,
  options: EmitOptions = {},
): Promise<EmittedMessage[]> {
  const db = webhookDb(database);
  const now = (options.now ?? (() => new Date()))();
  let query = db
    .selectFrom('webhook_endpoints')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where('status', '=', 'active');
  if (options.endpointIds) {
    if (options.endpointIds.length === 0) return [];
    query = query.where('id', 'in', [...options.endpointIds]);
  } else {
    query = query.where((eb) =>
      eb.or([
        sql<boolean>`events @> ${JSON.stringify([event])}::jsonb`,
        sql<boolean>`events @> ${JSON.stringify([ALL_EVENTS])}::jsonb`,
      ]),
    );
  }
  if (options.excludeEndpointIds?.length)
    query = query.where('id', 'not in', [...options.excludeEndpointIds]);
  const endpoints = await query.orderBy('created_at').execute();
  if (endpoints.length === 0) return [];
  const payload = envelope(event, now, tenantId, body);
  const key = options.key;
  const messages = endpoints.map((e) => ({
    id: key === undefined ? newMessageId() : keyedMessageId(tenantId, e.id, key),
    endpointId: e.id,
  }));
  const inserted = await db
    .insertInto('webhook_messages')
    .values(
      messages.map((m) => ({
        id: m.id,
        tenant_id: tenantId,
        endpoint_id: m.endpointId,
        event,
        payload,
        next_attempt_at: now,
        created_at: now,
      })),
    )
    .onConflict((oc) => oc.column('id').doNothing())
    .returning('id')
    .execute();
  if (options.queue) for (const m of inserted) await options.queue.send(WEBHOOK_DELIVER_JOB, { id: m.id });
  return messages;
}
