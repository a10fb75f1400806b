import type { Transform } from 'node:stream';
import type { FieldType } from '../datamap/types.ts';

export const EXPORT_FORMATS = ['csv', 'json', 'ndjson', 'xml', 'parquet'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** One output column as a writer sees it. */
export interface FieldSpec {
  readonly name: string;
  readonly type: FieldType;
  readonly description: string;
  /**
   * A `json` field that holds an array of objects of these fields (a conversation's messages
   * nested): XML writes each object as an `<item>` of their elements, and its XSD says so.
   */
  readonly members?: readonly FieldSpec[];
}

export interface WriterContext {
  /** Dataset name, e.g. `messages`; XML element names and schema titles derive from it. */
  readonly dataset: string;
  /** Output columns in order. */
  readonly fields: readonly FieldSpec[];
  /** `export_metadata` object of JSON documents (and XML metadata element). */
  readonly metadata: Readonly<Record<string, unknown>>;
  /** CSV only: write a UTF-8 byte-order mark first, for Excel. */
  readonly bom: boolean;
}

/**
 * What the database produces for a writer (one streamed COPY):
 * - `csv`: RFC 4180 CSV with a header row; cells already rendered (timestamps ISO 8601,
 *   arrays/objects as JSON text, formula guard applied when asked).
 * - `ndjson`: one JSON object per line, keys = field names in order; timestamps as ISO
 *   8601 strings (UTC `Z`), numbers as numbers, arrays as arrays, json fields as JSON values.
 * Chunk boundaries of the input are arbitrary bytes (not line-aligned).
 */
export type WriterInput = 'csv' | 'ndjson';

export interface FormatWriter {
  readonly format: ExportFormat;
  /** File extension without the dot, e.g. `csv`. */
  readonly extension: string;
  readonly contentType: string;
  readonly input: WriterInput;
  /** A byte stream transform from the database's stream to the format's bytes. */
  create(ctx: WriterContext): Transform;
}
