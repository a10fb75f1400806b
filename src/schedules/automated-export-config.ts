import { FerryError, invalid } from '../domain/ferry-error.ts';
import { defaultSelection } from './model.ts';

/**
 * The automated-export configuration of the product documentation, accepted as written
 * on `POST /api/v1/schedules`:
 *
 * ```json
 * {"export_config": {"name": "Daily Backup to S3", "schedule": "0 2 * * *",
 *   "data_types": ["conversations", "analytics"], "format": "csv", "compression": "gzip",
 *   "destination": {"type": "s3", "bucket": "...", "prefix": "daily-exports/", ...},
 *   "notifications": {"success": ["admin@example.com"], "failure": ["..."]},
 *   "retention": {"local": "7_days", "s3": "1_year"}}}
 * ```
 *
 * It becomes a native schedule: `schedule` is a cron expression in the tenant's time
 * zone (or `timezone`, when given); each data type gets its default selection
 * (incremental where a change feed exists, the previous day for analytics and revenue
 * attribution, everything otherwise); `destination` is the one, required, target;
 * `retention.local` is how long Ferry keeps the files, `retention.<destination type>`
 * how long the destination does.
 */
export const EXPORT_CONFIG_FIELDS = [
  'name',
  'schedule',
  'timezone',
  'data_types',
  'format',
  'compression',
  'pii',
  'destination',
  'notifications',
  'retention',
  'enabled',
] as const;

/** The native body, as `normalizeSchedule` takes it. */
export interface ScheduleInput {
  name?: unknown;
  frequency?: unknown;
  time?: unknown;
  timezone?: unknown;
  datasets?: unknown;
  format?: unknown;
  compression?: unknown;
  package?: unknown;
  pii?: unknown;
  targets?: unknown;
  notifications?: unknown;
  retention?: unknown;
  status?: unknown;
  /** `files` (default) or `lake` (docs/bi/data-lake.md). */
  layout?: unknown;
}

export interface Translated {
  readonly input: ScheduleInput;
  /** Maps a native parameter name in an error back to where the caller wrote it. */
  rename(parameter: string): string;
}

export function translateExportConfig(raw: unknown, tenantZone: string): Translated {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw invalid('export_config', 'must be an object');
  const config = raw as Record<string, unknown>;
  for (const key of Object.keys(config))
    if (!(EXPORT_CONFIG_FIELDS as readonly string[]).includes(key))
      throw invalid(
        `export_config.${key}`,
        'is not a field of an export configuration',
        EXPORT_CONFIG_FIELDS,
      );
  if (typeof config.schedule !== 'string')
    throw invalid('export_config.schedule', 'is required: a cron expression such as "0 2 * * *"');
  const dataTypes = config.data_types;
  if (!Array.isArray(dataTypes) || dataTypes.length === 0)
    throw invalid('export_config.data_types', 'must list at least one data type, e.g. ["conversations"]');
  if (config.destination === undefined)
    throw invalid('export_config.destination', 'is required: where the files are delivered');
  const destination = config.destination;
  const destinationType =
    typeof destination === 'object' &&
    destination !== null &&
    typeof (destination as { type?: unknown }).type === 'string'
      ? ((destination as { type: string }).type as string)
      : 'destination';

  let retention: Record<string, unknown> | undefined;
  let targetKey = destinationType;
  if (config.retention !== undefined) {
    if (typeof config.retention !== 'object' || config.retention === null || Array.isArray(config.retention))
      throw invalid(
        'export_config.retention',
        'must be an object such as {"local": "7_days", "s3": "1_year"}',
      );
    const given = config.retention as Record<string, unknown>;
    const allowed = ['local', destinationType, 'destination'];
    for (const key of Object.keys(given))
      if (!allowed.includes(key))
        throw invalid(`export_config.retention.${key}`, 'is not a retention of this configuration', allowed);
    if (given.destination !== undefined) targetKey = 'destination';
    retention = {
      ...(given.local !== undefined ? { local_days: given.local } : {}),
      ...(given[targetKey] !== undefined ? { target_days: given[targetKey] } : {}),
    };
  }
  if (config.enabled !== undefined && typeof config.enabled !== 'boolean')
    throw invalid('export_config.enabled', 'must be true or false');

  const input: ScheduleInput = {
    name: config.name,
    frequency: { type: 'cron', expression: config.schedule },
    timezone: config.timezone ?? tenantZone,
    datasets: dataTypes.map((name) =>
      typeof name === 'string' ? { dataset: name, ...defaultSelection(name) } : name,
    ),
    ...(config.format !== undefined ? { format: config.format } : {}),
    ...(config.compression !== undefined ? { compression: config.compression } : {}),
    ...(config.pii !== undefined ? { pii: config.pii } : {}),
    targets: [destination],
    ...(config.notifications !== undefined ? { notifications: config.notifications } : {}),
    ...(retention ? { retention } : {}),
    status: config.enabled === false ? 'paused' : 'active',
  };
  const rename = (parameter: string): string => {
    const rules: [RegExp, string][] = [
      [/^frequency(\..*)?$/, 'export_config.schedule'],
      [/^datasets\[(\d+)\]\.dataset$/, 'export_config.data_types[$1]'],
      [/^datasets(.*)$/, 'export_config.data_types$1'],
      [/^targets\[0\](.*)$/, 'export_config.destination$1'],
      [/^retention\.local_days$/, 'export_config.retention.local'],
      [/^retention\.target_days$/, `export_config.retention.${targetKey}`],
      [/^(name|timezone|format|compression|pii|notifications|retention)(.*)$/, 'export_config.$1$2'],
    ];
    for (const [pattern, replacement] of rules)
      if (pattern.test(parameter)) return parameter.replace(pattern, replacement);
    return `export_config.${parameter}`;
  };
  return { input, rename };
}

/** Runs `fn`, rewriting the parameter of an `invalid_parameter` error with `rename`. */
export function withRenamedErrors<T>(rename: (parameter: string) => string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw renameError(err, rename);
  }
}

export function renameError(err: unknown, rename: (parameter: string) => string): unknown {
  if (!(err instanceof FerryError) || err.code !== 'invalid_parameter') return err;
  const parameter = err.details?.parameter;
  if (typeof parameter !== 'string') return err;
  const renamed = rename(parameter);
  const prefix = `${parameter}: `;
  const message = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
  const accepted = err.details?.accepted;
  const suffix = Array.isArray(accepted) ? ` (accepted: ${accepted.join(', ')})` : '';
  const bare = suffix && message.endsWith(suffix) ? message.slice(0, -suffix.length) : message;
  return invalid(renamed, bare, Array.isArray(accepted) ? (accepted as (string | number)[]) : undefined);
}
