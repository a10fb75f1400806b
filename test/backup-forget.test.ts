import { DateTime, Duration } from 'luxon';
import { describe, expect, it } from 'vitest';
import {
  applyKeepPolicy,
  type ForgetDecision,
  type KeepPolicy,
  parseKeepPolicy,
  type Snapshot,
} from '../src/backup/forget.ts';
import { FerryError } from '../src/domain/ferry-error.ts';

const NOW = new Date('2031-01-01T00:00:00Z');
const BERLIN = 'Europe/Berlin';

const keptIds = (decisions: readonly ForgetDecision[]) => decisions.filter((d) => d.keep).map((d) => d.id);

/**
 * restic's own test vectors: the snapshot times of `TestApplyPolicy` (restic,
 * internal/data/snapshot_policy_test.go, in UTC) and, for each policy Ferry supports, what its
 * golden file `testdata/policy_keep_snapshots_<file>` keeps and why. Snapshots are named by
 * their index in this list; restic's reasons read here as Ferry's (`daily snapshot` → `daily`,
 * `oldest yearly snapshot` → `oldest yearly`, `within 1m14d` → `within`), and its durations as
 * ISO 8601 (`1m14d` → P1M14D). Tag rules, the `within-<bucket>` rules and the empty policy
 * (restic keeps nothing, Ferry refuses to forget) are left out.
 */
const RESTIC_TIMES = [
  '2014-09-01 10:20:30',
  '2014-09-02 10:20:30',
  '2014-09-05 10:20:30',
  '2014-09-06 10:20:30',
  '2014-09-08 10:20:30',
  '2014-09-09 10:20:30',
  '2014-09-10 10:20:30',
  '2014-09-11 10:20:30',
  '2014-09-20 10:20:30',
  '2014-09-22 10:20:30',
  '2014-08-08 10:20:30',
  '2014-08-10 10:20:30',
  '2014-08-12 10:20:30',
  '2014-08-13 10:20:30',
  '2014-08-13 10:20:30.100',
  '2014-08-15 10:20:30',
  '2014-08-18 10:20:30',
  '2014-08-20 10:20:30',
  '2014-08-21 10:20:30',
  '2014-08-22 10:20:30',
  '2014-10-01 10:20:30',
  '2014-10-02 10:20:30',
  '2014-10-05 10:20:30',
  '2014-10-06 10:20:30',
  '2014-10-08 10:20:30',
  '2014-10-09 10:20:30',
  '2014-10-10 10:20:30',
  '2014-10-11 10:20:30',
  '2014-10-20 10:20:30',
  '2014-10-22 10:20:30',
  '2014-11-08 10:20:30',
  '2014-11-10 10:20:30',
  '2014-11-12 10:20:30',
  '2014-11-13 10:20:30',
  '2014-11-13 10:20:30.100',
  '2014-11-15 10:20:30',
  '2014-11-18 10:20:30',
  '2014-11-20 10:20:30',
  '2014-11-21 10:20:30',
  '2014-11-22 10:20:30',
  '2015-09-01 10:20:30',
  '2015-09-02 10:20:30',
  '2015-09-05 10:20:30',
  '2015-09-06 10:20:30',
  '2015-09-08 10:20:30',
  '2015-09-09 10:20:30',
  '2015-09-10 10:20:30',
  '2015-09-11 10:20:30',
  '2015-09-20 10:20:30',
  '2015-09-22 10:20:30',
  '2015-08-08 10:20:30',
  '2015-08-10 10:20:30',
  '2015-08-12 10:20:30',
  '2015-08-13 10:20:30',
  '2015-08-13 10:20:30.100',
  '2015-08-15 10:20:30',
  '2015-08-18 10:20:30',
  '2015-08-20 10:20:30',
  '2015-08-21 10:20:30',
  '2015-08-22 10:20:30',
  '2015-10-01 10:20:30',
  '2015-10-02 10:20:30',
  '2015-10-05 10:20:30',
  '2015-10-06 10:20:30',
  '2015-10-08 10:20:30',
  '2015-10-09 10:20:30',
  '2015-10-10 10:20:30',
  '2015-10-11 10:20:30',
  '2015-10-20 10:20:30',
  '2015-10-22 10:20:30',
  '2015-10-22 10:20:30',
  '2015-10-22 10:20:30',
  '2015-10-22 10:20:30',
  '2015-10-22 10:20:30',
  '2015-11-08 10:20:30',
  '2015-11-10 10:20:30',
  '2015-11-12 10:20:30',
  '2015-11-13 10:20:30',
  '2015-11-13 10:20:30.100',
  '2015-11-15 10:20:30',
  '2015-11-18 10:20:30',
  '2015-11-20 10:20:30',
  '2015-11-21 10:20:30',
  '2015-11-22 10:20:30',
  '2016-01-01 01:02:03',
  '2016-01-01 01:03:03',
  '2016-01-01 07:08:03',
  '2016-01-03 07:02:03',
  '2016-01-04 10:23:03',
  '2016-01-04 11:23:03',
  '2016-01-04 12:23:03',
  '2016-01-04 12:24:03',
  '2016-01-04 12:28:03',
  '2016-01-04 12:30:03',
  '2016-01-04 16:23:03',
  '2016-01-05 09:02:03',
  '2016-01-06 08:02:03',
  '2016-01-07 10:02:03',
  '2016-01-08 20:02:03',
  '2016-01-09 21:02:03',
  '2016-01-12 21:02:03',
  '2016-01-12 21:08:03',
  '2016-01-18 12:02:03',
];

const RESTIC_GOLDEN: readonly { file: number; policy: KeepPolicy; kept: Record<string, number[]> }[] = [
  { file: 1, policy: { keep_last: 10 }, kept: { last: [93, 94, 95, 96, 97, 98, 99, 100, 101, 102] } },
  {
    file: 2,
    policy: { keep_last: 15 },
    kept: { last: [88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102] },
  },
  {
    file: 3,
    policy: { keep_last: 99 },
    kept: {
      last: [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
        32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56,
        57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81,
        82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102,
      ],
    },
  },
  {
    file: 4,
    policy: { keep_last: 200 },
    kept: {
      last: [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
        28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,
        53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77,
        78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102,
      ],
    },
  },
  {
    file: 5,
    policy: { keep_hourly: 20 },
    kept: { hourly: [78, 79, 80, 81, 82, 83, 85, 86, 87, 88, 89, 93, 94, 95, 96, 97, 98, 99, 101, 102] },
  },
  { file: 6, policy: { keep_daily: 3 }, kept: { daily: [99, 101, 102] } },
  { file: 7, policy: { keep_daily: 10 }, kept: { daily: [86, 87, 94, 95, 96, 97, 98, 99, 101, 102] } },
  {
    file: 8,
    policy: { keep_daily: 30 },
    kept: {
      daily: [
        49, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 74, 75, 76, 78, 79, 80, 81, 82, 83, 86, 87, 94, 95, 96,
        97, 98, 99, 101, 102,
      ],
    },
  },
  {
    file: 9,
    policy: { keep_last: 5, keep_daily: 5 },
    kept: { daily: [97], 'last, daily': [98, 99, 101, 102], last: [100] },
  },
  {
    file: 10,
    policy: { keep_last: 2, keep_daily: 10 },
    kept: { daily: [86, 87, 94, 95, 96, 97, 98, 99], 'last, daily': [101, 102] },
  },
  { file: 11, policy: { keep_weekly: 2 }, kept: { weekly: [101, 102] } },
  { file: 12, policy: { keep_weekly: 4 }, kept: { weekly: [87, 99, 101, 102] } },
  {
    file: 13,
    policy: { keep_daily: 3, keep_weekly: 4 },
    kept: { weekly: [87], 'daily, weekly': [99, 101, 102] },
  },
  { file: 14, policy: { keep_monthly: 6 }, kept: { monthly: [39, 49, 59, 69, 83, 102] } },
  {
    file: 15,
    policy: { keep_daily: 2, keep_weekly: 2, keep_monthly: 6 },
    kept: { monthly: [39, 49, 59, 69, 83], 'daily, weekly': [101], 'daily, weekly, monthly': [102] },
  },
  { file: 16, policy: { keep_yearly: 10 }, kept: { 'oldest yearly': [10], yearly: [39, 83, 102] } },
  {
    file: 17,
    policy: { keep_daily: 7, keep_weekly: 2, keep_monthly: 3, keep_yearly: 10 },
    kept: {
      'oldest yearly': [10],
      yearly: [39],
      monthly: [69],
      'monthly, yearly': [83],
      daily: [95, 96, 97, 98, 99],
      'daily, weekly': [101],
      'daily, weekly, monthly, yearly': [102],
    },
  },
  { file: 21, policy: { keep_within: 'P1D' }, kept: { within: [102] } },
  { file: 22, policy: { keep_within: 'P2D' }, kept: { within: [102] } },
  { file: 23, policy: { keep_within: 'P7D' }, kept: { within: [100, 101, 102] } },
  {
    file: 24,
    policy: { keep_within: 'P1M' },
    kept: { within: [84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102] },
  },
  {
    file: 25,
    policy: { keep_within: 'P1M14D' },
    kept: { within: [84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102] },
  },
  {
    file: 26,
    policy: { keep_within: 'P1Y1M1D' },
    kept: {
      within: [
        40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64,
        65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89,
        90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102,
      ],
    },
  },
  {
    file: 27,
    policy: { keep_within: 'P13DT23H' },
    kept: { within: [94, 95, 96, 97, 98, 99, 100, 101, 102] },
  },
  {
    file: 28,
    policy: { keep_within: 'P2MT2H' },
    kept: {
      within: [80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102],
    },
  },
  {
    file: 29,
    policy: { keep_within: 'P1Y2M3DT3H' },
    kept: {
      within: [
        35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
        60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84,
        85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102,
      ],
    },
  },
  {
    file: 36,
    policy: { keep_last: -1 },
    kept: {
      last: [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
        28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,
        53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77,
        78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102,
      ],
    },
  },
  {
    file: 37,
    policy: { keep_last: -1, keep_hourly: -1 },
    kept: {
      'last, hourly': [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
        29, 30, 31, 32, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55,
        56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 74, 75, 76, 78, 79, 80, 81, 82, 83, 85, 86,
        87, 88, 89, 93, 94, 95, 96, 97, 98, 99, 101, 102,
      ],
      last: [13, 33, 53, 70, 71, 72, 73, 77, 84, 90, 91, 92, 100],
    },
  },
  {
    file: 38,
    policy: { keep_hourly: -1 },
    kept: {
      hourly: [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
        29, 30, 31, 32, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55,
        56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 74, 75, 76, 78, 79, 80, 81, 82, 83, 85, 86,
        87, 88, 89, 93, 94, 95, 96, 97, 98, 99, 101, 102,
      ],
    },
  },
  {
    file: 39,
    policy: { keep_daily: 3, keep_weekly: 2, keep_monthly: -1, keep_yearly: -1 },
    kept: {
      monthly: [9, 19, 29, 49, 59, 69],
      'oldest monthly, oldest yearly': [10],
      'monthly, yearly': [39, 83],
      daily: [99],
      'daily, weekly': [101],
      'daily, weekly, monthly, yearly': [102],
    },
  },
];

const resticSnapshots = (): Snapshot[] =>
  RESTIC_TIMES.map((t, i) => ({ id: String(i), time: new Date(`${t.replace(' ', 'T')}Z`) }));

/** Kept snapshot indexes grouped by their reasons, as in RESTIC_GOLDEN. */
function keptByReasons(decisions: readonly ForgetDecision[]): Record<string, number[]> {
  const groups: Record<string, number[]> = {};
  for (const d of decisions.filter((x) => x.keep)) {
    const key = d.reasons.join(', ');
    groups[key] = [...(groups[key] ?? []), Number(d.id)];
  }
  for (const ids of Object.values(groups)) ids.sort((a, b) => a - b);
  return groups;
}

describe('keep policy: restic golden files', () => {
  it.each(RESTIC_GOLDEN)('policy_keep_snapshots_$file: $policy', ({ policy, kept }) => {
    const decisions = applyKeepPolicy(resticSnapshots(), policy, 'UTC', NOW);
    expect(decisions).toHaveLength(RESTIC_TIMES.length);
    expect(keptByReasons(decisions)).toEqual(kept);
    for (const d of decisions) expect(d.keep).toBe(d.reasons.length > 0);
  });

  it('keeps equal times in input order, like restic sort.Stable', () => {
    // Five snapshots at 2015-10-22 10:20:30 (indexes 69 to 73): a keep_last that ends inside them.
    const order = applyKeepPolicy(resticSnapshots(), { keep_last: -1 }, 'UTC', NOW).map((d) => d.id);
    const first = order.indexOf('69');
    expect(order.slice(first - 1, first + 6)).toEqual(['74', '69', '70', '71', '72', '73', '68']);
    const decisions = applyKeepPolicy(resticSnapshots(), { keep_last: first + 3 }, 'UTC', NOW);
    expect(decisions.slice(first, first + 5).map((d) => [d.id, d.keep])).toEqual([
      ['69', true],
      ['70', true],
      ['71', true],
      ['72', false],
      ['73', false],
    ]);
  });
});

/**
 * 800 days of backups at 02:00 Berlin time from 2027-03-01: three spring and two autumn DST
 * changes, and the leap day 2028-02-29. Some nights fail; on some days a second backup runs
 * at 23:30 (the day's newest) or at 00:30 (the day's oldest, still the previous day in UTC).
 */
function berlinNights(): Snapshot[] {
  const out: Snapshot[] = [];
  const start = DateTime.fromObject({ year: 2027, month: 3, day: 1, hour: 2 }, { zone: BERLIN });
  for (let i = 0; i < 800; i++) {
    const day = start.plus({ days: i });
    if (i % 37 === 5 || i % 101 === 50) continue;
    if (i % 29 === 11) out.push({ id: `n${i}-early`, time: day.set({ hour: 0, minute: 30 }).toJSDate() });
    out.push({ id: `n${i}`, time: day.toJSDate() });
    if (i % 23 === 3) out.push({ id: `n${i}-late`, time: day.set({ hour: 23, minute: 30 }).toJSDate() });
  }
  return out;
}

const RULES = [
  ['keep_last', 'last'],
  ['keep_hourly', 'hourly'],
  ['keep_daily', 'daily'],
  ['keep_weekly', 'weekly'],
  ['keep_monthly', 'monthly'],
  ['keep_yearly', 'yearly'],
] as const;

/** Each snapshot's bucket per rule, read with Luxon (the code under test uses Intl directly). */
function bucketKeys(snapshots: readonly Snapshot[], zone: string): Map<string, Record<string, string>> {
  const keys = new Map<string, Record<string, string>>();
  for (const s of snapshots) {
    const t = DateTime.fromJSDate(s.time, { zone });
    keys.set(s.id, {
      last: s.id,
      hourly: t.toFormat("yyyy-MM-dd'T'HH"),
      daily: t.toISODate()!,
      weekly: `${t.weekYear}-W${t.weekNumber}`,
      monthly: t.toFormat('yyyy-MM'),
      yearly: String(t.year),
    });
  }
  return keys;
}

/**
 * An independent reading of the rules: per rule, group the snapshots by bucket (a Map in
 * newest-first order), keep the newest of each of the first n buckets; a rule whose count is
 * not used up by the buckets also keeps the oldest snapshot (`oldest <rule>` unless it heads
 * its own bucket). `keep_within` is measured with Luxon's calendar arithmetic in the zone.
 */
function reference(
  snapshots: readonly Snapshot[],
  policy: KeepPolicy,
  zone: string,
  keys: Map<string, Record<string, string>>,
): Map<string, string[]> {
  const newestFirst = [...snapshots].sort((a, b) => b.time.getTime() - a.time.getTime());
  const reasons = new Map(newestFirst.map((s) => [s.id, [] as string[]]));
  if (policy.keep_within) {
    const from = DateTime.fromJSDate(newestFirst[0]!.time, { zone }).minus(
      Duration.fromISO(policy.keep_within),
    );
    for (const s of newestFirst) if (s.time.getTime() > from.toMillis()) reasons.get(s.id)!.push('within');
  }
  for (const [rule, name] of RULES) {
    const n = policy[rule];
    if (!n) continue;
    const heads = new Map<string, Snapshot>();
    for (const s of newestFirst) {
      const key = keys.get(s.id)![name]!;
      if (!heads.has(key)) heads.set(key, s);
    }
    const chosen = [...heads.values()].slice(0, n === -1 ? undefined : n);
    for (const s of chosen) reasons.get(s.id)!.push(name);
    const oldest = newestFirst[newestFirst.length - 1]!;
    if ((n === -1 || heads.size < n) && !chosen.includes(oldest))
      reasons.get(oldest.id)!.push(`oldest ${name}`);
  }
  return reasons;
}

const reasonsOf = (decisions: readonly ForgetDecision[]) =>
  new Map(decisions.map((d) => [d.id, [...d.reasons]]));

describe('keep policy: 800 days in Berlin against a reference', () => {
  const nights = berlinNights();
  const keys = bucketKeys(nights, BERLIN);
  const policy: KeepPolicy = { keep_daily: 7, keep_weekly: 4, keep_monthly: 12, keep_yearly: 3 };

  it('covers the leap day, DST changes, missed nights and second backups', () => {
    const days = nights.map((s) => keys.get(s.id)!.daily);
    expect(days).toContain('2028-02-29');
    expect(days).toContain('2027-03-28'); // spring forward
    expect(days).toContain('2027-10-31'); // fall back
    expect(new Set(days).size).toBeLessThan(800);
    expect(nights.length).toBeGreaterThan(new Set(days).size);
    // 00:30 in Berlin is the previous day in UTC.
    const early = nights.find((s) => s.id.endsWith('-early'))!;
    expect(early.time.toISOString().slice(0, 10)).not.toBe(keys.get(early.id)!.daily);
  });

  it('decides like the reference as the history grows, day by day', () => {
    // The history as it stood after each backup, every third one and the whole of it.
    const ends = [
      ...Array.from({ length: Math.ceil(nights.length / 3) }, (_, k) => k * 3 + 1),
      nights.length,
    ];
    for (const end of ends) {
      const history = nights.slice(0, end);
      const decisions = applyKeepPolicy(history, policy, BERLIN, NOW);
      expect(reasonsOf(decisions), `after ${history.at(-1)!.id}`).toEqual(
        reference(history, policy, BERLIN, keys),
      );
      expect(decisions[0]!.id).toBe(history.at(-1)!.id);
      expect(decisions[0]!.keep).toBe(true);
      // restic's bound: never more than the counts add up to.
      expect(keptIds(decisions).length).toBeLessThanOrEqual(7 + 4 + 12 + 3);
    }
  });

  it('keeps, after the 800 days, the newest of the last days, weeks, months and years', () => {
    const decisions = applyKeepPolicy(nights, policy, BERLIN, NOW);
    const kept = decisions.filter((d) => d.keep);
    expect(kept.filter((d) => d.reasons.includes('daily'))).toHaveLength(7);
    expect(kept.filter((d) => d.reasons.includes('weekly'))).toHaveLength(4);
    expect(kept.filter((d) => d.reasons.includes('monthly'))).toHaveLength(12);
    // 2029, 2028, 2027: three years, so no yearly count is left for the oldest backup.
    expect(kept.filter((d) => d.reasons.includes('yearly')).map((d) => keys.get(d.id)!.yearly)).toEqual([
      '2029',
      '2028',
      '2027',
    ]);
    expect(kept.at(-1)!.id).toBe('n305'); // 2027-12-31, the last night of 2027
    expect(decisions[0]!.reasons).toEqual(['daily', 'weekly', 'monthly', 'yearly']);
  });

  it.each([
    { keep_last: 3, keep_within: 'P10D' },
    { keep_last: 2, keep_weekly: 6 },
    { keep_hourly: 30 },
    { keep_daily: 500, keep_monthly: 3 },
    { keep_weekly: 200 },
    { keep_monthly: -1 },
    { keep_yearly: -1, keep_within: 'P2W' },
    { keep_daily: 3, keep_weekly: -1, keep_within: 'PT36H' },
  ] satisfies KeepPolicy[])('decides like the reference for %o', (other) => {
    const decisions = applyKeepPolicy(nights, other, BERLIN, NOW);
    expect(reasonsOf(decisions)).toEqual(reference(nights, other, BERLIN, keys));
    expect(decisions[0]!.keep).toBe(true);
  });

  it('keeps everything with keep_last -1 or an empty policy', () => {
    for (const all of [{ keep_last: -1 }, {}] satisfies KeepPolicy[]) {
      const decisions = applyKeepPolicy(nights, all, BERLIN, NOW);
      expect(decisions).toHaveLength(nights.length);
      expect(decisions.every((d) => d.keep)).toBe(true);
    }
    expect(applyKeepPolicy(nights.slice(0, 3), {}, BERLIN, NOW).map((d) => d.reasons)).toEqual([
      ['empty policy'],
      ['empty policy'],
      ['empty policy'],
    ]);
  });

  it('lists every snapshot once, newest first, whatever the input order', () => {
    const shuffled = [...nights].sort((a, b) => a.id.localeCompare(b.id));
    const decisions = applyKeepPolicy(shuffled, policy, BERLIN, NOW);
    expect(decisions.map((d) => d.id)).toEqual([...nights].reverse().map((s) => s.id));
    expect(applyKeepPolicy([], policy, BERLIN, NOW)).toEqual([]);
  });
});

describe('keep policy: keep_within', () => {
  const at = (iso: string, id = iso): Snapshot => ({
    id,
    time: DateTime.fromISO(iso, { zone: BERLIN }).toJSDate(),
  });
  const within = (snapshots: readonly Snapshot[], duration: string, now = NOW) =>
    keptIds(applyKeepPolicy(snapshots, { keep_within: duration }, BERLIN, now));

  it('counts days on the calendar of the zone, across a DST change', () => {
    // Seven calendar days before 2027-04-02 02:00 CEST is 2027-03-26 02:00 CET: 167 hours.
    const snapshots = [
      at('2027-04-02T02:00'),
      at('2027-03-26T02:30'),
      at('2027-03-26T02:00'), // exactly at the limit: not newer, not kept
      at('2027-03-26T01:30'), // within 168 hours, but not within seven days
    ];
    expect(within(snapshots, 'P7D')).toEqual(['2027-04-02T02:00', '2027-03-26T02:30']);
    expect(within(snapshots, 'P1W')).toEqual(['2027-04-02T02:00', '2027-03-26T02:30']);
    // Hours are elapsed time: 167 hours reach the same limit, 168 reach back to 01:00 CET.
    expect(within(snapshots, 'PT167H')).toEqual(['2027-04-02T02:00', '2027-03-26T02:30']);
    expect(within(snapshots, 'PT168H')).toEqual(snapshots.map((x) => x.id));
  });

  it('finds the limit on the right side of the autumn change', () => {
    // Seven days before 2027-11-07 01:30 CET is 2027-10-31 01:30 CEST (23:30 UTC the day before).
    const snapshots = [
      { id: 'newest', time: new Date('2027-11-07T00:30:00Z') },
      { id: '02:00 CEST', time: new Date('2027-10-31T00:00:00Z') },
      { id: '01:45 CEST', time: new Date('2027-10-30T23:45:00Z') },
      { id: '01:15 CEST', time: new Date('2027-10-30T23:15:00Z') },
    ];
    expect(within(snapshots, 'P7D')).toEqual(['newest', '02:00 CEST', '01:45 CEST']);
  });

  it('moves months like restic (Go AddDate): March 31 minus a month is March 3', () => {
    const snapshots = [
      at('2027-03-31T12:00'),
      at('2027-03-03T12:00:01'),
      at('2027-03-03T12:00'),
      at('2027-02-28T12:00'),
    ];
    expect(within(snapshots, 'P1M')).toEqual(['2027-03-31T12:00', '2027-03-03T12:00:01']);
    // A year before the leap day is 2027-03-01.
    const leap = [at('2028-02-29T08:00'), at('2027-03-01T08:00:01'), at('2027-03-01T08:00')];
    expect(within(leap, 'P1Y')).toEqual(['2028-02-29T08:00', '2027-03-01T08:00:01']);
  });

  it('measures from the newest snapshot that is not in the future', () => {
    const now = DateTime.fromISO('2027-06-10T12:00', { zone: BERLIN }).toJSDate();
    const snapshots = [
      at('2027-06-20T02:00'),
      at('2027-06-10T02:00'),
      at('2027-06-09T03:00'),
      at('2027-06-08T02:00'),
    ];
    expect(within(snapshots, 'P1D', now)).toEqual([
      '2027-06-20T02:00',
      '2027-06-10T02:00',
      '2027-06-09T03:00',
    ]);
    // Only future snapshots: restic measures from the zero time and keeps them all.
    expect(within(snapshots.slice(0, 1), 'P1D', now)).toEqual(['2027-06-20T02:00']);
  });

  it('adds to the count rules and names itself first', () => {
    const snapshots = [at('2027-06-10T02:00'), at('2027-06-09T02:00'), at('2027-06-01T02:00')];
    const decisions = applyKeepPolicy(snapshots, { keep_within: 'P3D', keep_last: 1 }, BERLIN, NOW);
    expect(decisions.map((d) => d.reasons)).toEqual([['within', 'last'], ['within'], []]);
  });
});

describe('keep policy: buckets on the wall clock of the time zone', () => {
  const kept = (snapshots: readonly Snapshot[], policy: KeepPolicy, zone: string) =>
    keptIds(applyKeepPolicy(snapshots, policy, zone, NOW));

  it('counts 23:30 UTC as the next day in Berlin', () => {
    const three = [
      { id: 'x', time: new Date('2027-06-09T12:00:00Z') },
      { id: 'late', time: new Date('2027-06-10T23:30:00Z') },
      { id: 'early', time: new Date('2027-06-11T06:00:00Z') },
    ];
    // In UTC, June 11 and June 10 are the two newest days.
    expect(kept(three, { keep_daily: 2 }, 'UTC')).toEqual(['early', 'late']);
    // In Berlin, 'late' is June 11 01:30 like 'early': the second day kept is June 9.
    expect(kept(three, { keep_daily: 2 }, BERLIN)).toEqual(['early', 'x']);
    // West of UTC the same instants fall a day earlier: June 10 18:30 and June 11 01:00 in Los Angeles.
    expect(kept(three, { keep_daily: 1 }, 'America/Los_Angeles')).toEqual(['early']);
  });

  it('counts months and years in the zone', () => {
    const newYear = [
      { id: 'new-year', time: new Date('2027-12-31T23:30:00Z') }, // 2028-01-01 00:30 in Berlin
      { id: 'eve', time: new Date('2027-12-31T20:00:00Z') },
      { id: 'autumn', time: new Date('2027-10-01T10:00:00Z') },
    ];
    expect(kept(newYear, { keep_yearly: 1 }, 'UTC')).toEqual(['new-year']);
    expect(kept(newYear, { keep_yearly: 2 }, 'UTC')).toEqual(['new-year', 'autumn']);
    expect(kept(newYear, { keep_yearly: 2 }, BERLIN)).toEqual(['new-year', 'eve']);
    expect(kept(newYear, { keep_monthly: 2 }, BERLIN)).toEqual(['new-year', 'eve']);
    expect(kept(newYear, { keep_monthly: 2 }, 'UTC')).toEqual(['new-year', 'autumn']);
  });

  it('counts ISO weeks by their week-numbering year', () => {
    // 2026-12-28 (Monday) to 2027-01-03 (Sunday) is week 53 of 2026.
    const turn = [
      { id: 'w1', time: new Date('2027-01-04T09:00:00Z') },
      { id: 'sunday', time: new Date('2027-01-03T09:00:00Z') },
      { id: 'friday', time: new Date('2027-01-01T09:00:00Z') },
      { id: 'monday', time: new Date('2026-12-28T09:00:00Z') },
      { id: 'w52', time: new Date('2026-12-27T09:00:00Z') },
    ];
    expect(kept(turn, { keep_weekly: 2 }, 'UTC')).toEqual(['w1', 'sunday']);
    expect(kept(turn, { keep_weekly: 3 }, 'UTC')).toEqual(['w1', 'sunday', 'w52']);
    // 23:30 UTC on that Sunday is Monday 00:30 in Berlin: week 1 of 2027.
    const late = [{ id: 'sunday-night', time: new Date('2027-01-03T23:30:00Z') }, ...turn.slice(1)];
    expect(kept(late, { keep_weekly: 2 }, 'UTC')).toEqual(['sunday-night', 'w52']);
    expect(kept(late, { keep_weekly: 2 }, BERLIN)).toEqual(['sunday-night', 'sunday']);
  });

  it('counts the hour of the wall clock: the repeated hour of the autumn change is one hour', () => {
    // 2027-10-31: 02:00-03:00 CEST, then 02:00-03:00 CET again.
    const night = [
      { id: 'cet', time: new Date('2027-10-31T01:10:00Z') }, // 02:10 CET
      { id: 'cest', time: new Date('2027-10-31T00:50:00Z') }, // 02:50 CEST
      { id: 'one', time: new Date('2027-10-30T23:50:00Z') }, // 01:50 CEST
    ];
    expect(kept(night, { keep_hourly: 2 }, BERLIN)).toEqual(['cet', 'one']);
    expect(kept(night, { keep_hourly: 2 }, 'UTC')).toEqual(['cet', 'cest']);
  });

  it('refuses an unknown time zone', () => {
    expect(() => applyKeepPolicy([], { keep_daily: 1 }, 'Mars/Olympus')).toThrow(FerryError);
  });
});

describe('parseKeepPolicy', () => {
  const error = (input: Record<string, unknown>) => {
    try {
      parseKeepPolicy(input);
    } catch (e) {
      if (e instanceof FerryError) return e;
      throw e;
    }
    throw new Error(`accepted ${JSON.stringify(input)}`);
  };

  it('accepts the rules, drops unused ones', () => {
    expect(
      parseKeepPolicy({
        keep_daily: 7,
        keep_weekly: 0,
        keep_last: -1,
        keep_hourly: null,
        keep_within: 'P1Y2M',
      }),
    ).toEqual({ keep_daily: 7, keep_last: -1, keep_within: 'P1Y2M' });
    for (const d of ['P30D', 'PT12H', 'P2W', 'P1Y2M3DT4H5M6S', 'PT90M'])
      expect(parseKeepPolicy({ keep_within: d })).toEqual({ keep_within: d });
    expect(parseKeepPolicy({})).toEqual({});
  });

  it('names the rule and what it accepts', () => {
    for (const bad of [1.5, -2, '7', 100_001, true]) {
      const e = error({ keep_daily: bad });
      expect(e.code).toBe('invalid_parameter');
      expect(e.details?.parameter).toBe('keep.keep_daily');
      expect(e.message).toMatch(/-1 keeps all/);
    }
    const unknown = error({ keep_fortnightly: 2 });
    expect(unknown.details).toMatchObject({ parameter: 'keep.keep_fortnightly' });
    expect(unknown.details?.accepted).toEqual([
      'keep_last',
      'keep_hourly',
      'keep_daily',
      'keep_weekly',
      'keep_monthly',
      'keep_yearly',
      'keep_within',
    ]);
    for (const bad of ['10 days', 'P', 'PT', 'P0D', 'P1.5D', 'P-1D', '30d', 30, 'p30d']) {
      const e = error({ keep_within: bad });
      expect(e.details?.parameter).toBe('keep.keep_within');
      expect(e.message).toMatch(/ISO 8601 duration/);
    }
  });
});
