import { type JsonSchema, jsonSchemaProperty, type PackageField } from './fields.ts';

export const JSON_SCHEMA_DIALECT = 'https://json-schema.org/draft/2020-12/schema';

export interface JsonSchemaInput {
  /** Dataset name, e.g. `messages`. */
  readonly dataset: string;
  readonly fields: readonly PackageField[];
  readonly title?: string;
  readonly description?: string;
  /** The schema's `$id`, e.g. `schemas/messages.schema.json`. */
  readonly id?: string;
}

/** JSON Schema (2020-12) of one record: every field present, nullable ones may be null, nothing else. */
export function recordJsonSchema(input: JsonSchemaInput): JsonSchema {
  return {
    $schema: JSON_SCHEMA_DIALECT,
    ...(input.id ? { $id: input.id } : {}),
    ...recordBody(input),
  };
}

/**
 * JSON Schema (2020-12) of a JSON export file, `{ "export_metadata": {...}, "data": [record, ...] }`;
 * the record schema sits under `$defs.record`.
 */
export function exportFileJsonSchema(
  input: JsonSchemaInput & { readonly metadata?: JsonSchema },
): JsonSchema {
  return {
    $schema: JSON_SCHEMA_DIALECT,
    ...(input.id ? { $id: input.id } : {}),
    title: `${input.title ?? input.dataset} export`,
    description: `A JSON export of the ${input.dataset} dataset: metadata about the export, then the records.`,
    type: 'object',
    required: ['export_metadata', 'data'],
    properties: {
      export_metadata: input.metadata ?? {
        type: 'object',
        description: 'About the export: tenant, dataset, filters, time of export, row count.',
      },
      data: { type: 'array', items: { $ref: '#/$defs/record' } },
    },
    additionalProperties: false,
    $defs: { record: recordBody(input) },
  };
}

function recordBody(input: JsonSchemaInput): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  for (const field of input.fields) properties[field.name] = jsonSchemaProperty(field);
  return {
    title: input.title ?? input.dataset,
    ...(input.description ? { description: input.description } : {}),
    type: 'object',
    properties,
    required: input.fields.map((f) => f.name),
    additionalProperties: false,
  };
}
