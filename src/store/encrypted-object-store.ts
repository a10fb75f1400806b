import { type Readable, pipeline } from 'node:stream';
import {
  decryptSegments,
  decryptStream,
  encryptStream,
  HEADER_BYTES,
  isEncryptedAtRest,
  layoutOf,
  openHeader,
  segmentByteRange,
} from '../crypto/at-rest.ts';
import type { MasterKeys } from '../crypto/master-key.ts';
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

/**
 * Encryption at rest around another store: `put` encrypts with the current master
 * key (src/crypto/at-rest.ts), `get` and `head` decrypt with any configured key.
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
  readonly #keys: MasterKeys;

  readonly #encryptWrites: boolean;

  /** With `encryptWrites: false` new objects are stored as plaintext and encrypted ones still read. */
  constructor(inner: ObjectStore, keys: MasterKeys, options: { encryptWrites?: boolean } = {}) {
    this.inner = inner;
    this.kind = inner.kind;
    this.#keys = keys;
    this.#encryptWrites = options.encryptWrites ?? true;
  }

  async put(key: string, source: Readable, options?: { contentType?: string }): Promise<PendingObject> {
    if (!this.#encryptWrites) return this.inner.put(key, source, options);
    const digest = new MeteredHash();
    const encrypted = pipeline(source, digest, encryptStream(this.#keys.current), surfaceOnStream);
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
      return pipeline(body, decryptStream(this.#keys.all, { passthroughPlaintext: true }), surfaceOnStream);
    }
    checkRange(range);
    const info = await this.inner.head(key);
    if (!info) throw notFound(key);
    const start = await this.#start(key, info.bytes);
    if (!isEncryptedAtRest(start)) return this.inner.get(key, range);
    const opened = openHeader(this.#keys.all, start);
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
    const { plaintextBytes } = layoutOf(openHeader(this.#keys.all, start), info.bytes);
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

  /** The first bytes of a stored object, enough for a header. */
  async #start(key: string, storedBytes: number): Promise<Buffer> {
    if (storedBytes === 0) return Buffer.alloc(0);
    const chunks: Buffer[] = [];
    for await (const chunk of await this.inner.get(key, { start: 0, end: HEADER_BYTES - 1 }))
      chunks.push(chunk);
    return Buffer.concat(chunks);
  }
}
