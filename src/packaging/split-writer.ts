import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { invalid } from '../domain/ferry-error.ts';
import { BasePackageWriter } from './base-writer.ts';
import type { PackageEntryResult, PackageFinish, PackageWriterOptions, SplitPart } from './package-writer.ts';
import type { SplitFormat, SplitPartLayout, SpooledEntry } from './split-format.ts';
import { TarSplitFormat } from './split-tar.ts';
import { ZipSplitFormat } from './split-zip.ts';

/** Where the parts of a split package go, one after another. */
export interface SplitTarget {
  /** The largest part, in bytes; a file that alone is larger goes in a part of its own. */
  readonly partSize: number;
  /** The stream of part `number` (1, 2, …); the writer ends it once the part is complete. */
  openPart(number: number): Writable;
}

/** Whether a package's output is a split target rather than a stream or a folder. */
export function isSplitTarget(out: unknown): out is SplitTarget {
  return (
    typeof out === 'object' &&
    out !== null &&
    typeof (out as SplitTarget).openPart === 'function' &&
    typeof (out as SplitTarget).partSize === 'number'
  );
}

interface OpenPart {
  readonly number: number;
  readonly out: Writable;
  readonly layout: SplitPartLayout<SpooledEntry>;
  readonly files: PackageEntryResult[];
  oversize: boolean;
}

/**
 * A package in parts of at most `partSize` bytes, each part a complete ZIP or tar.gz of
 * whole files under the same root folder: extracted into one folder, the parts give the
 * package the unsplit writer would have written (checksums.sha256 last, in the last part).
 *
 * Each file is spooled first as the bytes its archive will hold (compressed), to a
 * temporary file, so the size it adds to a part is known exactly before it is placed: a
 * part is closed when the next file would take it past `partSize`, and a file that is
 * larger on its own goes alone in a part (flagged `oversize`). Memory holds one copy
 * buffer and the open part's central directory; disk holds one spooled file at a time
 * (for tar.gz, its uncompressed bytes as well while they are deflated).
 */
export class SplitPackageWriter extends BasePackageWriter {
  readonly #format: SplitFormat;
  readonly #target: SplitTarget;
  readonly #tmpBase: string;
  readonly #parts: SplitPart[] = [];
  #spoolDir: Promise<string> | undefined;
  #spoolCount = 0;
  #open: OpenPart | undefined;
  #bytes = 0;
  readonly #streams = new Set<Readable | Writable>();

  constructor(kind: 'zip' | 'tar.gz', target: SplitTarget, options: PackageWriterOptions) {
    super(options);
    if (!Number.isSafeInteger(target.partSize) || target.partSize < 1)
      throw invalid('partSize', 'must be a positive number of bytes');
    this.#target = target;
    this.#tmpBase = options.tmpDir ?? tmpdir();
    const layout = { root: this.root, mtime: this.mtime };
    this.#format = kind === 'zip' ? new ZipSplitFormat(layout) : new TarSplitFormat(layout);
  }

  /** The parts written, in order (complete once `finish()` resolves). */
  get parts(): readonly SplitPart[] {
    return this.#parts;
  }

  override async finish(): Promise<PackageFinish & { parts: SplitPart[] }> {
    const done = await super.finish();
    return { ...done, parts: [...this.#parts] };
  }

  protected async writeEntry(path: string, source: Readable | Buffer): Promise<PackageEntryResult> {
    const file = join(await this.#spool(), `entry-${++this.#spoolCount}`);
    try {
      const entry = await this.#format.spool(path, source, file, (stream) => this.#streams.add(stream));
      await this.#place(entry);
      return entry.result;
    } finally {
      this.#streams.clear();
      await rm(file, { force: true });
    }
  }

  protected async close(): Promise<number> {
    try {
      await this.#closePart();
    } finally {
      await this.#removeSpool();
    }
    return this.#bytes;
  }

  protected destroy(err: Error): void {
    for (const stream of this.#streams) stream.destroy(err);
    this.#streams.clear();
    // Without an error, as the other writers do: the caller learns it from add()/finish().
    this.#open?.out.destroy();
    this.#open = undefined;
    void this.#removeSpool();
  }

  /** Puts an entry in the open part, or closes it and opens the next when the entry does not fit. */
  async #place(entry: SpooledEntry): Promise<void> {
    let part = this.#open ?? this.#openPart();
    let size = await part.layout.sizeWith(entry);
    if (size > this.#target.partSize && part.files.length > 0) {
      await this.#closePart();
      part = this.#openPart();
      size = await part.layout.sizeWith(entry);
    }
    await part.layout.append(entry, part.out, (stream) => this.#streams.add(stream));
    part.files.push(entry.result);
    if (size > this.#target.partSize) {
      // Larger than a part on its own: it stays alone.
      part.oversize = true;
      await this.#closePart();
    }
  }

  #openPart(): OpenPart {
    const number = this.#parts.length + 1;
    const out = this.#target.openPart(number);
    out.on('error', (err: Error) => this.fail(err));
    this.#open = { number, out, layout: this.#format.part(), files: [], oversize: false };
    return this.#open;
  }

  async #closePart(): Promise<void> {
    const part = this.#open;
    if (!part) return;
    const bytes = await part.layout.close(part.out);
    part.out.end();
    await finished(part.out, { readable: false });
    this.#open = undefined;
    this.#bytes += bytes;
    this.#parts.push({ number: part.number, bytes, files: part.files, oversize: part.oversize });
  }

  #spool(): Promise<string> {
    this.#spoolDir ??= mkdtemp(join(this.#tmpBase, 'ferry-split-'));
    return this.#spoolDir;
  }

  async #removeSpool(): Promise<void> {
    const dir = this.#spoolDir;
    if (!dir) return;
    this.#spoolDir = undefined;
    try {
      await rm(await dir, { recursive: true, force: true });
    } catch {
      // A temp folder left behind (or never created) is not worth failing the package for.
    }
  }
}
