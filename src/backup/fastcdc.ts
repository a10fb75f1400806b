import { createHash } from 'node:crypto';

/**
 * FastCDC content-defined chunking ("The Design of Fast Content-Defined Chunking for Data
 * Deduplication Based Storage Systems", Xia et al., IEEE TPDS 2020), normalized chunking
 * level 1. Written here because no well-kept npm package implements it (`fastcdc` is not on
 * npm; the one WASM build had a single release). Cut points equal those of the reference
 * implementations (the C one in destor, the Rust `fastcdc` crate's v2020 module), which
 * `test/fastcdc.test.ts` checks against their published vectors.
 *
 * The gear hash is 64-bit; JavaScript keeps it as two 32-bit halves, which is several
 * times faster than BigInt.
 */

export interface CdcSizes {
  readonly minSize: number;
  readonly avgSize: number;
  readonly maxSize: number;
}

export interface CdcParams extends CdcSizes {
  readonly maskSHi: number;
  readonly maskSLo: number;
  readonly maskLHi: number;
  readonly maskLLo: number;
}

/**
 * The gear table: for each byte value i, the first 8 bytes (big-endian) of the MD5 of 64
 * bytes all equal to i, as the reference implementations generate it. Kept as high and low
 * 32-bit halves.
 */
const GEAR_HI = new Uint32Array(256);
const GEAR_LO = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  const digest = createHash('md5').update(Buffer.alloc(64, i)).digest();
  GEAR_HI[i] = digest.readUInt32BE(0);
  GEAR_LO[i] = digest.readUInt32BE(4);
}

/**
 * The masks by number of bits, from the reference implementation: the bits are spread over
 * the word, which the paper finds dedupes slightly better than contiguous bits.
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

/** Normalized chunking level: the mask before the average size has this many more bits, after it this many fewer. */
const NORMALIZATION = 1;

const hi = (v: bigint) => Number((v >> 32n) & 0xffffffffn);
const lo = (v: bigint) => Number(v & 0xffffffffn);

/** Validated sizes with their masks; throws RangeError when min < 64, max > 1 GiB, or not min ≤ avg ≤ max. */
export function cdcParams(sizes: CdcSizes): CdcParams {
  const { minSize, avgSize, maxSize } = sizes;
  for (const [name, v] of Object.entries(sizes))
    if (!Number.isInteger(v)) throw new RangeError(`${name} must be a whole number of bytes`);
  if (minSize < 64) throw new RangeError('minSize must be at least 64 bytes');
  if (maxSize > 1024 ** 3) throw new RangeError('maxSize must be at most 1 GiB');
  if (!(minSize <= avgSize && avgSize <= maxSize))
    throw new RangeError('sizes must satisfy min <= avg <= max');
  const bits = Math.round(Math.log2(avgSize));
  if (bits - NORMALIZATION < 5 || bits + NORMALIZATION > 25)
    throw new RangeError('avgSize must be between 256 bytes and 4 MiB');
  const s = MASKS[bits + NORMALIZATION]!;
  const l = MASKS[bits - NORMALIZATION]!;
  return { minSize, avgSize, maxSize, maskSHi: hi(s), maskSLo: lo(s), maskLHi: hi(l), maskLLo: lo(l) };
}

/**
 * Length of the next chunk of buf[start, end): the first cut point FastCDC finds, or
 * end - start when fewer than minSize bytes remain or no cut is found before maxSize (never
 * more than maxSize). Pure and allocation-free. A streaming caller calls it when it holds at
 * least maxSize bytes, or at the end of its input: only then is a result shorter than
 * maxSize that reaches `end` final.
 */
export function cutPoint(params: CdcParams, buf: Uint8Array, start: number, end: number): number {
  let remaining = end - start;
  if (remaining <= params.minSize) return remaining;
  let center = params.avgSize;
  if (remaining > params.maxSize) remaining = params.maxSize;
  else if (remaining < center) center = remaining;
  let hHi = 0;
  let hLo = 0;
  let i = params.minSize;
  // hash = (hash << 1) + GEAR[byte], in two 32-bit halves.
  for (; i < center; i++) {
    const b = buf[start + i]!;
    const shifted = (hLo << 1) >>> 0;
    const sum = shifted + GEAR_LO[b]!;
    hHi = (((hHi << 1) | (hLo >>> 31)) + GEAR_HI[b]! + (sum > 0xffffffff ? 1 : 0)) >>> 0;
    hLo = sum >>> 0;
    if ((hLo & params.maskSLo) === 0 && (hHi & params.maskSHi) === 0) return i;
  }
  for (; i < remaining; i++) {
    const b = buf[start + i]!;
    const shifted = (hLo << 1) >>> 0;
    const sum = shifted + GEAR_LO[b]!;
    hHi = (((hHi << 1) | (hLo >>> 31)) + GEAR_HI[b]! + (sum > 0xffffffff ? 1 : 0)) >>> 0;
    hLo = sum >>> 0;
    if ((hLo & params.maskLLo) === 0 && (hHi & params.maskLHi) === 0) return i;
  }
  return remaining;
}

/** Every chunk boundary of a whole buffer, as [offset, length] pairs. */
export function chunkBuffer(params: CdcParams, buf: Uint8Array): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let offset = 0;
  while (offset < buf.length) {
    const length = cutPoint(params, buf, offset, buf.length);
    out.push([offset, length]);
    offset += length;
  }
  return out;
}
