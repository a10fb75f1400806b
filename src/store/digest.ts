import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** Passes bytes through unchanged while counting them and computing their SHA-256. */
export class DigestTransform extends Transform {
  #hash: Hash = createHash('sha256');
  #bytes = 0;
  #sha256: string | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk);
    this.#bytes += chunk.length;
    callback(null, chunk);
  }

  /** Size and hex SHA-256 of everything that passed; call once the stream has ended. */
  result(): { bytes: number; sha256: string } {
    this.#sha256 ??= this.#hash.digest('hex');
    return { bytes: this.#bytes, sha256: this.#sha256 };
  }
}
