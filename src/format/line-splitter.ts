import { Transform, type TransformCallback } from 'node:stream';
import { FerryError } from '../domain/ferry-error.ts';

const NEWLINE = 0x0a;

/** Longest line accepted by default (one NDJSON row): far above any real row, low enough to fail fast. */
export const DEFAULT_MAX_LINE_BYTES = 256 * 1024 * 1024;

/**
 * Cuts a byte stream into complete lines. Chunks may end anywhere, also inside a
 * multi-byte UTF-8 character: the cut is made on the newline byte (0x0A), which never
 * occurs inside a UTF-8 sequence, and text is decoded only for complete lines.
 * Lines are returned without their `\n` (and without a `\r` before it).
 */
export class LineSplitter {
  readonly #maxLineBytes: number;
  /** Bytes after the last newline seen, waiting for the rest of their line. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  constructor(options: { maxLineBytes?: number } = {}) {
    this.#maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  }

  /** The complete lines that this chunk finishes, in order. */
  push(chunk: Uint8Array): string[] {
    const buf = Buffer.isBuffer(chunk)
      ? chunk
      : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const last = buf.lastIndexOf(NEWLINE);
    if (last < 0) {
      this.#keep(buf);
      return [];
    }
    let head: Buffer = buf.subarray(0, last);
    if (this.#pendingBytes > 0) {
      this.#pending.push(head);
      head = Buffer.concat(this.#pending, this.#pendingBytes + head.length);
      this.#pending = [];
      this.#pendingBytes = 0;
    }
    const rest = buf.subarray(last + 1);
    if (rest.length > 0) this.#keep(rest);
    const lines = head.toString('utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (line.endsWith('\r')) lines[i] = line.slice(0, -1);
    }
    return lines;
  }

  /** The last line if the input did not end with a newline (empty array otherwise). */
  end(): string[] {
    if (this.#pendingBytes === 0) return [];
    const line = Buffer.concat(this.#pending, this.#pendingBytes).toString('utf8');
    this.#pending = [];
    this.#pendingBytes = 0;
    return [line.endsWith('\r') ? line.slice(0, -1) : line];
  }

  #keep(bytes: Buffer): void {
    this.#pendingBytes += bytes.length;
    if (this.#pendingBytes > this.#maxLineBytes) {
      throw new FerryError(
        'format_error',
        `input line longer than ${this.#maxLineBytes} bytes; the database stream is not line-delimited`,
      );
    }
    // Copy: the caller may reuse the chunk's memory once push() returns.
    this.#pending.push(Buffer.from(bytes));
  }
}

/** What an NDJSON-consuming writer does with the lines of each input chunk. */
export interface LineSink {
  /** Called with the non-empty lines completed by one input chunk; returns bytes to emit, if any. */
  lines(lines: readonly string[]): string | Uint8Array | undefined;
  /** Called once after the last line; returns trailing bytes to emit, if any. */
  end(): string | Uint8Array | undefined;
}

/**
 * A byte transform built from a line sink: input chunks are split into lines, empty
 * lines are skipped, and whatever the sink returns for a chunk is pushed as one output
 * chunk. Errors thrown by the sink fail the stream.
 */
export function lineTransform(sink: LineSink, options: { maxLineBytes?: number } = {}): Transform {
  const splitter = new LineSplitter(options);
  const emit = (stream: Transform, out: string | Uint8Array | undefined): void => {
    if (out !== undefined && out.length > 0) stream.push(typeof out === 'string' ? Buffer.from(out) : out);
  };
  return new Transform({
    transform(this: Transform, chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      try {
        const lines = nonEmpty(splitter.push(chunk));
        if (lines.length > 0) emit(this, sink.lines(lines));
        done();
      } catch (err) {
        done(err as Error);
      }
    },
    flush(this: Transform, done: TransformCallback) {
      try {
        const lines = nonEmpty(splitter.end());
        if (lines.length > 0) emit(this, sink.lines(lines));
        emit(this, sink.end());
        done();
      } catch (err) {
        done(err as Error);
      }
    },
  });
}

function nonEmpty(lines: string[]): string[] {
  let empty = false;
  for (const line of lines) {
    if (isBlank(line)) {
      empty = true;
      break;
    }
  }
  return empty ? lines.filter((line) => !isBlank(line)) : lines;
}

/** True for an empty or whitespace-only line (skipped by every NDJSON consumer). */
export function isBlank(line: string): boolean {
  return line.length === 0 || (line.charCodeAt(0) <= 0x20 && line.trim().length === 0);
}
