import { literal, quoteIdent } from '../db/database.ts';
import type { ColumnClass, DatasetDeclaration, DatasetField, FieldType } from '../datamap/types.ts';
import { COLUMN_CLASSES } from '../datamap/types.ts';
import type { CalculatedFieldConfig, ExportConfig } from '../domain/export-config.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { type ExpressionColumn, type ExpressionType, compileExpression } from './expressions.ts';
import { csvCellSql, jsonTextSql } from './render-sql.ts';

/**
 * Output shaping of a single-dataset export (docs/output-shaping.md): output names (`rename`),
 * column order (`columns`, which may name calculated fields), conversions (`convert`),
 * calculated fields (`calculated`, see expressions.ts), and for CSV a `locale` for dates,
 * timestamps and numbers, a `currency` for the dataset's money columns, the `delimiter` and
 * the `decimal_separator`. Everything becomes SQL inside the export's one SELECT; the
 * locale's patterns are read from `Intl` when the request is checked and compiled into
 * `to_char` patterns and separators, each a `literal()`.
 */

export const CSV_DELIMITERS = [',', ';', '\t', '|'] as const;
export type CsvDelimiter = (typeof CSV_DELIMITERS)[number];
export const DECIMAL_SEPARATORS = ['.', ','] as const;
export type DecimalSeparator = (typeof DECIMAL_SEPARATORS)[number];
export const CALCULATED_TYPES = ['string', 'integer', 'number', 'boolean', 'date', 'timestamp'] as const;

/** Every conversion, with the field types it applies to and the type it writes. */
export const CONVERSIONS = {
  yes_no: { from: ['boolean'], to: 'string' },
  one_zero: { from: ['boolean'], to: 'string' },
  true_false: { from: ['boolean'], to: 'string' },
  'fixed:N': { from: ['integer', 'number'], to: 'string' },
  date: { from: ['timestamp'], to: 'date' },
  epoch_seconds: { from: ['timestamp', 'date'], to: 'integer' },
  epoch_millis: { from: ['timestamp', 'date'], to: 'integer' },
} as const satisfies Record<string, { from: readonly FieldType[]; to: FieldType }>;
type ConversionName = keyof typeof CONVERSIONS;

export const MAX_CALCULATED = 20;
const MAX_NAME_LENGTH = 63;
const MAX_LOCALE_LENGTH = 35;
/** Output names: ASCII letters, digits, `_`, space and `-`, starting with a letter or `_`. */
const OUTPUT_NAME = /^[A-Za-z_](?:[A-Za-z0-9_ -]*[A-Za-z0-9_-])?$/;
/** XML element names are output names without spaces, and not starting with `xml`. */
const XML_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** Shaping as a request, API body or stored export names it. */
export interface ShapingInput {
  rename?: Readonly<Record<string, string>> | null | undefined;
  convert?: Readonly<Record<string, string>> | null | undefined;
  calculated?: readonly CalculatedFieldConfig[] | null | undefined;
  locale?: string | null | undefined;
  currency?: string | null | undefined;
  delimiter?: string | null | undefined;
  decimal_separator?: string | null | undefined;
}

/** A locale's CSV patterns, read from `Intl` when the request is checked. */
export interface LocalePatterns {
  /** `to_char` patterns of a date and of a timestamp (to the second, 24-hour clock). */
  readonly date: string;
  readonly timestamp: string;
  /** Money columns in the request's currency. */
  readonly money: MoneyPattern | null;
}

export interface MoneyPattern {
  readonly digits: number;
  readonly decimal: string;
  readonly positive: readonly [string, string];
  readonly negative: readonly [string, string];
}

/** Shaping as checked: what the query builder compiles. */
export interface OutputShaping {
  readonly rename: Readonly<Record<string, string>>;
  readonly convert: Readonly<Record<string, string>>;
  readonly calculated: readonly CalculatedFieldConfig[];
  readonly locale: string | null;
  readonly currency: string | null;
  /** CSV only (null for other formats). */
  readonly delimiter: CsvDelimiter | null;
  readonly decimalSeparator: DecimalSeparator | null;
  readonly patterns: LocalePatterns | null;
}

/** The shaping fields of any object that carries them under their public names. */
export function shapingInputOf(source: ShapingInput): ShapingInput {
  return {
    rename: source.rename,
    convert: source.convert,
    calculated: source.calculated,
    locale: source.locale,
    currency: source.currency,
    delimiter: source.delimiter,
    decimal_separator: source.decimal_separator,
  };
}

/** `column=value` lines into an object; a malformed or repeated key names itself. */
function pairsOf(param: string, values: readonly string[]): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const pair of values) {
    if (pair.trim() === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw invalid(param, `"${pair.slice(0, 80)}" is not column=value`);
    const key = pair.slice(0, eq).trim();
    if (Object.hasOwn(out, key)) throw invalid(param, `"${key}" is given twice`);
    out[key] = pair.slice(eq + 1).trim();
  }
  return Object.keys(out).length ? out : undefined;
}

/**
 * Shaping written as text, as the command line's flags and the dashboard's form give it:
 * `column=name` renames, `column=conversion` conversions, `name=expression` (or
 * `name:type=expression`) calculated fields; `label` names a field in errors.
 */
export function shapingFromPairs(
  input: {
    rename: readonly string[];
    convert: readonly string[];
    calculated: readonly string[];
    locale?: string | undefined;
    currency?: string | undefined;
    delimiter?: string | undefined;
    decimal_separator?: string | undefined;
  },
  label: (field: string) => string,
): ShapingFields {
  const out: ShapingFields = {};
  const rename = pairsOf(label('rename'), input.rename);
  if (rename) out.rename = rename;
  const convert = pairsOf(label('convert'), input.convert);
  if (convert) out.convert = convert;
  const calculated = input.calculated
    .filter((text) => text.trim() !== '')
    .map((text) => {
      const m = /^([^=:]+?)(?::([a-z]+))?=(.+)$/s.exec(text.trim());
      if (!m)
        throw invalid(
          label('calculated'),
          `"${text.slice(0, 80)}" is not name=expression (or name:type=expression)`,
        );
      const type = m[2] as CalculatedFieldConfig['type'];
      return { name: m[1]!.trim(), expression: m[3]!.trim(), ...(type ? { type } : {}) };
    });
  if (calculated.length) out.calculated = calculated;
  if (input.locale) out.locale = input.locale;
  if (input.currency) out.currency = input.currency;
  if (input.delimiter) out.delimiter = input.delimiter;
  if (input.decimal_separator) out.decimal_separator = input.decimal_separator;
  return out;
}

/** The shaping fields of an export request, by their public names. */
export type ShapingFields = Pick<
  ExportConfig,
  'rename' | 'convert' | 'calculated' | 'locale' | 'currency' | 'delimiter' | 'decimal_separator'
>;

/** Names of the calculated fields asked for, which `columns` may list. */
export function calculatedNames(input: ShapingInput | undefined): string[] {
  return (input?.calculated ?? []).map((c) => c.name);
}

function checkOutputName(param: string, name: string, format: string): void {
  if (
    typeof name !== 'string' ||
    name.length === 0 ||
    name.length > MAX_NAME_LENGTH ||
    !OUTPUT_NAME.test(name)
  )
    throw invalid(
      param,
      `"${String(name).slice(0, 80)}" is not an output name: 1 to ${MAX_NAME_LENGTH} ASCII letters, digits, "_", "-" and inner spaces, starting with a letter or "_"`,
    );
  if (format === 'xml' && (!XML_NAME.test(name) || /^xml/i.test(name)))
    throw invalid(param, `"${name}" is not an XML element name (no spaces, not starting with "xml")`);
}

/** `fixed:N` and the named conversions; null when the text is none of them. */
function conversionOf(text: string): { name: ConversionName; digits: number } | null {
  const fixed = /^fixed:(\d{1,2})$/.exec(text);
  if (fixed) {
    const digits = Number(fixed[1]);
    return digits <= 10 ? { name: 'fixed:N', digits } : null;
  }
  if (text === 'fixed:N' || !Object.hasOwn(CONVERSIONS, text)) return null;
  return { name: text as ConversionName, digits: 0 };
}

const CONVERSION_WORDS = Object.keys(CONVERSIONS).map((c) => (c === 'fixed:N' ? 'fixed:0 … fixed:10' : c));

/** The BCP 47 tag in canonical form, if `Intl` can format it. */
function canonicalLocale(text: string): string {
  if (text.length === 0 || text.length > MAX_LOCALE_LENGTH || !/^[A-Za-z0-9-]+$/.test(text))
    throw invalid('locale', `"${text.slice(0, 40)}" is not a BCP 47 language tag (e.g. de-DE, fr-FR, en-US)`);
  let canonical: string;
  try {
    canonical = Intl.getCanonicalLocales(text)[0]!;
  } catch {
    throw invalid('locale', `"${text}" is not a BCP 47 language tag (e.g. de-DE, fr-FR, en-US)`);
  }
  if (
    Intl.DateTimeFormat.supportedLocalesOf([canonical]).length === 0 ||
    Intl.NumberFormat.supportedLocalesOf([canonical]).length === 0
  )
    throw invalid('locale', `"${text}" is not a locale Ferry can format (e.g. de-DE, fr-FR, en-US)`);
  return canonical;
}

const TO_CHAR: Partial<Record<Intl.DateTimeFormatPartTypes, string>> = {
  year: 'YYYY',
  month: 'MM',
  day: 'DD',
  hour: 'HH24',
  minute: 'MI',
  second: 'SS',
};

/** A `to_char` pattern from the parts `Intl` formats a sample instant into; literals are quoted. */
function toCharPattern(locale: string, parts: Intl.DateTimeFormatPart[]): string {
  return parts
    .map((part) => {
      if (part.type === 'literal') {
        if (part.value.includes('"') || part.value.includes('\\'))
          throw invalid(
            'locale',
            `${locale} writes dates with a quote or backslash, which Ferry cannot pattern`,
          );
        return `"${part.value}"`;
      }
      const pattern = TO_CHAR[part.type];
      if (!pattern)
        throw invalid(
          'locale',
          `${locale} writes dates with a ${part.type}, which a fixed pattern cannot express`,
        );
      return pattern;
    })
    .join('');
}

/** Latin digits and the Gregorian calendar whatever the tag's extensions say; times to the second, 24-hour. */
const DATE_OPTIONS = {
  calendar: 'gregory',
  numberingSystem: 'latn',
  timeZone: 'UTC',
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
} as const satisfies Intl.DateTimeFormatOptions;
const TIME_OPTIONS = { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' } as const;
/** A sample instant whose parts all differ (23 November 2026, 13:45:56 UTC). */
const SAMPLE = Date.UTC(2026, 10, 23, 13, 45, 56);

/** Where the digits of a formatted amount start and end: what comes before and after them. */
function affixes(parts: Intl.NumberFormatPart[]): [string, string] {
  const digits = (p: Intl.NumberFormatPart) =>
    p.type === 'integer' || p.type === 'decimal' || p.type === 'fraction';
  const first = parts.findIndex(digits);
  const last = parts.findLastIndex(digits);
  const text = (ps: Intl.NumberFormatPart[]) => ps.map((p) => p.value).join('');
  return [text(parts.slice(0, first)), text(parts.slice(last + 1))];
}

/** The formats `Intl` gives the locale, as `to_char` patterns and separators. Exported for tests and docs. */
export function localePatterns(
  locale: string,
  currency: string | null,
): LocalePatterns & { decimal: string } {
  const date = toCharPattern(locale, new Intl.DateTimeFormat(locale, DATE_OPTIONS).formatToParts(SAMPLE));
  const timestamp = toCharPattern(
    locale,
    new Intl.DateTimeFormat(locale, { ...DATE_OPTIONS, ...TIME_OPTIONS }).formatToParts(SAMPLE),
  );
  const number = new Intl.NumberFormat(locale, { numberingSystem: 'latn' }).formatToParts(1.5);
  const decimal = number.find((p) => p.type === 'decimal')?.value ?? '.';
  let money: MoneyPattern | null = null;
  if (currency) {
    const format = new Intl.NumberFormat(locale, {
      style: 'currency',
      currency,
      useGrouping: false,
      numberingSystem: 'latn',
    });
    const positive = format.formatToParts(1234.5);
    money = {
      digits: format.resolvedOptions().maximumFractionDigits ?? 2,
      decimal: positive.find((p) => p.type === 'decimal')?.value ?? decimal,
      positive: affixes(positive),
      negative: affixes(format.formatToParts(-1234.5)),
    };
  }
  return { date, timestamp, money, decimal };
}

/**
 * Checks the shaping of a request against the dataset and the format: every rename, conversion
 * and calculated field, the locale, currency and CSV separators. Undefined when nothing is
 * asked. Errors name the parameter (`rename.<column>`, `calculated[0].expression`, …).
 */
export function parseShaping(
  dataset: DatasetDeclaration,
  format: string,
  input: ShapingInput | undefined,
  columns: readonly string[] | undefined,
): OutputShaping | undefined {
  if (!input) return undefined;
  const rename = { ...(input.rename ?? {}) };
  const convert = { ...(input.convert ?? {}) };
  const calculated = [...(input.calculated ?? [])];
  const csvOnly = {
    locale: input.locale ?? null,
    currency: input.currency ?? null,
    delimiter: input.delimiter ?? null,
    decimal_separator: input.decimal_separator ?? null,
  };
  const asked = Object.entries(csvOnly).filter(([, v]) => v !== null);
  if (!Object.keys(rename).length && !Object.keys(convert).length && !calculated.length && !asked.length)
    return undefined;
  if (dataset.kind !== 'table' && dataset.kind !== 'computed')
    throw invalid(
      'rename',
      `dataset ${dataset.name} is a document, not a table: its output cannot be shaped`,
    );
  if (format !== 'csv' && asked.length)
    throw invalid(
      asked[0]![0],
      `applies to CSV; ${format} writes typed values (ISO 8601 dates and timestamps, numbers as numbers)`,
    );

  // The dataset's fields, and the related columns `columns` names (they exist only when named).
  const fields = [
    ...dataset.fields,
    ...(dataset.relatedFields ?? []).filter((f) => columns?.includes(f.name)),
  ];
  const fieldNames = fields.map((f) => f.name);
  const fieldNamesLower = new Set(fieldNames.map((n) => n.toLowerCase()));

  // Calculated fields: names, then expressions checked against the dataset's fields.
  if (calculated.length > MAX_CALCULATED)
    throw invalid('calculated', `at most ${MAX_CALCULATED} calculated fields, not ${calculated.length}`);
  const columnsForCheck = new Map<string, ExpressionColumn>(
    fields.map((f) => [f.name, { type: f.type, sql: () => 'NULL' }]),
  );
  const calculatedTypes = new Map<string, FieldType>();
  calculated.forEach((c, i) => {
    const param = `calculated[${i}]`;
    checkOutputName(`${param}.name`, c.name, format);
    if (fieldNamesLower.has(c.name.toLowerCase()))
      throw invalid(
        `${param}.name`,
        `"${c.name}" is a column of ${dataset.name}; give the calculated field its own name`,
      );
    if ([...calculatedTypes.keys()].some((n) => n.toLowerCase() === c.name.toLowerCase()))
      throw invalid(`${param}.name`, `"${c.name}" names two calculated fields`);
    if (typeof c.expression !== 'string' || c.expression.trim() === '')
      throw new FerryError('invalid_expression', `${param}.expression: the expression is empty`, {
        parameter: `${param}.expression`,
      });
    const { type } = compileExpression(c.expression, `${param}.expression`, columnsForCheck, 'UTC');
    calculatedTypes.set(c.name, declaredType(param, c, type));
  });

  // Renames: known output columns, names unique (case-insensitively: Parquet and DuckDB fold case).
  const output = columns ? [...columns] : [...fieldNames];
  for (const name of calculatedTypes.keys()) if (!output.includes(name)) output.push(name);
  for (const [column, name] of Object.entries(rename)) {
    const param = `rename.${column}`;
    if (calculatedTypes.has(column))
      throw invalid(param, `"${column}" is a calculated field; name it in calculated[].name instead`);
    if (!fieldNames.includes(column))
      throw invalid('rename', `dataset ${dataset.name} has no column "${column.slice(0, 80)}"`, fieldNames);
    if (!output.includes(column)) throw invalid(param, `"${column}" is not among the requested columns`);
    checkOutputName(param, name, format);
  }
  const finalNames = output.map((n) => rename[n] ?? n);
  const seen = new Map<string, string>();
  output.forEach((source, i) => {
    const name = finalNames[i]!;
    const clash = seen.get(name.toLowerCase());
    if (clash !== undefined)
      throw invalid(
        `rename.${rename[source] !== undefined ? source : clash}`,
        `"${name}" would name two columns (${clash} and ${source})`,
      );
    seen.set(name.toLowerCase(), source);
  });

  // Conversions: a known conversion that fits the column's type.
  for (const [column, text] of Object.entries(convert)) {
    const param = `convert.${column}`;
    const type = fields.find((f) => f.name === column)?.type ?? calculatedTypes.get(column) ?? null;
    if (type === null)
      throw invalid('convert', `dataset ${dataset.name} has no column "${column.slice(0, 80)}"`, [
        ...fieldNames,
        ...calculatedTypes.keys(),
      ]);
    if (!output.includes(column)) throw invalid(param, `"${column}" is not among the requested columns`);
    const conversion = typeof text === 'string' ? conversionOf(text) : null;
    if (!conversion)
      throw invalid(param, `unknown conversion "${String(text).slice(0, 40)}"`, CONVERSION_WORDS);
    const accepts = CONVERSIONS[conversion.name].from as readonly FieldType[];
    if (!accepts.includes(type))
      throw invalid(
        param,
        `${text} converts ${accepts.join(' or ')} columns, and ${column} is ${type === 'integer' ? 'an' : 'a'} ${type}`,
      );
  }

  // CSV: locale, currency, delimiter and decimal separator.
  const locale = csvOnly.locale === null ? null : canonicalLocale(csvOnly.locale);
  let currency: string | null = null;
  if (csvOnly.currency !== null) {
    if (
      !/^[A-Z]{3}$/.test(csvOnly.currency) ||
      !Intl.supportedValuesOf('currency').includes(csvOnly.currency)
    )
      throw invalid(
        'currency',
        `"${csvOnly.currency.slice(0, 20)}" is not an ISO 4217 currency code (e.g. EUR, USD)`,
      );
    if (locale === null)
      throw invalid('currency', 'needs a locale, which decides where the symbol and the separators go');
    const money = fields.filter((f) => f.money).map((f) => f.name);
    if (!money.length) throw invalid('currency', `dataset ${dataset.name} has no money columns`);
    currency = csvOnly.currency;
  }
  if (csvOnly.delimiter !== null && !(CSV_DELIMITERS as readonly string[]).includes(csvOnly.delimiter))
    throw invalid('delimiter', `unknown delimiter ${JSON.stringify(csvOnly.delimiter.slice(0, 10))}`, [
      ',',
      ';',
      'tab',
      '|',
    ]);
  if (
    csvOnly.decimal_separator !== null &&
    !(DECIMAL_SEPARATORS as readonly string[]).includes(csvOnly.decimal_separator)
  )
    throw invalid('decimal_separator', `unknown separator "${csvOnly.decimal_separator.slice(0, 10)}"`, [
      ...DECIMAL_SEPARATORS,
    ]);
  let patterns: LocalePatterns | null = null;
  let decimalSeparator: DecimalSeparator | null = null;
  let delimiter: CsvDelimiter | null = null;
  if (format === 'csv') {
    let localeDecimal: string = '.';
    if (locale !== null) {
      const derived = localePatterns(locale, currency);
      patterns = { date: derived.date, timestamp: derived.timestamp, money: derived.money };
      localeDecimal = derived.decimal;
    }
    decimalSeparator =
      (csvOnly.decimal_separator as DecimalSeparator | null) ?? (localeDecimal === ',' ? ',' : '.');
    // Where the decimal separator is a comma, spreadsheets separate list items with ';'.
    delimiter = (csvOnly.delimiter as CsvDelimiter | null) ?? (decimalSeparator === ',' ? ';' : ',');
    if (delimiter === decimalSeparator)
      throw invalid(
        csvOnly.decimal_separator !== null ? 'decimal_separator' : 'delimiter',
        `"${delimiter}" would be both the delimiter and the decimal separator; choose delimiter ";"`,
      );
  }
  return { rename, convert, calculated, locale, currency, delimiter, decimalSeparator, patterns };
}

function declaredType(param: string, c: CalculatedFieldConfig, inferred: ExpressionType): FieldType {
  if (c.type === undefined) return inferred;
  if (!(CALCULATED_TYPES as readonly string[]).includes(c.type))
    throw invalid(`${param}.type`, `unknown type "${String(c.type).slice(0, 20)}"`, CALCULATED_TYPES);
  if (c.type === inferred || (c.type === 'number' && inferred === 'integer')) return c.type;
  const words = inferred === 'integer' ? 'a whole number' : inferred === 'string' ? 'text' : `a ${inferred}`;
  const hint = c.type === 'integer' && inferred === 'number' ? '; wrap it in round()' : '';
  throw new FerryError(
    'invalid_expression',
    `${param}.type: declared ${c.type}, but the expression gives ${words}${hint}`,
    {
      parameter: `${param}.type`,
    },
  );
}

/** One column of the output, in order. */
export interface OutputColumn {
  /** What writers, schemas and the data dictionary see: output name and type, the source's class and description. */
  readonly spec: DatasetField;
  /** The dataset field it shows, or null for a calculated field. */
  readonly source: DatasetField | null;
  /** The conversion (`yes_no`, `fixed:2`, …), or null. */
  readonly conversion: string | null;
  /** A calculated field, its place among them, and the fields its expression may read. */
  readonly calculated: {
    readonly index: number;
    readonly expression: string;
    readonly fields: readonly DatasetField[];
  } | null;
  /** The type of the value before its conversion. */
  readonly valueType: FieldType;
}

/** The most telling class among the fields an expression reads (the catalog lists classes from most to least personal). */
function strongestClass(fields: readonly DatasetField[]): ColumnClass {
  let best = COLUMN_CLASSES.length - 1;
  for (const f of fields) best = Math.min(best, COLUMN_CLASSES.indexOf(f.class));
  return COLUMN_CLASSES[best]!;
}

/**
 * The output columns of an export: `available` fields (the dataset's, as its report narrows
 * them) in the order `columns` gives, renamed and converted, with the calculated fields where
 * `columns` places them (those it does not name come last).
 */
export function shapeColumns(
  available: readonly DatasetField[],
  columns: readonly string[] | undefined,
  shaping: OutputShaping | undefined,
): OutputColumn[] {
  const calculated = shaping?.calculated ?? [];
  const order = columns ? [...columns] : available.map((f) => f.name);
  for (const c of calculated) if (!order.includes(c.name)) order.push(c.name);
  return order.map((name) => {
    const outName = shaping?.rename[name] ?? name;
    const conversion = shaping?.convert[name] ?? null;
    const field = available.find((f) => f.name === name);
    if (field) {
      const spec: DatasetField = conversion
        ? {
            ...field,
            name: outName,
            type: convertedType(conversion, field.type),
            description: `${field.description} Converted: ${conversion}.`,
          }
        : { ...field, name: outName };
      return { spec, source: field, conversion, calculated: null, valueType: field.type };
    }
    const index = calculated.findIndex((c) => c.name === name);
    if (index < 0) throw new FerryError('invalid_parameter', `columns: "${name}" is not part of this export`);
    const c = calculated[index]!;
    const read: DatasetField[] = [];
    const map = new Map<string, ExpressionColumn>(
      available.map((f) => [
        f.name,
        {
          type: f.type,
          sql: () => {
            if (!read.includes(f)) read.push(f);
            return 'NULL';
          },
        },
      ]),
    );
    const { type: inferred } = compileExpression(c.expression, `calculated[${index}].expression`, map, 'UTC');
    const valueType: FieldType = c.type ?? inferred;
    const spec: DatasetField = {
      name,
      type: conversion ? convertedType(conversion, valueType) : valueType,
      class: strongestClass(read),
      description: `Calculated: ${c.expression}${conversion ? ` Converted: ${conversion}.` : ''}`,
      sql: '',
      reads: [...new Set(read.flatMap((f) => f.reads))],
    };
    return {
      spec,
      source: null,
      conversion,
      calculated: { index, expression: c.expression, fields: available },
      valueType,
    };
  });
}

function convertedType(conversion: string, type: FieldType): FieldType {
  const parsed = conversionOf(conversion);
  if (!parsed) throw new FerryError('internal', `unknown conversion ${conversion}`);
  if (!(CONVERSIONS[parsed.name].from as readonly FieldType[]).includes(type))
    throw new FerryError('internal', `conversion ${conversion} does not apply to ${type}`);
  return CONVERSIONS[parsed.name].to;
}

/** What the query builder knows when it renders a column. */
export interface RenderContext {
  readonly timezone: string;
  /** The SQL of a dataset field's value after anonymization. */
  readonly valueOf: (field: DatasetField) => string;
}

/** The SQL of a column's value of type `valueType` (the calculated expression, or the field's own SQL). */
function rawValueSql(column: OutputColumn, ctx: RenderContext): string {
  if (column.source) return ctx.valueOf(column.source);
  const calc = column.calculated!;
  const map = new Map<string, ExpressionColumn>(
    calc.fields.map((f) => [f.name, { type: f.type, sql: () => ctx.valueOf(f) }]),
  );
  const compiled = compileExpression(
    calc.expression,
    `calculated[${calc.index}].expression`,
    map,
    ctx.timezone,
  );
  // A declared number over a whole-number expression is the same value.
  return compiled.sql;
}

/** A number's text with the decimal separator (and nothing else) replaced. */
function decimalText(textSql: string, separator: string): string {
  return separator === '.' ? textSql : `replace(${textSql}, '.', ${literal(separator)})`;
}

/** The converted value: text for booleans and fixed decimals, a date or a whole number for timestamps. */
function convertedSql(
  conversion: string,
  value: string,
  type: FieldType,
  timezone: string,
  decimal: string,
): string {
  const parsed = conversionOf(conversion)!;
  switch (parsed.name) {
    case 'yes_no':
      return `CASE WHEN ${value} THEN 'yes' WHEN NOT ${value} THEN 'no' END`;
    case 'one_zero':
      return `CASE WHEN ${value} THEN '1' WHEN NOT ${value} THEN '0' END`;
    case 'true_false':
      return `CASE WHEN ${value} THEN 'true' WHEN NOT ${value} THEN 'false' END`;
    case 'fixed:N':
      return decimalText(`(round((${value})::numeric, ${literal(parsed.digits)}))::text`, decimal);
    case 'date':
      return `((${value}) AT TIME ZONE ${literal(timezone)})::date`;
    case 'epoch_seconds':
    case 'epoch_millis': {
      const factor = parsed.name === 'epoch_millis' ? ' * 1000' : '';
      // A date is its midnight in the export's zone.
      const instant =
        type === 'date' ? `((${value})::timestamp AT TIME ZONE ${literal(timezone)})` : `(${value})`;
      return `CASE WHEN isfinite(${instant}) THEN floor(extract(epoch from ${instant})${factor})::bigint END`;
    }
  }
}

/** A shaped column's value and its type, before it is rendered as CSV or JSON text. */
function shapedValue(
  column: OutputColumn,
  ctx: RenderContext,
  decimal: string,
): { sql: string; type: FieldType; converted: boolean } {
  const value = rawValueSql(column, ctx);
  if (!column.conversion) return { sql: value, type: column.spec.type, converted: false };
  return {
    sql: convertedSql(column.conversion, value, column.valueType, ctx.timezone, decimal),
    type: column.spec.type,
    converted: true,
  };
}

/** The text of a money amount in the locale's currency pattern (no grouping). */
function moneySql(value: string, money: MoneyPattern): string {
  const digits = (v: string) => decimalText(`(round(${v}, ${literal(money.digits)}))::text`, money.decimal);
  const v = `(${value})::numeric`;
  return (
    `CASE WHEN ${v} < 0 THEN ${literal(money.negative[0])} || ${digits(`abs(${v})`)} || ${literal(money.negative[1])}` +
    ` WHEN ${v} >= 0 THEN ${literal(money.positive[0])} || ${digits(v)} || ${literal(money.positive[1])} END`
  );
}

/** One CSV cell of a column: shaped, then written in the request's locale and separators. */
export function csvColumnSql(
  column: OutputColumn,
  shaping: OutputShaping | undefined,
  ctx: RenderContext,
  guard: boolean,
): string {
  const decimal = shaping?.decimalSeparator ?? '.';
  const { sql, type, converted } = shapedValue(column, ctx, decimal);
  const patterns = shaping?.patterns ?? null;
  // Text a conversion wrote (yes/no, fixed decimals) is Ferry's own and needs no formula guard.
  if (converted && type === 'string') return sql;
  if (patterns && type === 'timestamp') {
    const local = `(${sql}) AT TIME ZONE ${literal(ctx.timezone)}`;
    return `CASE WHEN isfinite(${sql}) THEN to_char(${local}, ${literal(patterns.timestamp)}) END`;
  }
  if (patterns && type === 'date')
    return `CASE WHEN isfinite(${sql}) THEN to_char(${sql}, ${literal(patterns.date)}) END`;
  if (type === 'number') {
    if (patterns?.money && column.source?.money && !converted) return moneySql(sql, patterns.money);
    if (decimal !== '.') return decimalText(`(${sql})::text`, decimal);
  }
  return csvCellSql(sql, type, ctx.timezone, guard);
}

/** One column's JSON text (NDJSON rows for json, ndjson, xml and parquet). */
export function jsonColumnSql(column: OutputColumn, ctx: RenderContext): string {
  const { sql, type } = shapedValue(column, ctx, '.');
  return jsonTextSql(sql, type, ctx.timezone);
}

/** `AS "name"`: output names are checked, and quoted all the same. */
export function columnAlias(column: OutputColumn): string {
  return quoteIdent(column.spec.name);
}

const DELIMITER_SQL: Record<CsvDelimiter, string> = {
  ',': '',
  ';': ", DELIMITER ';'",
  '\t': ", DELIMITER E'\\t'",
  '|': ", DELIMITER '|'",
};

/** COPY options of a CSV export: PostgreSQL's CSV mode with the request's delimiter. */
export function csvCopyOptions(base: string, shaping: OutputShaping | undefined): string {
  return `${base}${DELIMITER_SQL[shaping?.delimiter ?? ',']}`;
}
