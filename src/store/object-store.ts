import type { Readable } from 'node:stream';

/** An object as stored: its key, size in bytes and the hex SHA-256 of its bytes. */
export interface StoredObject {
  key: string;
  bytes: number;
  sha256: string;
}

/**
 * An object that has been written in full but is not visible under its key yet.
 * `commit()` publishes it atomically (readers see nothing or everything);
 * `discard()` throws the written bytes away. Call exactly one of them.
 */
export interface PendingObject extends StoredObject {
  commit(): Promise<StoredObject>;
  discard(): Promise<void>;
}

/** An inclusive byte range, as in HTTP `Range: bytes=start-end`; no `end` means to the end. */
export interface ByteRange {
  start: number;
  end?: number;
}

export interface ObjectInfo {
  bytes: number;
  contentType?: string;
}

export interface ListedObject {
  key: string;
  bytes: number;
  lastModified: Date;
}

/**
 * Where export files, downloads and deliveries keep their bytes: local disk or
 * S3-compatible object storage, chosen once by `createObjectStore(config)`; backups may
 * also go to an SFTP server (`sftp-object-store.ts`).
 *
 * Keys are `/`-separated segments of `[A-Za-z0-9._=+@-]`, no segment starting with
 * a dot, at most 1024 bytes (see `validateKey`). Errors a caller can act on are
 * `FerryError`s: `not_found`, `range_not_satisfiable`, `invalid_parameter`, `conflict`.
 */
export interface ObjectStore {
  readonly kind: 'local' | 's3' | 'sftp';
  /** Streams `source` to a temporary place, computing SHA-256 and size while writing; nothing is visible under `key` until commit. */
  put(key: string, source: Readable, options?: { contentType?: string }): Promise<PendingObject>;
  /** The object's bytes, or an inclusive range of them; `end` past the last byte is clamped. */
  get(key: string, range?: ByteRange): Promise<Readable>;
  head(key: string): Promise<ObjectInfo | null>;
  /** Removes the object; removing a missing object is not an error. */
  delete(key: string): Promise<void>;
  /**
   * Committed objects whose key starts with `prefix`; never pending writes. Local disk
   * and AWS S3 list in key (byte) order; some S3-compatible servers use another order.
   */
  list(prefix: string): AsyncIterable<ListedObject>;
  /**
   * A presigned GET URL that downloads the object as `filename`, or null when the
   * store cannot hand out direct links (local disk, encryption at rest): then the
   * API serves the bytes through its own signed download route.
   */
  presignGet(key: string, expiresInSeconds: number, filename?: string): Promise<string | null>;
}

/** Longest accepted presigned URL lifetime: 7 days, the SigV4 maximum. */
export const MAX_PRESIGN_SECONDS = 604_800;
