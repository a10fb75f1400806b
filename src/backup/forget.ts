import { DateTime, Duration } from 'luxon';
import { invalid } from '../domain/ferry-error.ts';

/**
 * Which backups a keep policy keeps: restic's `forget` rules (`internal/restic/snapshot_policy.go`),
 * with the calendar buckets taken in the tenant's time zone.
 */
export interface KeepPolicy {
  /** -1 keeps all; 0 or absent does not use the rule. */
  readonly keep_last?: number;
  readonly keep_hourly?: number;
  readonly keep_daily?: number;
  readonly keep_weekly?: number;
  readonly keep_monthly?: number;
  readonly keep_yearly?: number;
  /** ISO 8601 duration: keep every backup newer than the newest one minus this. */
  readonly keep_within?: string;
}

export interface Snapshot {
  readonly id: string;
  readonly time: Date;
}

export interface ForgetDecision {
  readonly id: string;
  readonly time: Date;
  readonly keep: boolean;
  /** Why it is kept: `last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`, `within`, `oldest …`. */
  readonly reasons: readonly string[];
}

export const COUNT_RULES = [
  'keep_last',
  'keep_hourly',
  'keep_daily',
  'keep_weekly',
  'keep_monthly',
  'keep_yearly',
] as const;

export function isEmptyPolicy(policy: KeepPolicy): boolean {
  return COUNT_RULES.every((r) => !policy[r]) && !policy.keep_within;
}

type Bucket = (t: DateTime, nr: number) => string;

const BUCKETS: readonly [(typeof COUNT_RULES)[number], string, Bucket][] = [
  ['keep_last', 'last', (_t, nr) => String(nr)],
  ['keep_hourly', 'hourly', (t) => t.toFormat('yyyyMMddHH')],
  ['keep_daily', 'daily', (t) => t.toFormat('yyyyMMdd')],
  ['keep_weekly', 'weekly', (t) => `${t.weekYear}-${t.weekNumber}`],
  ['keep_monthly', 'monthly', (t) => t.toFormat('yyyyMM')],
  ['keep_yearly', 'yearly', (t) => t.toFormat('yyyy')],
];

/**
 * Decides, newest first, which snapshots the policy keeps. Like restic: an empty policy keeps
 * everything; each count rule keeps the newest snapshot of each of its newest N buckets
 * (hour, day, ISO week, month, year of `timeZone`; `last` counts snapshots), -1 without
 * limit; while a rule still has counts left, the oldest snapshot is kept too (the history
 * stays as long as possible); `keep_within` keeps what is newer than the newest snapshot (not
 * in the future of `now`) minus the duration.
 */
export function applyKeepPolicy(
  snapshots: readonly Snapshot[],
  policy: KeepPolicy,
  timeZone = 'UTC',
  now: Date = new Date(),
): ForgetDecision[] {
  const list = [...snapshots].sort((a, b) => b.time.getTime() - a.time.getTime());
  if (isEmptyPolicy(policy)) return list.map((s) => ({ ...s, keep: true, reasons: ['policy is empty'] }));
  const counts = BUCKETS.map(([rule]) => policy[rule] ?? 0);
  const last: (string | null)[] = BUCKETS.map(() => null);
  const latest = list.reduce<Date | null>(
    (max, s) => (s.time <= now && (!max || s.time > max) ? s.time : max),
    null,
  );
  const within =
    policy.keep_within && latest
      ? DateTime.fromJSDate(latest, { zone: 'utc' }).minus(Duration.fromISO(policy.keep_within)).toJSDate()
      : null;
  return list.map((s, nr) => {
    const reasons: string[] = [];
    if (within && s.time > within) reasons.push(`within ${policy.keep_within}`);
    const local = DateTime.fromJSDate(s.time, { zone: timeZone });
    BUCKETS.forEach(([, reason, bucket], i) => {
      const left = counts[i]!;
      if (left > 0 || left === -1) {
        const value = bucket(local, nr);
        if (value !== last[i] || nr === list.length - 1) {
          last[i] = value;
          if (left > 0) counts[i] = left - 1;
          reasons.push(reason);
        }
      }
    });
    return { id: s.id, time: s.time, keep: reasons.length > 0, reasons };
  });
}

/** A keep policy from user input; each error names the rule and what it accepts. */
export function parseKeepPolicy(input: Record<string, unknown>): KeepPolicy {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw invalid('keep', 'must be an object of keep rules', [...COUNT_RULES, 'keep_within']);
  const out: Record<string, number | string> = {};
  for (const [key, value] of Object.entries(input)) {
    if ((COUNT_RULES as readonly string[]).includes(key)) {
      if (value === null || value === undefined) continue;
      if (!Number.isInteger(value) || (value as number) < -1 || (value as number) > 100_000)
        throw invalid(`keep.${key}`, 'must be a whole number: -1 (keep all), 0 (unused) or a count');
      if (value !== 0) out[key] = value as number;
    } else if (key === 'keep_within') {
      if (value === null || value === undefined || value === '') continue;
      const d = typeof value === 'string' ? Duration.fromISO(value) : null;
      if (!d?.isValid || d.toMillis() <= 0)
        throw invalid('keep.keep_within', 'must be a positive ISO 8601 duration such as P30D or P1Y');
      out[key] = value as string;
    } else throw invalid(`keep.${key}`, 'is not a keep rule', [...COUNT_RULES, 'keep_within']);
  }
  return out as KeepPolicy;
}
