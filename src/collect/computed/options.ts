import { literal } from '../../db/database.ts';
import { invalid } from '../../domain/ferry-error.ts';

/**
 * Validation and SQL pieces shared by the computed datasets. Every value that reaches
 * SQL is checked here first and then inlined with `literal()`: COPY takes no bind
 * parameters.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** IANA names: `UTC`, `Europe/Berlin`, `America/Argentina/Buenos_Aires`, `Etc/GMT+5`. */
const ZONE_NAME = /^[A-Za-z][A-Za-z_]*(?:\/[A-Za-z0-9_+-]+)*$/;
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

export function checkTenantId(value: string): string {
  if (typeof value !== 'string' || !UUID.test(value)) throw invalid('tenant_id', 'must be a UUID');
  return value;
}

/**
 * An IANA time zone name known to the runtime. Offsets such as `+01:00` are refused:
 * PostgreSQL reads POSIX offsets with the opposite sign, so they would shift silently.
 */
export function checkTimezone(value: string): string {
  let known = typeof value === 'string' && ZONE_NAME.test(value);
  if (known) {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: value });
    } catch {
      known = false;
    }
  }
  if (!known) {
    throw invalid(
      'timezone',
      `unknown time zone ${JSON.stringify(value)}; use an IANA time zone name such as Europe/Berlin, America/New_York or UTC`,
    );
  }
  return value;
}

/** A calendar date `YYYY-MM-DD`, or undefined when absent. */
export function checkDate(param: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const m = typeof value === 'string' ? DATE.exec(value) : null;
  if (m) {
    const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
    const date = new Date(Date.UTC(y, mo - 1, d));
    if (date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d) return value;
  }
  throw invalid(param, `must be a calendar date YYYY-MM-DD, got ${JSON.stringify(value)}`);
}

export function checkChoice<T extends string>(param: string, value: string, accepted: readonly T[]): T {
  if (!(accepted as readonly string[]).includes(value)) {
    throw invalid(param, `unknown value ${JSON.stringify(value)}`, accepted);
  }
  return value as T;
}

/** SQL bounds (timestamptz expressions) of the days `from`..`to` (inclusive) in the zone. */
export interface LocalRange {
  /** Inclusive lower bound, or null when open. */
  readonly lower: string | null;
  /** Exclusive upper bound (midnight after `to`), or null when open. */
  readonly upper: string | null;
}

export function localRange(timezone: string, from: string | undefined, to: string | undefined): LocalRange {
  const fromDate = checkDate('from', from);
  const toDate = checkDate('to', to);
  if (fromDate && toDate && fromDate > toDate) throw invalid('to', `must not be before from (${fromDate})`);
  const tz = literal(timezone);
  return {
    lower: fromDate ? `(${literal(fromDate)}::timestamp AT TIME ZONE ${tz})` : null,
    upper: toDate ? `((${literal(toDate)}::date + 1)::timestamp AT TIME ZONE ${tz})` : null,
  };
}

/** `AND` conditions restricting a timestamptz column to the range. */
export function rangeConditions(column: string, range: LocalRange): string {
  let sql = '';
  if (range.lower) sql += ` AND ${column} >= ${range.lower}`;
  if (range.upper) sql += ` AND ${column} < ${range.upper}`;
  return sql;
}

/** A timestamptz as an ISO 8601 UTC string with milliseconds, whatever the session time zone. */
export function isoUtc(expression: string): string {
  return `to_char(${expression} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
}
