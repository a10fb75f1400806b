import { Transform, type TransformCallback } from 'node:stream';

const QUOTE = 0x22;
const NEWLINE = 0x0a;

/**
 * Counts records in a passing byte stream without changing it: NDJSON counts lines;
 * CSV counts line ends outside quoted fields (quoted cells may hold newlines).
 * Uses indexOf jumps, not a per-byte loop, so it keeps up with COPY.
 */
export class RecordCounter extends Transform {
  records = 0;
  bytes = 0;
  private inQuotes = false;
  private readonly csv: boolean;
  private readonly skip: number;
  private readonly onCount: ((records: number, bytes: number) => void) | undefined;

  constructor(
    kind: 'csv' | 'ndjson',
    options: { headerLines?: number; onCount?: (records: number, bytes: number) => void } = {},
  ) {
    super();
    this.csv = kind === 'csv';
    this.skip = options.headerLines ?? 0;
    this.onCount = options.onCount;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    this.records += this.csv ? this.countCsv(chunk) : countByte(chunk, NEWLINE);
    this.onCount?.(this.count, this.bytes);
    done(null, chunk);
  }

  /** Records seen, not counting header lines. */
  get count(): number {
    return Math.max(0, this.records - this.skip);
  }

  private countCsv(chunk: Buffer): number {
    let n = 0;
    let i = 0;
    // The next newline at or after i, searched again only once i has passed it: JSON cells
    // hold many (doubled) quotes, and looking for the newline after each quote would scan
    // the rest of the row again and again.
    let nl = chunk.indexOf(NEWLINE);
    while (i < chunk.length) {
      const q = chunk.indexOf(QUOTE, i);
      if (this.inQuotes) {
        if (q < 0) return n;
        this.inQuotes = false; // a doubled quote "" re-enters quotes on the next byte
        i = q + 1;
        continue;
      }
      if (nl >= 0 && nl < i) nl = chunk.indexOf(NEWLINE, i);
      if (nl >= 0 && (q < 0 || nl < q)) {
        n++;
        i = nl + 1;
      } else if (q >= 0) {
        this.inQuotes = true;
        i = q + 1;
      } else {
        return n;
      }
    }
    return n;
  }
}

function countByte(chunk: Buffer, byte: number): number {
  let n = 0;
  let i = chunk.indexOf(byte);
  while (i >= 0) {
    n++;
    i = chunk.indexOf(byte, i + 1);
  }
  return n;
}
