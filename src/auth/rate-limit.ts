import { sql } from 'kysely';
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

/** Counts one request of the key and says whether it is within its limits. */
export async function consumeRateLimit(
  database: Database,
  apiKeyId: string,
  limitPerHour: number,
  now: Date = new Date(),
): Promise<RateLimitResult> {
  const nowSeconds = Math.floor(now.getTime() / 1000);
  const hourStart = windowStart(nowSeconds, HOUR_SECONDS);
  const burstStart = windowStart(nowSeconds, BURST_SECONDS);
  const hourEnd = hourStart + HOUR_SECONDS;
  const burstEnd = burstStart + BURST_SECONDS;
  const db = authDb(database);
  // One statement, atomic per row: concurrent requests on other processes each get their own count.
  const rows = await db
    .insertInto('rate_limit_counters')
    .values([
      {
        api_key_id: apiKeyId,
        window_kind: 'hour',
        window_start: new Date(hourStart * 1000),
        count: 1,
        expires_at: new Date(hourEnd * 1000),
      },
      {
        api_key_id: apiKeyId,
        window_kind: 'burst',
        window_start: new Date(burstStart * 1000),
        count: 1,
        expires_at: new Date(burstEnd * 1000),
      },
    ])
    .onConflict((oc) =>
      oc
        .columns(['api_key_id', 'window_kind', 'window_start'])
        .doUpdateSet({ count: sql<number>`rate_limit_counters.count + 1` }),
    )
    .returning(['window_kind', 'count'])
    .execute();
  const hourCount = Number(rows.find((r) => r.window_kind === 'hour')?.count ?? 1);
  const burstCount = Number(rows.find((r) => r.window_kind === 'burst')?.count ?? 1);
  if (burstCount === 1) {
    // First request of a new 5-minute window: drop this key's finished windows.
    await db
      .deleteFrom('rate_limit_counters')
      .where('api_key_id', '=', apiKeyId)
      .where('expires_at', '<=', now)
      .execute();
  }
  const burst = burstLimit(limitPerHour);
  const hourOver = hourCount > limitPerHour;
  const burstOver = burstCount > burst;
  const allowed = !hourOver && !burstOver;
  const resetAt = hourOver ? hourEnd : burstEnd;
  return {
    allowed,
    exceeded: hourOver ? 'hour' : burstOver ? 'burst' : null,
    limit: limitPerHour,
    remaining: Math.max(0, limitPerHour - hourCount),
    reset: hourEnd,
    burst,
    burstRemaining: Math.max(0, burst - burstCount),
    burstReset: burstEnd,
    retryAfter: allowed ? 0 : Math.max(1, resetAt - nowSeconds),
  };
}
