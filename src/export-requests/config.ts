import type { AuthContext } from '../auth/context.ts';
import { authorizeExport } from '../auth/policy.ts';
import { checkRange, type ExportRequest, parseExportRequest } from '../collect/request.ts';
import { shapingInputOf } from '../collect/shaping.ts';
import { validateRecipients } from '../crypto/age.ts';
import { packageDatasets, REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { type ExportConfig, type PackageFileRequest, SINGLE_FILE_OPTIONS } from '../domain/export-config.ts';
import { type ExportScope, sameScope, TENANT_SCOPE } from '../domain/export-scope.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { RequestPackageKind } from '../domain/package-kind.ts';
import { DEFAULT_PII_LEVEL } from '../domain/pii-level.ts';
import { parseSplitSize } from '../domain/split-size.ts';
import { EXPORT_FORMATS } from '../format/types.ts';
import type { PackageRequest } from '../pipeline/company-package.ts';
import type { ExportBody } from './export-body.ts';

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

function checkDate(param: string, value: string | undefined): string | null {
  if (value === undefined) return null;
  if ((!DATE.test(value) && !DATETIME.test(value)) || Number.isNaN(Date.parse(value)))
    throw invalid(param, `"${value}" is not a date (YYYY-MM-DD) or an ISO 8601 timestamp with offset`);
  return value;
}

function filterText(name: string, value: NonNullable<ExportBody['filters']>[string]): string {
  if (Array.isArray(value)) {
    for (const item of value)
      if (typeof item !== 'string' || item.includes(','))
        throw invalid(`filters.${name}`, 'list items must be strings without commas');
    return value.join(',');
  }
  return String(value);
}

/**
 * Turns the body of `POST /api/v1/exports` (as its schema validated it) into the export
 * request, validated against the data map once, with defaults filled in. One dataset
 * without a package is one file in the requested format; several datasets, or any
 * package, become a company package (zip or tar.gz). Errors name the parameter and the
 * accepted values.
 */
export function exportConfigFromBody(tenantId: string, body: ExportBody): ExportConfig {
  const datasets = [...new Set(body.datasets)];
  const packageKind: RequestPackageKind = body.package ?? (datasets.length > 1 ? 'zip' : 'none');
  const pii = body.pii ?? DEFAULT_PII_LEVEL;
  const from = checkDate('from', body.from);
  const to = checkDate('to', body.to);
  checkRange(from, to);
  const recipients = body.encryption ? validateRecipients(body.encryption.recipients) : [];
  const scope: ExportScope = body.scope ?? TENANT_SCOPE;
  if (body.split_size !== undefined && packageKind === 'none')
    throw invalid('split_size', 'splits a company package into parts; ask for package zip or tar.gz', [
      'zip',
      'tar.gz',
    ]);
  const splitSize = body.split_size === undefined ? null : parseSplitSize(body.split_size, 'split_size');

  if (packageKind !== 'none') {
    for (const name of SINGLE_FILE_OPTIONS) {
      if (body[name] !== undefined)
        throw invalid(
          name,
          `applies to single-dataset exports (package "none"); a ${packageKind} package chooses each file's format itself`,
        );
    }
    return checkAgainstDataMap(tenantId, {
      datasets,
      scope,
      format: body.format ?? null,
      compression: null,
      package: packageKind,
      from,
      to,
      filters: {},
      columns: null,
      pii,
      timezone: null,
      options: {},
      bom: false,
      // The package's CSV files follow it too.
      csv_guard: body.csv_guard ?? true,
      recipients,
      ...(splitSize === null ? {} : { split_size: splitSize }),
    });
  }

  if (datasets.length > 1)
    throw invalid('package', 'several datasets need a package: zip or tar.gz', ['zip', 'tar.gz']);
  const filters: Record<string, string> = {};
  for (const [name, value] of Object.entries(body.filters ?? {})) filters[name] = filterText(name, value);
  return checkAgainstDataMap(tenantId, {
    datasets,
    scope,
    format: body.format ?? null,
    compression: body.compression ?? null,
    package: 'none',
    from,
    to,
    filters,
    columns: body.columns?.length ? body.columns : null,
    pii,
    timezone: body.timezone ?? null,
    options: body.options ?? {},
    bom: body.bom ?? false,
    csv_guard: body.csv_guard ?? true,
    recipients,
    ...shapingOfBody(body),
  });
}

/** The shaping fields of a body, as stored (absent ones stay absent). */
function shapingOfBody(body: ExportBody): Partial<ExportConfig> {
  const out: Partial<ExportConfig> = {};
  if (body.rename && Object.keys(body.rename).length) out.rename = body.rename;
  if (body.convert && Object.keys(body.convert).length) out.convert = body.convert;
  if (body.calculated?.length) out.calculated = body.calculated.map((c) => ({ ...c }));
  if (body.locale !== undefined) out.locale = body.locale;
  if (body.currency !== undefined) out.currency = body.currency;
  if (body.delimiter !== undefined) out.delimiter = body.delimiter;
  if (body.decimal_separator !== undefined) out.decimal_separator = body.decimal_separator;
  return out;
}

/**
 * Checks an export request against the data map (datasets, format, compression,
 * filters, columns, time zone) and fills in the dataset's default format. Called once
 * per request: for a new export, and for a repeat of a stored one (the data map may have
 * changed since). The job that runs it checks nothing again.
 */
export function checkAgainstDataMap(tenantId: string, config: ExportConfig): ExportConfig {
  if (config.files?.length) {
    if (config.package === 'none' || config.package === 'directory')
      throw invalid('package', 'a package of chosen files is a zip or tar.gz', ['zip', 'tar.gz']);
    // Each file is the single export it would be on its own.
    for (const file of config.files) fileRequest(tenantId, config, file);
    return config;
  }
  if (config.package !== 'none') {
    const placed = packageDatasets(REFERENCE_DATAMAP);
    for (const dataset of config.datasets) {
      if (!placed.includes(dataset)) throw invalid('datasets', `"${dataset}" cannot go in a package`, placed);
    }
    if (config.format !== null && !(EXPORT_FORMATS as readonly string[]).includes(config.format))
      throw invalid(
        'format',
        `a ${config.package} package writes its tabular files as ${EXPORT_FORMATS.join(', ')}`,
        EXPORT_FORMATS,
      );
    return config;
  }
  const dataset = config.datasets[0]!;
  if (!REFERENCE_DATAMAP.datasets[dataset])
    throw invalid('datasets', `unknown dataset "${dataset}"`, Object.keys(REFERENCE_DATAMAP.datasets));
  const request = parseExportRequest({
    tenantId,
    dataset,
    format: config.format ?? undefined,
    compression: config.compression ?? undefined,
    filters: config.filters,
    from: config.from ?? undefined,
    to: config.to ?? undefined,
    columns: config.columns ?? undefined,
    pii: config.pii,
    timezone: config.timezone ?? undefined,
    csvGuard: config.csv_guard,
    bom: config.bom,
    options: config.options,
    scope: config.scope,
    related: config.related ?? null,
    shaping: shapingInputOf(config),
  });
  const shaping = request.shaping;
  return {
    ...config,
    format: request.format,
    compression: request.compression,
    // The locale in canonical form, and the CSV separators it chose when none were asked for.
    ...(shaping?.locale ? { locale: shaping.locale } : {}),
    ...(shaping?.delimiter ? { delimiter: shaping.delimiter } : {}),
    ...(shaping?.decimalSeparator ? { decimal_separator: shaping.decimalSeparator } : {}),
  };
}

/** The request of one file of a package of chosen files (`ExportConfig.files`), checked against the data map. */
export function fileRequest(tenantId: string, config: ExportConfig, file: PackageFileRequest): ExportRequest {
  const dataset = REFERENCE_DATAMAP.datasets[file.dataset];
  if (!dataset)
    throw invalid('datasets', `unknown dataset "${file.dataset}"`, Object.keys(REFERENCE_DATAMAP.datasets));
  const dated = dataset.filters.some((f) => f.name === 'from');
  const from = config.from ?? config.history_from ?? undefined;
  return parseExportRequest({
    tenantId,
    dataset: file.dataset,
    format: config.format ?? undefined,
    filters: file.filters,
    ...(dated ? { from, to: config.to ?? undefined } : {}),
    columns: file.columns ?? undefined,
    pii: config.pii,
    timezone: config.timezone ?? undefined,
    csvGuard: config.csv_guard,
    options: file.options,
    scope: config.scope,
    related: file.related ?? null,
  });
}

/**
 * Checks every dataset of the export against the caller's role (src/auth/policy.ts)
 * and returns the request to run: an agent's export is narrowed to its own
 * conversations; anything the role may not see is refused with `forbidden`.
 */
export function authorizeConfig(auth: AuthContext, config: ExportConfig): ExportConfig {
  let scope: ExportScope = config.scope;
  let narrowed = false;
  for (const dataset of config.datasets) {
    const granted = authorizeExport(auth, { dataset, pii: config.pii, scope: config.scope });
    if (sameScope(granted.scope, config.scope)) continue;
    if (narrowed && !sameScope(granted.scope, scope))
      throw new FerryError(
        'forbidden',
        'the datasets of this export would need different scopes; request them one by one',
      );
    scope = granted.scope ?? TENANT_SCOPE;
    narrowed = true;
  }
  return { ...config, scope };
}

/** The engine's request for a stored company package. */
export function toPackageRequest(tenantId: string, config: ExportConfig): PackageRequest {
  if (config.package === 'none') throw new FerryError('internal', 'not a package export');
  return {
    tenantId,
    kind: config.package,
    datasets: config.datasets,
    format: config.format ?? undefined,
    pii: config.pii,
    from: config.from ?? config.history_from ?? undefined,
    to: config.to ?? undefined,
    scope: config.scope,
    csvGuard: config.csv_guard,
  };
}
