import { Transform, type TransformCallback } from 'node:stream';
import type { FormatWriter } from './types.ts';

const NEWLINE = 0x0a;

/**
 * NDJSON: the database already writes one JSON object per line, so the bytes pass
 * through; the writer only guarantees that the last line ends with `\n` too.
 */
export const ndjson: FormatWriter = {
  format: 'ndjson',
  extension: 'ndjson',
  contentType: 'application/x-ndjson',
  input: 'ndjson',
  create(): Transform {
    let lastByte = NEWLINE; // an empty input stays empty
    return new Transform({
      transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
        if (chunk.length > 0) lastByte = chunk[chunk.length - 1]!;
        done(null, chunk);
      },
      flush(this: Transform, done: TransformCallback) {
        if (lastByte !== NEWLINE) this.push(Buffer.from('\n'));
        done();
      },
    });
  },
};
