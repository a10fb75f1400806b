import { Transform, type TransformCallback } from 'node:stream';

/** Drops the first `skip` bytes, passes the next `count`, drops the rest. */
export class SliceTransform extends Transform {
  #skip: number;
  #left: number;

  constructor(skip: number, count: number) {
    super();
    this.#skip = skip;
    this.#left = count;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let part = chunk;
    if (this.#skip > 0) {
      const dropped = Math.min(this.#skip, part.length);
      this.#skip -= dropped;
      part = part.subarray(dropped);
    }
    if (this.#left > 0 && part.length > 0) {
      const kept = part.subarray(0, this.#left);
      this.#left -= kept.length;
      this.push(kept);
    }
    callback();
  }
}
