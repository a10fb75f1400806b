import { isDated, REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import { parseTarget, sealTarget } from '../deliver/targets.ts';
import { staticPrefix } from '../deliver/template.ts';
import type { DeliveryTarget } from '../deliver/types.ts';
import { parseExportRequest } from '../collect/request.ts';
import { validatePrefix } from '../store/object-key.ts';
import { COMPRESSIONS, type Compression } from '../domain/compression.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { REQUEST_PACKAGE_KINDS, type RequestPackageKind } from '../domain/package-kind.ts';
import { DEFAULT_PII_LEVEL, PII_LEVELS, type PiiLevel } from '../domain/pii-level.ts';
import type { ExportConfig } from '../domain/export-config.ts';

/**
 * A schedule's configuration: which datasets (each with how its data is selected),
 * the file options, where the files go, who is told, and how long files are kept.
 * Stored in `schedules.config` (targets with sealed secrets) and copied into each run.
 */
export interface ScheduleConfig {
  datasets: ScheduleDataset[];
  /** Default format of the datasets that do not name one; null = each dataset's default. */
  format: string | null;
  compression: Compression;
  package: RequestPackageKind;
  pii: PiiLevel;
  targets: StoredTarget[];
  notifications: Notifications;
  retention: Retention;
  /**
   * `files` (default; absent in schedules stored before layouts existed): one file per
   * dataset (or one package) per run, delivered to every target. `lake`: each run keeps a
   * Hive-partitioned Parquet data lake up to date at every target (docs/bi/data-lake.md).
   */
  layout?: Layout;
  /**
   * The schedule of a saved export configuration (docs/export-configs.md): the export its
   * dataset entry runs, compiled when the configuration was last saved. Set by Ferry only.
   */
  saved_config?: SavedConfigExport | undefined;
}

/** A saved export configuration as its schedule runs it. */
export interface SavedConfigExport {
  id: string;
  name: string;
  export: ExportConfig;
}

export const LAYOUTS = ['files', 'lake'] as const;
export type Layout = (typeof LAYOUTS)[number];

export const SELECTION_MODES = ['incremental', 'window', 'full'] as const;
export type SelectionMode = (typeof SELECTION_MODES)[number];
export const WINDOW_PERIODS = ['previous_day', 'previous_week', 'previous_month'] as const;
export type WindowPeriod = (typeof WINDOW_PERIODS)[number];

/**
 * One dataset of a schedule and how its data is selected on each run:
 * - `incremental`: what changed since the last delivered run (change feed with tombstones);
 * - `window`: the last `days` days before the run's slot, or a whole `period` before it;
 * - `full`: everything.
 */
export interface ScheduleDataset {
  dataset: string;
  mode: SelectionMode;
  days?: number;
  period?: WindowPeriod;
  /** This dataset's format, when it differs from the schedule's. */
  format?: string;
  /**
   * The saved export configuration whose export this entry runs (over the entry's window),
   * `dataset` being its first data type. Set by Ferry for a configuration's schedule only.
   */
  config?: string;
}

export interface StoredTarget {
  target: DeliveryTarget;
  /** A run is delivered only when every required target received every file. */
  required: boolean;
}

export interface Notifications {
  /** Emailed the results of each delivered run. */
  success: string[];
  /** Emailed when a run fails for good (after its retries). */
  failure: string[];
}

export interface Retention {
  /** Days Ferry keeps each file for download (at most the plan's retention). */
  local_days: number;
  /** Days files are kept at the S3 targets: older objects under the target prefix are removed; null = never. */
  target_days: number | null;
}

/** One file a run produced (or is producing): a dataset's file, or the package of all of them. */
export interface RunFile {
  /** The dataset, or `package`. */
  key: string;
  datasets: string[];
  export_id: string;
  state: 'producing' | 'ready';
  file_id?: string;
  name?: string;
  storage_key?: string;
  content_type?: string;
  bytes?: number;
  sha256?: string;
  records?: number;
  tombstones?: number;
  /** Per dataset: records, tombstones, selection and the range it covered. */
  counts?: Record<string, DatasetCount>;
  /** Incremental datasets: the checkpoint the file starts from and the one it reaches. */
  cursors?: Record<string, { since: string | null; next: string }>;
  /** When Ferry removes the file (local retention). */
  expires_at?: string;
}

export interface DatasetCount {
  records: number;
  tombstones: number;
  mode: SelectionMode;
  from: string | null;
  to: string | null;
}

export const MAX_DATASETS = 20;
export const MAX_TARGETS = 10;
export const MAX_NOTIFY = 20;
const MAX_TARGET_DAYS = 3650;
const EMAIL = /^[^\s@<>(),;:"]+@[^\s@<>(),;:"]+\.[^\s@<>(),;:"]+$/;

/** Whether a dataset declares a change feed. */
export function hasChangeFeed(dataset: string): boolean {
  const declared = REFERENCE_DATAMAP.datasets[dataset];
  return declared?.kind === 'table' && declared.changeFeed !== null;
}

/** Whether a dataset can be narrowed to a time window (a dated table, or a computed report by day). */
export function hasWindow(dataset: string): boolean {
  const declared = REFERENCE_DATAMAP.datasets[dataset];
  return !!declared && isDated(declared);
}

/** Computed reports whose window is a range of whole days in the schedule's zone. */
export function isDayReport(dataset: string): boolean {
  return REFERENCE_DATAMAP.datasets[dataset]?.kind === 'computed';
}

/**
 * The selection a dataset gets when none is given (and for `export_config.data_types`):
 * incremental where there is a change feed, the previous day for day reports
 * (analytics, revenue attribution), everything otherwise.
 */
export function defaultSelection(dataset: string): Pick<ScheduleDataset, 'mode' | 'period'> {
  if (hasChangeFeed(dataset)) return { mode: 'incremental' };
  if (isDayReport(dataset) && hasWindow(dataset)) return { mode: 'window', period: 'previous_day' };
  return { mode: 'full' };
}

function object(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalid(field, 'must be an object');
  return value as Record<string, unknown>;
}

function onlyKeys(record: Record<string, unknown>, field: string, keys: readonly string[]): void {
  for (const key of Object.keys(record))
    if (!keys.includes(key)) throw invalid(`${field}.${key}`, 'is not a known field', keys);
}

export function parseName(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '')
    throw invalid('name', 'is required: a name for the schedule');
  if (value.length > 200) throw invalid('name', 'must be at most 200 characters');
  return value.trim();
}

const DATASET_KEYS = ['dataset', 'mode', 'days', 'period', 'format'];

/** One entry of `datasets`: a dataset name, or `{dataset, mode, days | period, format}`. */
function parseDataset(input: unknown, field: string): ScheduleDataset {
  const record = typeof input === 'string' ? { dataset: input } : object(input, field);
  onlyKeys(record, field, DATASET_KEYS);
  const name = record.dataset;
  if (typeof name !== 'string' || !REFERENCE_DATAMAP.datasets[name])
    throw invalid(
      `${field}.dataset`,
      `unknown dataset "${String(name)}"`,
      Object.keys(REFERENCE_DATAMAP.datasets),
    );
  const mode = record.mode ?? defaultSelection(name).mode;
  if (typeof mode !== 'string' || !(SELECTION_MODES as readonly string[]).includes(mode))
    throw invalid(`${field}.mode`, `unknown mode "${String(mode)}"`, SELECTION_MODES);
  const entry: ScheduleDataset = { dataset: name, mode: mode as SelectionMode };
  if (record.format !== undefined) {
    if (typeof record.format !== 'string') throw invalid(`${field}.format`, 'must be a string');
    entry.format = record.format;
  }
  if (mode !== 'window' && (record.days !== undefined || record.period !== undefined))
    throw invalid(
      `${field}.${record.days !== undefined ? 'days' : 'period'}`,
      `is only used with mode "window"`,
    );
  if (mode === 'incremental' && !hasChangeFeed(name))
    throw invalid(
      `${field}.mode`,
      `dataset ${name} has no change feed, so it cannot be incremental; use "window" or "full"`,
      hasWindow(name) ? ['window', 'full'] : ['full'],
    );
  if (mode === 'window') {
    if (!hasWindow(name))
      throw invalid(`${field}.mode`, `dataset ${name} has no time column to window on; use "full"`, ['full']);
    const days = record.days;
    const period = record.period ?? (days === undefined ? defaultSelection(name).period : undefined);
    if (days !== undefined && record.period !== undefined)
      throw invalid(`${field}.period`, 'give either days or period, not both');
    if (days !== undefined) {
      if (typeof days !== 'number' || !Number.isInteger(days) || days < 1 || days > 366)
        throw invalid(`${field}.days`, 'must be a whole number of days from 1 to 366');
      entry.days = days;
    } else {
      if (period === undefined)
        throw invalid(`${field}.days`, 'a window needs days (e.g. 7) or a period', WINDOW_PERIODS);
      if (typeof period !== 'string' || !(WINDOW_PERIODS as readonly string[]).includes(period))
        throw invalid(`${field}.period`, `unknown period "${String(period)}"`, WINDOW_PERIODS);
      entry.period = period as WindowPeriod;
    }
  }
  return entry;
}

export interface FileOptions {
  format: string | null;
  compression: Compression;
  package: RequestPackageKind;
  pii: PiiLevel;
}

/** Datasets and the file options, checked together against the data map. */
export function parseDatasets(input: unknown, options: Partial<Record<keyof FileOptions, unknown>>) {
  if (!Array.isArray(input) || input.length === 0)
    throw invalid('datasets', 'must list at least one dataset', Object.keys(REFERENCE_DATAMAP.datasets));
  if (input.length > MAX_DATASETS) throw invalid('datasets', `must list at most ${MAX_DATASETS} datasets`);
  const datasets = input.map((d, i) => parseDataset(d, `datasets[${i}]`));
  const names = datasets.map((d) => d.dataset);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw invalid('datasets', `dataset ${twice} is listed twice`);

  const pii = options.pii ?? DEFAULT_PII_LEVEL;
  if (typeof pii !== 'string' || !(PII_LEVELS as readonly string[]).includes(pii))
    throw invalid('pii', `unknown level "${String(pii)}"`, PII_LEVELS);
  const pkg = options.package ?? 'none';
  if (typeof pkg !== 'string' || !(REQUEST_PACKAGE_KINDS as readonly string[]).includes(pkg))
    throw invalid('package', `unknown package "${String(pkg)}"`, REQUEST_PACKAGE_KINDS);
  const compression = options.compression ?? 'none';
  if (typeof compression !== 'string' || !(COMPRESSIONS as readonly string[]).includes(compression))
    throw invalid('compression', `unknown compression "${String(compression)}"`, COMPRESSIONS);
  if (pkg !== 'none' && compression !== 'none')
    throw invalid(
      'compression',
      `a ${pkg} package is compressed as a whole; leave compression out or "none"`,
    );
  const format = options.format ?? null;
  if (format !== null && typeof format !== 'string') throw invalid('format', 'must be a string');

  datasets.forEach((entry, i) => {
    const wanted = entry.format ?? format ?? undefined;
    try {
      // Checks the format (and compression) against what the dataset offers.
      parseExportRequest({
        tenantId: '00000000-0000-0000-0000-000000000000',
        dataset: entry.dataset,
        format: wanted,
        compression,
        pii,
      });
    } catch (err) {
      if (err instanceof FerryError && err.details?.parameter === 'format') {
        const accepted = REFERENCE_DATAMAP.datasets[entry.dataset]!.formats;
        throw invalid(
          entry.format ? `datasets[${i}].format` : 'format',
          `dataset ${entry.dataset} cannot be written as ${wanted}`,
          accepted,
        );
      }
      throw err;
    }
    if (entry.mode === 'incremental' && wanted === 'markdown')
      throw invalid(`datasets[${i}].format`, 'a change feed is tabular; markdown is not', [
        'csv',
        'json',
        'ndjson',
      ]);
  });
  return {
    datasets,
    options: {
      format,
      compression: compression as Compression,
      package: pkg as RequestPackageKind,
      pii: pii as PiiLevel,
    },
  };
}

/**
 * Delivery targets as entered (plain-text secrets), each with an optional
 * `required` (default true); returns them with their secrets sealed.
 */
export async function parseTargets(
  input: unknown,
  secrets: SecretBox,
  field = 'targets',
): Promise<StoredTarget[]> {
  if (input === undefined || input === null) return [];
  if (!Array.isArray(input)) throw invalid(field, 'must be a list of delivery targets');
  if (input.length > MAX_TARGETS) throw invalid(field, `must list at most ${MAX_TARGETS} targets`);
  // Every target is checked before any secret is sealed.
  const parsed = input.map((raw, i) => {
    const path = `${field}[${i}]`;
    const { required, ...rest } = object(raw, path);
    if (required !== undefined && typeof required !== 'boolean')
      throw invalid(`${path}.required`, 'must be true or false');
    return { target: parseTarget(rest, path), required: (required as boolean | undefined) ?? true };
  });
  return Promise.all(
    parsed.map(async ({ target, required }) => ({ target: await sealTarget(target, secrets), required })),
  );
}

function parseAddresses(value: unknown, field: string): string[] {
  if (value === undefined || value === null) return [];
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list)) throw invalid(field, 'must be a list of email addresses');
  if (list.length > MAX_NOTIFY) throw invalid(field, `must list at most ${MAX_NOTIFY} addresses`);
  list.forEach((address, i) => {
    if (typeof address !== 'string' || address.length > 254 || !EMAIL.test(address))
      throw invalid(`${field}[${i}]`, 'must be an email address');
  });
  return [...new Set(list as string[])];
}

export function parseNotifications(input: unknown, field = 'notifications'): Notifications {
  if (input === undefined || input === null) return { success: [], failure: [] };
  const record = object(input, field);
  onlyKeys(record, field, ['success', 'failure']);
  return {
    success: parseAddresses(record.success, `${field}.success`),
    failure: parseAddresses(record.failure, `${field}.failure`),
  };
}

/** `7_days`, `2_weeks`, `6_months`, `1_year` → days (a month is 30 days, a year 365). */
export function parseDuration(value: unknown, field: string): number {
  if (typeof value === 'number' && Number.isInteger(value) && value > 0) return value;
  const match =
    typeof value === 'string' ? /^(\d{1,4})[_ ]?(day|week|month|year)s?$/i.exec(value.trim()) : null;
  if (!match)
    throw invalid(field, `"${String(value)}" is not a duration such as 7_days, 4_weeks, 6_months or 1_year`);
  const n = Number(match[1]);
  const unit = match[2]!.toLowerCase();
  const days = n * (unit === 'day' ? 1 : unit === 'week' ? 7 : unit === 'month' ? 30 : 365);
  if (days < 1) throw invalid(field, 'must be at least one day');
  return days;
}

/**
 * `{local_days, target_days}`: how long Ferry keeps each file (default and maximum:
 * the plan's retention) and how long S3 targets keep theirs (default: forever).
 */
export function parseRetention(
  input: unknown,
  limits: { retentionDays: number; plan: string },
  field = 'retention',
  names: { local: string; target: string } = { local: 'local_days', target: 'target_days' },
): Retention {
  if (input === undefined || input === null) return { local_days: limits.retentionDays, target_days: null };
  const record = object(input, field);
  onlyKeys(record, field, [names.local, names.target]);
  const localRaw = record[names.local];
  const local =
    localRaw === undefined ? limits.retentionDays : parseDuration(localRaw, `${field}.${names.local}`);
  if (local > limits.retentionDays)
    throw invalid(
      `${field}.${names.local}`,
      `the ${limits.plan} plan keeps files at most ${limits.retentionDays} days`,
    );
  const targetRaw = record[names.target];
  const target =
    targetRaw === undefined || targetRaw === null
      ? null
      : parseDuration(targetRaw, `${field}.${names.target}`);
  if (target !== null && target > MAX_TARGET_DAYS)
    throw invalid(`${field}.${names.target}`, `must be at most ${MAX_TARGET_DAYS} days`);
  return { local_days: local, target_days: target };
}

export function parseLayout(value: unknown): Layout {
  if (value === undefined || value === null) return 'files';
  if (typeof value !== 'string' || !(LAYOUTS as readonly string[]).includes(value))
    throw invalid('layout', `unknown layout "${String(value)}"`, LAYOUTS);
  return value as Layout;
}

/** Target types a lake is written to: S3 (under the target's prefix) and a server folder. */
export const LAKE_TARGET_TYPES = ['s3', 'folder'] as const;

/** The time column of a dataset that a lake partitions by, or why it cannot be partitioned. */
export function lakeTimeColumn(dataset: string): { column: string } | string {
  const declared = REFERENCE_DATAMAP.datasets[dataset];
  if (declared?.kind !== 'table' || !declared.timeColumn)
    return `dataset ${dataset} has no time column to partition by day`;
  const from = declared.filters.find((f) => f.name === 'from');
  if (
    from?.sql !== `${declared.timeColumn} >= $value` ||
    !declared.timeColumn.startsWith('t.') ||
    !declared.from.startsWith(`FROM ${declared.source} t`)
  )
    return `dataset ${dataset} filters its dates on another column than its time column`;
  const column = declared.timeColumn.slice(2);
  const tables = REFERENCE_DATAMAP.tables as Record<string, { columns: Record<string, { type: string }> }>;
  const type = tables[declared.source]?.columns[column]?.type;
  if (type !== 'timestamp') return `dataset ${dataset} has no timestamp to partition by day`;
  return { column };
}

/**
 * What the `lake` layout asks of the rest of the configuration: Parquet files (no
 * package, no compression: Parquet compresses its columns itself), datasets with a time
 * column, S3 or folder targets with a fixed prefix, and no target retention (the lake's
 * days stay until their rows are gone).
 */
export function checkLake(config: ScheduleConfig): void {
  if (config.layout !== 'lake') return;
  if (config.package !== 'none')
    throw invalid('package', 'a lake is Parquet files by day; leave package out or "none"', ['none']);
  if (config.compression !== 'none')
    throw invalid('compression', 'Parquet compresses its columns itself; leave compression out or "none"', [
      'none',
    ]);
  if (config.format !== null && config.format !== 'parquet')
    throw invalid('format', 'a lake is written in Parquet', ['parquet']);
  config.datasets.forEach((entry, i) => {
    if (entry.format !== undefined && entry.format !== 'parquet')
      throw invalid(`datasets[${i}].format`, 'a lake is written in Parquet', ['parquet']);
    const time = lakeTimeColumn(entry.dataset);
    if (typeof time === 'string') {
      const accepted = Object.keys(REFERENCE_DATAMAP.datasets).filter(
        (d) => typeof lakeTimeColumn(d) !== 'string',
      );
      throw invalid(`datasets[${i}].dataset`, `${time}, so it cannot be in a lake`, accepted);
    }
  });
  if (config.targets.length === 0)
    throw invalid('targets', 'a lake needs a target to be written to: an S3 bucket or a folder', [
      ...LAKE_TARGET_TYPES,
    ]);
  config.targets.forEach(({ target }, i) => {
    if (!(LAKE_TARGET_TYPES as readonly string[]).includes(target.type))
      throw invalid(`targets[${i}].type`, 'a lake is written to S3 or a folder', [...LAKE_TARGET_TYPES]);
    if (target.type === 's3') {
      const prefix = target.prefix;
      if (prefix.includes('{') || (prefix !== '' && !prefix.endsWith('/')))
        throw invalid(
          `targets[${i}].prefix`,
          'a lake lives in one fixed folder: give a prefix without placeholders ending in "/", such as "lake/"',
        );
      try {
        validatePrefix(prefix);
      } catch {
        throw invalid(
          `targets[${i}].prefix`,
          `"${prefix}" is not a valid key prefix: folders of letters, digits and . _ = + @ -, none starting with a dot`,
        );
      }
    }
  });
  if (config.retention.target_days !== null)
    throw invalid(
      'retention.target_days',
      'a lake keeps each day until its rows are gone; leave target retention out',
    );
}

/** Folder targets name a folder of the server: only an operator (the command line) sets them. */
export function checkFolderTargets(
  targets: readonly StoredTarget[],
  allowFolder: boolean,
  field = 'targets',
) {
  if (allowFolder) return;
  targets.forEach(({ target }, i) => {
    if (target.type === 'folder')
      throw invalid(
        `${field}[${i}].type`,
        'a folder of the server can only be set by an operator (ferry schedules create --file …)',
        ['s3', 'sftp', 'email', 'webhook'],
      );
  });
}

/** Target retention sweeps the fixed folder of each S3 prefix; a prefix without one is refused. */
export function checkTargetRetention(
  targets: readonly StoredTarget[],
  retention: Retention,
  field = 'targets',
): void {
  if (retention.target_days === null) return;
  targets.forEach(({ target }, i) => {
    if (target.type === 's3' && staticPrefix(target.prefix) === '')
      throw invalid(
        `${field}[${i}].prefix`,
        'target retention removes old objects under the prefix, so it needs a fixed folder such as "daily-exports/"',
      );
  });
}
