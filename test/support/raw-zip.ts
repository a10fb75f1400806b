import { crc32, deflateRawSync } from 'node:zlib';

/**
 * A tiny ZIP writer for tests that controls every field, so hostile archives can be built
 * that well-behaved libraries refuse to write: any entry name (`../x`, `C:\x`, a NUL byte),
 * a size that lies, a symbolic link. The archive itself is well formed: a local header and
 * the data per entry, a central directory, an end-of-central-directory record (no ZIP64).
 */
export interface RawZipEntry {
  /** Written as given (UTF-8, flag bit 11 set): nothing is checked or normalised. */
  readonly name: string;
  /** The entry's real (uncompressed) content. */
  readonly data: Buffer;
  /** Default `store`. */
  readonly method?: 'store' | 'deflate';
  /**
   * Uncompressed size written in both the local header and the central directory (default
   * the real size); may lie. The compressed size and the CRC-32 are always the real ones.
   */
  readonly declaredSize?: number;
  /**
   * Unix mode (`0o100644` a file, `0o120777` a symbolic link whose target is `data`): put in
   * the external attributes (`mode << 16`) with "version made by" = Unix (3).
   */
  readonly unixMode?: number;
}

const DOS_TIME = 0; // 00:00:00
const DOS_DATE = (0 << 9) | (1 << 5) | 1; // 1980-01-01
const UTF8_NAMES = 0x0800;

export function rawZip(entries: readonly RawZipEntry[]): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name, 'utf8');
    const deflate = entry.method === 'deflate';
    const body = deflate ? deflateRawSync(entry.data) : entry.data;
    const crc = crc32(entry.data);
    const size = entry.declaredSize ?? entry.data.length;

    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed: 2.0
    local.writeUInt16LE(UTF8_NAMES, 6);
    local.writeUInt16LE(deflate ? 8 : 0, 8);
    local.writeUInt16LE(DOS_TIME, 10);
    local.writeUInt16LE(DOS_DATE, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28); // extra field length
    parts.push(local, name, body);

    const header = Buffer.alloc(46);
    header.writeUInt32LE(0x02014b50, 0);
    header.writeUInt16LE(entry.unixMode === undefined ? 20 : (3 << 8) | 20, 4); // version made by
    header.writeUInt16LE(20, 6);
    header.writeUInt16LE(UTF8_NAMES, 8);
    header.writeUInt16LE(deflate ? 8 : 0, 10);
    header.writeUInt16LE(DOS_TIME, 12);
    header.writeUInt16LE(DOS_DATE, 14);
    header.writeUInt32LE(crc, 16);
    header.writeUInt32LE(body.length, 20);
    header.writeUInt32LE(size, 24);
    header.writeUInt16LE(name.length, 28);
    // 30 extra length, 32 comment length, 34 disk number, 36 internal attributes: 0
    header.writeUInt32LE(((entry.unixMode ?? 0) << 16) >>> 0, 38);
    header.writeUInt32LE(offset, 42);
    central.push(header, name);

    offset += local.length + name.length + body.length;
  }
  const directory = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  // 4 this disk, 6 the directory's disk: 0
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  // 20 comment length: 0
  return Buffer.concat([...parts, directory, end]);
}
