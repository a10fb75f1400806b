import { createHash } from 'node:crypto';

/**
 * FastCDC content-defined chunking as published in "The Design of Fast Content-Defined
 * Chunking for Data Deduplication Based Storage Systems" (Xia et al., IEEE TPDS 2020):
 * gear hash, cut-point skipping below the minimum size, normalized chunking (level 1) and
 * rolling two bytes per step. Written here because no well-kept npm package implements it
 * (`fastcdc` is not on npm; the one WASM build had a single release). It follows the Rust
 * crate `fastcdc` (nlfiedler/fastcdc-rs), module `v2020`, step for step, and its cut points
 * equal that crate's: `test/fastcdc.test.ts` checks them against the crate's published vectors.
 *
 * The 64-bit gear hash is kept as two 32-bit halves, several times faster than BigInt.
 */

export interface CdcSizes {
  readonly minSize: number;
  readonly avgSize: number;
  readonly maxSize: number;
}

/** Validated sizes and their masks, as 32-bit halves; build it with `cdcParams`. */
export interface CdcParams extends CdcSizes {
  /** mask_s, mask_l, mask_s << 1, mask_l << 1, each as [high, low]. */
  readonly masks: readonly number[];
}

/**
 * The crate's GEAR table: for each byte value i, the first 8 bytes (big-endian) of the MD5 of
 * 64 bytes equal to i (the crate's `examples/table64.rs`, after the C reference in destor).
 * GEAR_LS is the same table shifted left one bit, for the first of the two bytes of a step.
 */
const GEAR_HI = new Uint32Array(256);
const GEAR_LO = new Uint32Array(256);
const GEAR_LS_HI = new Uint32Array(256);
const GEAR_LS_LO = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  const digest = createHash('md5').update(Buffer.alloc(64, i)).digest();
  GEAR_HI[i] = digest.readUInt32BE(0);
  GEAR_LO[i] = digest.readUInt32BE(4);
  GEAR_LS_HI[i] = ((GEAR_HI[i]! << 1) | (GEAR_LO[i]! >>> 31)) >>> 0;
  GEAR_LS_LO[i] = (GEAR_LO[i]! << 1) >>> 0;
}

/**
 * The crate's MASKS, indexed by number of bits (0 to 4 unused). The bits are spread over the
 * word, which the paper finds dedupes slightly better than contiguous bits.
 */
const MASKS: readonly bigint[] = [
  0n,
  0n,
  0n,
  0n,
  0n,
  0x0000000001804110n,
  0x0000000001803110n,
  0x0000000018035100n,
  0x0000001800035300n,
  0x0000019000353000n,
  0x0000590003530000n,
  0x0000d90003530000n,
  0x0000d90103530000n,
  0x0000d90303530000n,
  0x0000d90313530000n,
  0x0000d90f03530000n,
  0x0000d90303537000n,
  0x0000d90703537000n,
  0x0000d90707537000n,
  0x0000d91707537000n,
  0x0000d91747537000n,
  0x0000d91767537000n,
  0x0000d93767537000n,
  0x0000d93777537000n,
  0x0000d93777577000n,
  0x0000db3777577000n,
];

/** Normalization level: the mask before avgSize has this many more bits, after it this many fewer. */
const NORMALIZATION = 1;

const halves = (v: bigint) => [Number((v >> 32n) & 0xffffffffn), Number(v & 0xffffffffn)];

/**
 * Validated sizes with their masks. Throws RangeError when a size is not a whole number,
 * min < 64, max > 1 GiB, not min <= avg <= max, or avg is outside the crate's 256 B to 4 MiB.
 */
export function cdcParams(sizes: CdcSizes): CdcParams {
  const { minSize, avgSize, maxSize } = sizes;
  for (const [name, v] of Object.entries({ minSize, avgSize, maxSize }))
    if (!Number.isSafeInteger(v)) throw new RangeError(`${name} must be a whole number of bytes`);
  if (minSize < 64) throw new RangeError('minSize must be at least 64 bytes');
  if (maxSize > 1024 ** 3) throw new RangeError('maxSize must be at most 1 GiB');
  if (!(minSize <= avgSize && avgSize <= maxSize))
    throw new RangeError('sizes must satisfy min <= avg <= max');
  if (avgSize < 256 || avgSize > 4 * 1024 ** 2)
    throw new RangeError('avgSize must be between 256 bytes and 4 MiB');
  const bits = Math.round(Math.log2(avgSize));
  const s = MASKS[bits + NORMALIZATION]!;
  const l = MASKS[bits - NORMALIZATION]!;
  const masks = [...halves(s), ...halves(l), ...halves(s << 1n), ...halves(l << 1n)];
  return { minSize, avgSize, maxSize, masks };
}

/**
 * Length of the next chunk of buf[start, end): the first cut point FastCDC 2020 finds, or
 * end - start when at most minSize bytes remain or no cut is found before maxSize (never more
 * than maxSize). Pure and allocation-free. As in the crate, the scan starts at minSize rounded
 * down to even, so an odd minSize can give a chunk of minSize - 1 bytes.
 *
 * A streaming caller holds a buffer that may not yet reach maxSize bytes past `start`: it must
 * call this only when it holds at least maxSize bytes, or at the end of its input. A result
 * equal to end - start that is shorter than maxSize is then final only at the end of the stream.
 */
export function cutPoint(params: CdcParams, buf: Uint8Array, start: number, end: number): number {
  let remaining = end - start;
  if (remaining <= params.minSize) return remaining;
  let center = params.avgSize;
  if (remaining > params.maxSize) remaining = params.maxSize;
  else if (remaining < center) center = remaining;
  const m = params.masks;
  // Below center the stricter mask_s, from there to the end the looser mask_l.
  let mHi = m[0]!;
  let mLo = m[1]!;
  let lsHi = m[4]!;
  let lsLo = m[5]!;
  let hHi = 0;
  let hLo = 0;
  let i = params.minSize >>> 1;
  let limit = center >>> 1;
  for (let phase = 0; phase < 2; phase++) {
    for (; i < limit; i++) {
      const a = start + 2 * i;
      // hash = (hash << 2) + GEAR_LS[buf[a]], then hash + GEAR[buf[a + 1]], mod 2^64.
      let b = buf[a]!;
      let sum = ((hLo << 2) >>> 0) + GEAR_LS_LO[b]!;
      hHi = (((hHi << 2) | (hLo >>> 30)) + GEAR_LS_HI[b]! + (sum > 0xffffffff ? 1 : 0)) >>> 0;
      hLo = sum >>> 0;
      if ((hLo & lsLo) === 0 && (hHi & lsHi) === 0) return 2 * i;
      b = buf[a + 1]!;
      sum = hLo + GEAR_LO[b]!;
      hHi = (hHi + GEAR_HI[b]! + (sum > 0xffffffff ? 1 : 0)) >>> 0;
      hLo = sum >>> 0;
      if ((hLo & mLo) === 0 && (hHi & mHi) === 0) return 2 * i + 1;
    }
    limit = remaining >>> 1;
    mHi = m[2]!;
    mLo = m[3]!;
    lsHi = m[6]!;
    lsLo = m[7]!;
  }
  // No cut (all zeros, say): the largest chunk allowed.
  return remaining;
}

/** Every chunk boundary of a whole buffer, as [offset, length] pairs (tests, small inputs). */
export function chunkBuffer(params: CdcParams, buf: Uint8Array): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let offset = 0; offset < buf.length; ) {
    const length = cutPoint(params, buf, offset, buf.length);
    out.push([offset, length]);
    offset += length;
  }
  return out;
}
