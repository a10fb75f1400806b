import { createWriteStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { MeteredHash } from '../lib/metered-hash.ts';
import {
  foldersOf,
  type SplitFormat,
  type SplitPartLayout,
  type SpooledEntry,
  copyTo,
  writeTo,
} from './split-format.ts';
import {
  Crc32Meter,
  DEFLATE_OPTIONS,
  endRecords,
  STORED,
  ZipRecords,
  wholeEntry,
  type ZipRecord,
} from './zip-records.ts';

/** A package file spooled as its ZIP data: deflated (or stored), with the CRC-32 of its bytes. */
export interface ZipSpooledEntry extends SpooledEntry {
  readonly crc32: number;
  readonly method: 0 | 8;
}

/**
 * ZIP parts of a split package. Every entry's data is spooled first (deflated, or stored
 * for files that are compressed already, as the ZIP writer does), so its CRC-32 and sizes
 * are in the local header and no data descriptor follows; the part's size with an entry is
 * then known to the byte before the entry is placed. Records are those of the unsplit
 * package (src/packaging/zip-records.ts).
 */
export class ZipSplitFormat implements SplitFormat<ZipSpooledEntry> {
  readonly root: string;
  readonly records: ZipRecords;

  constructor(options: { root: string; mtime: Date }) {
    this.root = options.root;
    this.records = new ZipRecords(options.mtime);
  }

  async spool(
    path: string,
    source: Readable | Buffer,
    file: string,
    track: (stream: Readable | Writable) => void,
  ): Promise<ZipSpooledEntry> {
    if (Buffer.isBuffer(source)) {
      const whole = await wholeEntry(path, source);
      await writeFile(file, whole.body);
      return {
        result: { path, bytes: source.length, sha256: whole.sha256 },
        file,
        spooledBytes: whole.body.length,
        crc32: whole.crc32,
        method: whole.method,
      };
    }
    const hasher = new MeteredHash();
    const crc = new Crc32Meter();
    const counter = new MeteredHash({ hash: false });
    const stored = STORED.test(path);
    const out = createWriteStream(file);
    track(out);
    if (stored) await pipeline(source, hasher, crc, counter, out);
    else await pipeline(source, hasher, crc, zlib.createDeflateRaw(DEFLATE_OPTIONS), counter, out);
    return {
      result: { path, bytes: hasher.bytes, sha256: hasher.sha256 },
      file,
      spooledBytes: counter.bytes,
      crc32: crc.value,
      method: stored ? 0 : 8,
    };
  }

  part(): SplitPartLayout<ZipSpooledEntry> {
    return new ZipPart(this);
  }
}

/** What placing an entry adds to a part: local records in order (the entry's data last) and central records. */
interface Plan {
  locals: Buffer[];
  centrals: Buffer[];
  folders: string[];
  /** Where the local records end: the central directory's offset if nothing else follows. */
  offset: number;
  size: number;
}

class ZipPart implements SplitPartLayout<ZipSpooledEntry> {
  readonly #format: ZipSplitFormat;
  readonly #folders = new Set<string>();
  /** Central directory records, written when the part closes (about 100 bytes per entry). */
  readonly #central: Buffer[] = [];
  #centralBytes = 0;
  #offset = 0;

  constructor(format: ZipSplitFormat) {
    this.#format = format;
  }

  async sizeWith(entry: ZipSpooledEntry): Promise<number> {
    return this.#plan(entry).size;
  }

  async append(entry: ZipSpooledEntry, out: Writable, track: (stream: Readable) => void): Promise<void> {
    const plan = this.#plan(entry);
    const header = plan.locals.pop()!;
    await writeTo(out, Buffer.concat([...plan.locals, header]));
    await copyTo(out, entry.file, track);
    for (const folder of plan.folders) this.#folders.add(folder);
    for (const record of plan.centrals) {
      this.#central.push(record);
      this.#centralBytes += record.length;
    }
    this.#offset = plan.offset;
  }

  async close(out: Writable): Promise<number> {
    const end = endRecords(this.#central.length, this.#offset, this.#centralBytes);
    await writeTo(out, Buffer.concat([...this.#central, end]));
    return this.#offset + this.#centralBytes + end.length;
  }

  #plan(entry: ZipSpooledEntry): Plan {
    const locals: Buffer[] = [];
    const centrals: Buffer[] = [];
    const folders = foldersOf(this.#format.root, entry.result.path).filter((f) => !this.#folders.has(f));
    let offset = this.#offset;
    const add = (record: ZipRecord, data: number) => {
      const local = this.#format.records.localHeader(record);
      locals.push(local);
      centrals.push(this.#format.records.centralRecord(record));
      offset += local.length + data;
    };
    for (const folder of folders)
      add(
        { name: Buffer.from(folder), folder: true, method: 0, crc32: 0, size: 0, compressed: 0, offset },
        0,
      );
    add(
      {
        name: Buffer.from(`${this.#format.root}/${entry.result.path}`),
        folder: false,
        method: entry.method,
        crc32: entry.crc32,
        size: entry.result.bytes,
        compressed: entry.spooledBytes,
        offset,
      },
      entry.spooledBytes,
    );
    const centralBytes = this.#centralBytes + centrals.reduce((n, b) => n + b.length, 0);
    const entries = this.#central.length + centrals.length;
    const size = offset + centralBytes + endRecords(entries, offset, centralBytes).length;
    return { locals, centrals, folders, offset, size };
  }
}
