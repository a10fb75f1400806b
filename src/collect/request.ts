import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, DatasetDeclaration, DatasetFilter } from '../datamap/types.ts';
import { EXPORT_FORMATS, type ExportFormat } from '../format/types.ts';
import { COMPRESSIONS, type Compression } from '../domain/compression.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import type { ExportScope } from '../domain/export-scope.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { DEFAULT_PII_LEVEL, PII_LEVELS, type PiiLevel } from '../domain/pii-level.ts';
import {
  calculatedNames,
  type OutputShaping,
  parseShaping,
  type ShapingInput,
  shapingInputOf,
} from './shaping.ts';

/** A validated request to export one dataset of one tenant. */
export interface ExportRequest {
  readonly tenantId: string;
  readonly dataset: string;
  readonly format: ExportFormat | 'markdown';
  readonly compression: Compression;
  /** Filter values by filter name, already validated against the dataset's declared filters. */
  readonly filters: Readonly<Record<string, FilterValue>>;
  /** Output columns in order; all declared fields when absent. */
  readonly columns: readonly string[] | undefined;
  readonly pii: PiiLevel;
  /** IANA zone for timestamps and date filters; the tenant's zone when absent. */
  readonly timezone: string | undefined;
  /** CSV: formula-injection guard (on by default). */
  readonly csvGuard: boolean;
  /** CSV: byte-order mark for Excel. */
  readonly bom: boolean;
  /** Parquet: Hive-style partitioning by date. */
  readonly partitionByDate: boolean;
  /** Values of the dataset's declared parameters (analytics granularity/metrics, attribution model, embeddings). */
  readonly options: Readonly<Record<string, string>>;
  /** Narrows the export to one site, one customer (a data subject) or one team member's conversations. */
  readonly scope?: ExportScope | undefined;
  /** A data subject's own rows only (their access package); set by the privacy code, never by a caller's input. */
  readonly subject?: SubjectRows | undefined;
  /**
   * Only the rows related to a selection of another dataset (the messages of the
   * conversations a saved configuration chose), along the dataset's declared `related`.
   */
  readonly related?: RelatedSelection | undefined;
  /** Renames, conversions, calculated fields, locale and CSV separators (src/collect/shaping.ts). */
  readonly shaping?: OutputShaping | undefined;
}

/** The rows of another dataset chosen by its filters, which an export is narrowed to. */
export interface RelatedSelection {
  readonly dataset: string;
  readonly filters: Readonly<Record<string, FilterValue>>;
}

/**
 * The rows of one data subject in one dataset: the SQL condition over the dataset's FROM
 * aliases that the data map's subject links give, and the subject's own email addresses
 * and phone numbers, which free text keeps while everyone else's are replaced.
 */
export interface SubjectRows {
  readonly condition: string;
  readonly keepEmails: readonly string[];
  readonly keepPhones: readonly string[];
}

export type FilterValue = string | number | boolean | readonly string[];

/** Loosely typed input as it arrives from the CLI or the API. */
export interface ExportInput {
  tenantId: string;
  dataset: string;
  format?: string | undefined;
  compression?: string | undefined;
  filters?: Record<string, string | undefined> | undefined;
  from?: string | undefined;
  to?: string | undefined;
  columns?: string | readonly string[] | undefined;
  pii?: string | undefined;
  timezone?: string | undefined;
  csvGuard?: boolean | undefined;
  bom?: boolean | undefined;
  partitionByDate?: boolean | undefined;
  options?: Record<string, string | undefined> | undefined;
  scope?: ExportScope | undefined;
  related?: { dataset: string; filters: Readonly<Record<string, string>> } | null | undefined;
  /** Output shaping under its public names (`rename`, `convert`, `calculated`, `locale`, …). */
  shaping?: ShapingInput | undefined;
}

function oneOf<T extends string>(
  param: string,
  value: string | undefined,
  accepted: readonly T[],
  fallback: T,
): T {
  if (value === undefined || value === '') return fallback;
  if (!(accepted as readonly string[]).includes(value))
    throw invalid(param, `unknown value "${value}"`, accepted);
  return value as T;
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

/** True for a real calendar day: `2024-02-29` yes, `2024-02-30` no. */
export function isCalendarDate(text: string): boolean {
  const date = new Date(`${text}T00:00:00Z`);
  return !Number.isNaN(date.getTime()) && date.toISOString().slice(0, 10) === text;
}

export function isValidTimezone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

const ZONE_SLACK_MS = 14 * 3_600_000;

/**
 * Refuses a range whose `from` lies after its `to` (an export of nothing, which is
 * never what was meant). Two dates compare as days; a date against a timestamp is taken
 * as the whole day in any time zone, so only a range reversed everywhere is refused.
 */
export function checkRange(from: string | null | undefined, to: string | null | undefined): void {
  if (!from || !to) return;
  const fromDate = DATE.test(from);
  const toDate = DATE.test(to);
  const reversed =
    fromDate && toDate
      ? from > to
      : (fromDate ? Date.parse(`${from}T00:00:00Z`) - ZONE_SLACK_MS : Date.parse(from)) >
        (toDate ? Date.parse(`${to}T00:00:00Z`) + 86_400_000 + ZONE_SLACK_MS : Date.parse(to));
  if (reversed)
    throw invalid(
      'from',
      `"${from}" is after to "${to}": the range is empty; give a from on or before the to`,
    );
}

function parseFilter(dataset: string, filter: DatasetFilter, raw: string): FilterValue {
  const param = filter.name;
  switch (filter.type) {
    case 'string':
      if ((param === 'from' || param === 'to') && !DATE.test(raw) && !DATETIME.test(raw)) {
        throw invalid(param, `"${raw}" is not a date (YYYY-MM-DD) or an ISO 8601 timestamp with offset`);
      }
      if (DATE.test(raw) && !isCalendarDate(raw)) throw invalid(param, `"${raw}" is not a valid date`);
      return raw;
    case 'integer': {
      const n = Number(raw);
      if (!Number.isInteger(n)) throw invalid(param, `"${raw}" is not an integer`);
      return n;
    }
    case 'number': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) throw invalid(param, `"${raw}" is not a number`);
      return n;
    }
    case 'boolean':
      if (raw !== 'true' && raw !== 'false')
        throw invalid(param, `"${raw}" is not a boolean`, ['true', 'false']);
      return raw === 'true';
    case 'enum':
      return oneOf(param, raw, filter.values ?? [], raw);
    case 'string[]': {
      const items = raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      if (!items.length) throw invalid(param, 'needs at least one value');
      return items;
    }
    default:
      throw new FerryError('internal', `dataset ${dataset}: filter ${param} has an unknown type`);
  }
}

function declaredDataset(name: string, map: DataMap, param: string): DatasetDeclaration {
  const dataset = map.datasets[name];
  if (!dataset) throw invalid(param, `unknown dataset "${name}"`, Object.keys(map.datasets));
  return dataset;
}

/**
 * Splits raw values into the dataset's declared filters, typed by their declaration,
 * and its declared parameters; any other name is an error that lists the accepted ones.
 */
function typedFilters(
  dataset: DatasetDeclaration,
  raw: Readonly<Record<string, string | undefined>>,
): { filters: Record<string, FilterValue>; options: Record<string, string> } {
  const filters: Record<string, FilterValue> = {};
  const options: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    const filter = dataset.filters.find((f) => f.name === name);
    if (filter) {
      filters[name] = parseFilter(dataset.name, filter, value);
      continue;
    }
    const parameter = dataset.parameters.find((p) => p.name === name);
    if (parameter) {
      if (parameter.list) {
        const words = value.split(',').map((w) => w.trim());
        for (const word of words)
          if (!parameter.list.includes(word)) throw invalid(name, `unknown value "${word}"`, parameter.list);
        options[name] = words.join(',');
      } else options[name] = parameter.values ? oneOf(name, value, parameter.values, value) : value;
      continue;
    }
    const accepted = [...dataset.filters.map((f) => f.name), ...dataset.parameters.map((p) => p.name)];
    throw invalid(
      'filter',
      `dataset ${dataset.name} has no filter "${name}"`,
      accepted.length ? accepted : ['(none)'],
    );
  }
  checkRange(raw.from, raw.to);
  return { filters, options };
}

/** The raw filter values of an input: its filters, `from` and `to`, and its options, by name. */
function rawFilters(input: {
  filters?: Readonly<Record<string, string | undefined>> | undefined;
  from?: string | undefined;
  to?: string | undefined;
  options?: Readonly<Record<string, string | undefined>> | undefined;
}): Record<string, string | undefined> {
  const raw: Record<string, string | undefined> = { ...input.filters };
  if (input.from !== undefined) raw.from = input.from;
  if (input.to !== undefined) raw.to = input.to;
  for (const [name, value] of Object.entries({ ...input.options })) {
    if (value === undefined) continue;
    raw[name] = value;
  }
  return raw;
}

/** Validates raw input against the data map: unknown datasets, columns, filters and bad values are errors that name them. */
export function parseExportRequest(input: ExportInput, map: DataMap = REFERENCE_DATAMAP): ExportRequest {
  const dataset = declaredDataset(input.dataset, map, 'dataset');
  const defaultFormat = dataset.formats[0] as ExportFormat;
  // A format Ferry knows but this dataset does not have is a different problem from a typo.
  if (
    input.format !== undefined &&
    input.format !== '' &&
    [...EXPORT_FORMATS, 'markdown'].includes(input.format as ExportFormat) &&
    !(dataset.formats as readonly string[]).includes(input.format)
  )
    throw new FerryError(
      'unsupported_format',
      `format: ${dataset.name} exports as ${dataset.formats.join(', ')}, not ${input.format}`,
    );
  const format = oneOf(
    'format',
    input.format,
    dataset.formats as readonly (ExportFormat | 'markdown')[],
    defaultFormat,
  );
  if (!(EXPORT_FORMATS as readonly string[]).includes(format) && format !== 'markdown') {
    throw invalid('format', `unknown format "${format}"`, dataset.formats);
  }
  const compression = oneOf('compression', input.compression, COMPRESSIONS, 'none');
  const pii = oneOf('pii', input.pii, PII_LEVELS, DEFAULT_PII_LEVEL);
  const { filters, options } = typedFilters(dataset, rawFilters(input));

  let columns: string[] | undefined;
  if (input.columns !== undefined && input.columns.length > 0) {
    columns = (typeof input.columns === 'string' ? input.columns.split(',') : [...input.columns]).map((c) =>
      c.trim(),
    );
    const known = [
      ...[...dataset.fields, ...(dataset.relatedFields ?? [])].map((f) => f.name),
      ...calculatedNames(input.shaping),
    ];
    for (const c of columns) {
      if (!known.includes(c)) throw invalid('columns', `dataset ${dataset.name} has no column "${c}"`, known);
    }
    if (new Set(columns).size !== columns.length) throw invalid('columns', 'a column is listed twice');
  }

  if (input.timezone !== undefined && !isValidTimezone(input.timezone)) {
    throw invalid('timezone', `"${input.timezone}" is not an IANA time zone (e.g. Europe/Berlin, UTC)`);
  }
  const related = input.related ? relatedSelection(dataset, input.related, map) : undefined;
  const shaping = parseShaping(dataset, format, input.shaping, columns);
  return {
    tenantId: input.tenantId,
    dataset: dataset.name,
    format,
    compression,
    filters,
    columns,
    pii,
    timezone: input.timezone,
    csvGuard: input.csvGuard ?? true,
    bom: input.bom ?? false,
    partitionByDate: input.partitionByDate ?? false,
    options,
    scope: input.scope,
    ...(related ? { related } : {}),
    ...(shaping ? { shaping } : {}),
  };
}

/** Datasets whose selection `dataset` can be narrowed to (its declared `related`). */
export function relatedDatasets(dataset: DatasetDeclaration): string[] {
  return Object.keys(dataset.related ?? {});
}

/** Checks a related selection: `dataset` declares how it relates to it, and its filters are the other dataset's. */
function relatedSelection(
  dataset: DatasetDeclaration,
  input: { dataset: string; filters: Readonly<Record<string, string>> },
  map: DataMap,
): RelatedSelection {
  const other = declaredDataset(input.dataset, map, 'related.dataset');
  if (!dataset.related?.[other.name])
    throw invalid(
      'related.dataset',
      `dataset ${dataset.name} cannot be narrowed to rows of ${other.name}`,
      relatedDatasets(dataset).length ? relatedDatasets(dataset) : ['(none)'],
    );
  if (other.kind !== 'table')
    throw invalid('related.dataset', `${other.name} is not a table dataset`, ['conversations']);
  const { filters } = typedFilters(other, input.filters);
  return { dataset: other.name, filters };
}

/**
 * The engine's request for a single-dataset export Ferry accepted earlier, whose values
 * `parseExportRequest` checked then (src/export-requests/config.ts). Only what the engine
 * cannot take as stored is done again: the dataset is looked up, and the filter texts are
 * typed by their declarations.
 */
export function acceptedExportRequest(
  tenantId: string,
  config: ExportConfig,
  map: DataMap = REFERENCE_DATAMAP,
): ExportRequest {
  const dataset = declaredDataset(config.datasets[0]!, map, 'datasets');
  const dated = dataset.filters.some((f) => f.name === 'from');
  const from = config.from ?? (dated ? (config.history_from ?? undefined) : undefined);
  const { filters, options } = typedFilters(
    dataset,
    rawFilters({ filters: config.filters, from, to: config.to ?? undefined, options: config.options }),
  );
  // Checked against the dataset's formats when the export was accepted.
  const format = (config.format ?? dataset.formats[0]) as ExportFormat | 'markdown';
  // Checked when the export was accepted too; read again into the engine's form (the locale's patterns).
  const shaping = parseShaping(dataset, format, shapingInputOf(config), config.columns ?? undefined);
  return {
    tenantId,
    dataset: dataset.name,
    format,
    compression: config.compression ?? 'none',
    filters,
    columns: config.columns ?? undefined,
    pii: config.pii,
    timezone: config.timezone ?? undefined,
    csvGuard: config.csv_guard,
    bom: config.bom,
    partitionByDate: false,
    options,
    scope: config.scope,
    ...(config.related
      ? {
          related: {
            dataset: config.related.dataset,
            filters: typedFilters(
              declaredDataset(config.related.dataset, map, 'related.dataset'),
              config.related.filters,
            ).filters,
          },
        }
      : {}),
    ...(shaping ? { shaping } : {}),
  };
}
