import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../domain/ferry-error.ts';
import type { PackageEntryResult, PackageWriterOptions } from './package-writer.ts';
import { BasePackageWriter } from './base-writer.ts';
import { MeteredHash } from '../lib/metered-hash.ts';

/**
 * The package as a plain folder `<dir>/<root>/` (`--package none` with many files). The root folder
 * must not exist yet: it is created here, so an abort can remove it whole without touching anything
 * else. Each file is written under a temporary name and renamed when complete.
 */
export class DirectoryPackageWriter extends BasePackageWriter {
  readonly #rootDir: string;
  readonly #ready: Promise<void>;
  #created = false;
  #bytes = 0;
  #current: Writable | undefined;

  constructor(dir: string, options: PackageWriterOptions) {
    super(options);
    this.#rootDir = join(dir, this.root);
    this.#ready = this.#create(dir);
    this.#ready.catch((err: Error) => this.fail(err));
  }

  protected async writeEntry(path: string, source: Readable | Buffer): Promise<PackageEntryResult> {
    await this.#ready;
    const target = join(this.#rootDir, ...path.split('/'));
    const partial = `${target}.ferry-partial`;
    await mkdir(dirname(target), { recursive: true });
    const hasher = new MeteredHash();
    const file = createWriteStream(partial);
    this.#current = file;
    try {
      await pipeline(Buffer.isBuffer(source) ? Readable.from([source]) : source, hasher, file);
      await utimes(partial, this.mtime, this.mtime);
      await rename(partial, target);
    } catch (err) {
      await rm(partial, { force: true });
      throw err;
    } finally {
      this.#current = undefined;
    }
    this.#bytes += hasher.bytes;
    return { path, bytes: hasher.bytes, sha256: hasher.sha256 };
  }

  protected async close(): Promise<number> {
    await this.#ready;
    return this.#bytes;
  }

  protected destroy(err: Error): void {
    this.#current?.destroy(err);
    if (!this.#created) return;
    void rm(this.#rootDir, { recursive: true, force: true }).catch(() => {
      // Best effort: a half-written folder without its checksums.sha256 is visibly incomplete.
    });
  }

  async #create(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    try {
      await mkdir(this.#rootDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new FerryError(
          'package_exists',
          `out.dir: "${this.#rootDir}" already exists; choose another folder`,
        );
      }
      throw err;
    }
    this.#created = true;
    if (this.failure) await rm(this.#rootDir, { recursive: true, force: true });
  }
}
