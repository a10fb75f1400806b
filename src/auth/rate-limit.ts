import { type RawBuilder, sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { authDb } from './tables.ts';

/**
 * Per-key request limits, counted in PostgreSQL so every API process shares them.
 *
 * Two fixed windows, aligned to the clock (UTC): the hour (limit L, the plan's hourly
 * budget) and the 5-minute burst window (limit B = ceil(2 × L / 12), twice the average
 * 5-minute share of the hour). A request is allowed when, after counting it, neither
 * window is over its limit. So the hour's budget can be spent at up to twice the average
 * rate within each 5-minute window, but never faster, and never more than L an hour.
 * Refused requests are counted too: a client that keeps calling after a 429 stays limited.
 */
export const HOUR_SECONDS = 3600;
export const BURST_SECONDS = 300;

export function burstLimit(limitPerHour: number): number {
  return Math.ceil((2 * limitPerHour) / (HOUR_SECONDS / BURST_SECONDS));
}

export interface RateLimitResult {
  readonly allowed: boolean;
  /** The window that refused the request, when refused. */
  readonly exceeded: 'hour' | 'burst' | null;
  /** The hourly budget (X-RateLimit-Limit). */
  readonly limit: number;
  /** Requests left in this hour (X-RateLimit-Remaining). */
  readonly remaining: number;
  /** Unix seconds when the hourly window resets (X-RateLimit-Reset). */
  readonly reset: number;
  /** Requests allowed per 5-minute window (X-RateLimit-Burst). */
  readonly burst: number;
  readonly burstRemaining: number;
  /** Unix seconds when the 5-minute window resets. */
  readonly burstReset: number;
  /** Seconds to wait when refused (Retry-After); 0 when allowed. */
  readonly retryAfter: number;
}

function windowStart(nowSeconds: number, length: number): number {
  return Math.floor(nowSeconds / length) * length;
}

/** The hour and 5-minute windows holding `now`, in Unix seconds. */
export interface RateWindows {
  readonly nowSeconds: number;
  readonly hourStart: number;
  readonly hourEnd: number;
  readonly burstStart: number;
  readonly burstEnd: number;
}

export function rateWindows(now: Date): RateWindows {
  const nowSeconds = Math.floor(now.getTime() / 1000);
  const hourStart = windowStart(nowSeconds, HOUR_SECONDS);
  const burstStart = windowStart(nowSeconds, BURST_SECONDS);
  return {
    nowSeconds,
    hourStart,
    hourEnd: hourStart + HOUR_SECONDS,
    burstStart,
    burstEnd: burstStart + BURST_SECONDS,
  };
}

/** The request counts of one key in the current windows, after counting this request. */
export interface RateCounts {
  readonly hour: number;
  readonly burst: number;
}

/**
 * The upsert counting one request of every key `keys` selects (SQL yielding an `id`
 * column), returning `api_key_id, window_kind, count`. Atomic per row: concurrent
 * requests on other processes each get their own count. `resolveApiKey` runs it in the
 * same statement as the key lookup, so authenticating and counting cost one round trip.
 */
export function countRequestsSql(keys: RawBuilder<unknown>, w: RateWindows): RawBuilder<unknown> {
  const at = (seconds: number) => new Date(seconds * 1000);
  return sql`INSERT INTO rate_limit_counters (api_key_id, window_kind, window_start, count, expires_at)
    SELECT k.id, w.kind, w.start, 1, w.expires
    FROM (${keys}) AS k,
      (VALUES ('hour', ${at(w.hourStart)}::timestamptz, ${at(w.hourEnd)}::timestamptz),
              ('burst', ${at(w.burstStart)}::timestamptz, ${at(w.burstEnd)}::timestamptz))
        AS w(kind, start, expires)
    ON CONFLICT (api_key_id, window_kind, window_start)
      DO UPDATE SET count = rate_limit_counters.count + 1
    RETURNING api_key_id, window_kind, count`;
}

/** Whether a request with these counts is within `limitPerHour`, with the header values. */
export function evaluateRateLimit(counts: RateCounts, limitPerHour: number, w: RateWindows): RateLimitResult {
  const burst = burstLimit(limitPerHour);
  const hourOver = counts.hour > limitPerHour;
  const burstOver = counts.burst > burst;
  const allowed = !hourOver && !burstOver;
  const resetAt = hourOver ? w.hourEnd : w.burstEnd;
  return {
    allowed,
    exceeded: hourOver ? 'hour' : burstOver ? 'burst' : null,
    limit: limitPerHour,
    remaining: Math.max(0, limitPerHour - counts.hour),
    reset: w.hourEnd,
    burst,
    burstRemaining: Math.max(0, burst - counts.burst),
    burstReset: w.burstEnd,
    retryAfter: allowed ? 0 : Math.max(1, resetAt - w.nowSeconds),
  };
}

/**
 * Drops the key's finished windows; called on the first request of a new 5-minute
 * window (burst count 1), so the table holds about two rows per active key.
 */
export async function dropFinishedWindows(database: Database, apiKeyId: string, now: Date): Promise<void> {
  await authDb(database)
    .deleteFrom('rate_limit_counters')
    .where('api_key_id', '=', apiKeyId)
    .where('expires_at', '<=', now)
    .execute();
}

/** Counts one request of the key and says whether it is within its limits. */
export async function consumeRateLimit(
  database: Database,
  apiKeyId: string,
  limitPerHour: number,
  now: Date = new Date(),
): Promise<RateLimitResult> {
  const w = rateWindows(now);
  const { rows } = await countRequestsSql(sql`SELECT ${apiKeyId}::uuid AS id`, w).execute(authDb(database));
  const counts = countsOf(rows as { window_kind: string; count: number }[]);
  if (counts.burst === 1) await dropFinishedWindows(database, apiKeyId, now);
  return evaluateRateLimit(counts, limitPerHour, w);
}

/** The counts from the rows `countRequestsSql` returned for one key. */
export function countsOf(rows: readonly { window_kind: string; count: number | string }[]): RateCounts {
  return {
    hour: Number(rows.find((r) => r.window_kind === 'hour')?.count ?? 1),
    burst: Number(rows.find((r) => r.window_kind === 'burst')?.count ?? 1),
  };
}
