import { invalid } from '../domain/ferry-error.ts';

export interface ChecksumEntry {
  readonly path: string;
  readonly sha256: string;
}

/** Lines joined into one string at a time when the manifest is built. */
const CHUNK_LINES = 10_000;

/**
 * The `sha256sum` manifest: one "<hex>  <path>\n" line per entry (two spaces: text mode, which GNU
 * and BSD tools both read), sorted by the UTF-8 bytes of the path so the file is reproducible.
 */
export function checksumsFile(entries: readonly ChecksumEntry[]): Buffer {
  // Each path's UTF-8 bytes are made once (not twice per comparison), and the text is joined in
  // chunks, so a package of millions of files never builds one string past V8's length limit.
  const keyed = entries.map((e) => ({ key: Buffer.from(e.path), line: `${e.sha256}  ${e.path}\n` }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  const chunks: Buffer[] = [];
  for (let i = 0; i < keyed.length; i += CHUNK_LINES)
    chunks.push(
      Buffer.from(
        keyed
          .slice(i, i + CHUNK_LINES)
          .map((k) => k.line)
          .join(''),
      ),
    );
  return Buffer.concat(chunks);
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
