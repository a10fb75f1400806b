import type { FieldType } from '../datamap/types.ts';

/**
 * Checks one incoming value against its column's data map type and gives the JSON value the
 * database casts (`jsonb_to_recordset` with the column's own type): text stays text, so
 * microseconds and integers beyond 2^53 arrive exact. What cannot be that type is an error
 * the item is rejected with; the database's cast is the second check.
 */
export function normalizeValue(
  type: FieldType,
  value: unknown,
  notNull: boolean,
  sqlType = '',
): { value: unknown; error?: undefined } | { value?: undefined; error: string } {
  if (value === undefined || value === null) return { value: null };
  const out = normalizeTyped(type, value, notNull);
  if (out.error !== undefined || out.value === null) return out;
  // What the column's own type would refuse, refused here with a reason (not by the database).
  const chars = /^character(?: varying)?\((\d+)\)$/.exec(sqlType);
  if (chars && typeof out.value === 'string' && [...out.value].length > Number(chars[1]))
    return { error: `at most ${chars[1]} characters, got ${preview(out.value)}` };
  const range = INT_RANGES[sqlType];
  if (range && (typeof out.value === 'number' || typeof out.value === 'string')) {
    const n = BigInt(out.value);
    if (n < range[0] || n > range[1])
      return { error: `out of range for ${sqlType}, got ${preview(out.value)}` };
  }
  return out;
}

const INT_RANGES: Record<string, readonly [bigint, bigint]> = {
  smallint: [-32768n, 32767n],
  integer: [-2147483648n, 2147483647n],
  bigint: [-9223372036854775808n, 9223372036854775807n],
};

function normalizeTyped(
  type: FieldType,
  value: unknown,
  notNull: boolean,
): { value: unknown; error?: undefined } | { value?: undefined; error: string } {
  if (typeof value === 'string' && value.includes('\u0000')) return { error: 'contains a NUL character' };
  switch (type) {
    case 'string':
      if (typeof value === 'string') return { value };
      if (typeof value === 'number' || typeof value === 'boolean') return { value: String(value) };
      return { error: 'expected text' };
    case 'uuid':
      return typeof value === 'string' && UUID.test(value)
        ? { value: value.toLowerCase() }
        : { error: 'expected a UUID' };
    case 'integer':
      if (typeof value === 'number' && Number.isInteger(value)) return { value };
      if (typeof value === 'string' && /^-?\d+$/.test(value.trim())) return { value: value.trim() };
      if (typeof value === 'string' && value.trim() === '' && !notNull) return { value: null };
      return { error: `expected an integer, got ${preview(value)}` };
    case 'number':
      if (typeof value === 'number' && Number.isFinite(value)) return { value };
      if (typeof value === 'string' && NUMBER.test(value.trim())) return { value: value.trim() };
      if (typeof value === 'string' && value.trim() === '' && !notNull) return { value: null };
      return { error: `expected a number, got ${preview(value)}` };
    case 'boolean':
      if (typeof value === 'boolean') return { value };
      if (typeof value === 'string') {
        const v = value.trim().toLowerCase();
        if (v === 'true' || v === 't' || v === '1' || v === 'yes') return { value: true };
        if (v === 'false' || v === 'f' || v === '0' || v === 'no') return { value: false };
        if (v === '' && !notNull) return { value: null };
      }
      return { error: `expected true or false, got ${preview(value)}` };
    case 'timestamp': {
      if (typeof value !== 'string') return { error: 'expected an ISO 8601 time' };
      const m = TIMESTAMP.exec(value.trim());
      if (!m || !realDate(m[1]!) || Number.isNaN(Date.parse(`${m[1]}T${m[2] ?? '00:00:00'}Z`)))
        return value.trim() === '' && !notNull
          ? { value: null }
          : { error: `expected an ISO 8601 time, got ${preview(value)}` };
      // A time without an offset is UTC, as Ferry writes every time.
      return { value: m[3] ? value.trim() : `${value.trim()}Z` };
    }
    case 'date':
      return typeof value === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(value) && realDate(value)
        ? { value }
        : { error: 'expected a date YYYY-MM-DD' };
    case 'json':
      return hasNul(value) ? { error: 'contains a NUL character' } : { value };
    case 'string[]':
    case 'uuid[]':
    case 'number[]': {
      if (!Array.isArray(value)) return { error: 'expected a list' };
      if (type === 'string[]' && value.some((v) => typeof v !== 'string'))
        return { error: 'expected a list of text' };
      if (type === 'string[]' && value.some((v) => (v as string).includes('\u0000')))
        return { error: 'contains a NUL character' };
      return { value };
    }
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NUMBER = /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
const TIMESTAMP =
  /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?))?(Z|[+-]\d{2}(?::?\d{2})?)?$/;

function preview(value: unknown): string {
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

/** A calendar date that exists (Date.parse rolls 2023-02-29 over to March 1st; PostgreSQL refuses it). */
function realDate(ymd: string): boolean {
  const [y, m, d] = ymd.split('-').map(Number) as [number, number, number];
  const date = new Date(Date.UTC(y, m - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === m - 1 && date.getUTCDate() === d;
}

/** PostgreSQL text and jsonb cannot hold NUL. */
function hasNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (Array.isArray(value)) return value.some(hasNul);
  if (value && typeof value === 'object')
    return Object.entries(value).some(([k, v]) => k.includes('\u0000') || hasNul(v));
  return false;
}
