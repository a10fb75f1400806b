import { invalid } from '../domain/ferry-error.ts';

/**
 * Which backups a keep policy keeps: restic's `forget` rules (`ApplyPolicy` in restic's
 * `snapshot_policy.go`), with hours, days, ISO weeks, months and years taken on the wall clock
 * of the tenant's time zone.
 */
export interface KeepPolicy {
  /** -1 keeps all; 0 or absent does not use the rule. */
  readonly keep_last?: number;
  readonly keep_hourly?: number;
  readonly keep_daily?: number;
  readonly keep_weekly?: number;
  readonly keep_monthly?: number;
  readonly keep_yearly?: number;
  /** ISO 8601 duration (`P30D`, `P1Y2M`, `PT12H`): keep every backup newer than the newest one minus this. */
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
  /**
   * Why it is kept: `last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`, `within`;
   * `oldest daily` (and so on) when a rule keeps the oldest backup only because it has counts left;
   * `empty policy` when no rule is set.
   */
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

const ALL_RULES = [...COUNT_RULES, 'keep_within'] as const;

/** The largest count a rule accepts (more backups than a tenant ever has). */
const MAX_COUNT = 100_000;

/** True when the policy names no rule (then nothing is forgotten). */
export function isEmptyPolicy(policy: KeepPolicy): boolean {
  return COUNT_RULES.every((rule) => !policy[rule]) && !policy.keep_within;
}

/** The wall clock of one instant in a time zone. */
interface WallClock {
  readonly year: number;
  readonly month: number; // 1-12
  readonly day: number;
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterOf(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-US', {
        timeZone,
        hourCycle: 'h23',
        era: 'short',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
      });
    } catch {
      throw invalid('time_zone', `"${timeZone}" is not an IANA time zone such as Europe/Berlin`);
    }
    formatters.set(timeZone, f);
  }
  return f;
}

function wallClock(ms: number, timeZone: string): WallClock {
  const parts: Record<string, string> = {};
  for (const p of formatterOf(timeZone).formatToParts(ms)) parts[p.type] = p.value;
  const year = Number(parts.year);
  return {
    // Only a keep_within reaching back thousands of years gets here before year 1.
    year: parts.era === 'BC' || parts.era === 'B' ? 1 - year : year,
    month: Number(parts.month),
    day: Number(parts.day),
    hour: Number(parts.hour),
    minute: Number(parts.minute),
    second: Number(parts.second),
  };
}

/** The wall clock as if it were UTC, in milliseconds; month and day may overflow (Oct 32 = Nov 1). */
function wallMs(year: number, month: number, day: number, hour = 0, minute = 0, second = 0): number {
  const d = new Date(0);
  // setUTCFullYear, unlike Date.UTC, does not read years 0-99 as 1900-1999.
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, 0);
  return d.getTime();
}

/** The instant a wall clock of the zone names; in a DST gap or overlap, one of the two offsets. */
function instantOf(wall: number, timeZone: string): number {
  const offsetAt = (ms: number) => {
    const w = wallClock(ms, timeZone);
    const whole = ms - (((ms % 1000) + 1000) % 1000);
    return wallMs(w.year, w.month, w.day, w.hour, w.minute, w.second) - whole;
  };
  const first = offsetAt(wall);
  const second = offsetAt(wall - first);
  return wall - second;
}

/** ISO 8601 week-numbering year and week of a calendar date: the week of its Thursday. */
function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const date = wallMs(year, month, day);
  const weekday = new Date(date).getUTCDay() || 7; // Monday 1 … Sunday 7
  const thursday = new Date(date + (4 - weekday) * 86_400_000);
  const weekYear = thursday.getUTCFullYear();
  const dayOfYear = (thursday.getTime() - wallMs(weekYear, 1, 1)) / 86_400_000;
  return { year: weekYear, week: Math.floor(dayOfYear / 7) + 1 };
}

type Bucket = (t: WallClock, nr: number) => number;

/** restic's buckets: one number per hour, day, ISO week, month, year; `last` is one per snapshot. */
const BUCKETS: readonly { rule: (typeof COUNT_RULES)[number]; reason: string; bucket: Bucket }[] = [
  { rule: 'keep_last', reason: 'last', bucket: (_t, nr) => nr },
  {
    rule: 'keep_hourly',
    reason: 'hourly',
    bucket: (t) => t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour,
  },
  { rule: 'keep_daily', reason: 'daily', bucket: (t) => t.year * 10_000 + t.month * 100 + t.day },
  {
    rule: 'keep_weekly',
    reason: 'weekly',
    bucket: (t) => {
      const w = isoWeek(t.year, t.month, t.day);
      return w.year * 100 + w.week;
    },
  },
  { rule: 'keep_monthly', reason: 'monthly', bucket: (t) => t.year * 100 + t.month },
  { rule: 'keep_yearly', reason: 'yearly', bucket: (t) => t.year },
];

interface IsoDuration {
  readonly years: number;
  readonly months: number;
  readonly days: number;
  /** The time part (hours, minutes, seconds), in milliseconds. */
  readonly ms: number;
}

const ISO_DURATION = /^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$/;

/** A positive ISO 8601 duration of whole units, or null. */
function parseIsoDuration(value: string): IsoDuration | null {
  const m = ISO_DURATION.exec(value);
  if (!m || value.endsWith('T')) return null;
  const [years, months, weeks, days, hours, minutes, seconds] = m.slice(1).map((v) => Number(v ?? 0)) as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const d = {
    years,
    months,
    days: weeks * 7 + days,
    ms: ((hours * 60 + minutes) * 60 + seconds) * 1000,
  };
  return d.years + d.months + d.days + d.ms > 0 ? d : null;
}

/**
 * The newest snapshot time minus the duration, as restic computes it: years, months and days
 * move the wall clock's date (an overflowing day rolls over as in Go's `AddDate`: March 31
 * minus one month is March 2 or 3, not February's last day), then the time part is taken off
 * as elapsed time.
 */
function withinStart(latest: number, d: IsoDuration, timeZone: string): number {
  const w = wallClock(latest, timeZone);
  const wall = wallMs(w.year - d.years, w.month - d.months, w.day - d.days, w.hour, w.minute, w.second);
  const subSecond = ((latest % 1000) + 1000) % 1000;
  return instantOf(wall, timeZone) + subSecond - d.ms;
}

/**
 * Decides, newest first, which snapshots the policy keeps, as restic's `forget` does: each
 * count rule keeps the newest snapshot of each of its newest N buckets (hour, day, ISO week,
 * month, year on the wall clock of `timeZone`; `last` counts snapshots), -1 without limit;
 * while a rule still has counts left at the oldest snapshot, it keeps that one too, so the
 * history reaches back as far as it can. `keep_within` keeps what is newer than the newest
 * snapshot before `now`, minus the duration. Snapshots of the same time keep their input
 * order. An empty policy keeps everything (restic refuses to forget without one).
 */
export function applyKeepPolicy(
  snapshots: readonly Snapshot[],
  policy: KeepPolicy,
  timeZone = 'UTC',
  now: Date = new Date(),
): ForgetDecision[] {
  // Array.prototype.sort is stable: equal times keep their order, like restic's sort.Stable.
  const list = [...snapshots].sort((a, b) => b.time.getTime() - a.time.getTime());
  if (isEmptyPolicy(policy))
    return list.map((s) => ({ id: s.id, time: s.time, keep: true, reasons: ['empty policy'] }));
  formatterOf(timeZone);

  let within = Number.NaN;
  if (policy.keep_within) {
    const duration = parseIsoDuration(policy.keep_within);
    if (!duration) throw invalid('keep.keep_within', `"${policy.keep_within}" is not ${DURATION_HINT}`);
    // The newest snapshot that is not in the future: a wrong clock cannot make everything old.
    const latest = list.find((s) => s.time.getTime() < now.getTime());
    // With none, restic measures from the zero time, so the rule keeps every snapshot.
    within = latest ? withinStart(latest.time.getTime(), duration, timeZone) : Number.NEGATIVE_INFINITY;
  }

  const counts = BUCKETS.map(({ rule }) => policy[rule] ?? 0);
  const lastBucket: (number | null)[] = BUCKETS.map(() => null);
  return list.map((s, nr) => {
    const time = s.time.getTime();
    const reasons: string[] = [];
    if (time > within) reasons.push('within');
    const isOldest = nr === list.length - 1;
    let wall: WallClock | null = null;
    BUCKETS.forEach(({ reason, bucket }, i) => {
      const left = counts[i]!;
      if (left <= 0 && left !== -1) return;
      wall ??= wallClock(time, timeZone);
      const value = bucket(wall, nr);
      if (value === lastBucket[i] && !isOldest) return;
      reasons.push(value === lastBucket[i] ? `oldest ${reason}` : reason);
      lastBucket[i] = value;
      if (left > 0) counts[i] = left - 1;
    });
    return { id: s.id, time: s.time, keep: reasons.length > 0, reasons };
  });
}

const DURATION_HINT = 'a positive ISO 8601 duration of whole units such as P30D, P1Y2M, P2W or PT12H';

/** A keep policy from user input; each error names the rule and what it accepts. */
export function parseKeepPolicy(input: Record<string, unknown>): KeepPolicy {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw invalid('keep', 'must be an object of keep rules', ALL_RULES);
  const out: { -readonly [K in keyof KeepPolicy]: KeepPolicy[K] } = {};
  for (const [key, value] of Object.entries(input)) {
    if (value === null || value === undefined) continue;
    if ((COUNT_RULES as readonly string[]).includes(key)) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < -1 || value > MAX_COUNT)
        throw invalid(
          `keep.${key}`,
          `${JSON.stringify(value)} is not a whole number from -1 to ${MAX_COUNT}: -1 keeps all, 0 does not use the rule, n keeps n`,
        );
      if (value !== 0) out[key as (typeof COUNT_RULES)[number]] = value;
    } else if (key === 'keep_within') {
      if (value === '') continue;
      if (typeof value !== 'string' || !parseIsoDuration(value))
        throw invalid('keep.keep_within', `${JSON.stringify(value)} is not ${DURATION_HINT}`);
      out.keep_within = value;
    } else throw invalid(`keep.${key}`, 'is not a keep rule', ALL_RULES);
  }
  return out;
}
