import { FerryError, invalid } from '../domain/ferry-error.ts';
import { type ByteRange, MAX_PRESIGN_SECONDS } from './object-store.ts';

const SEGMENT = /^[A-Za-z0-9_=+@-][A-Za-z0-9._=+@-]*$/;
const MAX_KEY_BYTES = 1024;

/**
 * Checks an object key and returns it. The rules are the intersection of what a
 * file system and S3 accept safely: relative `/`-separated segments, a small
 * character set, no segment starting with a dot (so no `.`, `..` or the stores'
 * reserved `.tmp` folder), nothing empty.
 */
export function validateKey(key: string): string {
  if (typeof key !== 'string' || key.length === 0) throw invalid('key', 'must be a non-empty string');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw invalid('key', `must be at most ${MAX_KEY_BYTES} bytes`);
  for (const segment of key.split('/')) {
    if (!SEGMENT.test(segment))
      throw invalid(
        'key',
        `"${key}" is not a valid object key: segments are separated by "/", are not empty, do not start ` +
          'with "." and use only letters, digits and . _ = + @ -',
      );
  }
  return key;
}

/** A listing prefix: empty, or a key's beginning (it may end with `/` or in the middle of a segment). */
export function validatePrefix(prefix: string): string {
  if (prefix === '') return prefix;
  const body = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  try {
    validateKey(body);
  } catch {
    throw invalid('prefix', `"${prefix}" is not a valid key prefix`);
  }
  return prefix;
}

/**
 * Resolves an inclusive range against an object's size, HTTP style: `end` past
 * the last byte is clamped; a start at or past the end cannot be satisfied.
 */
export function resolveRange(range: ByteRange, size: number): { start: number; end: number } {
  const { start, end } = checkRange(range);
  if (start >= size) throw rangeNotSatisfiable(start, size);
  return { start, end: Math.min(end ?? size - 1, size - 1) };
}

/** Checks a range's shape (integers, start <= end) without knowing the object's size. */
export function checkRange(range: ByteRange): ByteRange {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || start < 0) throw invalid('range.start', 'must be an integer >= 0');
  if (end !== undefined && (!Number.isSafeInteger(end) || end < start))
    throw invalid('range.end', 'must be an integer >= range.start');
  return range;
}

export function rangeNotSatisfiable(start: number, size?: number): FerryError {
  const what = size === undefined ? 'past the end of the object' : `but the object has ${size} bytes`;
  return new FerryError(
    'range_not_satisfiable',
    `range starts at byte ${start} ${what}`,
    size === undefined ? undefined : { size },
  );
}

export function notFound(key: string): FerryError {
  return new FerryError('not_found', `no stored object under key "${key}"`);
}

export function checkExpiry(expiresInSeconds: number): void {
  if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < 1 || expiresInSeconds > MAX_PRESIGN_SECONDS)
    throw invalid('expiresInSeconds', `must be an integer from 1 to ${MAX_PRESIGN_SECONDS} (7 days)`);
}
