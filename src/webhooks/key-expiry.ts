import { daysLeft, type ExpiringKey, keysToWarn, markExpiryWarned } from '../auth/key-rotation.ts';
import type { Database } from '../db/database.ts';
import type { JobDefinition } from '../jobs/types.ts';
import { emitEvent, type WebhookQueue } from './emit.ts';
import type { EventBody } from './events.ts';

/** The hourly job that sends `api_key.expiring` a week before a key expires. */
export const API_KEY_EXPIRING_JOB = 'api-keys.expiring';

/** Keys handled per batch. */
const BATCH = 500;

/** The body of `api_key.expiring`: what identifies the key, never its hash or the key itself. */
export function apiKeyExpiringBody(key: ExpiringKey, now: Date): EventBody {
  return {
    data: {
      api_key_id: key.id,
      name: key.name,
      prefix: key.prefix,
      expires_at: key.expiresAt.toISOString(),
      days_left: daysLeft(key.expiresAt, now),
      replaced_by: key.replacedBy,
    },
  };
}

/**
 * Sends `api_key.expiring` for every key that expires within a week and was not warned
 * about for that expiry, then marks it warned. The message is keyed by the key and its
 * expiry, so a run that stopped between sending and marking (or two runs at once) sends
 * it once; a key whose expiry changes (a rotation) is warned about again for the new one.
 * Returns how many keys were warned about.
 */
export async function warnExpiringKeys(
  database: Database,
  now: Date,
  options: { queue?: WebhookQueue } = {},
): Promise<number> {
  let warned = 0;
  for (;;) {
    const keys = await keysToWarn(database, now, BATCH);
    let marked = 0;
    for (const key of keys) {
      await emitEvent(database, key.tenantId, 'api_key.expiring', apiKeyExpiringBody(key, now), {
        now: () => now,
        key: `api_key.expiring:${key.id}:${key.expiresAt.toISOString()}`,
        ...(options.queue ? { queue: options.queue } : {}),
      });
      if (await markExpiryWarned(database, key, now)) marked++;
    }
    warned += marked;
    // A full batch none of which could be marked (their expiries all changed meanwhile) is left to the next run.
    if (keys.length < BATCH || marked === 0) return warned;
  }
}

/** The expiry warnings' job, listed in JOBS in src/compose.ts. */
export const API_KEY_JOBS: readonly JobDefinition[] = [
  {
    name: API_KEY_EXPIRING_JOB,
    schedule: { cron: '20 * * * *' },
    queue: () => ({ retryLimit: 2, retryDelay: 60, expireInSeconds: 600 }),
    work: () => ({ localConcurrency: 1 }),
    async handle(_job, ctx) {
      await warnExpiringKeys(ctx.database, ctx.now(), { queue: ctx.queue });
    },
  },
];
