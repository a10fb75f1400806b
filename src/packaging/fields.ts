import type { FieldType } from '../datamap/types.ts';
import type { FieldSpec } from '../format/types.ts';

/** A column as the package metadata describes it: a writer's FieldSpec plus optional extras. */
export interface PackageField extends FieldSpec {
  /** False when the value is never null; fields are nullable unless they say otherwise. */
  readonly nullable?: boolean;
  /** An example value, as text. */
  readonly example?: string;
}

export type JsonSchema = { readonly [key: string]: unknown };

/** How each Ferry type is described in a Frictionless Table Schema (Data Package v2). */
const TABLE_TYPES = {
  uuid: { type: 'string', format: 'uuid' },
  string: { type: 'string' },
  integer: { type: 'integer' },
  number: { type: 'number' },
  boolean: { type: 'boolean' },
  timestamp: { type: 'datetime' },
  date: { type: 'date' },
  // A json column may hold an object, an array or a scalar.
  json: { type: 'any' },
  'string[]': { type: 'array', items: { type: 'string' } },
  'uuid[]': { type: 'array', items: { type: 'string', format: 'uuid' } },
  'number[]': { type: 'array', items: { type: 'number' } },
} as const satisfies Record<FieldType, { type: string; format?: string; items?: JsonSchema }>;

/** The JSON writers write float specials as strings (JSON has no NaN or Infinity). */
const JSON_NUMBER = { anyOf: [{ type: 'number' }, { enum: ['NaN', 'Infinity', '-Infinity'] }] };

/** How each Ferry type is described in JSON Schema 2020-12, as the JSON writers render it. */
const JSON_TYPES = {
  uuid: { type: 'string', format: 'uuid' },
  string: { type: 'string' },
  integer: { type: 'integer' },
  number: JSON_NUMBER,
  boolean: { type: 'boolean' },
  timestamp: { type: 'string', format: 'date-time' },
  date: { type: 'string', format: 'date' },
  json: {},
  'string[]': { type: 'array', items: { type: 'string' } },
  'uuid[]': { type: 'array', items: { type: 'string', format: 'uuid' } },
  'number[]': { type: 'array', items: JSON_NUMBER },
} as const satisfies Record<FieldType, JsonSchema>;

/** One Table Schema field descriptor. */
export function tableSchemaField(field: PackageField): Record<string, unknown> {
  const mapped: { type: string; format?: string; items?: JsonSchema } = TABLE_TYPES[field.type];
  const constraints: Record<string, unknown> = {};
  if (field.nullable === false) constraints['required'] = true;
  // Table Schema has no item type for `array`; the JSON Schema constraint carries it.
  if (mapped.items) constraints['jsonSchema'] = { type: 'array', items: mapped.items };
  return {
    name: field.name,
    type: mapped.type,
    ...(mapped.format ? { format: mapped.format } : {}),
    ...(field.description ? { description: field.description } : {}),
    ...(field.example !== undefined ? { example: field.example } : {}),
    ...(Object.keys(constraints).length > 0 ? { constraints } : {}),
  };
}

/** One JSON Schema property; nullable fields also accept `null`. */
export function jsonSchemaProperty(field: PackageField): JsonSchema {
  const mapped: JsonSchema = JSON_TYPES[field.type];
  // Examples are text and would mistype numbers and booleans, so only the description goes along.
  const annotations = field.description ? { description: field.description } : {};
  if (field.nullable === false) return { ...mapped, ...annotations };
  if ('type' in mapped) return { ...mapped, type: [mapped['type'], 'null'], ...annotations };
  if ('anyOf' in mapped)
    return { anyOf: [...(mapped['anyOf'] as JsonSchema[]), { type: 'null' }], ...annotations };
  // `{}` (a json column) already accepts null.
  return { ...mapped, ...annotations };
}
