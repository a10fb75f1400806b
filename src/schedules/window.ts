import { Cron } from 'croner';
import { localDate } from './frequency.ts';
import { isDayReport, type ScheduleDataset } from './model.ts';

/**
 * The data range a run's dataset covers, from the run's slot (`due_at`), so a retried
 * run covers exactly what its first attempt did. Table datasets get instants
 * (`from` inclusive, `to` exclusive); day reports (analytics, revenue attribution)
 * get whole days (`from` and `to` inclusive) counted in the schedule's zone.
 */
export interface SelectionRange {
  from: string | null;
  to: string | null;
  /** Day reports: the zone their days are counted in. */
  dayZone: string | null;
}

const DAY_MS = 86_400_000;

interface LocalDay {
  year: number;
  month: number;
  day: number;
}

function shift(day: LocalDay, days: number): LocalDay {
  const d = new Date(Date.UTC(day.year, day.month - 1, day.day) + days * DAY_MS);
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
}

function iso(day: LocalDay): string {
  return `${day.year}-${String(day.month).padStart(2, '0')}-${String(day.day).padStart(2, '0')}`;
}

const midnight = new Map<string, Cron>();

/** The first instant of a calendar day in a zone (its midnight, or the first time after a gap at midnight). */
export function startOfLocalDay(day: LocalDay, timezone: string): Date {
  let cron = midnight.get(timezone);
  if (!cron) {
    cron = new Cron('0 0 * * *', { timezone });
    midnight.set(timezone, cron);
  }
  // Local midnight lies within UTC-14h..UTC+12h of the UTC midnight of the same date.
  let from = new Date(Date.UTC(day.year, day.month - 1, day.day) - 15 * 3_600_000);
  for (let guard = 0; guard < 4; guard++) {
    const next = cron.nextRun(from);
    if (!next) break;
    const local = localDate(next, timezone);
    if (local.year === day.year && local.month === day.month && local.day === day.day) return next;
    from = next;
  }
  throw new Error(`no start of day ${iso(day)} in ${timezone}`);
}

/** Whole local days [start, end) of a period before the slot's day. */
function periodDays(period: NonNullable<ScheduleDataset['period']>, today: LocalDay): [LocalDay, LocalDay] {
  switch (period) {
    case 'previous_day':
      return [shift(today, -1), today];
    case 'previous_week': {
      const weekday = new Date(Date.UTC(today.year, today.month - 1, today.day)).getUTCDay();
      const monday = shift(today, -((weekday + 6) % 7));
      return [shift(monday, -7), monday];
    }
    case 'previous_month': {
      const first = { year: today.year, month: today.month, day: 1 };
      const previous =
        today.month === 1
          ? { year: today.year - 1, month: 12, day: 1 }
          : { year: today.year, month: today.month - 1, day: 1 };
      return [previous, first];
    }
  }
}

export function selectionRange(entry: ScheduleDataset, dueAt: Date, timezone: string): SelectionRange {
  if (entry.mode !== 'window') return { from: null, to: null, dayZone: null };
  const report = isDayReport(entry.dataset);
  const today = localDate(dueAt, timezone);
  if (entry.days !== undefined) {
    if (report) return { from: iso(shift(today, -entry.days)), to: iso(shift(today, -1)), dayZone: timezone };
    return {
      from: new Date(dueAt.getTime() - entry.days * DAY_MS).toISOString(),
      to: dueAt.toISOString(),
      dayZone: null,
    };
  }
  const [start, end] = periodDays(entry.period ?? 'previous_day', today);
  if (report) return { from: iso(start), to: iso(shift(end, -1)), dayZone: timezone };
  return {
    from: startOfLocalDay(start, timezone).toISOString(),
    to: startOfLocalDay(end, timezone).toISOString(),
    dayZone: null,
  };
}
