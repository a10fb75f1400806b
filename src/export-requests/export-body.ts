import { type Static, Type } from 'typebox';
import { COMPRESSIONS } from '../domain/compression.ts';
import { REQUEST_PACKAGE_KINDS } from '../domain/package-kind.ts';
import { MIN_SPLIT_BYTES, SPLIT_SIZE_NAMES } from '../domain/split-size.ts';
import { PII_LEVELS } from '../domain/pii-level.ts';
import { EXPORT_FORMATS } from '../format/types.ts';
import { CALCULATED_TYPES, CSV_DELIMITERS, DECIMAL_SEPARATORS, MAX_CALCULATED } from '../collect/shaping.ts';

/**
 * The body of `POST /api/v1/exports` as a TypeBox schema: the route validates requests
 * against it, and `ExportBody` (its static type) is what the service takes. Declared
 * here rather than in the route so that the service, below the HTTP layer, can name it.
 */

const closed = { additionalProperties: false } as const;

/** Whose data: the API's form of `ExportScope` (src/domain/export-scope.ts). */
export const ScopeSchema = Type.Union(
  [
    Type.Object({ kind: Type.Literal('tenant') }, closed),
    Type.Object(
      { kind: Type.Literal('site'), site_url: Type.String({ minLength: 1, maxLength: 2048 }) },
      closed,
    ),
    Type.Object({ kind: Type.Literal('customer'), customer_id: Type.String({ format: 'uuid' }) }, closed),
    Type.Object(
      { kind: Type.Literal('team_member'), team_member_id: Type.String({ format: 'uuid' }) },
      closed,
    ),
  ],
  { description: 'Whose data: the whole tenant (default), one site, one customer or one team member' },
);

const FilterValue = Type.Union([
  Type.String({ maxLength: 1000 }),
  Type.Number(),
  Type.Boolean(),
  Type.Array(Type.String({ maxLength: 200 }), { maxItems: 100 }),
]);

/** The output shaping fields (docs/output-shaping.md), shared by the body and the request view. */
export const SHAPING_SCHEMAS = {
  rename: Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 64 }), {
    maxProperties: 200,
    description:
      'Output names by column: `{"customer_email": "Email"}`. ASCII letters, digits, `_`, `-` and inner spaces (no spaces in XML), unique',
  }),
  convert: Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 32 }), {
    maxProperties: 200,
    description:
      'Conversions by column: `yes_no`, `one_zero`, `true_false` (booleans), `fixed:0`…`fixed:10` (numbers), `date`, `epoch_seconds`, `epoch_millis` (timestamps); see docs/output-shaping.md',
    examples: [{ escalated: 'yes_no', satisfaction_score: 'fixed:1' }],
  }),
  calculated: Type.Array(
    Type.Object(
      {
        name: Type.String({ minLength: 1, maxLength: 64 }),
        expression: Type.String({ minLength: 1, maxLength: 500 }),
        type: Type.Optional(Type.Enum(CALCULATED_TYPES)),
      },
      closed,
    ),
    {
      maxItems: MAX_CALCULATED,
      description:
        'Calculated fields: an expression over the columns (`+ - * /`, comparisons, `and or not`, `coalesce`, `round`, `abs`, `year`…`weekday`, `if`, `concat`), compiled to SQL; `columns` may place them by name',
      examples: [
        [
          {
            name: 'customer_share',
            expression: 'round(customer_message_count / message_count * 100, 1)',
          },
        ],
      ],
    },
  ),
  locale: Type.String({
    maxLength: 35,
    description: 'CSV: BCP 47 locale for dates, timestamps and numbers (e.g. de-DE, fr-FR, en-US)',
    examples: ['de-DE'],
  }),
  currency: Type.String({
    maxLength: 16,
    description: "CSV with a locale: ISO 4217 currency of the dataset's money columns (e.g. EUR)",
  }),
  delimiter: Type.Enum(CSV_DELIMITERS, {
    description: 'CSV: the delimiter (default `,`; `;` when the decimal separator is `,`)',
  }),
  decimal_separator: Type.Enum(DECIMAL_SEPARATORS, {
    description: "CSV: the decimal separator of numbers (default the locale's, else `.`)",
  }),
};

export const ExportBodySchema = Type.Object(
  {
    datasets: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
      minItems: 1,
      maxItems: 20,
      description: 'Dataset names (see `ferry datamap`); several datasets make a package',
      examples: [['conversations']],
    }),
    scope: Type.Optional(ScopeSchema),
    format: Type.Optional(
      Type.Enum([...EXPORT_FORMATS, 'markdown'], {
        description: 'File format; for a package, the format of its tabular files (default csv)',
      }),
    ),
    compression: Type.Optional(
      Type.Enum(COMPRESSIONS, { description: 'Compression (single-dataset exports)' }),
    ),
    package: Type.Optional(
      Type.Enum(REQUEST_PACKAGE_KINDS, {
        description:
          '`none`: one file; `zip` or `tar.gz`: the company package (default with several datasets)',
      }),
    ),
    split_size: Type.Optional(
      Type.Union([Type.String({ maxLength: 32 }), Type.Integer()], {
        description:
          `A zip or tar.gz package in parts of at most this size: ${SPLIT_SIZE_NAMES.join(', ')} ` +
          `(decimal: 1GB = 1,000,000,000 bytes) or a byte count from ${MIN_SPLIT_BYTES} (1 MiB) to 50000000000. ` +
          'Each part is a complete archive of whole files; a manifest lists which files each part holds',
        examples: ['2GB'],
      }),
    ),
    from: Type.Optional(
      Type.String({ maxLength: 40, description: 'Start date (YYYY-MM-DD) or ISO 8601 timestamp' }),
    ),
    to: Type.Optional(
      Type.String({ maxLength: 40, description: 'End date, inclusive, or ISO 8601 timestamp' }),
    ),
    filters: Type.Optional(
      Type.Record(Type.String({ maxLength: 64 }), FilterValue, { description: 'Dataset filters by name' }),
    ),
    columns: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 200 })),
    pii: Type.Optional(
      Type.Enum(PII_LEVELS, { description: 'Personal data: full, or an anonymization level' }),
    ),
    timezone: Type.Optional(
      Type.String({ maxLength: 64, description: 'IANA time zone for timestamps and days' }),
    ),
    options: Type.Optional(Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 1000 }))),
    bom: Type.Optional(Type.Boolean({ description: 'CSV: start with a UTF-8 byte-order mark' })),
    csv_guard: Type.Optional(
      Type.Boolean({ description: 'CSV: neutralise spreadsheet formulas (default true)' }),
    ),
    rename: Type.Optional(SHAPING_SCHEMAS.rename),
    convert: Type.Optional(SHAPING_SCHEMAS.convert),
    calculated: Type.Optional(SHAPING_SCHEMAS.calculated),
    locale: Type.Optional(SHAPING_SCHEMAS.locale),
    currency: Type.Optional(SHAPING_SCHEMAS.currency),
    delimiter: Type.Optional(SHAPING_SCHEMAS.delimiter),
    decimal_separator: Type.Optional(SHAPING_SCHEMAS.decimal_separator),
    encryption: Type.Optional(
      Type.Object(
        {
          recipients: Type.Array(Type.String({ maxLength: 2000 }), {
            minItems: 1,
            maxItems: 20,
            description: 'age public keys (`age1…`); the file is encrypted so that any of them decrypts it',
          }),
        },
        closed,
      ),
    ),
  },
  closed,
);

/** The body of `POST /api/v1/exports`, as its schema validated it. */
export type ExportBody = Static<typeof ExportBodySchema>;
