import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Readable, Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { MeteredHash } from '../lib/metered-hash.ts';
import type { PackageEntryResult, PackageWriterOptions } from './package-writer.ts';
import { BasePackageWriter } from './base-writer.ts';
import { copyTo, foldersOf, writeTo } from './split-format.ts';
import {
  Crc32Meter,
  DEFLATE_OPTIONS,
  endRecords,
  STORED,
  ZipRecords,
  wholeEntry,
  type ZipRecord,
} from './zip-records.ts';

/** Central directory bytes kept in memory before they move to a temporary file (about 80,000 entries). */
const CENTRAL_IN_MEMORY = 8 << 20;

/**
 * The central directory as it grows: records in memory up to a limit, then appended to a
 * temporary file, so an archive of millions of entries keeps flat memory.
 */
class CentralDirectory {
  readonly #tmpBase: string;
  readonly #limit: number;
  #memory: Buffer[] = [];
  #memoryBytes = 0;
  #dir: string | undefined;
  #file: WriteStream | undefined;
  #discarded = false;
  bytes = 0;
  entries = 0;

  constructor(tmpBase: string, limit: number) {
    this.#tmpBase = tmpBase;
    this.#limit = limit;
  }

  async add(record: Buffer): Promise<void> {
    this.#memory.push(record);
    this.#memoryBytes += record.length;
    this.bytes += record.length;
    this.entries++;
    if (this.#memoryBytes < this.#limit) return;
    const chunk = Buffer.concat(this.#memory);
    this.#memory = [];
    this.#memoryBytes = 0;
    if (!this.#file) {
      const dir = await mkdtemp(join(this.#tmpBase, 'ferry-zip-'));
      if (this.#discarded) {
        // The package was aborted while the folder was made.
        await rm(dir, { recursive: true, force: true });
        throw new Error('the package was aborted');
      }
      this.#dir = dir;
      this.#file = createWriteStream(join(this.#dir, 'central'));
    }
    await writeTo(this.#file, chunk);
  }

  /** Writes the whole directory to `out`: the spooled records first, then those in memory. */
  async copyTo(out: Writable, track: (stream: Readable) => void): Promise<void> {
    if (this.#file) {
      this.#file.end();
      await finished(this.#file);
      await copyTo(out, join(this.#dir!, 'central'), track);
    }
    await writeTo(out, Buffer.concat(this.#memory));
    this.#memory = [];
  }

  async discard(): Promise<void> {
    this.#discarded = true;
    this.#file?.destroy();
    if (this.#dir) await rm(this.#dir, { recursive: true, force: true });
  }
}

/**
 * ZIP written straight to the output stream. A file given whole (a Buffer: the many small files of
 * a package, such as one JSON per conversation) is hashed, deflated and written with its CRC-32 and
 * sizes in the local header; a stream (a dataset) is deflated as it flows, followed by a data
 * descriptor. ZIP64 records appear past 4 GiB or 65,535 entries, files that are compressed already
 * are stored, and every entry carries the export time, so the same export gives the same bytes.
 *
 * Written here rather than with yazl: yazl keeps every entry in memory, rescans its entry list as
 * each one finishes (O(n²) in entries) and runs a stream pipeline per entry, which made a package
 * with one file per conversation spend most of its time on the archive itself.
 */
export class ZipPackageWriter extends BasePackageWriter {
  readonly #out: Writable;
  readonly #records: ZipRecords;
  readonly #central: CentralDirectory;
  readonly #folders = new Set<string>();
  #offset = 0;
  #current: Readable | Writable | undefined;

  constructor(out: Writable, options: PackageWriterOptions) {
    super(options);
    this.#out = out;
    this.#records = new ZipRecords(options.mtime);
    this.#central = new CentralDirectory(
      options.tmpDir ?? tmpdir(),
      options.zipCentralInMemory ?? CENTRAL_IN_MEMORY,
    );
    out.on('error', (err: Error) => this.fail(err));
  }

  protected async writeEntry(path: string, source: Readable | Buffer): Promise<PackageEntryResult> {
    await this.#addFolders(path);
    const name = Buffer.from(`${this.root}/${path}`);
    return Buffer.isBuffer(source)
      ? this.#writeWhole(path, name, source)
      : this.#writeStream(path, name, STORED.test(path) ? 0 : 8, source);
  }

  protected async close(): Promise<number> {
    // The root folder is already in: checksums.sha256, the last entry, put it there.
    const centralOffset = this.#offset;
    await this.#central.copyTo(this.#out, (stream) => (this.#current = stream));
    const end = endRecords(this.#central.entries, centralOffset, this.#central.bytes);
    await writeTo(this.#out, end);
    this.#out.end();
    await finished(this.#out, { readable: false });
    await this.#central.discard();
    return centralOffset + this.#central.bytes + end.length;
  }

  protected destroy(err: Error): void {
    this.#current?.destroy(err);
    this.#out.destroy();
    void this.#central.discard();
  }

  async #emit(data: Buffer): Promise<void> {
    await writeTo(this.#out, data);
    this.#offset += data.length;
  }

  async #addFolders(path: string): Promise<void> {
    for (const folder of foldersOf(this.root, path)) await this.#addFolder(folder);
  }

  async #addFolder(folder: string): Promise<void> {
    if (this.#folders.has(folder)) return;
    this.#folders.add(folder);
    const record: ZipRecord = {
      name: Buffer.from(folder),
      folder: true,
      method: 0,
      crc32: 0,
      size: 0,
      compressed: 0,
      offset: this.#offset,
    };
    await this.#emit(this.#records.localHeader(record));
    await this.#central.add(this.#records.centralRecord(record));
  }

  async #writeWhole(path: string, name: Buffer, data: Buffer): Promise<PackageEntryResult> {
    const { sha256, crc32, method, body } = await wholeEntry(path, data);
    const record: ZipRecord = {
      name,
      folder: false,
      method,
      crc32,
      size: data.length,
      compressed: body.length,
      offset: this.#offset,
    };
    await this.#emit(Buffer.concat([this.#records.localHeader(record), body]));
    await this.#central.add(this.#records.centralRecord(record));
    return { path, bytes: data.length, sha256 };
  }

  async #writeStream(
    path: string,
    name: Buffer,
    method: 0 | 8,
    source: Readable,
  ): Promise<PackageEntryResult> {
    const offset = this.#offset;
    const opening: ZipRecord = {
      name,
      folder: false,
      method,
      crc32: 0,
      size: 0,
      compressed: 0,
      offset,
      descriptor: true,
    };
    await this.#emit(this.#records.localHeader(opening));
    const hasher = new MeteredHash();
    const crc = new Crc32Meter();
    let compressed = 0;
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        compressed += chunk.length;
        this.#emit(chunk).then(() => done(), done);
      },
    });
    this.#current = source;
    if (method === 8) await pipeline(source, hasher, crc, zlib.createDeflateRaw(DEFLATE_OPTIONS), sink);
    else await pipeline(source, hasher, crc, sink);
    this.#current = undefined;
    const record: ZipRecord = { ...opening, crc32: crc.value, size: hasher.bytes, compressed };
    await this.#emit(this.#records.dataDescriptor(record));
    await this.#central.add(this.#records.centralRecord(record));
    return { path, bytes: hasher.bytes, sha256: hasher.sha256 };
  }
}
