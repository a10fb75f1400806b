import type { Compression } from './compression.ts';
import type { ExportScope } from './export-scope.ts';
import type { PackageKind } from './package-kind.ts';
import type { PiiLevel } from './pii-level.ts';

/**
 * An export request as Ferry accepted it: validated against the data map, defaults
 * filled in, narrowed to what the caller may see. It is what the job runs, what a
 * repeat runs again and what `GET /api/v1/exports/{id}` shows as `request`; stored as
 * JSON in `export_requests.config`, in the API's own words.
 */
export interface ExportConfig {
  datasets: string[];
  scope: ExportScope;
  /** The file's format; for a package, the format of its tabular files (null: CSV). */
  format: string | null;
  compression: Compression | null;
  /** `directory` only for a folder the command line wrote (an API export or schedule never asks for one). */
  package: PackageKind;
  from: string | null;
  to: string | null;
  /** Filter values as text (lists comma-separated); typed against the dataset by the engine. */
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
   * A zip or tar.gz package in parts of at most this many bytes (`split_size`), listed in a
   * manifest; absent or null: one file.
   */
  split_size?: number | null;
  /** Output shaping (docs/output-shaping.md): output names of columns, by column. */
  rename?: Record<string, string> | null;
  /** Conversions by column: `yes_no`, `one_zero`, `true_false`, `fixed:N`, `date`, `epoch_seconds`, `epoch_millis`. */
  convert?: Record<string, string> | null;
  /** Calculated fields, in order; `columns` may place them by name. */
  calculated?: CalculatedFieldConfig[] | null;
  /** CSV: BCP 47 locale of dates, timestamps and numbers (e.g. `de-DE`). */
  locale?: string | null;
  /** CSV with a locale: ISO 4217 currency of the dataset's money columns. */
  currency?: string | null;
  /** CSV: the delimiter written (`,` `;` tab `|`); filled in from the locale when not asked for. */
  delimiter?: string | null;
  /** CSV: the decimal separator of numbers (`.` or `,`); filled in from the locale when not asked for. */
  decimal_separator?: string | null;
  /**
   * The start of the plan's history window when no `from` was asked for: the export
   * covers only what the plan may reach. Not part of the request (a repeat takes the
   * window of its own day).
   */
  history_from?: string | null;
  /**
   * The data subject request whose access package this export is: the package holds that
   * person's rows only. Set by the privacy code, never by an API body.
   */
  subject_request?: string | null;
  /**
   * Only the rows related to the rows of another dataset chosen by its filters (values as
   * text, like `filters`); set by a saved export configuration, e.g. the messages of the
   * conversations it selects.
   */
  related?: RelatedRows | null;
  /**
   * A package of these files instead of the company package: each a dataset export of its
   * own with its filters and columns. Set by a saved export configuration of several files.
   */
  files?: PackageFileRequest[] | null;
  /** The saved export configuration this export ran, when it ran one. */
  saved_config?: { id: string; name: string } | null;
  /**
   * An organisation's export across its tenants (docs/organisations.md): the same request run
   * in each of these tenants, one folder each. Set by the organisation export, never by a body.
   */
  organisation?: OrganisationExport | null;
}

/** The tenants an organisation export runs in, as accepted (each checked against the caller's role there). */
export interface OrganisationExport {
  id: string;
  name: string;
  /** Who acts in the client tenants (`org_key:<id>`, `org_member:<id>`), for their audit trails. */
  actor: string;
  tenants: OrganisationExportTenant[];
}

export interface OrganisationExportTenant {
  id: string;
  slug: string;
  name: string;
  /** The folder under `tenants/`. */
  folder: string;
  /** Where the tenant's plan lets its history start when the request has no `from`. */
  history_from: string | null;
}

/** The rows of `dataset` chosen by `filters`. */
export interface RelatedRows {
  dataset: string;
  filters: Record<string, string>;
}

/** One file of a package of chosen files: its path in the package (without extension) and its export. */
export interface PackageFileRequest {
  path: string;
  dataset: string;
  filters: Record<string, string>;
  columns: string[] | null;
  options: Record<string, string>;
  related?: RelatedRows | null;
}

/** A calculated field of an export: its output name, its expression and, optionally, its declared type. */
export interface CalculatedFieldConfig {
  name: string;
  expression: string;
  type?: 'string' | 'integer' | 'number' | 'boolean' | 'date' | 'timestamp';
}

/** Options that only make sense for a single file; of the file options a package takes only `format` and `csv_guard`. */
export const SINGLE_FILE_OPTIONS = [
  'compression',
  'filters',
  'columns',
  'timezone',
  'options',
  'bom',
  'rename',
  'convert',
  'calculated',
  'locale',
  'currency',
  'delimiter',
  'decimal_separator',
] as const satisfies readonly (keyof ExportConfig)[];
