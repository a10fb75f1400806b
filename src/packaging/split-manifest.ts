import { checksumsFile } from './checksums.ts';
import type { SplitPart } from './package-writer.ts';

/** The `format` of a split package's manifest; a change that breaks readers gets a new version. */
export const SPLIT_MANIFEST_FORMAT = 'ferry.split-package/1';

/** A part as stored: its file name, and the size and SHA-256 of the bytes a download returns. */
export interface StoredPart {
  readonly name: string;
  readonly bytes: number;
  readonly sha256: string;
}

export interface SplitManifestInput {
  readonly exportId: string;
  /** The package's root folder, which every part extracts into. */
  readonly root: string;
  readonly kind: 'zip' | 'tar.gz';
  readonly splitSize: number;
  readonly created: Date;
  /** The parts as the package writer laid them out. */
  readonly parts: readonly SplitPart[];
  /** The same parts as stored, in the same order. */
  readonly stored: readonly StoredPart[];
}

/**
 * The manifest of a split package (`<name>.parts.json`), as a sequence of text chunks (one
 * per file line), so a package of many files is never one string in memory:
 *
 * ```json
 * {
 *   "format": "ferry.split-package/1",
 *   "export_id": "…", "package": "company-export-2026-11-22", "kind": "zip",
 *   "split_size": 2000000000, "created": "…", "part_count": 3, "bytes": 4612345678,
 *   "parts": [
 *     {"part": 1, "name": "….part001.zip", "bytes": 1999876543, "sha256": "…", "exceeds_split_size": false,
 *      "files": [{"path": "metadata.json", "bytes": 1234, "sha256": "…"}, …]},
 *     …
 *   ]
 * }
 * ```
 *
 * A part's `bytes` and `sha256` are those of the stored part (the encrypted bytes when the
 * export is encrypted); a file's are those of the file itself, as checksums.sha256 lists them.
 */
export function* splitManifest(input: SplitManifestInput): Generator<string> {
  if (input.parts.length !== input.stored.length)
    throw new Error('split manifest: every part needs its stored name and checksum');
  const head = {
    format: SPLIT_MANIFEST_FORMAT,
    export_id: input.exportId,
    package: input.root,
    kind: input.kind,
    split_size: input.splitSize,
    created: input.created.toISOString(),
    part_count: input.parts.length,
    bytes: input.stored.reduce((n, p) => n + p.bytes, 0),
  };
  const fields = Object.entries(head).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)},\n`);
  yield `{\n${fields.join('')}  "parts": [`;
  for (const [i, part] of input.parts.entries()) {
    const stored = input.stored[i]!;
    const described = {
      part: part.number,
      name: stored.name,
      bytes: stored.bytes,
      sha256: stored.sha256,
      exceeds_split_size: part.oversize,
    };
    yield `${i ? ',' : ''}\n    ${JSON.stringify(described).slice(0, -1)},\n     "files": [`;
    for (const [j, file] of part.files.entries())
      yield `${j ? ',' : ''}\n      ${JSON.stringify({ path: file.path, bytes: file.bytes, sha256: file.sha256 })}`;
    yield '\n    ]}';
  }
  yield '\n  ]\n}\n';
}

/**
 * `<name>.parts.sha256`: the SHA-256 of every part and of the manifest, in the format of
 * GNU `sha256sum`, so `sha256sum -c` checks the downloaded files (`--ignore-missing` checks
 * the ones that are there).
 */
export function partsChecksums(files: readonly { name: string; sha256: string }[]): Buffer {
  return checksumsFile(files.map((f) => ({ path: f.name, sha256: f.sha256 })));
}
