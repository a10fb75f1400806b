import { Transform, type TransformCallback } from 'node:stream';
import type { FormatWriter, WriterContext } from './types.ts';

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * CSV: the database already renders RFC 4180 CSV with a header row (cells quoted,
 * formula guard applied), so the bytes pass through unchanged. With `ctx.bom` a UTF-8
 * byte-order mark goes first, which Excel needs to read the file as UTF-8.
 */
export const csv: FormatWriter = {
  format: 'csv',
  extension: 'csv',
  contentType: 'text/csv; charset=utf-8',
  input: 'csv',
  create(ctx: WriterContext): Transform {
    let started = !ctx.bom;
    return new Transform({
      transform(this: Transform, chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
        if (!started) {
          started = true;
          this.push(BOM);
        }
        done(null, chunk);
      },
      flush(this: Transform, done: TransformCallback) {
        if (!started) this.push(BOM);
        done();
      },
    });
  },
};
