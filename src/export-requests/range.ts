/** What a `Range` request header asks of a file of `size` bytes (RFC 9110 §14). */
export type RangeRequest =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' };

const SINGLE = /^bytes=(\d*)-(\d*)$/;

/**
 * Parses a single byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`). A header that is
 * not a single well-formed byte range is ignored (the whole file is sent), as RFC 9110
 * allows; a well-formed range that starts past the end cannot be satisfied (416).
 * `ifRange`/`etag`: a range whose `If-Range` validator no longer matches gets the whole file.
 */
export function parseRange(
  header: string | undefined,
  size: number,
  validators: { ifRange?: string | undefined; etag: string } = { etag: '' },
): RangeRequest {
  if (!header) return { kind: 'full' };
  if (validators.ifRange !== undefined && validators.ifRange !== validators.etag) return { kind: 'full' };
  const match = SINGLE.exec(header.trim());
  if (!match) return { kind: 'full' };
  const [, first, last] = match as unknown as [string, string, string];
  if (first === '' && last === '') return { kind: 'full' };
  if (first === '') {
    const suffix = Number(last);
    if (!Number.isSafeInteger(suffix)) return { kind: 'full' };
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? null : Number(last);
  if (!Number.isSafeInteger(start) || (end !== null && (!Number.isSafeInteger(end) || end < start)))
    return { kind: 'full' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: end === null ? size - 1 : Math.min(end, size - 1) };
}
