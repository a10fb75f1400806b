/**
 * A fast seeded PRNG (sfc32) and the helpers the generator draws with. Every
 * value the seed writes comes from one of these streams, so the same seed gives
 * byte-identical rows. Streams are derived by hashing (seed, tenant, index, kind),
 * so a conversation can be regenerated alone without replaying its predecessors.
 */

/** Mixes numbers into a 32-bit seed (murmur3-style finaliser per input). */
export function mix(...values: number[]): number {
  let h = 0x9e3779b9;
  for (const v of values) {
    let k = Math.imul(v | 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    // Values above 2^32 (timestamps) contribute their high part too.
    const hi = Math.floor(v / 4294967296);
    if (hi !== 0) h = Math.imul(h ^ hi, 0x85ebca6b);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, state: readonly [number, number, number] = [0x9e3779b9, 0x243f6a88, 0xb7e15162]) {
    this.a = state[0] | 0;
    this.b = state[1] | 0;
    this.c = state[2] | 0;
    this.d = seed | 0;
    for (let i = 0; i < 12; i++) this.u32();
  }

  /**
   * A generator for one item (a conversation, a customer, ...), its whole 128-bit state
   * drawn from the inputs. Seeding from one 32-bit hash would make two of 60,000 items
   * share a stream (and their ids) about every other run: the birthday bound of 2^32.
   */
  static of(...values: number[]): Rng {
    // The salt goes first: mix has a 32-bit running state, so inputs that collide early
    // would collide in every word if the salt came last.
    return new Rng(mix(1, ...values), [mix(2, ...values), mix(3, ...values), mix(4, ...values)]);
  }

  /** The next 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [min, max] (inclusive). */
  range(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** A float in [min, max). */
  float(min: number, max: number): number {
    return min + this.next() * (max - min);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** A roughly normal value (sum of three uniforms), clamped to [min, max]. */
  normal(mean: number, sd: number, min: number, max: number): number {
    const z = (this.next() + this.next() + this.next() - 1.5) * 2;
    const v = mean + z * sd;
    return Math.max(min, Math.min(max, v));
  }

  /** `count` distinct items, in draw order. */
  sample<T>(items: readonly T[], count: number): T[] {
    const n = Math.min(count, items.length);
    const copy = items.slice();
    for (let i = 0; i < n; i++) {
      const j = i + Math.floor(this.next() * (copy.length - i));
      const tmp = copy[i]!;
      copy[i] = copy[j]!;
      copy[j] = tmp;
    }
    return copy.slice(0, n);
  }

  /** A version-4-shaped UUID made of PRNG bits (deterministic, not secret). */
  uuid(): string {
    const a = this.u32();
    const b = this.u32();
    const c = this.u32();
    const d = this.u32();
    return (
      HEX[a >>> 24]! +
      HEX[(a >>> 16) & 255]! +
      HEX[(a >>> 8) & 255]! +
      HEX[a & 255]! +
      '-' +
      HEX[b >>> 24]! +
      HEX[(b >>> 16) & 255]! +
      '-4' +
      HEX[(b >>> 8) & 15]!.slice(1) +
      HEX[b & 255]! +
      '-' +
      HEX[0x80 | ((c >>> 24) & 0x3f)]! +
      HEX[(c >>> 16) & 255]! +
      '-' +
      HEX[(c >>> 8) & 255]! +
      HEX[c & 255]! +
      HEX[d >>> 24]! +
      HEX[(d >>> 16) & 255]! +
      HEX[(d >>> 8) & 255]! +
      HEX[d & 255]!
    );
  }

  /** `bytes` random bytes as lower-case hex. */
  hex(bytes: number): string {
    let out = '';
    for (let i = 0; i < bytes; i++) out += HEX[this.u32() & 255]!;
    return out;
  }

  /** `n` random decimal digits. */
  digits(n: number): string {
    let out = '';
    for (let i = 0; i < n; i++) out += String(this.u32() % 10);
    return out;
  }
}

/**
 * A weighted choice prepared once: `draw` maps one uniform draw to an item
 * through the cumulative weights.
 */
export class Weighted<T> {
  readonly items: readonly T[];
  private readonly cumulative: Float64Array;

  constructor(entries: readonly (readonly [T, number])[]) {
    this.items = entries.map((e) => e[0]);
    this.cumulative = new Float64Array(entries.length);
    const total = entries.reduce((s, e) => s + e[1], 0);
    let acc = 0;
    entries.forEach((e, i) => {
      acc += e[1] / total;
      this.cumulative[i] = acc;
    });
    this.cumulative[entries.length - 1] = 1;
  }

  draw(rng: Rng): T {
    const u = rng.next();
    const c = this.cumulative;
    let i = 0;
    while (i < c.length - 1 && u >= c[i]!) i++;
    return this.items[i]!;
  }
}

/** A Luhn check digit for a string of digits. */
export function luhnDigit(payload: string): number {
  let sum = 0;
  let double = true;
  for (let i = payload.length - 1; i >= 0; i--) {
    let d = payload.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return (10 - (sum % 10)) % 10;
}
