import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../domain/ferry-error.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import { checkExpiry, notFound, resolveRange, validateKey, validatePrefix } from './object-key.ts';
import type {
  ByteRange,
  ListedObject,
  ObjectInfo,
  ObjectStore,
  PendingObject,
  StoredObject,
} from './object-store.ts';

/** How much a read stream of a stored file reads at a time. */
const READ_BYTES = 1024 * 1024;

/** Folder under the root for writes in progress; on the same file system, so commit is a rename. */
const TEMP_DIR = '.tmp';

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Files under one root directory. A put streams into `<root>/.tmp/<uuid>` (mode
 * 0600), fsyncs it, and commit renames it over the final path and fsyncs the
 * folder, so the key shows either nothing or the complete file, even across a
 * crash. On disk a key cannot be both a file and a folder (`a` and `a/b`); S3 allows
 * that, so keys should not rely on it. Content types are not kept on disk: `head`
 * returns none, and the download route derives one from the file name.
 */
export class LocalObjectStore implements ObjectStore {
  readonly kind = 'local';
  readonly root: string;

  constructor(options: { root: string }) {
    this.root = path.resolve(options.root);
  }

  #path(key: string): string {
    return path.join(this.root, ...validateKey(key).split('/'));
  }

  async put(key: string, source: Readable, _options?: { contentType?: string }): Promise<PendingObject> {
    let finalPath: string;
    try {
      finalPath = this.#path(key);
    } catch (err) {
      source.destroy(); // release whatever feeds the source (a database cursor, a file)
      throw err;
    }
    const tempPath = path.join(this.root, TEMP_DIR, randomUUID());
    const digest = new MeteredHash();
    try {
      await mkdir(path.dirname(tempPath), { recursive: true, mode: 0o700 });
      const handle = await open(tempPath, 'wx', 0o600);
      // `flush` fsyncs the file before it is closed: the data is on disk before the rename.
      await pipeline(source, digest, handle.createWriteStream({ flush: true }));
    } catch (err) {
      source.destroy();
      await rm(tempPath, { force: true });
      throw err;
    }
    const { bytes, sha256 } = digest;
    const stored: StoredObject = { key, bytes, sha256 };
    let state: 'pending' | 'committed' | 'discarded' = 'pending';
    let committing: Promise<StoredObject> | undefined;
    return {
      ...stored,
      commit() {
        if (state === 'discarded') return Promise.reject(discardedError(key));
        committing ??= publish(tempPath, finalPath, key).then(() => {
          state = 'committed';
          return stored;
        });
        return committing;
      },
      async discard() {
        if (state === 'committed' || committing)
          throw new FerryError('conflict', `"${key}" is already committed`);
        state = 'discarded';
        await rm(tempPath, { force: true });
      },
    };
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const file = this.#path(key);
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(file, 'r');
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') throw notFound(key);
      throw err;
    }
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw notFound(key);
      // 1 MiB reads: a large download takes a sixteenth of the reads, writes and callbacks
      // of the 64 KiB default, and memory stays a few such buffers per download.
      if (!range) return handle.createReadStream({ highWaterMark: READ_BYTES });
      return handle.createReadStream({ ...resolveRange(range, info.size), highWaterMark: READ_BYTES });
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    try {
      const info = await stat(this.#path(key));
      return info.isFile() ? { bytes: info.size } : null;
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.#path(key);
    try {
      await unlink(file);
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR' || errno(err) === 'EISDIR') return;
      throw err;
    }
    // Remove folders the deletion left empty, up to the root. A concurrent commit into one of
    // them retries its mkdir (see publish), so losing this race is harmless.
    for (
      let dir = path.dirname(file);
      dir !== this.root && dir.startsWith(this.root);
      dir = path.dirname(dir)
    ) {
      try {
        await rmdir(dir);
      } catch {
        break; // not empty (or already gone): stop pruning
      }
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    validatePrefix(prefix);
    const slash = prefix.lastIndexOf('/');
    yield* this.#walk(slash >= 0 ? prefix.slice(0, slash) : '', prefix);
  }

  async *#walk(dirKey: string, prefix: string): AsyncGenerator<ListedObject> {
    const dir = dirKey ? path.join(this.root, ...dirKey.split('/')) : this.root;
    let entries: import('node:fs').Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return;
      throw err;
    }
    // Sort as S3 does (by key bytes): a folder `a` sorts as `a/`, after `a-b`. Names starting
    // with a dot are never keys (this hides `.tmp`).
    const items = entries
      .filter((entry) => !entry.name.startsWith('.'))
      .map((entry) => ({ entry, sortKey: entry.isDirectory() ? `${entry.name}/` : entry.name }))
      .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    for (const { entry } of items) {
      const key = dirKey ? `${dirKey}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* this.#walk(key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        try {
          const info = await stat(path.join(dir, entry.name));
          yield { key, bytes: info.size, lastModified: info.mtime };
        } catch (err) {
          if (errno(err) !== 'ENOENT') throw err; // deleted while listing: skip it
        }
      }
    }
  }

  async presignGet(key: string, expiresInSeconds: number): Promise<string | null> {
    validateKey(key);
    checkExpiry(expiresInSeconds);
    return null;
  }

  /**
   * Removes temporary files older than `olderThan`: writes of a process that crashed
   * between put and commit/discard. Returns how many were removed.
   */
  async removeStaleTemp(olderThan: Date): Promise<number> {
    const dir = path.join(this.root, TEMP_DIR);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (errno(err) === 'ENOENT') return 0;
      throw err;
    }
    let removed = 0;
    for (const name of names) {
      const file = path.join(dir, name);
      const info = await stat(file).catch(() => null);
      if (info && info.mtime < olderThan) {
        await rm(file, { force: true });
        removed++;
      }
    }
    return removed;
  }
}

/** Renames the temp file into place and fsyncs the folder, so the new name survives a crash. */
async function publish(tempPath: string, finalPath: string, key: string): Promise<void> {
  const dir = path.dirname(finalPath);
  for (let attempt = 0; ; attempt++) {
    await mkdir(dir, { recursive: true, mode: 0o700 }).catch((err) => {
      if (errno(err) === 'EEXIST' || errno(err) === 'ENOTDIR') throw keyConflict(key);
      throw err;
    });
    try {
      await rename(tempPath, finalPath);
      break;
    } catch (err) {
      // ENOENT: a concurrent delete pruned the folder between mkdir and rename; make it again.
      if (errno(err) === 'ENOENT' && attempt < 3) continue;
      if (errno(err) === 'EISDIR' || errno(err) === 'ENOTEMPTY' || errno(err) === 'ENOTDIR')
        throw keyConflict(key);
      throw err;
    }
  }
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function keyConflict(key: string): FerryError {
  return new FerryError(
    'conflict',
    `cannot store "${key}": on local disk a key cannot also be the folder of other keys`,
  );
}

function discardedError(key: string): FerryError {
  return new FerryError('conflict', `the pending write of "${key}" was discarded`);
}
