import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

export interface MeteredHashOptions {
  /** Compute the SHA-256 (default). Off for a size-only count of bytes that are hashed elsewhere. */
  readonly hash?: boolean;
  /** Most bytes allowed through; the chunk that goes past it fails the stream with `tooLarge(maxBytes)`. */
  readonly maxBytes?: number | null;
  /** The error for a stream past `maxBytes`; default a plain error naming the limit. */
  readonly tooLarge?: (maxBytes: number) => Error;
  /** Called with the running byte count after each chunk; a throw fails the stream with that error. */
  readonly onBytes?: (bytes: number) => void;
}

/**
 * Passes bytes through unchanged while counting them and computing their SHA-256: the
 * one meter behind export files, package entries, stored objects and deliveries.
 * A byte limit and a per-chunk callback (progress) are optional.
 */
export class MeteredHash extends Transform {
  readonly #hash: Hash | null;
  readonly #maxBytes: number | null;
  readonly #tooLarge: (maxBytes: number) => Error;
  readonly #onBytes: ((bytes: number) => void) | undefined;
  #bytes = 0;
  #ended = false;
  #sha256: string | undefined;

  constructor(options: MeteredHashOptions = {}) {
    super();
    this.#hash = options.hash === false ? null : createHash('sha256');
    this.#maxBytes = options.maxBytes ?? null;
    this.#tooLarge = options.tooLarge ?? ((max) => new Error(`the stream grew past ${max} bytes`));
    this.#onBytes = options.onBytes;
  }

  override _transform(chunk: Buffer | string, _encoding: BufferEncoding, done: TransformCallback): void {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.#bytes += buffer.length;
    if (this.#maxBytes !== null && this.#bytes > this.#maxBytes) {
      done(this.#tooLarge(this.#maxBytes));
      return;
    }
    this.#hash?.update(buffer);
    try {
      this.#onBytes?.(this.#bytes);
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    done(null, buffer);
  }

  override _flush(done: TransformCallback): void {
    this.#ended = true;
    done();
  }

  /** Bytes that passed so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Hex SHA-256 of everything that passed; only once the input has ended, so a partial digest is never read. */
  get sha256(): string {
    if (!this.#hash) throw new Error('MeteredHash: created without a hash');
    if (!this.#ended) throw new Error('MeteredHash: digest read before the stream ended');
    this.#sha256 ??= this.#hash.digest('hex');
    return this.#sha256;
  }
}

/** Hex SHA-256 of a buffer or string. */
export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}
