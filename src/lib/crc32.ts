/**
 * CRC-32 of two byte runs joined, from their own CRCs and the length of the second
 * (zlib's `crc32_combine`, which Node does not expose): a split tar.gz part writes one gzip
 * member whose trailer needs the CRC of every entry it holds, and each entry's CRC is known
 * on its own. Arithmetic is in GF(2) modulo the CRC-32 polynomial (reflected).
 */
const POLY = 0xedb88320;

/** a × b modulo the polynomial; `a` must not be zero. */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  let x = b >>> 0;
  for (;;) {
    if ((a & m) !== 0) {
      p = (p ^ x) >>> 0;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    x = x & 1 ? ((x >>> 1) ^ POLY) >>> 0 : x >>> 1;
  }
  return p;
}

/** x^(2^k) modulo the polynomial, for k = 0..31. */
const X2N: readonly number[] = (() => {
  const table: number[] = [];
  let p = 0x40000000; // x^1
  table.push(p);
  for (let k = 1; k < 32; k++) {
    p = multModP(p, p);
    table.push(p);
  }
  return table;
})();

/** x^(n × 2^k) modulo the polynomial. */
function x2nModP(n: number, k: number): number {
  let p = 0x80000000; // x^0
  let rest = n;
  let bit = k;
  while (rest > 0) {
    if (rest % 2 === 1) p = multModP(X2N[bit & 31]!, p);
    rest = Math.floor(rest / 2);
    bit++;
  }
  return p;
}

/** The CRC-32 of A followed by B, given CRC-32(A), CRC-32(B) and B's length in bytes. */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  if (!Number.isSafeInteger(lengthB) || lengthB < 0) throw new RangeError('lengthB must be a byte count');
  return (multModP(x2nModP(lengthB, 3), crcA >>> 0) ^ (crcB >>> 0)) >>> 0;
}
