import { type CdcParams, type CdcSizes, cdcParams, cutPoint } from './fastcdc.ts';

/**
 * Chunk sizes of backup streams: 64 KiB to 1 MiB, 256 KiB on average. Small enough that a
 * day's new rows rewrite little, large enough that a million-message tenant is a few
 * thousand objects.
 */
export const BACKUP_CDC: CdcSizes = { minSize: 64 * 1024, avgSize: 256 * 1024, maxSize: 1024 * 1024 };

const NEWLINE = 0x0a;

/**
 * Cuts a byte stream into content-defined chunks (FastCDC) that end on a row boundary: the
 * cut FastCDC finds moves forward to the end of the row it falls in. COPY's text format ends
 * every row with a newline and escapes the newlines inside values, so each newline is a row
 * end. With `rows: false` (stored files) the FastCDC cuts are used as they are.
 *
 * Because cuts depend on content only, the same rows give the same chunks in every backup,
 * and a change rewrites only the chunks around it.
 */
export async function* contentChunks(
  source: AsyncIterable<Buffer | Uint8Array>,
  options: { sizes?: CdcSizes; rows?: boolean } = {},
): AsyncGenerator<Buffer> {
  const params: CdcParams = cdcParams(options.sizes ?? BACKUP_CDC);
  const max = (options.sizes ?? BACKUP_CDC).maxSize;
  const rows = options.rows ?? true;
  let parts: Buffer[] = [];
  let held = 0;
  // Where the search for a row end resumes in `pending` (bytes before it hold no newline).
  let pending: Buffer = Buffer.alloc(0);

  function* drain(final: boolean): Generator<Buffer> {
    if (parts.length) {
      pending = pending.length ? Buffer.concat([pending, ...parts]) : Buffer.concat(parts);
      parts = [];
    }
    let start = 0;
    while (pending.length - start >= max || (final && start < pending.length)) {
      let end = start + cutPoint(params, pending, start, pending.length);
      if (rows && end < pending.length) {
        const newline = pending.indexOf(NEWLINE, end - 1);
        // A row longer than what is held: wait for its end (at the end of input, take it all).
        if (newline < 0) {
          if (!final) break;
          end = pending.length;
        } else end = newline + 1;
      }
      yield pending.subarray(start, end);
      start = end;
    }
    pending = pending.subarray(start);
    held = pending.length;
  }

  for await (const chunk of source) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    parts.push(buffer);
    held += buffer.length;
    if (held >= 2 * max) yield* drain(false);
  }
  yield* drain(true);
}

/** Counts the rows of a COPY text stream chunk (one newline per row). */
export function countRows(chunk: Buffer): number {
  let n = 0;
  let i = chunk.indexOf(NEWLINE);
  while (i >= 0) {
    n++;
    i = chunk.indexOf(NEWLINE, i + 1);
  }
  return n;
}
