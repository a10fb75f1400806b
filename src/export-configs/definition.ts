import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DatasetDeclaration } from '../datamap/types.ts';
import type { ExportConfig, PackageFileRequest } from '../domain/export-config.ts';
import { invalid } from '../domain/ferry-error.ts';
import type { ExportBody } from '../export-requests/export-body.ts';
import { checkAgainstDataMap, exportConfigFromBody } from '../export-requests/config.ts';

/**
 * A saved export configuration as the product documentation writes it:
 *
 * ```json
 * {"export_name": "VIP Customer Conversations",
 *  "filters": {"customer_segments": ["enterprise", "vip"], "satisfaction_score": {"min": 4},
 *              "conversation_value": {"min": 1000}},
 *  "columns": ["conversation_id", "customer_name", "start_timestamp", "satisfaction_score",
 *              "attributed_revenue", "escalated"],
 *  "format": "csv", "schedule": "weekly"}
 * ```
 *
 * The first data type (default `conversations`) is the selection: `filters` are its filters
 * (a range `{"min", "max"}` becomes the dataset's two declared filters), `columns` its
 * columns, including related columns (`attributed_revenue`). Every further data type,
 * `include_messages` (CSV: a second file), `join_with` and `aggregations` become files of a
 * package narrowed to the rows the selection chose. Definitions: docs/export-configs.md.
 */
export interface SavedConfigDefinition {
  export_name: string;
  description?: string;
  data_types?: string[];
  filters?: Record<string, FilterInput>;
  columns?: string[];
  format?: string;
  compression?: string;
  package?: 'zip' | 'tar.gz';
  pii?: string;
  timezone?: string;
  from?: string;
  to?: string;
  include_messages?: boolean;
  annotations?: Partial<Record<AnnotationName, boolean>>;
  join_with?: string;
  aggregations?: string[];
  /** How often the configuration runs on its own: daily, weekly, monthly or a cron expression. */
  schedule?: string;
  /** Output shaping, passed to the export as given (docs/output-shaping.md). */
  [shaping: string]: unknown;
}

export type FilterInput = string | number | boolean | string[] | { min?: number; max?: number };

/** The annotations a configuration can ask for, and the related column each adds. */
export const ANNOTATIONS = {
  resolution_notes: 'resolution_notes',
  follow_up_required: 'follow_up_required',
} as const;
export type AnnotationName = keyof typeof ANNOTATIONS;

/** What `join_with` accepts: datasets whose rows follow the selection into the package. */
export const JOINS = ['marketing_campaigns'] as const;
/** What `aggregations` accepts: datasets computed over the selection. */
export const AGGREGATIONS = ['daily_totals', 'channel_performance'] as const;

/** The export options a configuration passes through unchanged (besides its own fields). */
export const PASSED_THROUGH = [
  'rename',
  'convert',
  'locale',
  'currency',
  'delimiter',
  'decimal_separator',
  'calculated',
] as const;

export const DEFINITION_FIELDS = [
  'export_name',
  'description',
  'data_types',
  'filters',
  'columns',
  'format',
  'compression',
  'package',
  'pii',
  'timezone',
  'from',
  'to',
  'include_messages',
  'annotations',
  'join_with',
  'aggregations',
  'schedule',
  ...PASSED_THROUGH,
] as const;

const SCHEDULES = ['daily', 'weekly', 'monthly'] as const;

function stringList(value: unknown, field: string, max = 50): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v === '' || v.length > 200))
    throw invalid(field, 'must be a list of names');
  if (value.length > max) throw invalid(field, `lists at most ${max} names`);
  return value as string[];
}

/** Checks the shape of a definition (not yet against the data map): unknown fields name the allowed ones. */
export function parseDefinition(raw: unknown): SavedConfigDefinition {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw invalid('definition', 'must be an object such as {"export_name": "…", "filters": {…}}');
  const def = raw as Record<string, unknown>;
  for (const key of Object.keys(def))
    if (!(DEFINITION_FIELDS as readonly string[]).includes(key))
      throw invalid(key, 'is not a field of an export configuration', DEFINITION_FIELDS);
  const name = def.export_name;
  if (typeof name !== 'string' || name.trim() === '')
    throw invalid('export_name', 'is required: the name of the configuration');
  if (name.length > 200) throw invalid('export_name', 'must be at most 200 characters');
  if (def.description !== undefined && (typeof def.description !== 'string' || def.description.length > 2000))
    throw invalid('description', 'must be text of at most 2000 characters');
  if (def.data_types !== undefined) stringList(def.data_types, 'data_types', 20);
  if (def.columns !== undefined) stringList(def.columns, 'columns', 200);
  if (def.aggregations !== undefined) stringList(def.aggregations, 'aggregations', 10);
  for (const key of ['format', 'compression', 'pii', 'timezone', 'from', 'to', 'join_with', 'schedule'])
    if (def[key] !== undefined && (typeof def[key] !== 'string' || (def[key] as string).length > 200))
      throw invalid(key, 'must be text');
  if (def.package !== undefined && def.package !== 'zip' && def.package !== 'tar.gz')
    throw invalid('package', `unknown package "${String(def.package)}"`, ['zip', 'tar.gz']);
  if (def.include_messages !== undefined && typeof def.include_messages !== 'boolean')
    throw invalid('include_messages', 'must be true or false');
  if (
    def.filters !== undefined &&
    (typeof def.filters !== 'object' || def.filters === null || Array.isArray(def.filters))
  )
    throw invalid('filters', 'must be an object of filters by name');
  if (def.annotations !== undefined) {
    if (typeof def.annotations !== 'object' || def.annotations === null || Array.isArray(def.annotations))
      throw invalid(
        'annotations',
        'must be an object such as {"resolution_notes": true}',
        Object.keys(ANNOTATIONS),
      );
    for (const [key, value] of Object.entries(def.annotations)) {
      if (!(key in ANNOTATIONS))
        throw invalid(`annotations.${key}`, 'is not an annotation', Object.keys(ANNOTATIONS));
      if (typeof value !== 'boolean') throw invalid(`annotations.${key}`, 'must be true or false');
    }
  }
  if (def.schedule !== undefined) scheduleOf(def as unknown as SavedConfigDefinition);
  return { ...(def as SavedConfigDefinition), export_name: name.trim() };
}

/** The configuration's own schedule as a frequency name or a cron expression, or null. */
export function scheduleOf(def: SavedConfigDefinition): string | null {
  const schedule = def.schedule;
  if (schedule === undefined) return null;
  const text = schedule.trim();
  if ((SCHEDULES as readonly string[]).includes(text)) return text;
  if (text.split(/\s+/).length === 5) return text;
  throw invalid(
    'schedule',
    `"${schedule}" is not a schedule: daily, weekly, monthly or a cron expression`,
    SCHEDULES,
  );
}

/** The filters of one value: a scalar or a list as they are, a range as its declared two filters. */
function datasetFilters(
  dataset: DatasetDeclaration,
  filters: Record<string, FilterInput>,
): Record<string, string> {
  const out: Record<string, string> = {};
  const ranges = dataset.ranges ?? {};
  const allowed = () => [...dataset.filters.map((f) => f.name), ...Object.keys(ranges)];
  for (const [name, value] of Object.entries(filters)) {
    const field = `filters.${name}`;
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
      const range = ranges[name];
      if (!range)
        throw invalid(
          field,
          `is not a range of ${dataset.name}`,
          Object.keys(ranges).length ? Object.keys(ranges) : ['(none)'],
        );
      for (const key of Object.keys(value))
        if (key !== 'min' && key !== 'max')
          throw invalid(`${field}.${key}`, 'a range has min and max', ['min', 'max']);
      for (const bound of ['min', 'max'] as const) {
        const given = value[bound];
        if (given === undefined) continue;
        if (typeof given !== 'number' || !Number.isFinite(given))
          throw invalid(`${field}.${bound}`, 'must be a number');
        out[range[bound]] = String(given);
      }
      continue;
    }
    if (!dataset.filters.some((f) => f.name === name))
      throw invalid(field, `is not a filter of ${dataset.name}`, allowed());
    if (Array.isArray(value)) {
      if (value.some((v) => typeof v !== 'string' || v.includes(',')))
        throw invalid(field, 'list items must be texts without commas');
      if (value.length === 0) throw invalid(field, 'needs at least one value');
      out[name] = value.join(',');
    } else if (['string', 'number', 'boolean'].includes(typeof value)) out[name] = String(value);
    else throw invalid(field, 'must be a value, a list or a range {"min", "max"}');
  }
  return out;
}

/** The body fields of the export a definition passes through unchanged (output shaping). */
function passedThrough(def: SavedConfigDefinition): Partial<ExportBody> {
  const out: Record<string, unknown> = {};
  for (const key of PASSED_THROUGH) if (def[key] !== undefined) out[key] = def[key];
  return out as Partial<ExportBody>;
}

/**
 * The export a definition runs, validated against the data map: one file when it selects
 * rows of one dataset and nothing else (JSON and XML nest the messages), otherwise a package
 * of the selection's file and one file per further data type, `include_messages` (CSV),
 * `join_with` and aggregation, each narrowed to the selection.
 */
export function compileDefinition(tenantId: string, def: SavedConfigDefinition): ExportConfig {
  const dataTypes = def.data_types?.length ? [...new Set(def.data_types)] : ['conversations'];
  const primaryName = dataTypes[0]!;
  const primary = REFERENCE_DATAMAP.datasets[primaryName];
  if (!primary)
    throw invalid(
      'data_types[0]',
      `unknown data type "${primaryName}"`,
      Object.keys(REFERENCE_DATAMAP.datasets),
    );
  if (primary.kind !== 'table')
    throw invalid(
      'data_types[0]',
      `the first data type chooses the rows; ${primaryName} is a report, not a table of rows`,
      tableDatasets(),
    );
  const filters = datasetFilters(primary, def.filters ?? {});
  const format = def.format ?? 'csv';
  const nests = format === 'json' || format === 'xml' || format === 'ndjson' || format === 'parquet';

  // The selection's columns: as given (or all), plus annotations and nested messages.
  const extra: string[] = [];
  for (const [name, wanted] of Object.entries(def.annotations ?? {}))
    if (wanted) extra.push(ANNOTATIONS[name as AnnotationName]);
  const messagesNested = def.include_messages === true && nests;
  if (messagesNested) extra.push('messages');
  if ((extra.length || def.join_with) && primaryName !== 'conversations')
    throw invalid(extra.length ? 'annotations' : 'join_with', 'applies to configurations of conversations', [
      'conversations',
    ]);
  if (def.join_with !== undefined && !(JOINS as readonly string[]).includes(def.join_with))
    throw invalid('join_with', `unknown join "${def.join_with}"`, JOINS);
  if (def.join_with) extra.push('campaign');
  let columns: string[] | null = def.columns?.length ? [...def.columns] : null;
  if (extra.length) {
    const base = columns ?? primary.fields.filter((f) => !f.enrichment).map((f) => f.name);
    columns = [...base, ...extra.filter((c) => !base.includes(c))];
  }

  const related = { dataset: primaryName, filters };
  const others: PackageFileRequest[] = [];
  for (const [i, name] of dataTypes.slice(1).entries()) {
    const dataset = REFERENCE_DATAMAP.datasets[name];
    if (!dataset)
      throw invalid(
        `data_types[${i + 1}]`,
        `unknown data type "${name}"`,
        Object.keys(REFERENCE_DATAMAP.datasets),
      );
    if (!dataset.related?.[primaryName])
      throw invalid(
        `data_types[${i + 1}]`,
        `${name} cannot follow a selection of ${primaryName}`,
        followers(primaryName),
      );
    others.push(entry(name, name, { related }));
  }
  if (def.include_messages && !messagesNested) {
    if (!REFERENCE_DATAMAP.datasets.messages?.related?.[primaryName])
      throw invalid('include_messages', `applies to configurations of conversations`, ['conversations']);
    if (!dataTypes.includes('messages')) others.push(entry('messages', 'messages', { related }));
  }
  if (def.join_with && !dataTypes.includes(def.join_with))
    others.push(entry(def.join_with, def.join_with, { related }));
  for (const [i, name] of (def.aggregations ?? []).entries()) {
    if (!(AGGREGATIONS as readonly string[]).includes(name))
      throw invalid(`aggregations[${i}]`, `unknown aggregation "${name}"`, AGGREGATIONS);
    if (primaryName !== 'conversations')
      throw invalid(`aggregations[${i}]`, 'aggregates conversations', ['conversations']);
    others.push(entry(`aggregations/${name}`, name, { filters }));
  }

  const shaping = passedThrough(def);
  const body: ExportBody = {
    datasets: [primaryName],
    format: format as NonNullable<ExportBody['format']>,
    ...(def.pii ? { pii: def.pii as NonNullable<ExportBody['pii']> } : {}),
    ...(def.from ? { from: def.from } : {}),
    ...(def.to ? { to: def.to } : {}),
  };
  if (others.length === 0) {
    return exportConfigFromBody(tenantId, {
      ...body,
      ...shaping,
      filters,
      ...(columns ? { columns } : {}),
      ...(def.compression ? { compression: def.compression as NonNullable<ExportBody['compression']> } : {}),
      ...(def.timezone ? { timezone: def.timezone } : {}),
      ...(def.package ? { package: def.package } : {}),
    });
  }
  const shaped = Object.keys(shaping);
  if (shaped.length)
    throw invalid(
      shaped[0]!,
      'output shaping applies to a configuration of one file; this one writes a package of several files',
    );
  if (def.compression)
    throw invalid(
      'compression',
      'a configuration of several files is a package; the package is the compression',
    );
  const kind = def.package ?? 'zip';
  const files: PackageFileRequest[] = [
    { path: primaryName, dataset: primaryName, filters, columns, options: {}, related: null },
    ...others,
  ];
  const { datasets: _one, ...packaged } = exportConfigFromBody(tenantId, { ...body, package: kind });
  return checkAgainstDataMap(tenantId, {
    ...packaged,
    datasets: files.map((f) => f.dataset),
    timezone: def.timezone ?? null,
    files,
  });
}

function entry(
  path: string,
  dataset: string,
  narrowing: { related?: PackageFileRequest['related']; filters?: Record<string, string> },
): PackageFileRequest {
  return {
    path,
    dataset,
    filters: narrowing.filters ?? {},
    columns: null,
    options: {},
    related: narrowing.related ?? null,
  };
}

const tableDatasets = () =>
  Object.values(REFERENCE_DATAMAP.datasets)
    .filter((d) => d.kind === 'table')
    .map((d) => d.name);

const followers = (primary: string) =>
  Object.values(REFERENCE_DATAMAP.datasets)
    .filter((d) => d.related?.[primary] !== undefined)
    .map((d) => d.name);
