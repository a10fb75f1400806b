/**
 * When a failed message is tried again: after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and
 * 14 h (eight attempts over about 31.6 hours), each delay varied by ±10 % so that
 * many failing messages do not retry in lockstep. After the last one the message
 * is failed.
 */
export const WEBHOOK_RETRY_DELAYS: readonly number[] = [
  5_000,
  5 * 60_000,
  30 * 60_000,
  2 * 3_600_000,
  5 * 3_600_000,
  10 * 3_600_000,
  14 * 3_600_000,
];

/** The jitter: a delay is multiplied by a factor in [1 - JITTER, 1 + JITTER). */
export const JITTER = 0.1;

/**
 * The wait before attempt `failedAttempts + 1`, or null when the schedule is used up.
 * A Retry-After the receiver sent (429, 503) lengthens the wait, never shortens it.
 */
export function retryDelay(
  failedAttempts: number,
  options: { schedule?: readonly number[]; random?: () => number; retryAfterMs?: number | null } = {},
): number | null {
  const schedule = options.schedule ?? WEBHOOK_RETRY_DELAYS;
  const base = schedule[failedAttempts - 1];
  if (base === undefined) return null;
  const factor = 1 - JITTER + 2 * JITTER * (options.random ?? Math.random)();
  return Math.max(Math.round(base * factor), options.retryAfterMs ?? 0);
}

/** Endpoint disabling: after this many messages in a row exhausted their retries… */
export const DISABLE_AFTER_EXHAUSTED = 5;
/** …or after failing without a single success for this long. */
export const DISABLE_AFTER_FAILING_MS = 5 * 24 * 3_600_000;
