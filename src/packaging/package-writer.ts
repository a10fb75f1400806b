import type { Readable } from 'node:stream';

/** One file written into a package. `path` is relative to the package root. */
export interface PackageEntryResult {
  path: string;
  bytes: number;
  sha256: string;
}

/**
 * Writes the files of one export package: a ZIP, a gzipped tar, or a plain folder. Every file sits
 * under `<root>/`, and the last one is `<root>/checksums.sha256`, so
 * `cd <root> && sha256sum -c checksums.sha256` verifies an extracted package.
 */
export interface PackageWriter {
  /**
   * Adds one file; the source is streamed (never buffered whole) through a SHA-256 hash. Entries are
   * written one at a time in call order (await each). A path that is unsafe or already used is
   * rejected without harming the package; any other failure aborts the whole package. The writer
   * owns a Readable source: it is consumed, or destroyed when rejected.
   */
  add(path: string, source: Readable | Buffer | string): Promise<PackageEntryResult>;
  /**
   * Writes checksums.sha256 (sha256sum format: "<hex>  <path>\n", covering every entry added, sorted
   * by path) as the last entry, then closes. Resolves with the number of files (checksums.sha256
   * included), checksums.sha256's own entry, and the bytes written (the archive size; for a
   * directory, the sum of the files; for a split package, the sum of the parts, which are listed
   * with the files each holds). The list of entries is not kept: a package may hold millions.
   */
  finish(): Promise<PackageFinish>;
  /** Stops writing, destroys the output stream (a directory package is removed) and cleans temp files. */
  abort(err?: Error): void;
}

/** What a finished package reports. */
export interface PackageFinish {
  /** Files in the package, checksums.sha256 included. */
  files: number;
  /** checksums.sha256, the last file. */
  checksums: PackageEntryResult;
  bytes: number;
  parts?: SplitPart[];
}

/** One part of a split package (src/packaging/split-writer.ts). */
export interface SplitPart {
  /** 1, 2, … in the order written. */
  readonly number: number;
  /** Size of the part's archive. */
  readonly bytes: number;
  /** The package files it holds, in the order written; each file is in exactly one part. */
  readonly files: readonly PackageEntryResult[];
  /** It holds one file that alone is larger than the part size. */
  readonly oversize: boolean;
}

export interface PackageWriterOptions {
  /** The folder every entry is placed under, e.g. `company-export-2026-11-22`. */
  root: string;
  /** The modification time of every entry (the export time), so the same export gives the same bytes. */
  mtime: Date;
  /**
   * Where the tar writer spools entries of unknown size and the ZIP writer the central directory
   * of a large archive; the system temp folder by default.
   */
  tmpDir?: string;
  /**
   * Entries of `checksums.sha256` kept in memory before they are sorted and moved to a run file in
   * `tmpDir` (100,000 by default); the manifest is merged from the runs.
   */
  entriesInMemory?: number;
  /** ZIP: central directory bytes kept in memory before the rest moves to `tmpDir` (8 MiB by default). */
  zipCentralInMemory?: number;
}
