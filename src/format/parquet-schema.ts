import type { FieldType } from '../datamap/types.ts';
import type { FieldSpec, WriterInput } from './types.ts';

/**
 * Field type → Parquet column, as DuckDB writes it from the SQL type chosen here.
 * Every column is OPTIONAL (a null is a Parquet null).
 *
 * | field type | DuckDB type | Parquet physical | logical (converted) type                  |
 * |------------|-------------|------------------|-------------------------------------------|
 * | uuid       | VARCHAR     | BYTE_ARRAY       | (UTF8); the text form, readable anywhere   |
 * | string     | VARCHAR     | BYTE_ARRAY       | (UTF8)                                     |
 * | integer    | BIGINT      | INT64            | (INT_64)                                   |
 * | number     | DOUBLE      | DOUBLE           |                                            |
 * | boolean    | BOOLEAN     | BOOLEAN          |                                            |
 * | timestamp  | TIMESTAMPTZ | INT64            | TIMESTAMP(MICROS, isAdjustedToUTC) (TIMESTAMP_MICROS) |
 * | date       | DATE        | INT32            | DATE (DATE)                                |
 * | json       | JSON        | BYTE_ARRAY       | JSON (JSON); the JSON text, checked        |
 * | x[]        | x[]         | group            | LIST of OPTIONAL x (3-level list: `list.element`) |
 *
 * The input is read with every column as text (NDJSON: json and list fields as JSON
 * values), and each value is cast in the SELECT. A value that does not fit its type
 * stops the COPY with `field <name>: value <json> is not a valid <type>` (see
 * `FIELD_ERROR`). Timestamps with an offset are converted to UTC; one without an offset
 * is read as UTC (the session's time zone is UTC). PostgreSQL's infinite timestamps and
 * dates, which `to_char` renders as an empty string, become null.
 */

/** A SQL string literal (DuckDB: standard strings, a quote is doubled, backslashes are plain). */
export function sqlString(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/** A quoted SQL identifier. */
export function sqlIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function isList(type: FieldType): boolean {
  return type.endsWith('[]');
}

/** The DuckDB type a field's values are cast to, which decides its Parquet column. */
function duckdbType(type: FieldType): string {
  switch (type) {
    case 'uuid':
    case 'string':
      return 'VARCHAR';
    case 'integer':
      return 'BIGINT';
    case 'number':
      return 'DOUBLE';
    case 'boolean':
      return 'BOOLEAN';
    case 'timestamp':
      return 'TIMESTAMPTZ';
    case 'date':
      return 'DATE';
    case 'json':
      return 'JSON';
    case 'string[]':
    case 'uuid[]':
      return 'VARCHAR[]';
    case 'number[]':
      return 'DOUBLE[]';
  }
}

/** The type a field is read as: text, except NDJSON's json and list values, which stay JSON. */
function readType(type: FieldType, input: WriterInput): 'VARCHAR' | 'JSON' {
  return input === 'ndjson' && (type === 'json' || isList(type)) ? 'JSON' : 'VARCHAR';
}

/** The `columns = {…}` struct of read_csv / read_ndjson: every field, in order, with its read type. */
export function readColumns(fields: readonly FieldSpec[], input: WriterInput): string {
  return `{${fields.map((f) => `${sqlString(f.name)}: '${readType(f.type, input)}'`).join(', ')}}`;
}

/** Prefix of the message a rejected value stops the COPY with; `fieldError` parses it back. */
export const FIELD_ERROR = 'ferry field error: ';

/** `error(…)` naming the field, its value (as JSON, cut at 80 characters) and the expected type. */
function failure(field: FieldSpec, value: string): string {
  const head = sqlString(`${FIELD_ERROR}field ${field.name}: value `);
  return `error(${head} || left(to_json(${value})::VARCHAR, 80) || ${sqlString(` is not a valid ${field.type}`)})`;
}

/** The message of a field error raised by `failure`, or undefined for any other error text. */
export function fieldError(message: string): { message: string; field: string; type: string } | undefined {
  const at = message.indexOf(FIELD_ERROR);
  if (at < 0) return undefined;
  const text = message.slice(at + FIELD_ERROR.length).split('\n', 1)[0]!;
  const m = /^field (.+?): value .* is not a valid (\S+)$/s.exec(text);
  return m ? { message: text, field: m[1]!, type: m[2]! } : undefined;
}

/** The SELECT expression of one field: its read value cast to its DuckDB type, checked. */
function castSql(field: FieldSpec, input: WriterInput): string {
  const v = sqlIdent(field.name);
  const target = duckdbType(field.type);
  const orFail = (expr: string) => `coalesce(${expr}, ${failure(field, v)})`;
  const nullable = (expr: string, nulls = '') =>
    `CASE WHEN ${v} IS NULL${nulls} THEN NULL ELSE ${expr} END AS ${v}`;
  switch (field.type) {
    case 'uuid':
    case 'string':
      return `${v} AS ${v}`;
    case 'integer':
      // TRY_CAST would round "1.5" to 2: only whole numbers get that far ("5.0" is one).
      return nullable(
        orFail(`TRY_CAST(CASE WHEN regexp_full_match(${v}, '-?[0-9]+(\\.0+)?') THEN ${v} END AS BIGINT)`),
      );
    case 'number':
    case 'boolean':
      return nullable(orFail(`TRY_CAST(${v} AS ${target})`));
    case 'timestamp':
    case 'date':
      return nullable(orFail(`TRY_CAST(${v} AS ${target})`), ` OR ${v} IN ('', 'infinity', '-infinity')`);
    case 'json':
      // The cast checks the text and keeps it as it is, so integers of any size keep their digits.
      return input === 'ndjson' ? `${v} AS ${v}` : nullable(orFail(`TRY_CAST(${v} AS JSON)`));
    case 'string[]':
    case 'uuid[]':
    case 'number[]': {
      const json = input === 'ndjson' ? v : `TRY_CAST(${v} AS JSON)`;
      return nullable(orFail(`TRY_CAST(${json} AS ${target})`));
    }
  }
}

/** The SELECT list that turns the read columns into the Parquet columns, in field order. */
export function selectList(fields: readonly FieldSpec[], input: WriterInput): string {
  return fields.map((f) => castSql(f, input)).join(', ');
}
