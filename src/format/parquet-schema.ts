import type { SchemaElement } from 'hyparquet';
import type { FieldType } from '../datamap/types.ts';
import type { FieldSpec } from './types.ts';
import { badValue, isInfinite, parseDateDays, parseTimestampMicros, toDouble, toInt64 } from './values.ts';

/**
 * Field type → Parquet column. Every column is OPTIONAL (a null is a Parquet null).
 *
 * | field type | physical | logical / converted type                    |
 * |------------|----------|---------------------------------------------|
 * | uuid       | BYTE_ARRAY | STRING / UTF8 (text form, readable anywhere) |
 * | string     | BYTE_ARRAY | STRING / UTF8                             |
 * | integer    | INT64    | (signed 64-bit)                               |
 * | number     | DOUBLE   |                                               |
 * | boolean    | BOOLEAN  |                                               |
 * | timestamp  | INT64    | TIMESTAMP(MICROS, isAdjustedToUTC) / TIMESTAMP_MICROS |
 * | date       | INT32    | DATE / DATE                                   |
 * | json       | BYTE_ARRAY | JSON / JSON                                 |
 * | x[]        | group    | LIST of OPTIONAL x (3-level list: `list.element`) |
 */
function leaf(name: string, type: FieldType): SchemaElement {
  const repetition_type = 'OPTIONAL';
  switch (type) {
    case 'uuid':
    case 'string':
    case 'string[]':
    case 'uuid[]':
      return {
        name,
        type: 'BYTE_ARRAY',
        converted_type: 'UTF8',
        logical_type: { type: 'STRING' },
        repetition_type,
      };
    case 'integer':
      return { name, type: 'INT64', repetition_type };
    case 'number':
    case 'number[]':
      return { name, type: 'DOUBLE', repetition_type };
    case 'boolean':
      return { name, type: 'BOOLEAN', repetition_type };
    case 'timestamp':
      return {
        name,
        type: 'INT64',
        converted_type: 'TIMESTAMP_MICROS',
        logical_type: { type: 'TIMESTAMP', isAdjustedToUTC: true, unit: 'MICROS' },
        repetition_type,
      };
    case 'date':
      return { name, type: 'INT32', converted_type: 'DATE', logical_type: { type: 'DATE' }, repetition_type };
    case 'json':
      return {
        name,
        type: 'BYTE_ARRAY',
        converted_type: 'JSON',
        logical_type: { type: 'JSON' },
        repetition_type,
      };
  }
}

function isArray(type: FieldType): boolean {
  return type.endsWith('[]');
}

/** The Parquet schema (flattened, depth-first, root first) of a field list. */
export function parquetSchemaFor(fields: readonly FieldSpec[]): SchemaElement[] {
  const schema: SchemaElement[] = [{ name: 'root', num_children: fields.length }];
  for (const field of fields) {
    if (!isArray(field.type)) {
      schema.push(leaf(field.name, field.type));
      continue;
    }
    schema.push(
      {
        name: field.name,
        repetition_type: 'OPTIONAL',
        converted_type: 'LIST',
        logical_type: { type: 'LIST' },
        num_children: 1,
      },
      { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
      leaf('element', field.type),
    );
  }
  return schema;
}

/** Converts one NDJSON value of a field to what the Parquet encoder stores (null for a null). */
export type ParquetConverter = (value: unknown) => unknown;

export function parquetConverter(field: FieldSpec): ParquetConverter {
  const name = field.name;
  const scalar = (type: FieldType): ParquetConverter => {
    switch (type) {
      case 'uuid':
      case 'string':
      case 'uuid[]':
      case 'string[]':
        return (v) => (typeof v === 'string' ? v : JSON.stringify(v));
      case 'integer':
        return (v) => toInt64(v) ?? fail(v, 'integer');
      case 'number':
      case 'number[]':
        return (v) => toDouble(v) ?? fail(v, 'number');
      case 'boolean':
        return (v) => (typeof v === 'boolean' ? v : fail(v, 'boolean'));
      case 'timestamp':
        return (v) => {
          if (typeof v === 'string' && isInfinite(v)) return null;
          return (typeof v === 'string' ? parseTimestampMicros(v) : undefined) ?? fail(v, 'timestamp');
        };
      case 'date':
        return (v) => {
          if (typeof v === 'string' && isInfinite(v)) return null;
          return (typeof v === 'string' ? parseDateDays(v) : undefined) ?? fail(v, 'date');
        };
      case 'json':
        // Stored as JSON text by the encoder (JSON.stringify; raw big integers stay exact).
        return (v) => v;
    }
  };
  const fail = (value: unknown, type: string): never => {
    throw badValue(name, type, value);
  };
  const convert = scalar(field.type);
  if (!isArray(field.type)) {
    return (v) => (v === null || v === undefined ? null : convert(v));
  }
  return (v) => {
    if (v === null || v === undefined) return null;
    if (!Array.isArray(v)) return fail(v, field.type);
    return v.map((item) => (item === null || item === undefined ? null : convert(item)));
  };
}
