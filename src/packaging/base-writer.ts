import { Readable } from 'node:stream';
import { FerryError } from '../domain/ferry-error.ts';
import type {
  PackageEntryResult,
  PackageFinish,
  PackageWriter,
  PackageWriterOptions,
} from './package-writer.ts';
import { CHECKSUMS_FILE, checkEntryPath, checkRoot } from './entry-path.ts';
import { PackageEntryLog } from './entry-log.ts';

type State = 'open' | 'finishing' | 'finished' | 'failed';

/**
 * What the zip, tar.gz and directory writers share: path checks, one entry at a time, the entry
 * log (paths taken, and the checksums manifest, kept on disk so memory does not grow with the
 * file count) and the failure state. Subclasses only move bytes.
 */
export abstract class BasePackageWriter implements PackageWriter {
  protected readonly root: string;
  protected readonly mtime: Date;
  readonly #log: PackageEntryLog;
  #queue: Promise<unknown> = Promise.resolve();
  #state: State = 'open';
  #failure: Error | undefined;

  constructor(options: PackageWriterOptions) {
    this.root = checkRoot(options.root);
    this.mtime = options.mtime;
    this.#log = new PackageEntryLog({ tmpDir: options.tmpDir, runEntries: options.entriesInMemory });
  }

  add(path: string, source: Readable | Buffer | string): Promise<PackageEntryResult> {
    let checked: string;
    try {
      checked = checkEntryPath(path);
      if (checked === CHECKSUMS_FILE) {
        throw new FerryError(
          'invalid_parameter',
          `path: "${CHECKSUMS_FILE}" is written by the package itself`,
        );
      }
      this.#assertOpen();
    } catch (err) {
      if (source instanceof Readable) source.destroy();
      return Promise.reject(err);
    }
    // A path seen before (or sharing its fingerprint) is checked against the log in its turn.
    const maybeTaken = this.#log.claim(checked);
    if (source instanceof Readable) {
      // The source may fail while it waits for its turn (or for a spool folder); the pipeline that
      // reads it later still sees the stored error. Without a listener that failure would crash the
      // process instead of failing this entry.
      source.on('error', () => {});
    }
    return this.#enqueue(async () => {
      if (maybeTaken && (await this.#log.isRecorded(checked))) {
        if (source instanceof Readable) source.destroy();
        throw new FerryError('invalid_parameter', `path: "${checked}" was already added`);
      }
      return this.#write(checked, source);
    });
  }

  finish(): Promise<PackageFinish> {
    try {
      this.#assertOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    this.#state = 'finishing';
    return this.#enqueue(async () => {
      this.#throwIfFailed();
      try {
        const checksums = await this.writeEntry(CHECKSUMS_FILE, this.#log.manifest());
        const bytes = await this.close();
        this.#throwIfFailed();
        this.#state = 'finished';
        return { files: this.#log.count + 1, checksums, bytes };
      } catch (err) {
        this.abort(err as Error);
        throw err;
      } finally {
        await this.#log.dispose();
      }
    });
  }

  abort(err?: Error): void {
    if (this.#state === 'finished' || this.#state === 'failed') return;
    this.#state = 'failed';
    this.#failure = err ?? new FerryError('package_aborted', 'the package was aborted');
    this.destroy(this.#failure);
    void this.#log.dispose();
  }

  /** Writes one entry's bytes; `path` is relative to the root and already checked. */
  protected abstract writeEntry(path: string, source: Readable | Buffer): Promise<PackageEntryResult>;
  /** Ends the output and resolves with the bytes written. */
  protected abstract close(): Promise<number>;
  /** Tears the output down after a failure; must not throw. */
  protected abstract destroy(err: Error): void;

  /** Called by subclasses when their output fails on its own (e.g. the disk is full). */
  protected fail(err: Error): void {
    this.abort(err);
  }

  protected get failure(): Error | undefined {
    return this.#failure;
  }

  async #write(path: string, source: Readable | Buffer | string): Promise<PackageEntryResult> {
    if (this.#failure) {
      if (source instanceof Readable) source.destroy();
      throw this.#failure;
    }
    try {
      const result = await this.writeEntry(path, typeof source === 'string' ? Buffer.from(source) : source);
      this.#throwIfFailed();
      await this.#log.record(result);
      return result;
    } catch (err) {
      if (source instanceof Readable) source.destroy();
      this.abort(err as Error);
      throw this.#failure ?? err;
    }
  }

  #enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task);
    this.#queue = run.catch(() => {
      // The caller of this task sees its rejection; the queue itself goes on.
    });
    return run;
  }

  #assertOpen(): void {
    if (this.#state === 'failed') throw this.#failure!;
    if (this.#state !== 'open') throw new FerryError('package_closed', 'the package is already finished');
  }

  #throwIfFailed(): void {
    if (this.#failure) throw this.#failure;
  }
}
