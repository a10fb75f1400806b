import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, test } from 'vitest';
import { MeteredHash, sha256Hex } from '../src/lib/metered-hash.ts';
import { chunked, readAll, sha256 } from './support/fixtures/streams.ts';

describe('MeteredHash', () => {
  test('passes the bytes through unchanged, with their count and SHA-256', async () => {
    const data = randomBytes(300_000);
    const meter = new MeteredHash();
    const [out] = await Promise.all([readAll(meter), pipeline(chunked(data, 4099), meter)]);
    expect(out.equals(data)).toBe(true);
    expect(meter.bytes).toBe(data.length);
    expect(meter.sha256).toBe(sha256(data));
    expect(sha256Hex(data)).toBe(sha256(data));
  });

  test('an empty stream has the SHA-256 of nothing', async () => {
    const meter = new MeteredHash();
    await Promise.all([readAll(meter), pipeline(chunked(Buffer.alloc(0)), meter)]);
    expect(meter.bytes).toBe(0);
    expect(meter.sha256).toBe(sha256(Buffer.alloc(0)));
  });

  test('refuses to give a digest before the input ended', () => {
    const meter = new MeteredHash();
    meter.write(Buffer.from('partial'));
    expect(meter.bytes).toBe(7);
    expect(() => meter.sha256).toThrow(/before the stream ended/);
    meter.destroy();
  });

  test('counts without hashing when asked to', async () => {
    const meter = new MeteredHash({ hash: false });
    await Promise.all([readAll(meter), pipeline(chunked(randomBytes(1000), 7), meter)]);
    expect(meter.bytes).toBe(1000);
    expect(() => meter.sha256).toThrow(/without a hash/);
  });

  test('fails with the given error at the chunk that goes past the limit, reporting bytes until then', async () => {
    const seen: number[] = [];
    const meter = new MeteredHash({
      maxBytes: 250,
      tooLarge: (max) => Object.assign(new Error(`over ${max}`), { code: 'quota_exceeded' }),
      onBytes: (bytes) => seen.push(bytes),
    });
    const sink = new PassThrough();
    sink.resume();
    await expect(pipeline(chunked(randomBytes(1000), 100), meter, sink)).rejects.toMatchObject({
      message: 'over 250',
      code: 'quota_exceeded',
    });
    expect(seen).toEqual([100, 200]);
  });

  test('a limit that the stream stays within changes nothing', async () => {
    const data = randomBytes(250);
    const meter = new MeteredHash({ maxBytes: 250 });
    const [out] = await Promise.all([readAll(meter), pipeline(chunked(data, 100), meter)]);
    expect(out.equals(data)).toBe(true);
  });

  test('an error thrown by the byte callback stops the stream with that error', async () => {
    const meter = new MeteredHash({
      onBytes: (bytes) => {
        if (bytes > 150) throw new Error('stop here');
      },
    });
    const sink = new PassThrough();
    sink.resume();
    await expect(pipeline(chunked(randomBytes(1000), 100), meter, sink)).rejects.toThrow('stop here');
  });
});
