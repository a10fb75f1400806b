import { type Kysely, sql } from 'kysely';
import type { Database } from '../db/database.ts';

/**
 * Failed authentication, counted per key in a window (migration 0015, `auth_failures`):
 * `account:<email>` for sign-ins to one account, `ip:<address>` for one client. Reaching the
 * policy's limit inside the window locks the key until the lockout ends. Shared by every
 * process through the database, so a fleet counts one client's failures together.
 */
export interface ThrottlePolicy {
  /** Failures allowed inside the window; the next one locks. */
  readonly limit: number;
  readonly windowMs: number;
  readonly lockMs: number;
}

/** Sign-ins to one account: 5 wrong passwords in 15 minutes lock it for 15 minutes. */
export const ACCOUNT_POLICY: ThrottlePolicy = { limit: 5, windowMs: 15 * 60_000, lockMs: 15 * 60_000 };
/** One client address, dashboard and API alike: 30 failures in 15 minutes lock it out for 15 minutes. */
export const CLIENT_POLICY: ThrottlePolicy = { limit: 30, windowMs: 15 * 60_000, lockMs: 15 * 60_000 };

interface AuthFailuresTable {
  key: string;
  failures: number;
  window_started_at: Date | string;
  locked_until: Date | string | null;
}

const db = (database: Database) => database.db as unknown as Kysely<{ auth_failures: AuthFailuresTable }>;

/** Seconds until the key may try again, or 0 when it is not locked. */
export async function lockedFor(database: Database, key: string, now: Date): Promise<number> {
  const row = await db(database)
    .selectFrom('auth_failures')
    .select('locked_until')
    .where('key', '=', key)
    .executeTakeFirst();
  const until = row?.locked_until ? new Date(row.locked_until).getTime() : 0;
  return until > now.getTime() ? Math.ceil((until - now.getTime()) / 1000) : 0;
}

/**
 * Counts one failure (one statement, safe under concurrency) and returns the seconds the
 * key is now locked for (0 while it is under the limit).
 */
export async function recordFailure(
  database: Database,
  key: string,
  now: Date,
  policy: ThrottlePolicy,
): Promise<number> {
  const windowStart = new Date(now.getTime() - policy.windowMs);
  const lockUntil = new Date(now.getTime() + policy.lockMs);
  const row = await db(database)
    .insertInto('auth_failures')
    .values({ key, failures: 1, window_started_at: now, locked_until: policy.limit <= 1 ? lockUntil : null })
    .onConflict((oc) =>
      oc.column('key').doUpdateSet({
        // A window that ended starts again at this failure.
        failures: sql<number>`CASE WHEN auth_failures.window_started_at < ${windowStart} THEN 1 ELSE auth_failures.failures + 1 END`,
        window_started_at: sql<Date>`CASE WHEN auth_failures.window_started_at < ${windowStart} THEN ${now}::timestamptz ELSE auth_failures.window_started_at END`,
        locked_until: sql<Date | null>`CASE
          WHEN auth_failures.locked_until > ${now} THEN auth_failures.locked_until
          WHEN auth_failures.window_started_at >= ${windowStart} AND auth_failures.failures + 1 >= ${policy.limit}
            THEN ${lockUntil}::timestamptz
          ELSE NULL END`,
      }),
    )
    .returning('locked_until')
    .executeTakeFirstOrThrow();
  const until = row.locked_until ? new Date(row.locked_until).getTime() : 0;
  return until > now.getTime() ? Math.ceil((until - now.getTime()) / 1000) : 0;
}

/** Forgets a key's failures (a successful sign-in to the account). */
export async function clearFailures(database: Database, key: string): Promise<void> {
  await db(database).deleteFrom('auth_failures').where('key', '=', key).execute();
}

/** Drops rows whose window and lockout are both over (kept small by the sweep). */
export async function dropExpiredFailures(database: Database, now: Date): Promise<void> {
  const horizon = new Date(now.getTime() - Math.max(ACCOUNT_POLICY.windowMs, CLIENT_POLICY.windowMs));
  await db(database)
    .deleteFrom('auth_failures')
    .where('window_started_at', '<', horizon)
    .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<', now)]))
    .execute();
}

/** The throttle key of a sign-in account and of a client address. */
export const accountKey = (email: string) => `account:${email.trim().toLowerCase()}`;
export const clientKey = (ip: string | null | undefined) => `ip:${ip ?? 'unknown'}`;
