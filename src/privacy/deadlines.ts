import type { Regulation } from '../domain/dsar-state.ts';

// Placeholder arithmetic in UTC; replaced by the tenant-zone implementation.
const DAY = 86_400_000;
function addMonthsUtc(d: Date, months: number): Date {
  const r = new Date(d);
  const day = r.getUTCDate();
  r.setUTCDate(1);
  r.setUTCMonth(r.getUTCMonth() + months);
  const last = new Date(Date.UTC(r.getUTCFullYear(), r.getUTCMonth() + 1, 0)).getUTCDate();
  r.setUTCDate(Math.min(day, last));
  return r;
}
export function dueDates(input: { regulation: Regulation; receivedAt: Date; timeZone: string }) {
  if (input.regulation === 'gdpr')
    return {
      due_at: addMonthsUtc(input.receivedAt, 1),
      confirm_by: null,
      extension_notice_by: addMonthsUtc(input.receivedAt, 1),
    };
  return {
    due_at: new Date(input.receivedAt.getTime() + 45 * DAY),
    confirm_by: new Date(input.receivedAt.getTime() + 14 * DAY),
    extension_notice_by: new Date(input.receivedAt.getTime() + 45 * DAY),
  };
}
export function extendedDue(input: {
  regulation: Regulation;
  receivedAt: Date;
  dueAt: Date;
  timeZone: string;
}): Date {
  return input.regulation === 'gdpr'
    ? addMonthsUtc(input.dueAt, 2)
    : new Date(input.dueAt.getTime() + 45 * DAY);
}
export function daysLeft(dueAt: Date, now: Date, _timeZone: string): number {
  return Math.ceil((dueAt.getTime() - now.getTime()) / DAY);
}
