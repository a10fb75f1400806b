import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** A pass-through stream that computes the SHA-256 and the byte count of what flows through it. */
export class HashingStream extends Transform {
  readonly #hash: Hash = createHash('sha256');
  #bytes = 0;
  #digest: string | undefined;

  override _transform(chunk: Buffer | string, _encoding: BufferEncoding, callback: TransformCallback): void {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.#hash.update(buffer);
    this.#bytes += buffer.length;
    callback(null, buffer);
  }

  override _flush(callback: TransformCallback): void {
    this.#digest = this.#hash.digest('hex');
    callback();
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The hex digest; only available once all input went through. */
  get sha256(): string {
    if (this.#digest === undefined) throw new Error('HashingStream: digest read before the stream ended');
    return this.#digest;
  }
}

/** A pass-through stream that counts bytes (the size of an archive as written). */
export class ByteCounter extends Transform {
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
