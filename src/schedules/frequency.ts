import { Cron } from 'croner';
import { isValidTimezone } from '../collect/request.ts';
import { invalid } from '../domain/ferry-error.ts';

/**
 * When a schedule runs: a frequency (daily, weekly on chosen days, monthly on a chosen
 * date, or a cron expression), a time of day and an IANA time zone. Everything compiles
 * to a cron expression evaluated by croner in the schedule's zone, which handles
 * daylight saving: a time skipped by the spring-forward change (02:30 in Europe/Berlin
 * on the last Sunday of March) runs once, at the first instant after the gap (03:00);
 * a time that occurs twice on the fall-back day runs once, at its first occurrence.
 */
export const WEEKDAYS = [
  'sunday',
  'monday',
  'tuesday',
  'wednesday',
  'thursday',
  'friday',
  'saturday',
] as const;
export type Weekday = (typeof WEEKDAYS)[number];
export const FREQUENCY_TYPES = ['daily', 'weekly', 'monthly', 'cron'] as const;
export type FrequencyType = (typeof FREQUENCY_TYPES)[number];

export type Frequency =
  | { readonly type: 'daily' }
  | { readonly type: 'weekly'; readonly days: readonly Weekday[] }
  | { readonly type: 'monthly'; readonly day_of_month: number | 'last' }
  | { readonly type: 'cron'; readonly expression: string };

/** A frequency with its time and zone, and the cron expression it compiles to. */
export interface Timing {
  readonly frequency: Frequency;
  /** `HH:MM` in `timezone`; null for cron expressions (the expression holds the time). */
  readonly time: string | null;
  readonly timezone: string;
  readonly cron: string;
}

/** Schedules may not run more often than this (cron expressions are checked against it). */
export const MIN_INTERVAL_MS = 15 * 60_000;

const TIME = /^([01]\d|2[0-3]):([0-5]\d)$/;
const NICKNAMES = ['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly'];

function weekday(value: unknown, field: string): Weekday {
  const text = typeof value === 'string' ? value.trim().toLowerCase() : '';
  const found = WEEKDAYS.find((d) => d === text || d.slice(0, 3) === text);
  if (!found) throw invalid(field, `"${String(value)}" is not a day of the week`, WEEKDAYS);
  return found;
}

/** Validates the frequency as entered; field names in errors start with `frequency`. */
export function parseFrequency(input: unknown): Frequency {
  if (typeof input === 'string') input = { type: input };
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw invalid('frequency', 'must be an object with a "type"', FREQUENCY_TYPES);
  const record = input as Record<string, unknown>;
  const type = record.type;
  if (typeof type !== 'string' || !(FREQUENCY_TYPES as readonly string[]).includes(type))
    throw invalid('frequency.type', `unknown frequency "${String(type)}"`, FREQUENCY_TYPES);
  const allowed: Record<FrequencyType, string[]> = {
    daily: ['type'],
    weekly: ['type', 'days'],
    monthly: ['type', 'day_of_month'],
    cron: ['type', 'expression'],
  };
  for (const key of Object.keys(record))
    if (!allowed[type as FrequencyType].includes(key))
      throw invalid(
        `frequency.${key}`,
        `is not a field of a ${type} frequency`,
        allowed[type as FrequencyType],
      );
  switch (type as FrequencyType) {
    case 'daily':
      return { type: 'daily' };
    case 'weekly': {
      const days = record.days;
      if (!Array.isArray(days) || days.length === 0)
        throw invalid('frequency.days', 'must list at least one day of the week', WEEKDAYS);
      const parsed = days.map((d, i) => weekday(d, `frequency.days[${i}]`));
      return { type: 'weekly', days: WEEKDAYS.filter((d) => parsed.includes(d)) };
    }
    case 'monthly': {
      const day = record.day_of_month;
      if (day === 'last') return { type: 'monthly', day_of_month: 'last' };
      if (typeof day !== 'number' || !Number.isInteger(day) || day < 1 || day > 31)
        throw invalid('frequency.day_of_month', 'must be a day from 1 to 31, or "last"');
      return { type: 'monthly', day_of_month: day };
    }
    case 'cron': {
      const expression = record.expression;
      if (typeof expression !== 'string' || expression.trim() === '')
        throw invalid('frequency.expression', 'must be a cron expression such as "0 2 * * *"');
      const text = expression.trim().replace(/\s+/g, ' ');
      if (!NICKNAMES.includes(text.toLowerCase()) && text.split(' ').length !== 5)
        throw invalid(
          'frequency.expression',
          'must have five fields: minute, hour, day of month, month, day of week (e.g. "30 2 * * 1-5")',
        );
      return { type: 'cron', expression: text };
    }
  }
}

/** The cron expression of a frequency at `time` (HH:MM). */
export function compileCron(frequency: Frequency, time: string | null): string {
  if (frequency.type === 'cron') return frequency.expression;
  const match = TIME.exec(time ?? '');
  if (!match) throw invalid('time', 'must be a time of day as HH:MM (24-hour clock)');
  const minute = Number(match[2]);
  const hour = Number(match[1]);
  switch (frequency.type) {
    case 'daily':
      return `${minute} ${hour} * * *`;
    case 'weekly':
      return `${minute} ${hour} * * ${frequency.days.map((d) => WEEKDAYS.indexOf(d)).join(',')}`;
    case 'monthly':
      if (frequency.day_of_month === 'last') return `${minute} ${hour} L * *`;
      // Days 29-31 run on the month's last day in shorter months (filtered in nextRunAfter).
      return frequency.day_of_month > 28
        ? `${minute} ${hour} 28-31 * *`
        : `${minute} ${hour} ${frequency.day_of_month} * *`;
  }
}

/**
 * Validates frequency, time and zone together and compiles them. Errors name
 * `frequency.*`, `time` or `timezone`.
 */
export function parseTiming(input: { frequency: unknown; time: unknown; timezone: unknown }): Timing {
  const frequency = parseFrequency(input.frequency);
  const timezone = input.timezone;
  if (typeof timezone !== 'string' || !isValidTimezone(timezone))
    throw invalid('timezone', `"${String(timezone)}" is not an IANA time zone (e.g. Europe/Berlin, UTC)`);
  let time: string | null = null;
  if (frequency.type === 'cron') {
    if (input.time !== undefined && input.time !== null)
      throw invalid('time', 'is not used with a cron expression: the expression holds the time');
  } else {
    if (typeof input.time !== 'string' || !TIME.test(input.time))
      throw invalid('time', 'must be a time of day as HH:MM (24-hour clock), e.g. "02:30"');
    time = input.time;
  }
  const cron = compileCron(frequency, time);
  let pattern: Cron;
  try {
    pattern = new Cron(cron, { timezone });
  } catch (err) {
    throw invalid('frequency.expression', `is not a valid cron expression: ${(err as Error).message}`);
  }
  const timing: Timing = { frequency, time, timezone, cron };
  const upcoming = nextRuns(timing, new Date(), 12);
  if (upcoming.length === 0 || !pattern)
    throw invalid('frequency.expression', 'never runs (no date matches it)');
  if (frequency.type === 'cron') {
    for (let i = 1; i < upcoming.length; i++) {
      if (upcoming[i]!.getTime() - upcoming[i - 1]!.getTime() < MIN_INTERVAL_MS)
        throw invalid(
          'frequency.expression',
          `runs more often than every ${MIN_INTERVAL_MS / 60_000} minutes; choose a longer interval`,
        );
    }
  }
  return timing;
}

const partsFormat = new Map<string, Intl.DateTimeFormat>();

/** The calendar date of an instant in a zone. */
export function localDate(instant: Date, timezone: string): { year: number; month: number; day: number } {
  let format = partsFormat.get(timezone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-CA', {
      timeZone: timezone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
    });
    partsFormat.set(timezone, format);
  }
  const parts = Object.fromEntries(format.formatToParts(instant).map((p) => [p.type, p.value]));
  return { year: Number(parts.year), month: Number(parts.month), day: Number(parts.day) };
}

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** The first run strictly after `after`, or null when the expression never matches again. */
export function nextRunAfter(
  timing: Pick<Timing, 'frequency' | 'cron' | 'timezone'>,
  after: Date,
): Date | null {
  const cron = new Cron(timing.cron, { timezone: timing.timezone });
  const wanted = timing.frequency.type === 'monthly' ? timing.frequency.day_of_month : null;
  let from = after;
  for (let guard = 0; guard < 64; guard++) {
    const next = cron.nextRun(from);
    if (!next) return null;
    if (typeof wanted !== 'number' || wanted <= 28) return next;
    const local = localDate(next, timing.timezone);
    if (local.day === Math.min(wanted, daysInMonth(local.year, local.month))) return next;
    from = next;
  }
  return null;
}

/** The next `count` runs after `after`. */
export function nextRuns(
  timing: Pick<Timing, 'frequency' | 'cron' | 'timezone'>,
  after: Date,
  count: number,
): Date[] {
  const runs: Date[] = [];
  let from = after;
  while (runs.length < count) {
    const next = nextRunAfter(timing, from);
    if (!next) break;
    runs.push(next);
    from = next;
  }
  return runs;
}

/**
 * For a schedule due at `due` (≤ now): the slot to run and the next slot after now.
 * Slots missed while no scheduler ran (Ferry was down) collapse into one run, of the
 * latest missed slot, so a week of downtime does not fire seven runs at once.
 */
export function dueSlot(
  timing: Pick<Timing, 'frequency' | 'cron' | 'timezone'>,
  due: Date,
  now: Date,
): { slot: Date; next: Date | null } {
  let slot = due;
  let next = nextRunAfter(timing, due);
  // Bounded: a 15-minute schedule down for a month is ~3000 steps.
  for (let guard = 0; next && next.getTime() <= now.getTime() && guard < 10_000; guard++) {
    slot = next;
    next = nextRunAfter(timing, next);
  }
  if (next && next.getTime() <= now.getTime()) next = nextRunAfter(timing, now);
  return { slot, next };
}
