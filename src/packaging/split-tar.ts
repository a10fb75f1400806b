import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tarStream, { type Header as TarHeader } from 'tar-stream';
import { crc32Combine } from '../lib/crc32.ts';
import { MeteredHash, sha256Hex } from '../lib/metered-hash.ts';
import {
  foldersOf,
  type SplitFormat,
  type SplitPartLayout,
  type SpooledEntry,
  copyTo,
  writeTo,
} from './split-format.ts';

const FILE_MODE = 0o644;
const FOLDER_MODE = 0o755;
/** tar-stream ends an archive with two zero blocks; an entry's records are what comes before them. */
const END_OF_TAR = 1024;
/** A gzip member header: deflate, no name, no time, Unix (as Node's gzip writes it). */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03]);
/** CRC-32 and size of the uncompressed data. */
const GZIP_TRAILER = 8;

/**
 * A tar entry's records (header, data, padding), deflated on their own and ended with a
 * sync flush: byte-aligned, and referring to nothing before them, so such runs join into
 * one deflate stream in any order.
 */
interface Segment {
  /** CRC-32 and length of the uncompressed records. */
  readonly crc32: number;
  readonly length: number;
}

/** A package file spooled as its deflated tar records. */
export interface TarSpooledEntry extends SpooledEntry, Segment {}

interface HeldSegment extends Segment {
  readonly data: Buffer;
}

/** The end of every part: the two zero blocks, deflated as the final block. */
const END_SEGMENT: HeldSegment = (() => {
  const zeros = Buffer.alloc(END_OF_TAR);
  return { data: zlib.deflateRawSync(zeros), crc32: zlib.crc32(zeros), length: zeros.length };
})();

/** Passes all but the last `count` bytes, which must be zero (the end of a one-entry tar). */
class DropTail extends Transform {
  readonly #count: number;
  #held: Buffer = Buffer.alloc(0);

  constructor(count: number) {
    super();
    this.#count = count;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const all = this.#held.length ? Buffer.concat([this.#held, chunk]) : chunk;
    const keep = Math.max(0, all.length - this.#count);
    if (keep > 0) this.push(all.subarray(0, keep));
    this.#held = Buffer.from(all.subarray(keep));
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.#held.length !== this.#count || this.#held.some((b) => b !== 0))
      done(new Error('tar-stream did not end the entry with two zero blocks'));
    else done();
  }
}

/** Passes bytes through and keeps their CRC-32 and count. */
class Crc32Meter extends Transform {
  value = 0;
  length = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.value = zlib.crc32(chunk, this.value);
    this.length += chunk.length;
    done(null, chunk);
  }
}

/**
 * tar.gz parts of a split package. Each part is one gzip member holding one tar archive,
 * as the unsplit package is. To know a part's size before an entry is placed, each entry's
 * tar records (tar-stream's, as the tar.gz writer writes them: ustar, pax headers for long
 * or non-ASCII names) are deflated on their own into a spool file, ending with a sync
 * flush; a part is the gzip header, the spooled runs of its folders and files, the end of
 * the archive as the final deflate block, and the trailer with the CRC-32 of everything,
 * combined from the runs' own. Entries compress independently, as in a ZIP, at a few
 * bytes of flush marker each.
 */
export class TarSplitFormat implements SplitFormat<TarSpooledEntry> {
  readonly root: string;
  readonly #mtime: Date;
  /** Folder records, deflated once and written into every part that needs them. */
  readonly #folders = new Map<string, Promise<HeldSegment>>();

  constructor(options: { root: string; mtime: Date }) {
    this.root = options.root;
    this.#mtime = options.mtime;
  }

  async spool(
    path: string,
    source: Readable | Buffer,
    file: string,
    track: (stream: Readable | Writable) => void,
  ): Promise<TarSpooledEntry> {
    const name = `${this.root}/${path}`;
    if (Buffer.isBuffer(source)) {
      const records = await this.#records({ name, type: 'file', mode: FILE_MODE }, source);
      const deflated = zlib.deflateRawSync(records, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
      const out = createWriteStream(file);
      track(out);
      await pipeline(Readable.from([deflated]), out);
      return {
        result: { path, bytes: source.length, sha256: sha256Hex(source) },
        file,
        spooledBytes: deflated.length,
        crc32: zlib.crc32(records),
        length: records.length,
      };
    }
    // A tar header holds the size before the data: the bytes are spooled as they are first.
    const data = `${file}.data`;
    try {
      const hasher = new MeteredHash();
      const spooled = createWriteStream(data);
      track(spooled);
      await pipeline(source, hasher, spooled);
      const pack = tarStream.pack();
      const crc = new Crc32Meter();
      const counter = new MeteredHash({ hash: false });
      const out = createWriteStream(file);
      track(out);
      const written = pipeline(
        pack,
        new DropTail(END_OF_TAR),
        crc,
        zlib.createDeflateRaw({ finishFlush: zlib.constants.Z_SYNC_FLUSH }),
        counter,
        out,
      );
      let sink: ReturnType<typeof pack.entry> | undefined;
      const entryDone = new Promise<void>((resolve, reject) => {
        sink = pack.entry(
          this.#header({ name, type: 'file', mode: FILE_MODE, size: hasher.bytes }),
          (err?: Error | null) => (err ? reject(err) : resolve()),
        );
      });
      pack.finalize();
      const copy = createReadStream(data);
      track(copy);
      const feeding = (async () => {
        for await (const chunk of copy) {
          if (!sink!.write(chunk)) await Promise.race([once(sink!, 'drain'), entryDone]);
        }
        sink!.end(undefined);
        await entryDone;
      })();
      await Promise.all([feeding, written]);
      return {
        result: { path, bytes: hasher.bytes, sha256: hasher.sha256 },
        file,
        spooledBytes: counter.bytes,
        crc32: crc.value,
        length: crc.length,
      };
    } finally {
      await rm(data, { force: true });
    }
  }

  part(): SplitPartLayout<TarSpooledEntry> {
    return new TarPart(this);
  }

  /** A folder's record, deflated (once per package). */
  folder(name: string): Promise<HeldSegment> {
    let segment = this.#folders.get(name);
    if (!segment) {
      segment = this.#records({ name, type: 'directory', mode: FOLDER_MODE }, Buffer.alloc(0)).then(
        (records) => ({
          data: zlib.deflateRawSync(records, { finishFlush: zlib.constants.Z_SYNC_FLUSH }),
          crc32: zlib.crc32(records),
          length: records.length,
        }),
      );
      this.#folders.set(name, segment);
    }
    return segment;
  }

  #header(
    header: Pick<TarHeader, 'name' | 'type' | 'mode'> & { size?: number },
  ): Partial<TarHeader> & Pick<TarHeader, 'name'> {
    return { ...header, mtime: this.#mtime, uid: 0, gid: 0, uname: '', gname: '' };
  }

  /** The tar records of one small entry (header, data, padding), in memory. */
  async #records(header: Pick<TarHeader, 'name' | 'type' | 'mode'>, data: Buffer): Promise<Buffer> {
    const pack = tarStream.pack();
    const chunks: Buffer[] = [];
    const collected = pipeline(pack, new DropTail(END_OF_TAR), async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) chunks.push(chunk);
    });
    pack.entry(this.#header({ ...header, ...(header.type === 'file' ? { size: data.length } : {}) }), data);
    pack.finalize();
    await collected;
    return Buffer.concat(chunks);
  }
}

class TarPart implements SplitPartLayout<TarSpooledEntry> {
  readonly #format: TarSplitFormat;
  readonly #folders = new Set<string>();
  #bytes = GZIP_HEADER.length;
  #crc32 = 0;
  #length = 0;
  #started = false;

  constructor(format: TarSplitFormat) {
    this.#format = format;
  }

  async sizeWith(entry: TarSpooledEntry): Promise<number> {
    const folders = await this.#missingFolders(entry);
    const added = folders.reduce((n, f) => n + f.data.length, 0) + entry.spooledBytes;
    return this.#bytes + added + END_SEGMENT.data.length + GZIP_TRAILER;
  }

  async append(entry: TarSpooledEntry, out: Writable, track: (stream: Readable) => void): Promise<void> {
    const folders = await this.#missingFolders(entry);
    const head = [...(this.#started ? [] : [GZIP_HEADER]), ...folders.map((f) => f.data)];
    await writeTo(out, Buffer.concat(head));
    this.#started = true;
    await copyTo(out, entry.file, track);
    for (const segment of [...folders, entry]) this.#add(segment);
    this.#bytes += folders.reduce((n, f) => n + f.data.length, 0) + entry.spooledBytes;
    for (const name of foldersOf(this.#format.root, entry.result.path)) this.#folders.add(name);
  }

  async close(out: Writable): Promise<number> {
    this.#add(END_SEGMENT);
    const trailer = Buffer.alloc(GZIP_TRAILER);
    trailer.writeUInt32LE(this.#crc32, 0);
    trailer.writeUInt32LE(this.#length % 0x100000000, 4);
    await writeTo(out, Buffer.concat([...(this.#started ? [] : [GZIP_HEADER]), END_SEGMENT.data, trailer]));
    this.#bytes += END_SEGMENT.data.length + GZIP_TRAILER;
    return this.#bytes;
  }

  #add(segment: Segment): void {
    this.#crc32 = crc32Combine(this.#crc32, segment.crc32, segment.length);
    this.#length += segment.length;
  }

  async #missingFolders(entry: TarSpooledEntry): Promise<HeldSegment[]> {
    const names = foldersOf(this.#format.root, entry.result.path).filter((f) => !this.#folders.has(f));
    return Promise.all(names.map((name) => this.#format.folder(name)));
  }
}
