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
  // An infinite timestamp has no offset (the subtraction fails): it is null, as in UTC.
  return `CASE WHEN isfinite(${expr}) THEN to_char((${expr}) AT TIME ZONE ${zone}, ${ISO_LOCAL}) || CASE WHEN ${offset} < interval '0' THEN to_char(${offset}, 'HH24:MI') ELSE '+' || to_char(${offset}, 'HH24:MI') END END`;
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

/**
 * The JSON text of a field's value, never NULL (`null` instead): the same text `row_to_json`
 * gives for the value `jsonValueSql` renders, built by concatenation. `row_to_json` looks up
 * how to render each column's type on every row; a concatenation of per-type expressions
 * fixed when the statement is planned costs PostgreSQL about a third less per row. Text is
 * escaped by `to_json`; ids, timestamps and dates need no escaping and are only quoted.
 */
export function jsonTextSql(expr: string, type: FieldType, timezone: string): string {
  switch (type) {
    case 'timestamp':
    case 'date':
      return `coalesce('"' || ${jsonValueSql(expr, type, timezone)} || '"', 'null')`;
    case 'uuid':
      return `coalesce('"' || (${expr})::text || '"', 'null')`;
    case 'integer':
    case 'json':
      return `coalesce((${expr})::text, 'null')`;
    case 'boolean':
      return `CASE WHEN ${expr} THEN 'true' WHEN NOT ${expr} THEN 'false' ELSE 'null' END`;
    case 'string':
    case 'number':
    case 'string[]':
    case 'uuid[]':
    case 'number[]':
      return `coalesce(to_json(${expr})::text, 'null')`;
  }
}

/** One JSON object per row: `{"name":value,…}` with the fields in order (names are identifiers). */
export function jsonObjectSql(members: readonly { name: string; text: string }[]): string {
  if (members.length === 0) return `'{}'`;
  return members
    .map((m, i) => `${literal(`${i === 0 ? '{' : ','}${JSON.stringify(m.name)}:`)} || ${m.text}`)
    .concat(`'}'`)
    .join(' || ');
}

/** COPY options per database output: RFC 4180 CSV, or NDJSON lines passed through CSV mode with
 * quote and delimiter set to control characters that JSON text always escapes, so lines come out raw. */
export const COPY_OPTIONS = {
  csv: 'FORMAT csv',
  ndjson: `FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01'`,
} as const;
