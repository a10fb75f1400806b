import { hash } from 'node:crypto';

/** 64 bits of a text's MD5, as two 32-bit halves: a fingerprint, not a security measure. */
export interface Fingerprint {
  readonly high: number;
  readonly low: number;
}

export function fingerprint(text: string): Fingerprint {
  const digest = hash('md5', text, 'buffer');
  return { high: digest.readUInt32LE(0), low: digest.readUInt32LE(4) };
}

/**
 * A set of fingerprints in two typed arrays (open addressing, grown by doubling): 16 bytes a
 * value at most, where a `Set` of the texts themselves costs a hundred or more. Two texts can
 * share a fingerprint, so a hit means "maybe": callers that need an exact answer look the text
 * up where they keep it (on disk), which a miss spares them.
 */
export class FingerprintTable {
  #high = new Uint32Array(1024);
  #low = new Uint32Array(1024);
  #size = 0;

  /** Adds a fingerprint; false when it was already there. */
  add(f: Fingerprint): boolean {
    if ((this.#size + 1) * 2 > this.#high.length) this.#grow();
    const added = place(this.#high, this.#low, f.high, slotLow(f), true);
    if (added) this.#size++;
    return added;
  }

  has(f: Fingerprint): boolean {
    return !place(this.#high, this.#low, f.high, slotLow(f), false);
  }

  #grow(): void {
    const high = new Uint32Array(this.#high.length * 2);
    const low = new Uint32Array(this.#low.length * 2);
    for (let i = 0; i < this.#high.length; i++)
      if (this.#high[i] || this.#low[i]) place(high, low, this.#high[i]!, this.#low[i]!, true);
    this.#high = high;
    this.#low = low;
  }
}

/** All-zero marks an empty slot, so that one fingerprint is stored with a low half of 1. */
function slotLow(f: Fingerprint): number {
  return f.high === 0 && f.low === 0 ? 1 : f.low;
}

/** Finds the value's slot; stores it there when `insert` and it is missing. True when it was missing. */
function place(high: Uint32Array, low: Uint32Array, h: number, l: number, insert: boolean): boolean {
  const mask = high.length - 1;
  for (let i = (l ^ h) & mask; ; i = (i + 1) & mask) {
    if (high[i] === 0 && low[i] === 0) {
      if (insert) {
        high[i] = h;
        low[i] = l;
      }
      return true;
    }
    if (high[i] === h && low[i] === l) return false;
  }
}
