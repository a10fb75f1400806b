import { DateTime } from 'luxon';
import { describe, expect, it } from 'vitest';
import { applyKeepPolicy, type KeepPolicy, parseKeepPolicy, type Snapshot } from '../src/backup/forget.ts';
import { FerryError } from '../src/domain/ferry-error.ts';

const ZONE = 'Europe/Berlin';

/**
 * 800 days of backups at 02:00 Berlin time from 2027-03-01 (across DST changes and the leap
 * day 2028-02-29), with some days missed and some with a second backup at 14:00.
 */
function days(): Snapshot[] {
  const out: Snapshot[] = [];
  let day = DateTime.fromISO('2027-03-01T02:00:00', { zone: ZONE });
  for (let i = 0; i < 800; i++, day = day.plus({ days: 1 })) {
    if (i % 37 === 5) continue; // a failed night
    out.push({ id: `b${i}`, time: day.toJSDate() });
    if (i % 53 === 7) out.push({ id: `b${i}x`, time: day.set({ hour: 14 }).toJSDate() });
  }
  return out;
}

/**
 * An independent reading of restic's rules: group by bucket key, walk the buckets newest
 * first, keep the newest snapshot of each of the first N buckets; while a rule still has
 * counts when the list ends, it also keeps the oldest snapshot.
 */
function reference(snapshots: readonly Snapshot[], policy: KeepPolicy, zone: string): Set<string> {
  const newestFirst = [...snapshots].sort((a, b) => b.time.getTime() - a.time.getTime());
  const kept = new Set<string>();
  const rules: [number | undefined, (t: DateTime, i: number) => string][] = [
    [policy.keep_last, (_t, i) => `#${i}`],
    [policy.keep_hourly, (t) => t.toFormat('yyyy-MM-dd HH')],
    [policy.keep_daily, (t) => t.toISODate()!],
    [policy.keep_weekly, (t) => `${t.weekYear}W${t.weekNumber}`],
    [policy.keep_monthly, (t) => t.toFormat('yyyy-MM')],
    [policy.keep_yearly, (t) => String(t.year)],
  ];
  for (const [count, key] of rules) {
    if (!count) continue;
    const buckets = new Map<string, Snapshot>();
    newestFirst.forEach((s, i) => {
      const k = key(DateTime.fromJSDate(s.time, { zone }), i);
      if (!buckets.has(k)) buckets.set(k, s);
    });
    const firsts = [...buckets.values()];
    const take = count === -1 ? firsts : firsts.slice(0, count);
    for (const s of take) kept.add(s.id);
    if (count === -1 || firsts.length < count) kept.add(newestFirst[newestFirst.length - 1]!.id);
  }
  return kept;
}

describe('backup keep policy (restic forget)', () => {
  const snapshots = days();
  const now = new Date('2031-01-01T00:00:00Z');

  it('keeps exactly what the rules name over 800 days of backups in Berlin time', () => {
    const policy = { keep_daily: 7, keep_weekly: 4, keep_monthly: 12, keep_yearly: 3 };
    const decisions = applyKeepPolicy(snapshots, policy, ZONE, now);
    const kept = new Set(decisions.filter((d) => d.keep).map((d) => d.id));
    expect(kept).toEqual(reference(snapshots, policy, ZONE));
    // 7 dailies + weeklies, monthlies and yearlies beyond them, and the oldest (yearly counts left).
    expect(kept.size).toBeGreaterThan(20);
    expect(kept.size).toBeLessThan(30);
    const newest = decisions[0]!;
    expect(newest.keep).toBe(true);
    expect(newest.reasons).toEqual(['daily', 'weekly', 'monthly', 'yearly']);
    // Newest first, every input once.
    expect(decisions.map((d) => d.time.getTime())).toEqual(
      [...decisions].sort((a, b) => b.time.getTime() - a.time.getTime()).map((d) => d.time.getTime()),
    );
    expect(decisions).toHaveLength(snapshots.length);
  });

  it('agrees with the reference for other rule mixes', () => {
    for (const policy of [
      { keep_last: 3 },
      { keep_last: 2, keep_weekly: 6 },
      { keep_hourly: 30 },
      { keep_monthly: 40 },
      { keep_yearly: -1 },
      { keep_daily: 400, keep_monthly: 3 },
    ] satisfies KeepPolicy[]) {
      const kept = new Set(
        applyKeepPolicy(snapshots, policy, ZONE, now)
          .filter((d) => d.keep)
          .map((d) => d.id),
      );
      expect(kept, JSON.stringify(policy)).toEqual(reference(snapshots, policy, ZONE));
    }
  });

  it('keeps everything with keep_last -1 or an empty policy', () => {
    expect(applyKeepPolicy(snapshots, { keep_last: -1 }, ZONE, now).every((d) => d.keep)).toBe(true);
    expect(applyKeepPolicy(snapshots, {}, ZONE, now).every((d) => d.keep)).toBe(true);
  });

  it('keeps what is within a duration of the newest backup', () => {
    const decisions = applyKeepPolicy(snapshots, { keep_within: 'P10D' }, ZONE, now);
    const newest = decisions[0]!.time.getTime();
    for (const d of decisions) expect(d.keep).toBe(d.time.getTime() > newest - 10 * 86_400_000);
  });

  it('counts days in the tenant zone: 23:30 UTC is the next day in Berlin', () => {
    const three = [
      { id: 'x', time: new Date('2027-06-09T12:00:00Z') },
      { id: 'late', time: new Date('2027-06-10T23:30:00Z') },
      { id: 'early', time: new Date('2027-06-11T06:00:00Z') },
    ];
    const kept = (zone: string) =>
      applyKeepPolicy(three, { keep_daily: 2 }, zone, now)
        .filter((d) => d.keep)
        .map((d) => d.id);
    // In UTC, June 11 and June 10 are the two newest days.
    expect(kept('UTC')).toEqual(['early', 'late']);
    // In Berlin, 'late' is June 11 01:30 like 'early': the second day kept is June 9.
    expect(kept(ZONE)).toEqual(['early', 'x']);
  });

  it('names the rule that is wrong', () => {
    expect(() => parseKeepPolicy({ keep_daily: 1.5 })).toThrow(/keep\.keep_daily/);
    expect(() => parseKeepPolicy({ keep_fortnightly: 2 })).toThrow(FerryError);
    expect(() => parseKeepPolicy({ keep_within: '10 days' })).toThrow(/ISO 8601/);
    expect(parseKeepPolicy({ keep_daily: 7, keep_weekly: 0, keep_within: 'P1Y' })).toEqual({
      keep_daily: 7,
      keep_within: 'P1Y',
    });
  });
});
