import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { contentChunks, countRows } from '../src/backup/chunker.ts';
import { cdcParams, chunkBuffer, cutPoint } from '../src/backup/fastcdc.ts';

// The reference implementation's own test image and its published cut points
// (the Rust `fastcdc` crate, v2020 module, normalization level 1).
const IMAGE = readFileSync(new URL('./support/fixtures/SekienAkashita.jpg', import.meta.url));

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/** A deterministic pseudo-random buffer (xorshift32). */
function noise(bytes: number, seed = 7): Buffer {
  const out = Buffer.alloc(bytes);
  let x = seed;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

describe('FastCDC', () => {
  it('cuts the reference image where the reference implementation does', () => {
    const sixteen = chunkBuffer(cdcParams({ minSize: 4096, avgSize: 16384, maxSize: 65535 }), IMAGE);
    expect(sixteen).toEqual([
      [0, 21325],
      [21325, 17140],
      [38465, 28084],
      [66549, 18217],
      [84766, 24700],
    ]);
    expect(sixteen.map(([o, l]) => md5(IMAGE.subarray(o, o + l)))).toEqual([
      '2bb52734718194617c957f5e07ee6054',
      'badfb0757fe081c20336902e7131f768',
      '18412d7414de6eb42f638351711f729d',
      '04fe1405fc5f960363bfcd834c056407',
      '1aa7ad95f274d6ba34a983946ebc5af3',
    ]);
    expect(
      chunkBuffer(cdcParams({ minSize: 8192, avgSize: 32768, maxSize: 131072 }), IMAGE).map((c) => c[1]),
    ).toEqual([66549, 42917]);
    expect(
      chunkBuffer(cdcParams({ minSize: 16384, avgSize: 65536, maxSize: 262144 }), IMAGE).map((c) => c[1]),
    ).toEqual([109466]);
  });

  it('cuts all-zero input at the maximum size, and the rest at its end', () => {
    const params = cdcParams({ minSize: 64, avgSize: 256, maxSize: 1024 });
    const zeros = new Uint8Array(10240);
    for (let start = 0; start < 10240; start += 1024)
      expect(cutPoint(params, zeros, start, 10240)).toBe(1024);
    expect(cutPoint(params, zeros, 10200, 10240)).toBe(40);
  });

  it('keeps every chunk within min and max (but the last), and the chunks make up the input', () => {
    const sizes = { minSize: 2048, avgSize: 8192, maxSize: 32768 };
    const input = noise(1_000_000);
    const chunks = chunkBuffer(cdcParams(sizes), input);
    expect(Buffer.concat(chunks.map(([o, l]) => input.subarray(o, o + l)))).toEqual(input);
    for (const [, length] of chunks.slice(0, -1)) {
      expect(length).toBeGreaterThanOrEqual(sizes.minSize);
      expect(length).toBeLessThanOrEqual(sizes.maxSize);
    }
    // Normalized chunking keeps the average near the asked one.
    expect(input.length / chunks.length).toBeGreaterThan(sizes.avgSize / 2);
    expect(input.length / chunks.length).toBeLessThan(sizes.avgSize * 2);
  });

  it('is content-defined: an insertion shifts the later cuts instead of changing them', () => {
    const params = cdcParams({ minSize: 2048, avgSize: 8192, maxSize: 32768 });
    const input = noise(1_000_000, 99);
    const edited = Buffer.concat([input.subarray(0, 5000), noise(100, 3), input.subarray(5000)]);
    const before = chunkBuffer(params, input);
    const after = chunkBuffer(params, edited);
    const ends = new Set(before.map(([o, l]) => o + l + 100));
    const shared = after.filter(([o, l]) => ends.has(o + l));
    // All but the chunks around the insertion end where they ended before, 100 bytes later.
    expect(shared.length).toBeGreaterThanOrEqual(after.length - 2);
  });

  it('refuses sizes it cannot honour', () => {
    expect(() => cdcParams({ minSize: 32, avgSize: 256, maxSize: 1024 })).toThrow(RangeError);
    expect(() => cdcParams({ minSize: 4096, avgSize: 1024, maxSize: 8192 })).toThrow(RangeError);
    expect(() => cdcParams({ minSize: 64, avgSize: 256, maxSize: 2 * 1024 ** 3 })).toThrow(RangeError);
  });
});

describe('backup stream chunks', () => {
  /** COPY text rows: newlines inside values are escaped, so each newline ends a row. */
  function rows(n: number): Buffer {
    const lines: string[] = [];
    for (let i = 0; i < n; i++)
      lines.push(`${i}\t"quoted" text\\nwith an escaped newline 😀 ${'x'.repeat(i % 300)}\n`);
    return Buffer.from(lines.join(''));
  }

  it('ends every chunk on a row boundary, whatever the reads look like', async () => {
    const data = rows(20_000);
    const sizes = { minSize: 1024, avgSize: 4096, maxSize: 16384 };
    // Reads of odd sizes that split rows anywhere.
    const reads: Buffer[] = [];
    for (let i = 0; i < data.length; i += 7919) reads.push(data.subarray(i, i + 7919));
    const chunks: Buffer[] = [];
    for await (const c of contentChunks(Readable.from(reads), { sizes })) chunks.push(Buffer.from(c));
    expect(Buffer.concat(chunks)).toEqual(data);
    for (const c of chunks) expect(c[c.length - 1]).toBe(0x0a);
    expect(chunks.reduce((n, c) => n + countRows(c), 0)).toBe(20_000);
    // The same rows read in other pieces give the same chunks: content, not reads, decides.
    const again: Buffer[] = [];
    for await (const c of contentChunks(Readable.from([data.subarray(0, 12345), data.subarray(12345)]), {
      sizes,
    }))
      again.push(Buffer.from(c));
    expect(again.map(md5)).toEqual(chunks.map(md5));
  });

  it('changes only the chunks around a changed row', async () => {
    const sizes = { minSize: 1024, avgSize: 4096, maxSize: 16384 };
    const data = rows(20_000);
    const text = data.toString('utf8');
    const changed = Buffer.from(text.replace('\n10000\t', '\n10000\tEDITED '));
    const collect = async (b: Buffer) => {
      const out: string[] = [];
      for await (const c of contentChunks(Readable.from([b]), { sizes })) out.push(md5(c));
      return out;
    };
    const a = await collect(data);
    const b = new Set(await collect(changed));
    expect(a.filter((h) => !b.has(h)).length).toBeLessThanOrEqual(2);
  });
});
