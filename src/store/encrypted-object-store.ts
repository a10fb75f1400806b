import { type Readable, type Transform, pipeline } from 'node:stream';
import {
  type AtRestKeyring,
  decryptSegments,
  decryptStream,
  encryptStream,
  HEADER_BYTES,
  type HeaderKeyRef,
  headerKeyRef,
  isEncryptedAtRest,
  layoutOf,
  openHeader,
  segmentByteRange,
} from '../crypto/at-rest.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import { checkExpiry, checkRange, notFound, resolveRange, validateKey } from './object-key.ts';
import type {
  ByteRange,
  ListedObject,
  ObjectInfo,
  ObjectStore,
  PendingObject,
  StoredObject,
} from './object-store.ts';
import { SliceTransform } from './slice-transform.ts';

// Errors surface on the returned stream (pipeline destroys every stage with the error).
const surfaceOnStream = () => {};

/** What `reencrypt` did with one object. */
export type ReencryptOutcome = 'reencrypted' | 'current' | 'plaintext' | 'missing';

/**
 * Encryption at rest around another store: `put` encrypts under the keyring's active data
 * key (src/crypto/at-rest.ts), `get` and `head` decrypt with the key each header names.
 * `bytes` and `sha256` always describe the plaintext, which is what manifests and
 * downloads promise. `list` reports stored (encrypted) sizes: 86 bytes plus 16 per
 * 64 KiB more than the plaintext.
 *
 * Objects that do not start with the format's magic are read as plaintext, so
 * switching encryption on does not strand files written before. Ranges decrypt only
 * the 64 KiB segments that cover them. `presignGet` returns null for encrypted
 * objects (a direct link would hand out ciphertext): the API serves them through its
 * own signed download route.
 */
export class EncryptedObjectStore implements ObjectStore {
  readonly kind: ObjectStore['kind'];
  readonly inner: ObjectStore;
  readonly #keys: AtRestKeyring;

  readonly #encryptWrites: boolean;

  /** With `encryptWrites: false` new objects are stored as plaintext and encrypted ones still read. */
  constructor(inner: ObjectStore, keys: AtRestKeyring, options: { encryptWrites?: boolean } = {}) {
    this.inner = inner;
    this.kind = inner.kind;
    this.#keys = keys;
    this.#encryptWrites = options.encryptWrites ?? true;
  }

  async put(key: string, source: Readable, options?: { contentType?: string }): Promise<PendingObject> {
    if (!this.#encryptWrites) return this.inner.put(key, source, options);
    return this.#putEncrypted(key, source, options);
  }

  async #putEncrypted(
    key: string,
    source: Readable,
    options?: { contentType?: string },
  ): Promise<PendingObject> {
    let encryptor: Transform;
    try {
      encryptor = encryptStream(await this.#keys.activeDataKey());
    } catch (err) {
      source.destroy();
      throw err;
    }
    const digest = new MeteredHash();
    const encrypted = pipeline(source, digest, encryptor, surfaceOnStream);
    const pending = await this.inner.put(key, encrypted, options);
    const plain: StoredObject = { key, bytes: digest.bytes, sha256: digest.sha256 };
    return {
      ...plain,
      async commit() {
        await pending.commit();
        return plain;
      },
      discard: () => pending.discard(),
    };
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    if (!range) {
      const body = await this.inner.get(key);
      return pipeline(body, decryptStream(this.#keys, { passthroughPlaintext: true }), surfaceOnStream);
    }
    checkRange(range);
    const info = await this.inner.head(key);
    if (!info) throw notFound(key);
    const start = await this.#start(key, info.bytes);
    if (!isEncryptedAtRest(start)) return this.inner.get(key, range);
    const opened = await openHeader(this.#keys, start);
    const plain = resolveRange(range, layoutOf(opened, info.bytes).plaintextBytes);
    const window = segmentByteRange(opened, info.bytes, plain);
    const body = await this.inner.get(key, { start: window.start, end: window.end });
    return pipeline(
      body,
      decryptSegments(opened, window),
      new SliceTransform(window.skip, plain.end - plain.start + 1),
      surfaceOnStream,
    );
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const info = await this.inner.head(key);
    if (!info) return null;
    const start = await this.#start(key, info.bytes);
    if (!isEncryptedAtRest(start)) return info;
    const { plaintextBytes } = layoutOf(await openHeader(this.#keys, start), info.bytes);
    return { ...info, bytes: plaintextBytes };
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }

  list(prefix: string): AsyncIterable<ListedObject> {
    return this.inner.list(prefix);
  }

  async presignGet(key: string, expiresInSeconds: number, filename?: string): Promise<string | null> {
    validateKey(key);
    checkExpiry(expiresInSeconds);
    const info = await this.inner.head(key);
    if (!info) throw notFound(key);
    if (isEncryptedAtRest(await this.#start(key, info.bytes))) return null;
    return this.inner.presignGet(key, expiresInSeconds, filename);
  }

  /**
   * The key reference of a stored object's header: null for plaintext, undefined when the
   * object is gone. For key rotation, which looks at every object.
   */
  async keyRef(key: string): Promise<HeaderKeyRef | null | undefined> {
    const info = await this.inner.head(key);
    if (!info) return undefined;
    const start = await this.#start(key, info.bytes);
    return isEncryptedAtRest(start) ? headerKeyRef(start) : null;
  }

  /**
   * Re-encrypts one object under the active data key when `stale(header)` says its key is
   * to be replaced (key rotation); plaintext objects are left alone. The new bytes replace the
   * old in one step (the store's atomic commit), with the same plaintext, size and checksum,
   * so a reader sees the old object or the new one, both readable while the old key exists.
   * An object deleted meanwhile is not written back.
   */
  async reencrypt(key: string, stale: (ref: HeaderKeyRef) => boolean): Promise<ReencryptOutcome> {
    const ref = await this.keyRef(key);
    if (ref === undefined) return 'missing';
    if (ref === null) return 'plaintext';
    if (!stale(ref)) return 'current';
    let body: Readable;
    try {
      body = await this.get(key);
    } catch (err) {
      if (err instanceof FerryError && err.code === 'not_found') return 'missing';
      throw err;
    }
    const pending = await this.#putEncrypted(key, body);
    let published = false;
    try {
      // Narrows the window in which an object deleted during the rewrite would come back.
      if (!(await this.inner.head(key))) return 'missing';
      await pending.commit();
      published = true;
      return 'reencrypted';
    } finally {
      if (!published) await pending.discard();
    }
  }

  /** The first bytes of a stored object, enough for a header. */
  async #start(key: string, storedBytes: number): Promise<Buffer> {
    if (storedBytes === 0) return Buffer.alloc(0);
    const chunks: Buffer[] = [];
    for await (const chunk of await this.inner.get(key, { start: 0, end: HEADER_BYTES - 1 }))
      chunks.push(chunk);
    return Buffer.concat(chunks);
  }
}
