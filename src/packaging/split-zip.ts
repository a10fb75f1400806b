import { createWriteStream } from 'node:fs';
import { Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
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
import { STORED } from './zip-writer.ts';

const FILE_MODE = 0o100644;
const FOLDER_MODE = 0o40755;
/** 3: Unix, 63: version 6.3 of the specification (as yazl writes it). */
const VERSION_MADE_BY = (3 << 8) | 63;
const VERSION_UTF8 = 20;
const VERSION_ZIP64 = 45;
const UTF8_NAMES = 1 << 11;
const LOCAL_HEADER = 30;
const CENTRAL_HEADER = 46;
const END_RECORD = 22;
const ZIP64_END_RECORD = 56;
const ZIP64_LOCATOR = 20;
/** Past this, sizes and offsets go in a ZIP64 extra field (yazl's threshold). */
const ZIP64_AT = 0xfffffffe;

/** A package file spooled as its ZIP data: deflated (or stored), with the CRC-32 of its bytes. */
export interface ZipSpooledEntry extends SpooledEntry {
  readonly crc32: number;
  readonly method: 0 | 8;
}

/** Passes bytes through and keeps their CRC-32. */
class Crc32Meter extends Transform {
  value = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.value = zlib.crc32(chunk, this.value);
    done(null, chunk);
  }
}

/** The MS-DOS date and time of a ZIP header, in the server's time zone (as yazl writes them). */
function dosDateTime(date: Date): { date: number; time: number } {
  const min = new Date(1980, 0, 1);
  const max = new Date(2107, 11, 31, 23, 59, 58);
  const d = date < min ? min : date > max ? max : date;
  return {
    date: (d.getDate() & 0x1f) | (((d.getMonth() + 1) & 0xf) << 5) | (((d.getFullYear() - 1980) & 0x7f) << 9),
    time: Math.floor(d.getSeconds() / 2) | ((d.getMinutes() & 0x3f) << 5) | ((d.getHours() & 0x1f) << 11),
  };
}

function writeUInt64(buffer: Buffer, value: number, offset: number): void {
  buffer.writeUInt32LE(value % 0x100000000, offset);
  buffer.writeUInt32LE(Math.floor(value / 0x100000000), offset + 4);
}

/** What a ZIP record says of one entry. */
interface ZipRecord {
  name: Buffer;
  folder: boolean;
  method: 0 | 8;
  crc32: number;
  size: number;
  compressed: number;
  /** Where its local header starts in the part. */
  offset: number;
}

/**
 * ZIP parts of a split package. Every entry's data is spooled first (deflated, or stored
 * for files that are compressed already, as the ZIP writer does), so its CRC-32 and sizes
 * are in the local header and no data descriptor follows; the part's size with an entry is
 * then known to the byte before the entry is placed. Records are those yazl writes for the
 * unsplit package (UTF-8 names, Unix modes, the Info-ZIP UTC timestamp in the central
 * directory, the export time on every entry, ZIP64 fields and end records past 4 GiB or
 * 65,535 entries).
 */
export class ZipSplitFormat implements SplitFormat<ZipSpooledEntry> {
  readonly root: string;
  readonly #dos: { date: number; time: number };
  readonly #unixTime: number;

  constructor(options: { root: string; mtime: Date }) {
    this.root = options.root;
    this.#dos = dosDateTime(options.mtime);
    this.#unixTime = Math.max(-0x80000000, Math.min(0x7fffffff, Math.floor(options.mtime.getTime() / 1000)));
  }

  async spool(
    path: string,
    source: Readable | Buffer,
    file: string,
    track: (stream: Readable | Writable) => void,
  ): Promise<ZipSpooledEntry> {
    const hasher = new MeteredHash();
    const crc = new Crc32Meter();
    const counter = new MeteredHash({ hash: false });
    const stored = STORED.test(path);
    const out = createWriteStream(file);
    track(out);
    const input = Buffer.isBuffer(source) ? Readable.from([source]) : source;
    if (stored) await pipeline(input, hasher, crc, counter, out);
    else await pipeline(input, hasher, crc, zlib.createDeflateRaw(), counter, out);
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

  /** Local file header: sizes and CRC-32 up front; a ZIP64 extra field when a size needs one. */
  localHeader(record: ZipRecord): Buffer {
    const zip64 = record.size > ZIP64_AT || record.compressed > ZIP64_AT;
    const header = Buffer.alloc(LOCAL_HEADER + record.name.length + (zip64 ? 20 : 0));
    header.writeUInt32LE(0x04034b50, 0);
    header.writeUInt16LE(zip64 ? VERSION_ZIP64 : VERSION_UTF8, 4);
    header.writeUInt16LE(UTF8_NAMES, 6);
    header.writeUInt16LE(record.method, 8);
    header.writeUInt16LE(this.#dos.time, 10);
    header.writeUInt16LE(this.#dos.date, 12);
    header.writeUInt32LE(record.crc32, 14);
    header.writeUInt32LE(zip64 ? 0xffffffff : record.compressed, 18);
    header.writeUInt32LE(zip64 ? 0xffffffff : record.size, 22);
    header.writeUInt16LE(record.name.length, 26);
    header.writeUInt16LE(zip64 ? 20 : 0, 28);
    record.name.copy(header, LOCAL_HEADER);
    if (zip64) {
      const extra = LOCAL_HEADER + record.name.length;
      header.writeUInt16LE(0x0001, extra);
      header.writeUInt16LE(16, extra + 2);
      writeUInt64(header, record.size, extra + 4);
      writeUInt64(header, record.compressed, extra + 12);
    }
    return header;
  }

  /** Central directory record, with the Info-ZIP timestamp and, past 4 GiB, the ZIP64 field. */
  centralRecord(record: ZipRecord): Buffer {
    const zip64 = record.size > ZIP64_AT || record.compressed > ZIP64_AT || record.offset > ZIP64_AT;
    const header = Buffer.alloc(CENTRAL_HEADER + record.name.length + 9 + (zip64 ? 28 : 0));
    header.writeUInt32LE(0x02014b50, 0);
    header.writeUInt16LE(VERSION_MADE_BY, 4);
    header.writeUInt16LE(zip64 ? VERSION_ZIP64 : VERSION_UTF8, 6);
    header.writeUInt16LE(UTF8_NAMES, 8);
    header.writeUInt16LE(record.method, 10);
    header.writeUInt16LE(this.#dos.time, 12);
    header.writeUInt16LE(this.#dos.date, 14);
    header.writeUInt32LE(record.crc32, 16);
    header.writeUInt32LE(zip64 ? 0xffffffff : record.compressed, 20);
    header.writeUInt32LE(zip64 ? 0xffffffff : record.size, 24);
    header.writeUInt16LE(record.name.length, 28);
    header.writeUInt16LE(9 + (zip64 ? 28 : 0), 30);
    // comment length, disk number, internal attributes: 0
    header.writeUInt32LE(((record.folder ? FOLDER_MODE : FILE_MODE) << 16) >>> 0, 38);
    header.writeUInt32LE(zip64 ? 0xffffffff : record.offset, 42);
    record.name.copy(header, CENTRAL_HEADER);
    let at = CENTRAL_HEADER + record.name.length;
    // Info-ZIP extended timestamp: modification time (the access-time flag as Info-ZIP sets it).
    header.writeUInt16LE(0x5455, at);
    header.writeUInt16LE(5, at + 2);
    header.writeUInt8(0b11, at + 4);
    header.writeInt32LE(this.#unixTime, at + 5);
    at += 9;
    if (zip64) {
      header.writeUInt16LE(0x0001, at);
      header.writeUInt16LE(24, at + 2);
      writeUInt64(header, record.size, at + 4);
      writeUInt64(header, record.compressed, at + 12);
      writeUInt64(header, record.offset, at + 20);
    }
    return header;
  }
}

/** The end of central directory record, preceded by the ZIP64 record and locator when needed. */
function endRecords(entries: number, centralOffset: number, centralBytes: number): Buffer {
  const zip64 = entries >= 0xffff || centralBytes >= 0xffffffff || centralOffset >= 0xffffffff;
  const end = Buffer.alloc(END_RECORD);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Math.min(entries, 0xffff), 8);
  end.writeUInt16LE(Math.min(entries, 0xffff), 10);
  end.writeUInt32LE(Math.min(centralBytes, 0xffffffff), 12);
  end.writeUInt32LE(Math.min(centralOffset, 0xffffffff), 16);
  if (!zip64) return end;
  const record = Buffer.alloc(ZIP64_END_RECORD);
  record.writeUInt32LE(0x06064b50, 0);
  writeUInt64(record, ZIP64_END_RECORD - 12, 4);
  record.writeUInt16LE(VERSION_MADE_BY, 12);
  record.writeUInt16LE(VERSION_ZIP64, 14);
  writeUInt64(record, entries, 24);
  writeUInt64(record, entries, 32);
  writeUInt64(record, centralBytes, 40);
  writeUInt64(record, centralOffset, 48);
  const locator = Buffer.alloc(ZIP64_LOCATOR);
  locator.writeUInt32LE(0x07064b50, 0);
  writeUInt64(locator, centralOffset + centralBytes, 8);
  locator.writeUInt32LE(1, 16);
  return Buffer.concat([record, locator, end]);
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
      const local = this.#format.localHeader(record);
      locals.push(local);
      centrals.push(this.#format.centralRecord(record));
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
