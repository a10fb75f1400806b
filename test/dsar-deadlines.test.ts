import { describe, expect, it } from 'vitest';
import { daysLeft, dueDates, extendedDue, isOverdue } from '../src/privacy/deadlines.ts';

const at = (iso: string) => new Date(iso);
const iso = (date: Date | null) => date?.toISOString() ?? null;

describe('GDPR deadlines: one month from receipt, end of the day in the tenant zone', () => {
  it('moves a date missing from the next month to its last day', () => {
    const utc = (received: string) =>
      iso(dueDates({ regulation: 'gdpr', receivedAt: at(received), timeZone: 'UTC' }).due_at);
    expect(utc('2026-01-31T10:00:00.123Z')).toBe('2026-02-28T23:59:59.999Z');
    expect(utc('2028-01-31T10:00:00Z')).toBe('2028-02-29T23:59:59.999Z'); // leap year
    expect(utc('2028-01-29T00:00:00Z')).toBe('2028-02-29T23:59:59.999Z');
    expect(utc('2026-03-31T08:00:00Z')).toBe('2026-04-30T23:59:59.999Z');
    expect(utc('2026-11-30T08:00:00Z')).toBe('2026-12-30T23:59:59.999Z');
    expect(utc('2026-12-31T23:59:59.999Z')).toBe('2027-01-31T23:59:59.999Z');
    expect(utc('2026-01-15T00:00:00Z')).toBe('2026-02-15T23:59:59.999Z');
  });

  it("takes the receipt's calendar day in the tenant's zone", () => {
    // 31 January 23:30 UTC is already 1 February in Berlin, still 31 January in New York.
    const received = at('2026-01-31T23:30:00Z');
    expect(
      iso(dueDates({ regulation: 'gdpr', receivedAt: received, timeZone: 'Europe/Berlin' }).due_at),
    ).toBe('2026-03-01T22:59:59.999Z');
    expect(
      iso(dueDates({ regulation: 'gdpr', receivedAt: received, timeZone: 'America/New_York' }).due_at),
    ).toBe('2026-03-01T04:59:59.999Z');
  });

  it('ends at local midnight with the offset of the due day, across DST changes', () => {
    const berlin = (received: string) =>
      iso(dueDates({ regulation: 'gdpr', receivedAt: at(received), timeZone: 'Europe/Berlin' }).due_at);
    // Summer time starts 29 March 2026 (+01:00 → +02:00) and ends 25 October (+02:00 → +01:00).
    expect(berlin('2026-02-28T12:00:00Z')).toBe('2026-03-28T22:59:59.999Z'); // due before the change: +01:00
    expect(berlin('2026-03-01T09:00:00Z')).toBe('2026-04-01T21:59:59.999Z'); // received +01:00, due +02:00
    expect(berlin('2026-02-28T23:30:00Z')).toBe('2026-04-01T21:59:59.999Z'); // 1 March 00:30 local
    expect(berlin('2026-03-29T00:30:00Z')).toBe('2026-04-29T21:59:59.999Z'); // received on the change day
    expect(berlin('2026-09-25T12:00:00Z')).toBe('2026-10-25T22:59:59.999Z'); // due on the day it ends
    const newYork = (received: string) =>
      iso(dueDates({ regulation: 'gdpr', receivedAt: at(received), timeZone: 'America/New_York' }).due_at);
    // Daylight time starts 8 March 2026 (-05:00 → -04:00) and ends 1 November (-04:00 → -05:00).
    expect(newYork('2026-02-08T15:00:00Z')).toBe('2026-03-09T03:59:59.999Z');
    expect(newYork('2026-10-01T15:00:00Z')).toBe('2026-11-02T04:59:59.999Z');
  });

  it('extends once by two further months, with notice due within the first month', () => {
    const input = {
      regulation: 'gdpr' as const,
      receivedAt: at('2026-01-31T10:00:00Z'),
      timeZone: 'Europe/Berlin',
    };
    const deadlines = dueDates(input);
    expect(iso(deadlines.due_at)).toBe('2026-02-28T22:59:59.999Z');
    expect(iso(deadlines.extension_notice_by)).toBe('2026-02-28T22:59:59.999Z');
    expect(deadlines.confirm_by).toBeNull();
    // Three months from receipt: 30 April (summer time, +02:00), not two months after 28 February.
    expect(iso(deadlines.extended_due_at)).toBe('2026-04-30T21:59:59.999Z');
    expect(iso(extendedDue(input))).toBe('2026-04-30T21:59:59.999Z');
    expect(iso(extendedDue({ ...input, receivedAt: at('2026-11-30T12:00:00Z') }))).toBe(
      '2027-02-28T22:59:59.999Z',
    );
    expect(iso(extendedDue({ ...input, receivedAt: at('2027-11-30T12:00:00Z') }))).toBe(
      '2028-02-29T22:59:59.999Z',
    );
  });
});

describe('CCPA deadlines: 10 business days to confirm, 45 calendar days to answer', () => {
  const ccpa = (received: string, holidays?: string[]) =>
    dueDates({ regulation: 'ccpa', receivedAt: at(received), timeZone: 'America/Los_Angeles', holidays });

  it('counts business days over weekends, and skips listed holidays', () => {
    // Friday 2 January 2026, 10:00 in Los Angeles (-08:00).
    expect(iso(ccpa('2026-01-02T18:00:00Z').confirm_by)).toBe('2026-01-17T07:59:59.999Z'); // Friday 16th
    // Received on the weekend: the count starts on Monday, ends on the same Friday.
    expect(iso(ccpa('2026-01-03T18:00:00Z').confirm_by)).toBe('2026-01-17T07:59:59.999Z');
    expect(iso(ccpa('2026-01-04T18:00:00Z').confirm_by)).toBe('2026-01-17T07:59:59.999Z');
    // Monday 5th: ten business days later is Monday 19th, or Tuesday 20th when the 19th is a holiday.
    expect(iso(ccpa('2026-01-05T18:00:00Z').confirm_by)).toBe('2026-01-20T07:59:59.999Z');
    expect(iso(ccpa('2026-01-05T18:00:00Z', ['2026-01-19']).confirm_by)).toBe('2026-01-21T07:59:59.999Z');
    // Friday 2nd with Monday 12th a holiday: Monday 19th.
    expect(iso(ccpa('2026-01-02T18:00:00Z', ['2026-01-12']).confirm_by)).toBe('2026-01-20T07:59:59.999Z');
    // A Friday evening in Los Angeles is already Saturday in UTC: still counted from Friday.
    expect(iso(ccpa('2026-01-03T06:30:00Z').confirm_by)).toBe('2026-01-17T07:59:59.999Z');
    expect(() => ccpa('2026-01-02T18:00:00Z', ['19 January'])).toThrow(/holidays.*YYYY-MM-DD/);
  });

  it('answers within 45 calendar days, extendable once by 45 with notice', () => {
    const deadlines = ccpa('2026-01-02T18:00:00Z');
    expect(iso(deadlines.due_at)).toBe('2026-02-17T07:59:59.999Z'); // 16 February, -08:00
    expect(iso(deadlines.extension_notice_by)).toBe('2026-02-17T07:59:59.999Z');
    expect(iso(deadlines.extended_due_at)).toBe('2026-04-03T06:59:59.999Z'); // 2 April, daylight time -07:00
    expect(
      iso(
        extendedDue({
          regulation: 'ccpa',
          receivedAt: at('2026-01-02T18:00:00Z'),
          timeZone: 'America/Los_Angeles',
        }),
      ),
    ).toBe('2026-04-03T06:59:59.999Z');
  });
});

describe('days left and overdue', () => {
  it("counts calendar days in the tenant's zone, 0 on the due day, negative after", () => {
    const zone = 'Europe/Berlin';
    const due = dueDates({
      regulation: 'gdpr',
      receivedAt: at('2026-01-31T10:00:00Z'),
      timeZone: zone,
    }).due_at;
    expect(daysLeft(due, at('2026-01-31T10:00:00Z'), zone)).toBe(28);
    expect(daysLeft(due, at('2026-02-27T22:59:59Z'), zone)).toBe(1);
    expect(daysLeft(due, at('2026-02-27T23:00:00Z'), zone)).toBe(0); // midnight in Berlin
    expect(isOverdue(due, at('2026-02-28T22:59:59.999Z'))).toBe(false);
    expect(isOverdue(due, at('2026-02-28T23:00:00Z'))).toBe(true);
    expect(daysLeft(due, at('2026-02-28T23:00:00Z'), zone)).toBe(-1);
    // Across the 23-hour day when summer time starts.
    const april = dueDates({
      regulation: 'gdpr',
      receivedAt: at('2026-03-01T09:00:00Z'),
      timeZone: zone,
    }).due_at;
    expect(daysLeft(april, at('2026-03-28T11:00:00Z'), zone)).toBe(4);
    expect(daysLeft(april, at('2026-04-01T21:59:59Z'), zone)).toBe(0);
  });

  it('refuses an unknown zone or regulation with the parameter named', () => {
    expect(() =>
      dueDates({ regulation: 'gdpr', receivedAt: at('2026-01-31T10:00:00Z'), timeZone: 'Mars/Olympus' }),
    ).toThrow(/timeZone.*IANA/);
    expect(() =>
      dueDates({ regulation: 'lgpd' as 'gdpr', receivedAt: at('2026-01-31T10:00:00Z'), timeZone: 'UTC' }),
    ).toThrow(/regulation/);
    expect(() => dueDates({ regulation: 'gdpr', receivedAt: new Date(Number.NaN), timeZone: 'UTC' })).toThrow(
      /receivedAt/,
    );
  });
});
