import { lineTransform } from './line-splitter.ts';
import type { FormatWriter, WriterContext } from './types.ts';

/**
 * JSON: one document, `{"export_metadata": {...}, "data": [ row, row, ... ]}`, written
 * as the rows arrive (never collected). Each row is the database's NDJSON line as it
 * is, one per line, so a row's bytes are exactly the NDJSON export's. Zero rows give
 * `"data":[]`.
 */
export const json: FormatWriter = {
  format: 'json',
  extension: 'json',
  contentType: 'application/json',
  input: 'ndjson',
  create(ctx: WriterContext) {
    const head = `{"export_metadata":${JSON.stringify(ctx.metadata)},\n"data":[`;
    let rows = 0;
    return lineTransform({
      lines(lines) {
        const prefix = rows === 0 ? `${head}\n` : ',\n';
        rows += lines.length;
        return prefix + lines.join(',\n');
      },
      end() {
        return rows === 0 ? `${head}]}\n` : '\n]}\n';
      },
    });
  },
};
