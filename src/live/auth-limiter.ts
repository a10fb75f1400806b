/**
 * Failed stream authentications per client address over a sliding minute. A
 * connection is closed after its first failed attempt; this stops a client from
 * simply reconnecting to guess keys. In memory, per process: each replica limits
 * on its own, which is enough to make guessing a 256-bit key pointless anyway.
 */
export interface AuthLimiter {
  /** Whether the address used up its failures for now. */
  blocked(address: string): boolean;
  /** Counts a failed attempt from the address. */
  fail(address: string): void;
}

const WINDOW_MS = 60_000;
/** Addresses tracked at most; beyond it the oldest are forgotten (memory stays bounded). */
const MAX_ADDRESSES = 10_000;

export function createAuthLimiter(maxPerMinute: number, now: () => number = Date.now): AuthLimiter {
  const failures = new Map<string, number[]>();
  const recent = (address: string): number[] => {
    const since = now() - WINDOW_MS;
    const times = (failures.get(address) ?? []).filter((t) => t > since);
    if (times.length === 0) failures.delete(address);
    else failures.set(address, times);
    return times;
  };
  return {
    blocked: (address) => recent(address).length >= maxPerMinute,
    fail(address) {
      const times = recent(address);
      times.push(now());
      failures.delete(address);
      failures.set(address, times.slice(-maxPerMinute));
      if (failures.size > MAX_ADDRESSES) failures.delete(failures.keys().next().value!);
    },
  };
}
