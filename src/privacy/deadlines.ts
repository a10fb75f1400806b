import { DateTime } from 'luxon';
import { invalid } from '../domain/ferry-error.ts';

/**
 * The legal deadlines of a data subject request, computed in the tenant's time zone
 * (docs/dsar-deadlines.md). Pure functions: the caller stores what they return.
 *
 * - A deadline is the end of its calendar day in the tenant's zone (23:59:59.999 local),
 *   whatever the UTC offset is that day.
 * - GDPR (Art. 12(3)): one month from receipt; a date missing from the last month
 *   (received 31 January) moves to that month's last day (28 or 29 February). Extendable
 *   once by two further months, i.e. to three months from receipt; the notice with the
 *   reason must reach the subject within the first month.
 * - CCPA (Cal. Code Regs. tit. 11 § 7021): confirm receipt within 10 business days
 *   (Monday to Friday, minus the holidays the caller lists) and answer within 45 calendar
 *   days, extendable once by 45 more with notice within the first 45.
 * - The clock starts at receipt and keeps running while identity verification is pending.
 */

import type { Regulation } from '../domain/dsar-state.ts';

export type { Regulation };

export interface DeadlineInput {
  readonly regulation: Regulation;
  /** When the request was received (any instant; its calendar day is taken in `timeZone`). */
  readonly receivedAt: Date;
  /** The tenant's IANA time zone, e.g. `Europe/Berlin`. */
  readonly timeZone: string;
  /** Public holidays (`YYYY-MM-DD`, in the tenant's calendar) that are not business days (CCPA confirmation). */
  readonly holidays?: readonly string[];
}

export interface Deadlines {
  /** End of the day the answer is due (one month for GDPR, 45 calendar days for CCPA). */
  readonly due_at: Date;
  /** CCPA: end of the 10th business day after receipt, by which receipt must be confirmed; null for GDPR. */
  readonly confirm_by: Date | null;
  /** The last moment the subject can be told of an extension and its reason (the original due moment). */
  readonly extension_notice_by: Date;
  /** The due moment once extended (GDPR: three months from receipt; CCPA: 90 days). */
  readonly extended_due_at: Date;
}

const BUSINESS_DAYS_TO_CONFIRM = 10;
const CCPA_DAYS = 45;
const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** The receipt's calendar day in the zone (start of that day), or an invalid_parameter error. */
function receivedDay(input: Pick<DeadlineInput, 'receivedAt' | 'timeZone'>): DateTime {
  if (!(input.receivedAt instanceof Date) || Number.isNaN(input.receivedAt.getTime()))
    throw invalid('receivedAt', 'is not a valid date');
  const local = DateTime.fromJSDate(input.receivedAt, { zone: input.timeZone });
  if (!local.isValid)
    throw invalid('timeZone', `"${input.timeZone}" is not an IANA time zone (e.g. Europe/Berlin, UTC)`);
  return local.startOf('day');
}

/** The end of a local calendar day, as an instant. */
function endOfDay(day: DateTime): Date {
  return day.endOf('day').toJSDate();
}

/** The day `count` business days after `day` (Monday–Friday, not a listed holiday). */
function addBusinessDays(day: DateTime, count: number, holidays: ReadonlySet<string>): DateTime {
  let current = day;
  let left = count;
  while (left > 0) {
    current = current.plus({ days: 1 });
    if (current.weekday <= 5 && !holidays.has(current.toISODate()!)) left--;
  }
  return current;
}

function holidaySet(holidays: readonly string[] | undefined): ReadonlySet<string> {
  for (const day of holidays ?? [])
    if (!DATE.test(day) || !DateTime.fromISO(day).isValid)
      throw invalid('holidays', `"${day}" is not a calendar date (YYYY-MM-DD)`);
  return new Set(holidays ?? []);
}

/** Every deadline of a request received at `receivedAt`, in the tenant's zone. */
export function dueDates(input: DeadlineInput): Deadlines {
  const day = receivedDay(input);
  if (input.regulation === 'gdpr') {
    const due = endOfDay(day.plus({ months: 1 }));
    return {
      due_at: due,
      confirm_by: null,
      extension_notice_by: due,
      extended_due_at: endOfDay(day.plus({ months: 3 })),
    };
  }
  if (input.regulation === 'ccpa') {
    const due = endOfDay(day.plus({ days: CCPA_DAYS }));
    return {
      due_at: due,
      confirm_by: endOfDay(addBusinessDays(day, BUSINESS_DAYS_TO_CONFIRM, holidaySet(input.holidays))),
      extension_notice_by: due,
      extended_due_at: endOfDay(day.plus({ days: 2 * CCPA_DAYS })),
    };
  }
  throw invalid('regulation', `"${String(input.regulation)}" is not a known regulation`, ['gdpr', 'ccpa']);
}

/**
 * The due moment after the one extension the regulation allows: GDPR two further months
 * (three from receipt), CCPA 45 further days (90 from receipt).
 */
export function extendedDue(input: DeadlineInput): Date {
  return dueDates(input).extended_due_at;
}

/**
 * Whole calendar days, in the tenant's zone, from today to the due day: 0 on the due day
 * itself, negative once it has passed (-1 the day after).
 */
export function daysLeft(dueAt: Date, now: Date, timeZone: string): number {
  const today = receivedDay({ receivedAt: now, timeZone });
  const dueDay = receivedDay({ receivedAt: dueAt, timeZone });
  return Math.round(dueDay.diff(today, 'days').days);
}

/** Whether the due moment has passed. */
export function isOverdue(dueAt: Date, now: Date): boolean {
  return now.getTime() > dueAt.getTime();
}
