import { authorizeExport } from '../auth/policy.ts';
import type { AuthContext } from '../auth/context.ts';
import { validateRecipients } from '../crypto/age.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { PACKAGE_DATASETS, type PackageRequest } from '../pipeline/company-package.ts';
import {
  type Compression,
  DEFAULT_PII_LEVEL,
  type ExportRequest,
  type ExportScope,
  parseExportRequest,
} from '../collect/request.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { PII_LEVELS, type PiiLevel } from '../transform/anonymize.ts';

export const PACKAGE_KINDS = ['none', 'zip', 'tar.gz'] as const;
export type PackageKind = (typeof PACKAGE_KINDS)[number];

/** The scope of an export as the API writes it (snake_case). */
export type ApiScope =
  | { kind: 'tenant' }
  | { kind: 'site'; site_url: string }
  | { kind: 'customer'; customer_id: string }
  | { kind: 'team_member'; team_member_id: string };

export type FilterInput = string | number | boolean | readonly string[];

/** The body of `POST /api/v1/exports`, as validated by its schema. */
export interface ExportBody {
  datasets: string[];
  scope?: ApiScope | undefined;
  format?: string | undefined;
  compression?: string | undefined;
  package?: PackageKind | undefined;
  from?: string | undefined;
  to?: string | undefined;
  filters?: Record<string, FilterInput> | undefined;
  columns?: string[] | undefined;
  pii?: string | undefined;
  timezone?: string | undefined;
  options?: Record<string, string> | undefined;
  bom?: boolean | undefined;
  csv_guard?: boolean | undefined;
  encryption?: { recipients: string[] } | undefined;
}

/**
 * A validated, authorized export configuration: what the worker runs and what a repeat
 * runs again. Stored as JSON in `export_requests.config`, in the API's own words.
 */
export interface ExportConfig {
  datasets: string[];
  scope: ApiScope;
  /** Single-dataset exports only (package `none`); null for packages. */
  format: string | null;
  compression: Compression | null;
  package: PackageKind;
  from: string | null;
  to: string | null;
  filters: Record<string, string>;
  columns: string[] | null;
  pii: PiiLevel;
  timezone: string | null;
  options: Record<string, string>;
  bom: boolean;
  csv_guard: boolean;
  /** age recipients (public keys); empty when the file is not encrypted for the tenant. */
  recipients: string[];
  /**
   * The start of the plan's history window when no `from` was asked for: the export
   * covers only what the plan may reach. Not part of the request (a repeat takes the
   * window of its own day).
   */
  history_from?: string | null;
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;
const MAX_RECIPIENTS = 20;

/** Options that only make sense for a single file; a package picks each file's format itself. */
const SINGLE_FILE_OPTIONS = [
  'format',
  'compression',
  'filters',
  'columns',
  'timezone',
  'options',
  'bom',
  'csv_guard',
] as const;

function checkDate(param: string, value: string | undefined): string | null {
  if (value === undefined) return null;
  if ((!DATE.test(value) && !DATETIME.test(value)) || Number.isNaN(Date.parse(value)))
    throw invalid(param, `"${value}" is not a date (YYYY-MM-DD) or an ISO 8601 timestamp with offset`);
  return value;
}

function filterText(name: string, value: FilterInput): string {
  if (Array.isArray(value)) {
    for (const item of value)
      if (typeof item !== 'string' || item.includes(','))
        throw invalid(`filters.${name}`, 'list items must be strings without commas');
    return value.join(',');
  }
  return String(value);
}

export function toExportScope(scope: ApiScope | undefined): ExportScope | undefined {
  switch (scope?.kind) {
    case undefined:
      return undefined;
    case 'tenant':
      return { kind: 'tenant' };
    case 'site':
      return { kind: 'site', siteUrl: scope.site_url };
    case 'customer':
      return { kind: 'customer', customerId: scope.customer_id };
    case 'team_member':
      return { kind: 'team_member', teamMemberId: scope.team_member_id };
  }
}

export function fromExportScope(scope: ExportScope | undefined): ApiScope {
  switch (scope?.kind) {
    case undefined:
    case 'tenant':
      return { kind: 'tenant' };
    case 'site':
      return { kind: 'site', site_url: scope.siteUrl };
    case 'customer':
      return { kind: 'customer', customer_id: scope.customerId };
    case 'team_member':
      return { kind: 'team_member', team_member_id: scope.teamMemberId };
  }
}

/**
 * Validates an export body against the data map and fills in defaults. One dataset
 * without a package is one file in the requested format; several datasets, or any
 * package, become a company package (zip or tar.gz). Errors name the parameter and the
 * accepted values.
 */
export function normalizeExportBody(tenantId: string, body: ExportBody): ExportConfig {
  const datasets = [...new Set(body.datasets)];
  if (datasets.length === 0) throw invalid('datasets', 'must name at least one dataset');
  const packageKind: PackageKind = body.package ?? (datasets.length > 1 ? 'zip' : 'none');
  const pii = body.pii ?? DEFAULT_PII_LEVEL;
  if (!(PII_LEVELS as readonly string[]).includes(pii))
    throw invalid('pii', `unknown level "${pii}"`, PII_LEVELS);
  const from = checkDate('from', body.from);
  const to = checkDate('to', body.to);
  const recipients = body.encryption ? validateRecipients(body.encryption.recipients) : [];
  if (recipients.length > MAX_RECIPIENTS)
    throw invalid('encryption.recipients', `at most ${MAX_RECIPIENTS} recipients are accepted`);
  const scope = body.scope ?? { kind: 'tenant' as const };

  if (packageKind !== 'none') {
    for (const name of SINGLE_FILE_OPTIONS) {
      if (body[name] !== undefined)
        throw invalid(
          name,
          `applies to single-dataset exports (package "none"); a ${packageKind} package chooses each file's format itself`,
        );
    }
    for (const dataset of datasets) {
      if (!(PACKAGE_DATASETS as readonly string[]).includes(dataset))
        throw invalid('datasets', `"${dataset}" cannot go in a package`, PACKAGE_DATASETS);
    }
    return {
      datasets,
      scope,
      format: null,
      compression: null,
      package: packageKind,
      from,
      to,
      filters: {},
      columns: null,
      pii: pii as PiiLevel,
      timezone: null,
      options: {},
      bom: false,
      csv_guard: true,
      recipients,
    };
  }

  if (datasets.length > 1)
    throw invalid('package', 'several datasets need a package: zip or tar.gz', ['zip', 'tar.gz']);
  const filters: Record<string, string> = {};
  for (const [name, value] of Object.entries(body.filters ?? {})) filters[name] = filterText(name, value);
  const config: ExportConfig = {
    datasets,
    scope,
    format: body.format ?? null,
    compression: (body.compression as Compression | undefined) ?? null,
    package: 'none',
    from,
    to,
    filters,
    columns: body.columns?.length ? body.columns : null,
    pii: pii as PiiLevel,
    timezone: body.timezone ?? null,
    options: body.options ?? {},
    bom: body.bom ?? false,
    csv_guard: body.csv_guard ?? true,
    recipients,
  };
  // Validates dataset, format, compression, filters, columns and time zone against the data map.
  const request = toExportRequest(tenantId, config);
  return { ...config, format: request.format, compression: request.compression };
}

/**
 * Checks every dataset of the export against the caller's role (src/auth/policy.ts)
 * and returns the configuration to run: an agent's export is narrowed to its own
 * conversations; anything the role may not see is refused with `forbidden`.
 */
export function authorizeConfig(auth: AuthContext, config: ExportConfig): ExportConfig {
  const asked = toExportScope(config.scope);
  let scope: ExportScope | undefined = asked;
  let narrowed = false;
  for (const dataset of config.datasets) {
    const granted = authorizeExport(auth, { dataset, pii: config.pii, scope: asked });
    const same = JSON.stringify(fromExportScope(granted.scope)) === JSON.stringify(fromExportScope(asked));
    if (same) continue;
    if (narrowed && JSON.stringify(granted.scope) !== JSON.stringify(scope))
      throw new FerryError(
        'forbidden',
        'the datasets of this export would need different scopes; request them one by one',
      );
    scope = granted.scope;
    narrowed = true;
  }
  return { ...config, scope: fromExportScope(scope) };
}

/** The engine's request for a single-dataset export. */
export function toExportRequest(tenantId: string, config: ExportConfig): ExportRequest {
  const dataset = config.datasets[0]!;
  const declared = REFERENCE_DATAMAP.datasets[dataset];
  if (!declared)
    throw invalid('datasets', `unknown dataset "${dataset}"`, Object.keys(REFERENCE_DATAMAP.datasets));
  const dated = declared.filters.some((f) => f.name === 'from');
  return parseExportRequest({
    tenantId,
    dataset,
    format: config.format ?? undefined,
    compression: config.compression ?? undefined,
    filters: config.filters,
    from: config.from ?? (dated ? (config.history_from ?? undefined) : undefined),
    to: config.to ?? undefined,
    columns: config.columns ?? undefined,
    pii: config.pii,
    timezone: config.timezone ?? undefined,
    csvGuard: config.csv_guard,
    bom: config.bom,
    options: config.options,
    scope: toExportScope(config.scope),
  });
}

/** The engine's request for a company package. */
export function toPackageRequest(tenantId: string, config: ExportConfig): PackageRequest {
  if (config.package === 'none') throw new FerryError('internal', 'not a package export');
  return {
    tenantId,
    kind: config.package,
    datasets: config.datasets,
    pii: config.pii,
    from: config.from ?? config.history_from ?? undefined,
    to: config.to ?? undefined,
    scope: toExportScope(config.scope),
  };
}
