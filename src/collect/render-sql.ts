import { literal } from '../db/database.ts';
import { utcInstantSql } from '../db/keyset.ts';
import type { FieldType } from '../datamap/types.ts';
import { csvGuardJsonSql, csvGuardSql } from '../transform/csv-guard.ts';

/**
 * SQL renderers that turn a field's value into its exported text inside the
 * database, so CSV and NDJSON leave PostgreSQL ready to write (no per-row JS).
 */

const ISO_LOCAL = `'YYYY-MM-DD"T"HH24:MI:SS.US'`;

/** ISO 8601 text of a timestamptz: `...Z` in UTC, or the zone's offset (`+02:00`) otherwise. */
export function timestampSql(expr: string, timezone: string): string {
  if (timezone === 'UTC') return utcInstantSql(expr);
  const zone = literal(timezone);
  const offset = `((${expr}) AT TIME ZONE ${zone}) - ((${expr}) AT TIME ZONE 'UTC')`;
  return `(to_char((${expr}) AT TIME ZONE ${zone}, ${ISO_LOCAL}) || CASE WHEN ${offset} < interval '0' THEN to_char(${offset}, 'HH24:MI') ELSE '+' || to_char(${offset}, 'HH24:MI') END)`;
}

/** The text of one CSV cell for a value of the given type. */
export function csvCellSql(expr: string, type: FieldType, timezone: string, guard: boolean): string {
  switch (type) {
    case 'timestamp':
      return timestampSql(expr, timezone);
    case 'date':
      return `to_char(${expr}, 'YYYY-MM-DD')`;
    case 'boolean':
      return `CASE WHEN ${expr} THEN 'true' WHEN NOT ${expr} THEN 'false' END`;
    case 'string[]':
    case 'uuid[]':
    case 'number[]':
      return `array_to_json(${expr})::text`;
    case 'json':
      return guard ? csvGuardJsonSql(expr) : `(${expr})::text`;
    case 'string':
      return guard ? csvGuardSql(`(${expr})::text`) : expr;
    case 'uuid':
    case 'integer':
    case 'number':
      return expr;
  }
}

/** The JSON value of a field inside json_build_object: timestamps become ISO text, the rest stay typed. */
export function jsonValueSql(expr: string, type: FieldType, timezone: string): string {
  switch (type) {
    case 'timestamp':
      return timestampSql(expr, timezone);
    case 'date':
      return `to_char(${expr}, 'YYYY-MM-DD')`;
    default:
      return expr;
  }
}

/** COPY options per database output: RFC 4180 CSV, or NDJSON lines passed through CSV mode with
 * quote and delimiter set to control characters that JSON text always escapes, so lines come out raw. */
export const COPY_OPTIONS = {
  csv: 'FORMAT csv',
  ndjson: `FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01'`,
} as const;
