import { Readable, type Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import yazl from 'yazl';
import type { PackageEntryResult, PackageWriterOptions } from './package-writer.ts';
import { BasePackageWriter } from './base-writer.ts';
import { parentFolders } from './entry-path.ts';
import { MeteredHash } from '../lib/metered-hash.ts';

const FILE_MODE = 0o100644;
const FOLDER_MODE = 0o40755;

/** Files that are compressed already: deflating them again costs time and saves nothing. */
export const STORED = /\.(gz|tgz|zst|zip|parquet|age|png|jpe?g|gif|webp|pdf|docx|xlsx|pptx)$/i;

/** yazl's entry state once an entry's data is fully written (`Entry.FILE_DATA_DONE` in yazl 3). */
const FILE_DATA_DONE = 3;

/** The part of yazl's ZipFile internals the entry-list workaround below relies on. */
interface YazlEntries {
  entries?: unknown;
}

/**
 * ZIP through yazl: entries are streamed with data descriptors (sizes unknown up front), ZIP64 is
 * used automatically past 4 GiB or 65,535 entries, and every entry carries the export time, so the
 * same export gives the same bytes.
 */
export class ZipPackageWriter extends BasePackageWriter {
  readonly #zip = new yazl.ZipFile();
  readonly #output = this.#zip.outputStream as Readable;
  readonly #counter = new MeteredHash({ hash: false });
  readonly #done: Promise<void>;
  readonly #folders = new Set<string>();
  /** Entries moved out of yazl's pump list; they go back before `end()` writes the central directory. */
  readonly #written: unknown[] = [];
  readonly #out: Writable;
  #current: MeteredHash | undefined;

  constructor(out: Writable, options: PackageWriterOptions) {
    super(options);
    this.#out = out;
    this.#zip.on('error', (err: Error) => this.fail(err));
    // Errors of the output are reported through the pipeline below; this keeps a late write after
    // an abort from surfacing as an unhandled 'error' event.
    this.#output.on('error', () => {});
    this.#done = pipeline(this.#output, this.#counter, out);
    this.#done.catch((err: Error) => this.fail(err));
    this.#zip.addEmptyDirectory(`${this.root}/`, { mtime: this.mtime, mode: FOLDER_MODE });
  }

  protected async writeEntry(path: string, source: Readable | Buffer): Promise<PackageEntryResult> {
    this.#setAsideWrittenEntries();
    for (const folder of parentFolders(path)) {
      if (this.#folders.has(folder)) continue;
      this.#folders.add(folder);
      this.#zip.addEmptyDirectory(`${this.root}/${folder}/`, { mtime: this.mtime, mode: FOLDER_MODE });
    }
    const hasher = new MeteredHash();
    this.#current = hasher;
    // yazl keeps each entry's pump closure until the end; handing the stream over through a holder
    // that is emptied once taken keeps finished streams collectable (flat memory at many entries).
    let handOver: MeteredHash | undefined = hasher;
    this.#zip.addReadStreamLazy(
      `${this.root}/${path}`,
      { mtime: this.mtime, mode: FILE_MODE, compress: !STORED.test(path) },
      (callback: (err: Error | null, stream: MeteredHash) => void) => {
        const stream = handOver!;
        handOver = undefined;
        callback(null, stream);
      },
    );
    // Buffers go through the same stream path, so add() resolves only once yazl has the bytes.
    const input = Buffer.isBuffer(source) ? Readable.from([source]) : source;
    // pipeline() settles when the hasher has taken the last byte; finished() waits until yazl has read
    // it out, so entries never queue up inside yazl ahead of the output.
    await Promise.all([pipeline(input, hasher), finished(hasher)]);
    this.#current = undefined;
    return { path, bytes: hasher.bytes, sha256: hasher.sha256 };
  }

  protected async close(): Promise<number> {
    const zip = this.#zip as unknown as YazlEntries;
    if (this.#written.length > 0 && Array.isArray(zip.entries)) {
      zip.entries = [...this.#written, ...zip.entries];
      this.#written.length = 0;
    }
    this.#zip.end();
    await this.#done;
    return this.#counter.bytes;
  }

  protected destroy(err: Error): void {
    this.#current?.destroy(err);
    this.#output.destroy(err);
    // The pipeline would tear the output down a few ticks later; do it now so a caller that checks
    // right after a failed add() sees it. Without an error: the caller learns it from add()/finish().
    this.#out.destroy();
  }

  /**
   * Moves finished entries out of yazl's pump list. yazl 3.3 rescans its whole entry list from the
   * start each time an entry finishes, which makes a ZIP of n entries cost O(n²) (minutes at 100k
   * entries; upstream fix: thejoshwolfe/yazl#91).
   * Entries are written strictly in order, so the finished ones at the front can wait outside the
   * list until `close()` puts them back for the central directory. If yazl's internals ever look
   * different, this does nothing and yazl behaves as shipped.
   */
  #setAsideWrittenEntries(): void {
    const entries = (this.#zip as unknown as YazlEntries).entries;
    if (!Array.isArray(entries)) return;
    let done = 0;
    while (done < entries.length && (entries[done] as { state?: unknown }).state === FILE_DATA_DONE) done++;
    // Keep the last finished entry in place; yazl may still be finishing its bookkeeping.
    if (done <= 1) return;
    for (const entry of entries.splice(0, done - 1) as { utf8FileName?: unknown }[]) {
      // yazl keeps each name as a slice of Node's shared buffer pool, which pins a whole pool chunk
      // (tens of KB) per entry; a right-sized copy keeps the central directory data small.
      const name = entry.utf8FileName;
      if (Buffer.isBuffer(name) && name.buffer.byteLength > name.length) {
        const copy = Buffer.allocUnsafeSlow(name.length);
        name.copy(copy);
        entry.utf8FileName = copy;
      }
      this.#written.push(entry);
    }
  }
}
