import { invalid } from '../domain/ferry-error.ts';

export interface ChecksumEntry {
  readonly path: string;
  readonly sha256: string;
}

/**
 * The `sha256sum` manifest: one "<hex>  <path>\n" line per entry (two spaces: text mode, which GNU
 * and BSD tools both read), sorted by the UTF-8 bytes of the path so the file is reproducible.
 */
export function checksumsFile(entries: readonly ChecksumEntry[]): Buffer {
  const sorted = [...entries].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  return Buffer.from(sorted.map((e) => `${e.sha256}  ${e.path}\n`).join(''));
}

/** Parses a manifest written by `checksumsFile` (used by package verification and restores). */
export function parseChecksumsFile(text: string): ChecksumEntry[] {
  const entries: ChecksumEntry[] = [];
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  for (const [index, line] of lines.entries()) {
    const match = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!match) throw invalid('checksums.sha256', `line ${index + 1} is not "<sha256 hex>  <path>"`);
    entries.push({ sha256: match[1]!, path: match[2]! });
  }
  return entries;
}
