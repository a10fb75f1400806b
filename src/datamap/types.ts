import type { NarrowScope } from '../domain/export-scope.ts';

/**
 * The data map: one typed declaration of every table Ferry reads and every dataset it
 * exports. Exports, the data dictionary, anonymization, DSARs and retention all read
 * it instead of hard-coding tables.
 */

/** What a column holds, for privacy decisions. */
export const COLUMN_CLASSES = [
  'identifier',
  'contact',
  'network',
  'location',
  'free_text',
  'secret',
  'internal',
  'none',
] as const;
export type ColumnClass = (typeof COLUMN_CLASSES)[number];

/** The finer kind of personal data a column holds, which picks its anonymization. */
export type PiiKind =
  | 'email'
  | 'name'
  | 'phone'
  | 'ip'
  | 'user_agent'
  | 'device'
  | 'country'
  | 'session'
  | 'person_id';

/** Logical field types; they map to SQL, JSON Schema, Table Schema, XSD and Parquet types. */
export const FIELD_TYPES = [
  'uuid',
  'string',
  'integer',
  'number',
  'boolean',
  'timestamp',
  'date',
  'json',
  'string[]',
  'uuid[]',
  'number[]',
] as const;
export type FieldType = (typeof FIELD_TYPES)[number];

export interface TableColumn {
  readonly type: FieldType;
  readonly class: ColumnClass;
  readonly description: string;
  readonly pii?: PiiKind;
}

/** A column that points at a data subject (a customer or a team member). */
export interface SubjectLink {
  readonly column: string;
  readonly subject: 'customer' | 'team_member';
  /**
   * How the column identifies the subject: their id, email (compared case-insensitively),
   * phone (E.164), or `parent`: the column holds the id of a row of `parent` that is linked
   * to the subject (a message belongs to a customer through its conversation).
   */
  readonly by: 'id' | 'email' | 'phone' | 'parent';
  /** `by: 'parent'`: the table whose rows the column points at. */
  readonly parent?: string;
}

/**
 * What erasing a data subject does to the rows of a table linked to them (docs/erasure.md):
 * `delete` rows that exist only because of the subject; `anonymize` rows the tenant keeps
 * (every contact, network, location and free-text column and the subject's own links are
 * cleared, counts and times stay); `retain` rows a law requires, with the legal basis shown
 * on the receipt. Independently, `scrub` columns (default: the table's free-text columns) are
 * cleared of the subject's email, phone and name in every row of the tenant, and a row whose
 * scrubbed text feeds a derived value (a retrieval chunk's embedding) is deleted when
 * `onScrub` says so, so no stale vector of the subject's text stays.
 */
export interface ErasureRule {
  readonly action: 'delete' | 'anonymize' | 'retain';
  /** Why rows are kept (`retain`), or what stays (`anonymize`); shown on receipts. */
  readonly basis?: string;
  /** Text columns cleared of the subject's identifiers wherever they appear (default: the free-text columns). */
  readonly scrub?: readonly string[];
  /** `delete`: a row whose scrubbed text changed is deleted (its derived columns cannot be recomputed). */
  readonly onScrub?: 'keep' | 'delete';
}

export interface Relation {
  readonly column: string;
  readonly references: string; // "table.column"
}

/** What a retention policy measures its period from (docs/retention.md). */
export const RETENTION_AFTER = ['last_activity', 'created', 'account_closed'] as const;
export type RetentionAfter = (typeof RETENTION_AFTER)[number];

/** What a retention sweep does to a row whose period is over. */
export const RETENTION_ACTIONS = ['delete', 'anonymize', 'archive'] as const;
export type RetentionAction = (typeof RETENTION_ACTIONS)[number];

/**
 * A table's default retention policy; a tenant may override it (`retention_policies`).
 * `keep` is an ISO 8601 duration counted from `after`: the row's time column (`created`),
 * its updated column or else its time column (`last_activity`), or the account's closure
 * (`account_closed`: kept for the account's lifetime and `keep` after it is closed).
 */
export interface Retention {
  readonly keep: string;
  readonly after: RetentionAfter;
  readonly action: RetentionAction;
  /** `archive`: how long the archive package is kept (ISO 8601 duration); empty keeps it. */
  readonly archiveKeep?: string;
  /** Why, in words a privacy policy can quote. */
  readonly note: string;
}

export interface TableDeclaration {
  readonly description: string;
  /** The column holding the tenant id; null only for the tenants table itself. */
  readonly tenantKey: string | null;
  readonly timeColumn: string | null;
  /** Column that changes whenever the row changes (incremental exports). */
  readonly updatedColumn: string | null;
  readonly primaryKey: readonly string[];
  readonly subjectLinks: readonly SubjectLink[];
  readonly relations: readonly Relation[];
  readonly retention: Retention;
  readonly erasure: ErasureRule;
  readonly columns: Readonly<Record<string, TableColumn>>;
}

/**
 * What Ferry derives for a field without the network (docs/enrichment.md): `user_agent`
 * fields read the parsed classes of a user agent, `ip_location` fields the country and
 * region of an IP address from the database the operator enabled.
 */
export const ENRICHMENT_KINDS = ['user_agent', 'ip_location'] as const;
export type EnrichmentKind = (typeof ENRICHMENT_KINDS)[number];

export interface FieldEnrichment {
  readonly kind: EnrichmentKind;
  /** SQL expression, over the dataset's FROM aliases, of the value the field is derived from. */
  readonly input: string;
}

/** One output column of a dataset and the SQL that computes it. */
export interface DatasetField {
  readonly name: string;
  readonly type: FieldType;
  readonly class: ColumnClass;
  readonly description: string;
  readonly pii?: PiiKind;
  /** SQL expression over the dataset's FROM clause aliases. */
  readonly sql: string;
  /** The table columns the expression reads ("table.column"), checked against the map. */
  readonly reads: readonly string[];
  readonly example?: string;
  /**
   * A FROM fragment the expression needs (`LEFT JOIN … x ON …`), added once to the query when
   * the field is selected; `$tenant` stands for the tenant id. Used by the related columns
   * (`DatasetBase.relatedFields`), which read other tables along the map's relations.
   */
  readonly join?: string;
  /**
   * The rows of another dataset nested in this field as a JSON array of objects with that
   * dataset's fields (each anonymized by its own rule) but those in `omit`, linked by `link`
   * (SQL over the nested dataset's aliases, with `$parent` for this row's id).
   */
  readonly nested?: { readonly dataset: string; readonly link: string; readonly omit?: readonly string[] };
  /**
   * An enriched field: exported only when the request names it in `columns`, so an export
   * that does not ask for it pays nothing for it.
   */
  readonly enrichment?: FieldEnrichment;
  /** An amount of money: a CSV export with a `locale` and `currency` writes it in that currency's format. */
  readonly money?: boolean;
}

/** A filter a dataset accepts, validated before any query runs. */
export interface DatasetFilter {
  readonly name: string;
  readonly type: 'string' | 'integer' | 'number' | 'boolean' | 'enum' | 'string[]';
  readonly values?: readonly string[];
  /** SQL condition with `$value` where the (quoted) value goes. */
  readonly sql: string;
  readonly description: string;
  /** A FROM fragment the condition needs, as `DatasetField.join`. */
  readonly join?: string;
}

/** A parameter of a dataset that is not a row filter: how a report is computed, or what a document holds. */
export interface DatasetParameter {
  readonly name: string;
  /** Accepted values; any text when absent. */
  readonly values?: readonly string[];
  /** For a comma-separated list: the accepted words (each checked when the export is requested). */
  readonly list?: readonly string[];
  readonly description: string;
}

/** The code that computes a `computed` dataset's rows (src/collect/computed/). */
export const COMPUTED_REPORTS = [
  'analytics',
  'revenue_attribution',
  'daily_totals',
  'channel_performance',
  'marketing_campaigns',
  'rollups',
  'site_summary',
  'topic_summary',
] as const;
export type ComputedReport = (typeof COMPUTED_REPORTS)[number];

/** The code that writes a `document` dataset (src/collect/documents.ts). */
export const DOCUMENT_WRITERS = ['knowledge_base', 'account'] as const;
export type DocumentWriter = (typeof DOCUMENT_WRITERS)[number];

/** Company-package layouts written by code of their own (src/pipeline/company-package.ts). */
export const PACKAGE_BUILDERS = ['account', 'conversations', 'knowledge_base'] as const;
export type PackageBuilder = (typeof PACKAGE_BUILDERS)[number];

/** One file of a dataset in the company package: a run of the dataset export. */
export interface PackageFile {
  /** Path in the package without its extension, e.g. `analytics/daily`. */
  readonly path: string;
  /**
   * `tabular`: written in the package's format (CSV unless the request names another) and
   * described in datapackage.json; `json`: always a JSON file, described by a JSON Schema.
   */
  readonly format: 'tabular' | 'json';
  /** Dataset parameters of this file, e.g. `{ granularity: 'daily' }`. */
  readonly parameters?: Readonly<Record<string, string>>;
}

/** How a dataset goes into the company package. */
export type PackagePlacement = {
  /** Position among the package's datasets; they are written in ascending order. */
  readonly order: number;
  /** Whether the package's date range narrows the dataset (the team and the customers are always whole). */
  readonly dated: boolean;
} & (
  | { readonly files: readonly PackageFile[] }
  /** A layout of its own, e.g. one JSON file per conversation. */
  | { readonly builder: PackageBuilder }
);

/** The change feed of a table dataset: rows by transaction id, tombstones for deletes from its source table. */
export interface ChangeFeed {
  /** The source table's column that identifies a row within its tenant; tombstones carry it. */
  readonly idColumn: string;
}

interface DatasetBase {
  readonly name: string;
  readonly description: string;
  /** The main source table. */
  readonly source: string;
  /**
   * FROM clause with aliases; the main table is aliased `t`. Tables joined for filters and
   * scopes along a NOT NULL foreign key are LEFT JOINs: the rows are the same, and PostgreSQL
   * drops a LEFT JOIN to a unique key that nothing reads, so an export without such a filter
   * reads the main table alone.
   */
  readonly from: string;
  /** Time column expression for date filters, incremental exports and partitioning. */
  readonly timeColumn: string | null;
  /** Ordering key, unique together, for keyset paging. */
  readonly key: readonly string[];
  readonly fields: readonly DatasetField[];
  /**
   * Related columns: read along the map's relations from other tables (a conversation's
   * attributed revenue, its messages nested), written only when `columns` names them.
   */
  readonly relatedFields?: readonly DatasetField[];
  /**
   * Row filters. `from`/`to` make the dataset dated: date filters, schedule windows and
   * the plan's history window apply to it (days of the report for computed datasets).
   */
  readonly filters: readonly DatasetFilter[];
  /** Parameters that are not row filters (a report's granularity, an attribution model). */
  readonly parameters: readonly DatasetParameter[];
  readonly formats: readonly string[];
  /** Where the dataset goes in the company package; null: it cannot go in one. */
  readonly package: PackagePlacement | null;
  /**
   * Ranges a saved export configuration may give as `{"min": …, "max": …}`, by name, and the
   * two filters they become (e.g. `satisfaction_score` → `satisfaction_min`, `satisfaction_max`).
   */
  readonly ranges?: Readonly<Record<string, { readonly min: string; readonly max: string }>>;
  /**
   * How this dataset's rows relate to the rows of another dataset, by that dataset's name: a
   * SQL condition over this dataset's aliases with `$rows`, a subquery of the other dataset's
   * selected ids. An export narrowed to the rows related to a selection uses it (a saved
   * configuration's messages of the chosen conversations).
   */
  readonly related?: Readonly<Record<string, string>>;
}

/** A row per source row, read with one COPY over `from`. */
export interface TableDataset extends DatasetBase {
  readonly kind: 'table';
  /** The change feed (incremental exports); null: the dataset has none. */
  readonly changeFeed: ChangeFeed | null;
  /** SQL conditions (with `$value`) that narrow the dataset to one site, customer or team member. */
  readonly scopes: Readonly<Partial<Record<NarrowScope['kind'], string>>>;
  /**
   * The data subject's own name and email in a row (SQL expressions), so anonymization also
   * finds them in the row's free text (a visitor typing their name into the chat).
   */
  readonly subject?: { readonly name: string; readonly email: string };
}

/** A report built by its own query (a FROM clause the engine streams like a table). */
export interface ComputedDataset extends DatasetBase {
  readonly kind: 'computed';
  readonly report: ComputedReport;
}

/** One document (JSON, Markdown, XML) written by code, not paged. */
export interface DocumentDataset extends DatasetBase {
  readonly kind: 'document';
  readonly document: DocumentWriter;
}

export type DatasetDeclaration = TableDataset | ComputedDataset | DocumentDataset;

export interface DataMap {
  readonly version: string;
  readonly tables: Readonly<Record<string, TableDeclaration>>;
  readonly datasets: Readonly<Record<string, DatasetDeclaration>>;
}
