import { setTimeout as delay } from 'node:timers/promises';
import { attemptMessage, type WebhookDispatchOptions } from './dispatch.ts';
import { WEBHOOK_TIMEOUT_MS } from './post.ts';
import { webhookDb } from './tables.ts';

/** Where a message stands: delivered, failed for good, or waiting for its next attempt. */
export type MessageState =
  | { readonly status: 'delivered'; readonly attempts: number }
  | { readonly status: 'failed'; readonly attempts: number; readonly error: string }
  | {
      readonly status: 'pending';
      readonly attempts: number;
      /** The last attempt's failure; null before the first attempt. */
      readonly error: string | null;
      readonly nextAttemptAt: Date;
    };

/** How often a caller looks again at a message another worker is attempting. */
const LEASE_POLL_MS = 200;

/**
 * Attempts a message if it is due (as `attemptMessage`: signed, POSTed, recorded, and,
 * with `options.queue`, its next attempt handed to a `webhooks.deliver` job), and says
 * where it stands. An attempt another worker is making right now is waited for (it
 * ends within the attempt timeout), so a caller never mistakes an answer on its way
 * for a missing one. Undefined when the message does not exist (its endpoint was deleted).
 */
export async function settleMessage(
  options: WebhookDispatchOptions,
  messageId: string,
): Promise<MessageState | undefined> {
  const db = webhookDb(options.database);
  const now = options.now ?? (() => new Date());
  const waitUntil = Date.now() + leaseMs(options);
  for (;;) {
    await attemptMessage(options, messageId);
    const row = await db
      .selectFrom('webhook_messages')
      .select(['status', 'attempts', 'next_attempt_at', 'locked_until', 'last_error'])
      .where('id', '=', messageId)
      .executeTakeFirst();
    if (!row) return undefined;
    if (row.status === 'delivered') return { status: 'delivered', attempts: row.attempts };
    if (row.status === 'failed')
      return { status: 'failed', attempts: row.attempts, error: row.last_error ?? 'failed' };
    const leased = row.locked_until !== null && new Date(row.locked_until) > now();
    if (!leased || Date.now() > waitUntil)
      return {
        status: 'pending',
        attempts: row.attempts,
        error: row.last_error,
        nextAttemptAt: new Date(leased ? row.locked_until! : (row.next_attempt_at ?? now())),
      };
    await delay(LEASE_POLL_MS);
  }
}

/**
 * Gives up pending messages: they are failed with `reason` and never sent again. A
 * message another worker is attempting right now is given up once that attempt is
 * recorded (or its lease ran out), so no request of it is still on its way afterwards;
 * one that attempt delivered stays delivered. Returns the ids given up.
 */
export async function giveUpMessages(
  options: Pick<WebhookDispatchOptions, 'database' | 'now' | 'timeoutMs'>,
  messageIds: readonly string[],
  reason: string,
): Promise<string[]> {
  if (messageIds.length === 0) return [];
  const db = webhookDb(options.database);
  const now = options.now ?? (() => new Date());
  const waitUntil = Date.now() + leaseMs(options);
  const given: string[] = [];
  for (;;) {
    const at = now();
    const force = Date.now() > waitUntil;
    const failed = await db
      .updateTable('webhook_messages')
      .set({ status: 'failed', failed_at: at, next_attempt_at: null, locked_until: null, last_error: reason })
      .where('id', 'in', [...messageIds])
      .where('status', '=', 'pending')
      .$if(!force, (q) =>
        q.where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', at)])),
      )
      .returning('id')
      .execute();
    given.push(...failed.map((r) => r.id));
    const leased = await db
      .selectFrom('webhook_messages')
      .select('id')
      .where('id', 'in', [...messageIds])
      .where('status', '=', 'pending')
      .execute();
    if (leased.length === 0) return given;
    await delay(LEASE_POLL_MS);
  }
}

/** How long an attempt can hold a message: its timeout and a margin (as `attemptMessage` leases it). */
function leaseMs(options: Pick<WebhookDispatchOptions, 'timeoutMs'>): number {
  return (options.timeoutMs ?? WEBHOOK_TIMEOUT_MS) + 60_000;
}
