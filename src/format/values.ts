import { FerryError } from '../domain/ferry-error.ts';

/**
 * Value helpers shared by the NDJSON-consuming writers. The database renders a row as
 * PostgreSQL `row_to_json` does: timestamps as ISO 8601 strings with an offset
 * (`2025-09-03T10:00:00.123456+00:00`) or `Z`, dates as `YYYY-MM-DD`, numbers as JSON
 * numbers (float specials as the strings `NaN`, `Infinity`, `-Infinity`).
 */

const TIMESTAMP =
  /^(-?\d{4,6})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?$/;
const DATE = /^(-?\d{4,6})-(\d{2})-(\d{2})$/;
const DAY_MS = 86_400_000;

/** PostgreSQL's infinite timestamps and dates; no export format can hold them, so they become null. */
export function isInfinite(text: string): boolean {
  return text === 'infinity' || text === '-infinity';
}

/**
 * Microseconds since 1970-01-01T00:00:00Z for an ISO 8601 timestamp. A timestamp
 * without an offset (PostgreSQL `timestamp without time zone`) is read as UTC.
 * Digits beyond microseconds are truncated. Returns undefined for text that is not a
 * timestamp.
 */
export function parseTimestampMicros(text: string): bigint | undefined {
  const m = TIMESTAMP.exec(text);
  if (!m) return undefined;
  const ms = utcMillis(Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  if (ms === undefined) return undefined;
  const fraction = m[7] ? Number(m[7].slice(0, 6).padEnd(6, '0')) : 0;
  let offsetSeconds = 0;
  const zone = m[8];
  if (zone && zone !== 'Z') {
    const digits = zone.slice(1).replaceAll(':', '');
    const seconds =
      Number(digits.slice(0, 2)) * 3600 +
      Number(digits.slice(2, 4) || 0) * 60 +
      Number(digits.slice(4, 6) || 0);
    offsetSeconds = zone[0] === '-' ? -seconds : seconds;
  }
  return BigInt(ms - offsetSeconds * 1000) * 1000n + BigInt(fraction);
}

/** Days since 1970-01-01 for `YYYY-MM-DD` (a date, or the date part of a timestamp). */
export function parseDateDays(text: string): number | undefined {
  const m = DATE.exec(text.length > 10 && text[10] === 'T' ? text.slice(0, 10) : text);
  if (!m) return undefined;
  const ms = utcMillis(Number(m[1]), Number(m[2]), Number(m[3]), 0, 0, 0);
  return ms === undefined ? undefined : Math.floor(ms / DAY_MS);
}

/**
 * The canonical UTC form of a timestamp: `2025-09-03T10:00:00Z`, with `.mmm` or
 * `.uuuuuu` only when the value has (milli/micro)seconds. A valid xs:dateTime.
 */
export function formatTimestampMicros(micros: bigint): string {
  let ms = micros / 1000n;
  let us = micros % 1000n;
  if (us < 0n) {
    us += 1000n;
    ms -= 1n;
  }
  const iso = new Date(Number(ms)).toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  if (us !== 0n) return `${iso.slice(0, -1)}${String(us).padStart(3, '0')}Z`;
  return iso.endsWith('.000Z') ? `${iso.slice(0, -5)}Z` : iso;
}

/** `YYYY-MM-DD` (UTC) of a timestamp given in microseconds. */
export function utcDateOfMicros(micros: bigint): string {
  const ms = micros >= 0n ? micros / 1000n : (micros - 999n) / 1000n;
  return new Date(Number(ms)).toISOString().slice(0, 10);
}

function utcMillis(y: number, mo: number, d: number, h: number, mi: number, s: number): number | undefined {
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 24 || mi > 59 || s > 60) return undefined;
  const date = new Date(Date.UTC(2000, mo - 1, d, h, mi, s));
  date.setUTCFullYear(y); // Date.UTC maps years 0-99 to 1900-1999
  const ms = date.getTime();
  // Date rolls 2025-02-30 over to March; a real calendar date keeps its day.
  return Number.isNaN(ms) || date.getUTCDate() !== d ? undefined : ms;
}

/**
 * A JSON value as a double: numbers as they are, PostgreSQL's float specials from
 * their string form. Returns undefined for anything else.
 */
export function toDouble(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  const raw = rawNumberText(value);
  if (raw !== undefined) return Number(raw);
  if (value === 'NaN') return Number.NaN;
  if (value === 'Infinity') return Number.POSITIVE_INFINITY;
  if (value === '-Infinity') return Number.NEGATIVE_INFINITY;
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value)))
    return Number(value);
  return undefined;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** An integer JSON value (or its exact decimal text) as a 64-bit integer; undefined if it is not one. */
export function toInt64(value: unknown): bigint | undefined {
  let n: bigint | undefined;
  if (typeof value === 'number') n = Number.isInteger(value) ? BigInt(value) : undefined;
  else if (typeof value === 'string') n = /^-?\d+$/.test(value) ? BigInt(value) : undefined;
  else if (typeof value === 'bigint') n = value;
  else {
    const raw = rawNumberText(value);
    n = raw === undefined ? undefined : BigInt(raw);
  }
  return n !== undefined && n >= INT64_MIN && n <= INT64_MAX ? n : undefined;
}

/** The error for a value that does not fit its declared field type. */
export function badValue(field: string, type: string, value: unknown): FerryError {
  const shown = JSON.stringify(value);
  return new FerryError(
    'format_error',
    `field ${field}: value ${shown === undefined ? String(value) : shown.slice(0, 80)} is not a valid ${type}`,
    { field, type },
  );
}

/**
 * `JSON.rawJSON` / `JSON.isRawJSON` (ES2026, in Node 24): a raw value serialises as its
 * exact source text, which keeps integers beyond 2^53 exact through `JSON.stringify`.
 */
const RawJSON = JSON as unknown as {
  rawJSON(text: string): object;
  isRawJSON(value: unknown): value is { readonly rawJSON: string };
};

/** The exact source text of a number that `parseRow` kept raw, else undefined. */
export function rawNumberText(value: unknown): string | undefined {
  return typeof value === 'object' && value !== null && RawJSON.isRawJSON(value) ? value.rawJSON : undefined;
}

/**
 * Parses one NDJSON row. Integers too large for a double stay exact: they become raw
 * JSON values (see `rawNumberText`), which `JSON.stringify` writes back unchanged.
 */
export function parseRow(line: string): Record<string, unknown> {
  // The reviver makes parsing ~5x slower, so it only runs when the line has a digit run
  // long enough to be an unsafe integer (16 digits or more).
  const row: unknown = LONG_DIGITS.test(line) ? JSON.parse(line, exactIntegers) : JSON.parse(line);
  if (row === null || typeof row !== 'object' || Array.isArray(row)) {
    throw new FerryError('format_error', `input line is not a JSON object: ${line.slice(0, 80)}`);
  }
  return row as Record<string, unknown>;
}

const LONG_DIGITS = /\d{16}/;

function exactIntegers(this: unknown, _key: string, value: unknown, context?: { source?: string }): unknown {
  if (
    typeof value === 'number' &&
    !Number.isSafeInteger(value) &&
    context?.source &&
    /^-?\d+$/.test(context.source)
  ) {
    return RawJSON.rawJSON(context.source);
  }
  return value;
}
