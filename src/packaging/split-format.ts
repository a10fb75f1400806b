import { createReadStream } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import type { PackageEntryResult } from './package-writer.ts';

/**
 * One package file made ready for a part: its bytes as the archive will hold them
 * (compressed, with what the format needs to describe them) in a temporary file, so
 * that its exact size in a part is known before it is placed.
 */
export interface SpooledEntry {
  /** The package file: path, size and SHA-256 of its own bytes (what checksums.sha256 lists). */
  readonly result: PackageEntryResult;
  /** The temporary file with the entry's archive bytes. */
  readonly file: string;
  /** Size of that file. */
  readonly spooledBytes: number;
}

/** The archive format of the parts: how an entry is spooled and how a part is laid out. */
export interface SplitFormat<E extends SpooledEntry = SpooledEntry> {
  /**
   * Streams `source` into `file` as the entry's archive bytes; `track` is told of each
   * stream it runs, so an abort can destroy it.
   */
  spool(
    path: string,
    source: Readable | Buffer,
    file: string,
    track: (stream: Readable | Writable) => void,
  ): Promise<E>;
  /** An empty part. */
  part(): SplitPartLayout<E>;
}

/** One part being written: its byte accounting is exact, headers and end records included. */
export interface SplitPartLayout<E extends SpooledEntry> {
  /** The size the part would have, once closed, with `entry` (and the folders it needs) added. */
  sizeWith(entry: E): Promise<number>;
  /** Writes `entry` (and the folders it needs) to `out`; `track` is told of the file it reads. */
  append(entry: E, out: Writable, track: (stream: Readable) => void): Promise<void>;
  /** Writes the part's end records to `out` and returns the part's size. */
  close(out: Writable): Promise<number>;
}

/** Resolves once `out` has room again; rejects when it fails or closes first. */
function drained(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      out.off('drain', onDrain).off('error', onError).off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onError = (err: Error) => done(err);
    const onClose = () => done(new Error('the part stream closed before it was complete'));
    out.on('drain', onDrain).on('error', onError).on('close', onClose);
  });
}

function checkOpen(out: Writable): void {
  if (out.destroyed || out.writableEnded)
    throw out.errored ?? new Error('the part stream closed before it was complete');
}

/**
 * Writes `data` to `out` (which stays open), waiting while it is full. A part stream gets
 * one write after another for every entry, so no listener may stay behind per write.
 */
export async function writeTo(out: Writable, data: Buffer): Promise<void> {
  if (data.length === 0) return;
  checkOpen(out);
  if (!out.write(data)) await drained(out);
}

/** Copies a spooled file into `out` (which stays open). */
export async function copyTo(out: Writable, file: string, track: (stream: Readable) => void): Promise<void> {
  const input = createReadStream(file);
  track(input);
  try {
    for await (const chunk of input) {
      checkOpen(out);
      if (!out.write(chunk)) await drained(out);
    }
  } finally {
    input.destroy();
  }
}

/** The folders an entry path sits in, under the root, outermost first: `r/`, `r/a/` for `a/b.json`. */
export function foldersOf(root: string, path: string): string[] {
  const segments = path.split('/');
  const folders = [`${root}/`];
  for (let i = 1; i < segments.length; i++) folders.push(`${root}/${segments.slice(0, i).join('/')}/`);
  return folders;
}
