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
export type PiiKind = 'email' | 'name' | 'phone' | 'ip' | 'user_agent' | 'country' | 'session' | 'person_id';

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
  /** How the column identifies the subject. */
  readonly by: 'id' | 'email';
}

export interface Relation {
  readonly column: string;
  readonly references: string; // "table.column"
}

export interface Retention {
  /** Days after the time column when rows may be deleted; null keeps them. */
  readonly days: number | null;
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
  readonly columns: Readonly<Record<string, TableColumn>>;
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
}

/** A filter a dataset accepts, validated before any query runs. */
export interface DatasetFilter {
  readonly name: string;
  readonly type: 'string' | 'integer' | 'number' | 'boolean' | 'enum' | 'string[]';
  readonly values?: readonly string[];
  /** SQL condition with `$value` where the (quoted) value goes. */
  readonly sql: string;
  readonly description: string;
}

export interface DatasetDeclaration {
  readonly name: string;
  readonly description: string;
  /** `table`: a row per source row; `computed`: built by its own query (analytics, attribution, documents). */
  readonly kind: 'table' | 'computed';
  /** The main source table. */
  readonly source: string;
  /** FROM clause with aliases; the main table is aliased `t`. */
  readonly from: string;
  /** Time column expression for date filters, incremental exports and partitioning. */
  readonly timeColumn: string | null;
  /** Ordering key, unique together, for keyset paging. */
  readonly key: readonly string[];
  readonly fields: readonly DatasetField[];
  readonly filters: readonly DatasetFilter[];
  readonly formats: readonly string[];
}

export interface DataMap {
  readonly version: string;
  readonly tables: Readonly<Record<string, TableDeclaration>>;
  readonly datasets: Readonly<Record<string, DatasetDeclaration>>;
}
