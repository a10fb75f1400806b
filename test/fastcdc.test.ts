import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { contentChunks, countRows } from '../src/backup/chunker.ts';
import { cdcParams, chunkBuffer, cutPoint } from '../src/backup/fastcdc.ts';

// The test image of the Rust `fastcdc` crate (nlfiedler/fastcdc-rs, test/fixtures), a
// public-domain picture, with the cut points the crate's v2020 module gives for it.
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

const lengths = (chunks: Array<[number, number]>) => chunks.map(([, length]) => length);

describe('FastCDC', () => {
  it('cuts the reference image where the crate does (its published vectors)', () => {
    // fastcdc-rs src/v2020/mod.rs, tests test_cut_sekien_16k_chunks, _32k_ and _64k_.
    expect(chunkBuffer(cdcParams({ minSize: 4096, avgSize: 16384, maxSize: 65535 }), IMAGE)).toEqual([
      [0, 21325],
      [21325, 17140],
      [38465, 28084],
      [66549, 18217],
      [84766, 24700],
    ]);
    expect(chunkBuffer(cdcParams({ minSize: 8192, avgSize: 32768, maxSize: 131072 }), IMAGE)).toEqual([
      [0, 66549],
      [66549, 42917],
    ]);
    expect(chunkBuffer(cdcParams({ minSize: 16384, avgSize: 65536, maxSize: 262144 }), IMAGE)).toEqual([
      [0, 109466],
    ]);
  });

  it('cuts like the crate with odd sizes, where the two-bytes-per-step scan decides', () => {
    // Output of the crate's v2020 module (fastcdc-rs 4.0.1, commit f76938d), built with rustc:
    // FastCDC::new(image, 1001, 3001, 4095) and FastCDC::new(noise(100_000, 7), 1001, 3001, 4095).
    // The scan never tests the last byte of an odd maxSize, so many chunks are exactly 4095.
    const odd = cdcParams({ minSize: 1001, avgSize: 3001, maxSize: 4095 });
    expect(lengths(chunkBuffer(odd, IMAGE))).toEqual([
      4095, 2539, 4095, 4095, 4095, 2406, 4095, 4095, 4095, 3651, 1204, 3365, 4095, 4095, 4095, 4095, 1005,
      3427, 3907, 3211, 4095, 3894, 4095, 2922, 1167, 4095, 2118, 3628, 1609, 4092, 3957, 4034,
    ]);
    expect(lengths(chunkBuffer(odd, noise(100_000, 7)))).toEqual([
      3635, 4095, 4095, 1704, 3058, 4095, 1744, 4095, 1041, 4095, 4095, 4095, 3402, 4095, 3757, 4095, 3724,
      4095, 4095, 1673, 3207, 4095, 3110, 4095, 4095, 3115, 4095, 4095, 1310,
    ]);
    // FastCDC::new(noise(100_000, 7), 4095, 12288, 24575).
    expect(
      lengths(chunkBuffer(cdcParams({ minSize: 4095, avgSize: 12288, maxSize: 24575 }), noise(100_000, 7))),
    ).toEqual([13529, 19101, 18471, 4778, 12904, 10412, 20805]);
  });

  it("cuts all-zero input at the maximum size, and the rest at its end (the crate's test_cut_all_zeros)", () => {
    const params = cdcParams({ minSize: 64, avgSize: 256, maxSize: 1024 });
    const zeros = new Uint8Array(10240);
    for (let start = 0; start < 10240; start += 1024)
      expect(cutPoint(params, zeros, start, 10240)).toBe(1024);
    expect(cutPoint(params, zeros, 10200, 10240)).toBe(40);
  });

  it('reads only buf[start, end): a cut from an offset equals the cut of the slice', () => {
    const params = cdcParams({ minSize: 4096, avgSize: 16384, maxSize: 65535 });
    // The crate's second chunk of the image starts at 21325 and is 17140 bytes long.
    expect(cutPoint(params, IMAGE, 21325, IMAGE.length)).toBe(17140);
    expect(cutPoint(params, IMAGE, 21325, 21325 + 17140)).toBe(17140);
    // Bytes after `end` are not looked at: fewer than minSize left is the rest, whatever follows.
    expect(cutPoint(params, IMAGE, 1000, 1000 + 4096)).toBe(4096);
    expect(cutPoint(params, IMAGE, 1000, 1000 + 100)).toBe(100);
    expect(cutPoint(params, IMAGE, 1000, 1000)).toBe(0);
    expect(chunkBuffer(params, new Uint8Array(0))).toEqual([]);
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
    expect(chunks.at(-1)![1]).toBeLessThanOrEqual(sizes.maxSize);
    // Normalized chunking keeps the average near the asked one.
    expect(input.length / chunks.length).toBeGreaterThan(sizes.avgSize / 2);
    expect(input.length / chunks.length).toBeLessThan(sizes.avgSize * 2);
  });

  it('is content-defined: 100 bytes inserted near the start shift every later cut by 100', () => {
    const params = cdcParams({ minSize: 2048, avgSize: 8192, maxSize: 32768 });
    const input = noise(1_000_000, 99);
    const edited = Buffer.concat([input.subarray(0, 5000), noise(100, 3), input.subarray(5000)]);
    const before = chunkBuffer(params, input).map(([o, l]) => o + l);
    const after = chunkBuffer(params, edited).map(([o, l]) => o + l);
    // The first chunk of the edited input that ends where one ended before, 100 bytes later.
    const k = after.findIndex((end) => end > 5100 && before.includes(end - 100));
    expect(k).toBeGreaterThanOrEqual(0);
    expect(k).toBeLessThanOrEqual(1);
    const j = before.indexOf(after[k]! - 100);
    expect(j).toBeLessThanOrEqual(1);
    expect(after.slice(k).map((end) => end - 100)).toEqual(before.slice(j));
    expect(before.length).toBeGreaterThan(50);
  });

  it('refuses sizes it cannot honour', () => {
    const bad = [
      { minSize: 63, avgSize: 256, maxSize: 1024 },
      { minSize: 4096, avgSize: 1024, maxSize: 8192 },
      { minSize: 1024, avgSize: 8192, maxSize: 4096 },
      { minSize: 64, avgSize: 256, maxSize: 1024 ** 3 + 1 },
      { minSize: 64, avgSize: 128, maxSize: 1024 },
      { minSize: 64, avgSize: 8 * 1024 ** 2, maxSize: 16 * 1024 ** 2 },
      { minSize: 64.5, avgSize: 256, maxSize: 1024 },
      { minSize: 64, avgSize: Number.NaN, maxSize: 1024 },
    ];
    for (const sizes of bad) expect(() => cdcParams(sizes), JSON.stringify(sizes)).toThrow(RangeError);
    expect(() => cdcParams({ minSize: 64, avgSize: 256, maxSize: 1024 ** 3 })).not.toThrow();
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
