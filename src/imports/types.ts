/**
 * The import pipeline's contract between a source (a Ferry package, a CSV/JSON/NDJSON file,
 * a competitor's export) and the engine that plans and applies it (docs/import.md).
 *
 * A source reads untrusted files and yields one `ImportItem` per record, keyed by the data
 * map: the Ferry table it becomes (`entity`), the source's own identity of the record
 * (`sourceType`, `sourceId`) and the Ferry column values. It never touches the database:
 * references to parents are given by the parent's source identity and resolved by the
 * engine through the import map.
 */

/** The Ferry tables an import writes, parents before children (the engine's order). */
export const IMPORT_ENTITIES = [
  'sites',
  'team_members',
  'customers',
  'consent_records',
  'documents',
  'conversations',
  'messages',
] as const;
export type ImportEntity = (typeof IMPORT_ENTITIES)[number];

/** The sources `ferry import --source` accepts. */
export const IMPORT_SOURCES = [
  'ferry',
  'csv',
  'json',
  'ndjson',
  'zendesk',
  'intercom',
  'chatwoot',
  'freshdesk',
  'helpscout',
] as const;
export type ImportSourceName = (typeof IMPORT_SOURCES)[number];

/** A reference from an item to the row of a parent it belongs to. */
export type ImportRef =
  /** A parent imported from the same source system, found through the import map. */
  | { readonly entity: ImportEntity; readonly sourceType: string; readonly sourceId: string }
  /** A parent found by its natural key in the tenant: a site's URL, a customer's or team member's email. */
  | { readonly entity: ImportEntity; readonly natural: string };

/** The original record, written back to the rejected-items file when the item is rejected. */
export type RawRecord =
  | { readonly kind: 'json'; readonly value: unknown }
  | {
      readonly kind: 'csv';
      readonly file: string;
      readonly header: readonly string[];
      readonly row: readonly string[];
    };

export interface ImportItem {
  readonly entity: ImportEntity;
  /** The source's own type of the record (`ticket`, `ticket_comment`, `conversation`, …). */
  readonly sourceType: string;
  /** The source's id of the record, unique within its source type. */
  readonly sourceId: string;
  /**
   * Ferry column values, without `id`, `tenant_id` and the reference columns, as JSON values:
   * ISO 8601 text for timestamps, numbers (or numeric text beyond 2^53), booleans, arrays for
   * array columns, objects for JSON columns, null for empty.
   */
  readonly values: Readonly<Record<string, unknown>>;
  /** Reference columns (`conversation_id`, `customer_id`, …): resolved to the parent row's id; null leaves the column empty. */
  readonly refs?: Readonly<Record<string, ImportRef | null>>;
  /**
   * Text columns that name another record by its source id (a message's `sender_id`): when
   * that record was imported, the column gets its Ferry id, else the text is kept.
   */
  readonly soft?: Readonly<Record<string, ImportRef>>;
  /**
   * JSON list columns whose elements name records by source id (a message's `content_sources`,
   * the knowledge-base documents it cited): each element that was imported gets its Ferry id.
   */
  readonly softLists?: Readonly<
    Record<string, { readonly entity: ImportEntity; readonly sourceType: string }>
  >;
  /**
   * Columns whose value the source infers rather than holds (a conversation's customer, found by
   * the email it carries): set when the row is created, never compared with or written over an
   * existing row's value.
   */
  readonly createOnly?: readonly string[];
  /** The source's last-updated time of the record (ISO 8601), for `newest_wins`. */
  readonly updatedAt: string | null;
  /** Where the record is (`tickets.json` at byte 1234, `messages.csv` line 12), for errors. */
  readonly location: string;
  readonly raw: RawRecord;
  /** Problems the source found while mapping; a non-empty list rejects the item. */
  readonly errors?: readonly string[];
}

/** Files handed to a source: a directory (an extracted archive or a folder) or one file. */
export interface ImportInput {
  /** Absolute path of the folder holding `files`. */
  readonly root: string;
  /** Relative paths (forward slashes) of every regular file, sorted. */
  readonly files: readonly string[];
}

export { DEFAULT_IMPORT_LIMITS, type ImportLimits } from '../config/config.ts';
import type { ImportLimits } from '../config/config.ts';

/** A source: reads the input once per entity, in `IMPORT_ENTITIES` order. */
export interface ImportSource {
  /** The source system of the import map key (`ferry`, `zendesk`, …). */
  readonly system: string;
  /** The items of one entity, in the order the source holds them. */
  items(entity: ImportEntity): AsyncIterable<ImportItem>;
  /** Notes for the report: unknown columns, files not imported, an anonymized package. */
  readonly warnings: string[];
  /**
   * Whether conversations' message counts are derived from the imported messages (sources
   * whose conversations do not carry them).
   */
  readonly deriveCounts?: boolean;
}

/** What a source needs besides its input. */
export interface SourceOptions {
  readonly limits: ImportLimits;
  /** `csv`/`json`/`ndjson`: the dataset the file holds, when its header or metadata does not say. */
  readonly dataset?: string | undefined;
}
