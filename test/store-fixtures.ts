import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';

/** `data` as a stream of `chunkSize`-byte chunks (odd sizes exercise boundary handling). */
export function chunked(data: Buffer, chunkSize = 64 * 1024 + 3): Readable {
  return Readable.from(
    (function* () {
      for (let offset = 0; offset < data.length; offset += chunkSize)
        yield data.subarray(offset, offset + chunkSize);
    })(),
    { objectMode: false },
  );
}

/** A stream that emits the first `failAfter` bytes of `data`, then fails with `error`. */
export function failingSource(data: Buffer, failAfter: number, error = new Error('source failed')): Readable {
  return Readable.from(
    (async function* () {
      for (let offset = 0; offset < failAfter; offset += 256 * 1024)
        yield data.subarray(offset, Math.min(offset + 256 * 1024, failAfter));
      throw error;
    })(),
    { objectMode: false },
  );
}

export async function readAll(stream: AsyncIterable<Buffer | string>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}
