import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { type Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { RunDeps } from '../pipeline/run.ts';
import type { PendingObject } from '../store/object-store.ts';

/** Counts and hashes what passes through. */
function meter() {
  const hash = createHash('sha256');
  let bytes = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  return { stream, done: () => ({ bytes, sha256: hash.digest('hex') }) };
}

/**
 * The command line's store for the pipeline run: one local file, written under a
 * temporary name next to it and renamed into place on commit (a failed export leaves
 * no half file), or stdout, which gets the bytes as they are produced.
 */
export function fileTarget(out: string): RunDeps['store'] {
  return {
    async put(key: string, source: Readable): Promise<PendingObject> {
      await mkdir(path.dirname(path.resolve(out)), { recursive: true });
      const temp = `${out}.partial-${process.pid}-${Date.now()}`;
      const m = meter();
      try {
        await pipeline(source, m.stream, createWriteStream(temp));
      } catch (err) {
        await rm(temp, { force: true });
        throw err;
      }
      const { bytes, sha256 } = m.done();
      return {
        key,
        bytes,
        sha256,
        async commit() {
          await rename(temp, out);
          return { key, bytes, sha256 };
        },
        discard: () => rm(temp, { force: true }),
      };
    },
    delete: () => rm(out, { force: true }),
  };
}

/** stdout as the run's store: bytes are streamed as produced; what was sent cannot be taken back. */
export function streamTarget(out: Writable): RunDeps['store'] {
  return {
    async put(key: string, source: Readable): Promise<PendingObject> {
      const m = meter();
      await pipeline(source, m.stream, out, { end: false });
      const { bytes, sha256 } = m.done();
      return {
        key,
        bytes,
        sha256,
        commit: async () => ({ key, bytes, sha256 }),
        discard: async () => {},
      };
    },
    delete: async () => {},
  };
}

/**
 * The command line's store for a run of several files (a split package): each file goes
 * into `dir` under the last segment of its key, written under a temporary name and
 * renamed into place on commit.
 */
export function folderTarget(dir: string): RunDeps['store'] {
  const fileOf = (key: string) => path.join(dir, key.slice(key.lastIndexOf('/') + 1));
  return {
    put: (key, source) => fileTarget(fileOf(key)).put(key, source),
    delete: (key) => rm(fileOf(key), { force: true }),
  };
}
