import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import yauzl from 'yauzl';
import { FerryError } from '../domain/ferry-error.ts';
import { checkEntryPath } from '../packaging/entry-path.ts';
import { limitExceeded } from './read.ts';
import type { ImportInput, ImportLimits } from './types.ts';

/**
 * Opens what a user hands an import: a folder, one file, or an archive (ZIP, tar, tar.gz)
 * that is extracted to a private temporary folder first. Archives are untrusted: an entry
 * that would land outside the folder (`../`, an absolute path, a drive letter, a backslash,
 * NUL), a link, or an archive inside the archive is refused before anything is written, and
 * the entry count, total size and compression ratio are bounded while extracting (sizes are
 * counted as bytes arrive, so a header that lies about its size gains nothing).
 */
export interface OpenedInput {
  readonly input: ImportInput;
  /** Bytes of the file or archive as given (progress). */
  readonly bytes: number;
  /** Removes the temporary folder of an extracted archive. */
  close(): Promise<void>;
}

const NESTED = /\.(zip|tar|tgz|tar\.gz|gz|zst|7z|rar|bz2|xz)$/i;

export function unsafe(entry: string, why: string): FerryError {
  const escaped = entry.replace(
    /[\u0000-\u001f\u007f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
  const printable = escaped.length > 200 ? `${escaped.slice(0, 200)}…` : escaped;
  return new FerryError('import_unsafe', `archive entry "${printable}" refused: ${why}`, {
    entry: printable,
  });
}

/** The relative path an entry extracts to, or an import_unsafe error. */
export function safeEntryName(name: string): string {
  if (name.includes('\u0000')) throw unsafe(name, 'the name holds a NUL character');
  if (name.includes('\\')) throw unsafe(name, 'the name holds a backslash');
  if (/^[A-Za-z]:/.test(name)) throw unsafe(name, 'the name starts with a drive letter');
  if (name.startsWith('/')) throw unsafe(name, 'the name is an absolute path');
  const trimmed = name.replace(/\/+$/, '').replace(/^(\.\/)+/, '');
  // `./` itself (tar -C dir .): the archive's root.
  if (trimmed === '' || trimmed === '.') return '';
  if (trimmed.split('/').some((s) => s === '..'))
    throw unsafe(name, 'the name climbs out of the archive (..)');
  try {
    return checkEntryPath(trimmed);
  } catch (err) {
    throw unsafe(name, (err as Error).message.replace(/^path: /, ''));
  }
}

export async function openInput(given: string, limits: ImportLimits): Promise<OpenedInput> {
  const full = path.resolve(given);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(full);
  } catch {
    throw new FerryError('not_found', `${given}: no such file or folder`);
  }
  if (info.isDirectory()) {
    const files = await listFolder(full);
    let bytes = 0;
    for (const f of files) bytes += (await stat(path.join(full, f))).size;
    return { input: { root: full, files }, bytes, close: async () => {} };
  }
  const kind = archiveKind(full);
  if (!kind) {
    return {
      input: { root: path.dirname(full), files: [path.basename(full)] },
      bytes: info.size,
      close: async () => {},
    };
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'ferry-import-'));
  try {
    if (kind === 'zip') await extractZip(full, dir, limits, info.size);
    else await extractTar(full, dir, limits, kind === 'tar.gz', info.size);
    const files = await listFolder(dir);
    return {
      input: { root: dir, files },
      bytes: info.size,
      close: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

export function archiveKind(file: string): 'zip' | 'tar' | 'tar.gz' | null {
  if (/\.zip$/i.test(file)) return 'zip';
  if (/\.(tar\.gz|tgz)$/i.test(file)) return 'tar.gz';
  if (/\.tar$/i.test(file)) return 'tar';
  return null;
}

/** Regular files under a folder, relative, sorted; a link in it is refused (it could point anywhere). */
async function listFolder(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isSymbolicLink()) throw unsafe(relPath, 'it is a link');
      if (entry.isDirectory()) await walk(path.join(dir, entry.name), relPath);
      else if (entry.isFile()) out.push(relPath);
    }
  };
  await walk(root, '');
  return out.sort();
}

/** Counts bytes through and stops at the limit (also when a header lied about a size). */
class Budget {
  total = 0;
  private readonly limits: ImportLimits;
  private readonly archiveBytes: number;
  constructor(limits: ImportLimits, archiveBytes: number) {
    this.limits = limits;
    this.archiveBytes = archiveBytes;
  }
  /** An entry's header and the file it becomes cost even when empty: 512 bytes each. */
  charge(entry: string): void {
    this.total += 512;
    if (this.total > this.limits.maxBytes)
      throw limitExceeded('maxBytes', this.limits.maxBytes, `the archive's size at "${entry}"`);
  }
  counter(entry: string, compressed: number | null): Transform {
    let entryBytes = 0;
    const limits = this.limits;
    return new Transform({
      transform: (chunk: Buffer, _enc, done: TransformCallback) => {
        entryBytes += chunk.length;
        this.total += chunk.length;
        if (this.total > limits.maxBytes)
          return done(limitExceeded('maxBytes', limits.maxBytes, "the archive's uncompressed size"));
        if (
          compressed !== null &&
          entryBytes > 1024 * 1024 &&
          entryBytes / Math.max(1, compressed) > limits.maxRatio
        )
          return done(limitExceeded('maxRatio', limits.maxRatio, `the compression ratio of "${entry}"`));
        if (this.total > 1024 * 1024 && this.total / Math.max(1, this.archiveBytes) > limits.maxRatio)
          return done(limitExceeded('maxRatio', limits.maxRatio, "the archive's compression ratio"));
        done(null, chunk);
      },
    });
  }
}

async function extractZip(file: string, dir: string, limits: ImportLimits, size: number): Promise<void> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.open(
      file,
      { lazyEntries: true, autoClose: false, strictFileNames: true, validateEntrySizes: true },
      (err, z) => (err ? reject(unreadableArchive(file, err)) : resolve(z!)),
    ),
  );
  try {
    if (zip.entryCount > limits.maxEntries)
      throw limitExceeded('maxEntries', limits.maxEntries, `the archive's ${zip.entryCount} entries`);
    // First pass over the central directory: every name and type is checked before a byte is written.
    const entries: yauzl.Entry[] = [];
    let declared = 0;
    await new Promise<void>((resolve, reject) => {
      zip.on('entry', (entry: yauzl.Entry) => {
        try {
          const name = safeEntryName(entry.fileName);
          if (name === '') {
            zip.readEntry();
            return;
          }
          const mode = (entry.externalFileAttributes >>> 16) & 0o170000;
          if (mode === 0o120000) throw unsafe(entry.fileName, 'it is a symbolic link');
          if (!entry.fileName.endsWith('/') && NESTED.test(name))
            throw unsafe(entry.fileName, 'it is an archive inside the archive');
          declared += entry.uncompressedSize;
          if (declared > limits.maxBytes)
            throw limitExceeded('maxBytes', limits.maxBytes, "the archive's uncompressed size");
          if (
            entry.uncompressedSize > 1024 * 1024 &&
            entry.uncompressedSize / Math.max(1, entry.compressedSize) > limits.maxRatio
          )
            throw limitExceeded('maxRatio', limits.maxRatio, `the compression ratio of "${name}"`);
          entries.push(entry);
          zip.readEntry();
        } catch (err) {
          reject(err);
        }
      });
      zip.on('end', () => resolve());
      zip.on('error', (err: Error) => reject(unreadableArchive(file, err)));
      zip.readEntry();
    });
    const budget = new Budget(limits, size);
    for (const entry of entries) {
      const name = safeEntryName(entry.fileName);
      budget.charge(name);
      const target = path.join(dir, name);
      if (entry.fileName.endsWith('/')) {
        await mkdir(target, { recursive: true });
        continue;
      }
      await mkdir(path.dirname(target), { recursive: true });
      const stream = await new Promise<NodeJS.ReadableStream>((resolve, reject) =>
        zip.openReadStream(entry, (err, s) => (err ? reject(unreadableArchive(file, err)) : resolve(s!))),
      );
      try {
        await pipeline(
          stream,
          budget.counter(name, entry.compressedSize),
          createWriteStream(target, { flags: 'wx' }),
        );
      } catch (err) {
        if (err instanceof FerryError) throw err;
        throw unreadableArchive(file, err as Error, name);
      }
    }
  } finally {
    zip.close();
  }
}

async function extractTar(
  file: string,
  dir: string,
  limits: ImportLimits,
  gzip: boolean,
  size: number,
): Promise<void> {
  const extract = tarStream.extract();
  const budget = new Budget(limits, size);
  let count = 0;
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const fail = (err: unknown) => {
        // Destroying the extractor destroys this entry's stream too: its error is this one.
        stream.on('error', () => {});
        stream.resume();
        reject(err);
        extract.destroy(err as Error);
      };
      try {
        count += 1;
        if (count > limits.maxEntries)
          throw limitExceeded('maxEntries', limits.maxEntries, "the archive's entries");
        const name = safeEntryName(header.name);
        if (header.type === 'symlink' || header.type === 'link') throw unsafe(header.name, 'it is a link');
        budget.charge(name || '.');
        if (header.type === 'directory' || name === '') {
          mkdir(path.join(dir, name), { recursive: true }).then(() => {
            stream.resume();
            next();
          }, fail);
          return;
        }
        if (header.type !== 'file') throw unsafe(header.name, `it is a ${header.type}, not a file`);
        if (NESTED.test(name)) throw unsafe(header.name, 'it is an archive inside the archive');
        const target = path.join(dir, name);
        mkdir(path.dirname(target), { recursive: true })
          .then(() =>
            pipeline(stream, budget.counter(name, null), createWriteStream(target, { flags: 'wx' })),
          )
          .then(() => next(), fail);
      } catch (err) {
        fail(err);
      }
    });
    extract.on('finish', () => resolve());
    extract.on('error', (err) => reject(err instanceof FerryError ? err : unreadableArchive(file, err)));
  });
  const source = createReadStream(file);
  const feed = gzip ? pipeline(source, createGunzip(), extract) : pipeline(source, extract);
  await Promise.all([
    done,
    feed.catch((err) => {
      throw err instanceof FerryError ? err : unreadableArchive(file, err as Error);
    }),
  ]);
}

function unreadableArchive(file: string, err: Error, entry?: string): FerryError {
  const message = err.message.slice(0, 200);
  if (/too many bytes|expected \d+|invalid relative path|absolute path|invalid characters/i.test(message))
    return new FerryError(
      'import_unsafe',
      `${path.basename(file)}${entry ? ` entry "${entry}"` : ''}: ${message}`,
    );
  return new FerryError(
    'import_unreadable',
    `${path.basename(file)}${entry ? ` entry "${entry}"` : ''}: not a readable archive (${message})`,
    {
      file: path.basename(file),
    },
  );
}
