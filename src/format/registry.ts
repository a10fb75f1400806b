import { invalid } from '../domain/ferry-error.ts';
import { csv } from './csv-writer.ts';
import { json } from './json-writer.ts';
import { ndjson } from './ndjson-writer.ts';
import { parquet } from './parquet-writer.ts';
import { EXPORT_FORMATS, type ExportFormat, type FormatWriter } from './types.ts';
import { xml } from './xml-writer.ts';

/** Every export format's writer; a new format is a compile error until it is listed here. */
export const WRITERS = { csv, json, ndjson, xml, parquet } satisfies Record<ExportFormat, FormatWriter>;

export function isExportFormat(format: string): format is ExportFormat {
  return Object.hasOwn(WRITERS, format);
}

/** The writer of a format; an unknown format is an `invalid_parameter` error naming the accepted ones. */
export function getWriter(format: string): FormatWriter {
  if (!isExportFormat(format))
    throw invalid('format', `unknown format ${JSON.stringify(format)}`, EXPORT_FORMATS);
  return WRITERS[format];
}
