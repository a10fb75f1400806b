import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tarStream, { type Header as TarHeader, type Pack } from 'tar-stream';
import type { PackageEntryResult, PackageWriterOptions } from './package-writer.ts';
import { BasePackageWriter } from './base-writer.ts';
import { parentFolders } from './entry-path.ts';
import { MeteredHash, sha256Hex } from '../lib/metered-hash.ts';

const FILE_MODE = 0o644;
const FOLDER_MODE = 0o755;

type Sink = ReturnType<Pack['entry']>;

/**
 * A gzipped tar (ustar, with pax headers for long or non-ASCII names). A tar header holds the entry
 * size before the data, so a streamed entry is first spooled to a temp file (through the hash) and
 * then copied in: memory stays flat whatever the entry size; disk use is one entry at a time.
 */
export class TarGzPackageWriter extends BasePackageWriter {
  readonly #pack = tarStream.pack();
  readonly #counter = new MeteredHash({ hash: false });
  readonly #done: Promise<void>;
  readonly #folders = new Set<string>();
  readonly #tmpBase: string;
  #spoolDir: Promise<string> | undefined;
  #spoolCount = 0;
  #current: Readable | Writable | undefined;
  readonly #out: Writable;

  constructor(out: Writable, options: PackageWriterOptions) {
    super(options);
    this.#out = out;
    this.#tmpBase = options.tmpDir ?? tmpdir();
    this.#done = pipeline(this.#pack, createGzip(), this.#counter, out);
    this.#done.catch((err: Error) => this.fail(err));
    // As the ZIP writer: an output failing while the pipeline tears down (its listeners already
    // gone) still fails the package instead of escaping as an uncaught 'error'.
    out.on('error', (err: Error) => this.fail(err));
  }

  protected async writeEntry(path: string, source: Readable | Buffer): Promise<PackageEntryResult> {
    for (const folder of [this.root, ...parentFolders(path).map((f) => `${this.root}/${f}`)]) {
      if (this.#folders.has(folder)) continue;
      this.#folders.add(folder);
      await this.#entry({ name: `${folder}/`, type: 'directory', mode: FOLDER_MODE }, Buffer.alloc(0));
    }
    const name = `${this.root}/${path}`;
    if (Buffer.isBuffer(source)) {
      await this.#entry({ name, type: 'file', mode: FILE_MODE, size: source.length }, source);
      return { path, bytes: source.length, sha256: sha256Hex(source) };
    }
    const file = join(await this.#spool(), `entry-${++this.#spoolCount}`);
    try {
      const hasher = new MeteredHash();
      const spooled = createWriteStream(file);
      this.#current = spooled;
      await pipeline(source, hasher, spooled);
      const copy = createReadStream(file);
      this.#current = copy;
      await this.#entry({ name, type: 'file', mode: FILE_MODE, size: hasher.bytes }, copy);
      return { path, bytes: hasher.bytes, sha256: hasher.sha256 };
    } finally {
      this.#current = undefined;
      await rm(file, { force: true });
    }
  }

  protected async close(): Promise<number> {
    this.#pack.finalize();
    try {
      await this.#done;
    } finally {
      await this.#removeSpool();
    }
    return this.#counter.bytes;
  }

  protected destroy(err: Error): void {
    this.#current?.destroy(err);
    this.#pack.destroy(err);
    // As for ZIP: tear the output down now rather than a few ticks later through the pipeline;
    // without an error, which the caller learns from add()/finish().
    this.#out.destroy();
    void this.#removeSpool();
  }

  /** Writes one tar entry (header, data, padding) and resolves once tar-stream has taken it. */
  async #entry(
    header: Pick<TarHeader, 'name' | 'type' | 'mode'> & { size?: number },
    data: Buffer | AsyncIterable<Buffer>,
  ): Promise<void> {
    const full = { ...header, mtime: this.mtime, uid: 0, gid: 0, uname: '', gname: '' };
    let sink: Sink | undefined;
    const written = new Promise<void>((resolve, reject) => {
      const callback = (err?: Error | null) => (err ? reject(err) : resolve());
      sink = Buffer.isBuffer(data)
        ? this.#pack.entry(full, data, callback)
        : this.#pack.entry(full, callback);
    });
    if (!Buffer.isBuffer(data)) {
      for await (const chunk of data) {
        if (!sink!.write(chunk)) await Promise.race([once(sink!, 'drain'), written]);
      }
      sink!.end(undefined);
    }
    await written;
  }

  #spool(): Promise<string> {
    this.#spoolDir ??= mkdtemp(join(this.#tmpBase, 'ferry-package-'));
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
