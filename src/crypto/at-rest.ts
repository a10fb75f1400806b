import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { ByteQueue } from './byte-queue.ts';

/*
 * Encryption at rest for stored files: AES-256-GCM applied segment by segment
 * (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, as used by
 * Tink and age).
 *
 * Why a format of our own instead of one GCM pass: GCM authenticates with a single
 * tag at the end, so a streaming decryptor of a multi-GB file would have to release
 * plaintext long before it can know the bytes are genuine, or hold the whole file.
 * Cutting the plaintext into 64 KiB segments, each with its own tag, lets the
 * decryptor verify a segment and only then release it, with flat memory. The segment
 * index and a "final segment" flag are part of each nonce, so reordering, dropping,
 * duplicating or truncating segments fails authentication too.
 *
 * Keys are enveloped: format 2 (written today) names a data key of the keyring
 * (src/crypto/keyring.ts), which the master key wraps in the database; each file's own
 * key is derived from that data key and a random salt in the header. The header is
 * never rewritten, so rotating the master key re-wraps keyring rows and touches no file.
 * Format 1 (written before the keyring) carried its own random data key wrapped by the
 * master key; it is still read, and key rotation re-encrypts it as format 2.
 *
 * Layout, integers big-endian. Both headers are 86 bytes.
 *   format 2 header
 *      0  magic "FERRY1"                                   6
 *      6  version = 2                                      1
 *      7  segment size in plaintext bytes (65536)          4
 *     11  data key id (the keyring row's uuid)            16
 *     27  nonce prefix, random per file                    7
 *     34  salt, random per file                           32
 *     66  key commitment                                  20
 *     file key ‖ commitment = HKDF-SHA256(data key, salt, "ferry at-rest file key v2" ‖ bytes 0..65),
 *     32 + 20 bytes: a wrong data key or an altered header fails before any segment is read.
 *   format 1 header
 *      0  magic "FERRY1"                                   6
 *      6  version = 1                                      1
 *      7  segment size in plaintext bytes (65536)          4
 *     11  master key id: HMAC-SHA256(master key,           8
 *         "ferry at-rest key id v1"), first 8 bytes
 *     19  nonce prefix, random per file                    7
 *     26  wrap nonce, random                              12
 *     38  file key encrypted with the master key          48  (32 + 16-byte tag;
 *         (AES-256-GCM, additional data = bytes 0..25)         AAD binds size, key id, prefix)
 *   segments, one after another
 *     AES-256-GCM(file key, nonce, plaintext segment, additional data = the whole header) ‖ 16-byte tag
 *     nonce = nonce prefix (7) ‖ segment index (4) ‖ 0x01 for the last segment, else 0x00
 * Every segment but the last holds exactly `segment size` bytes; the last holds
 * 0..segment size, so an empty file is a header plus one empty final segment.
 * Ciphertext size = 86 + plaintext + 16 × segments; at most 2^32 segments (256 TiB).
 */

const MAGIC = Buffer.from('FERRY1', 'latin1');
export const HEADER_BYTES = 86;
const TAG_BYTES = 16;
export const SEGMENT_BYTES = 64 * 1024;
const MAX_SEGMENT_BYTES = 16 * 1024 * 1024;
const WRAP_AAD_BYTES = 26;
const KEY_ID_LABEL = 'ferry at-rest key id v1';
const FILE_KEY_LABEL = 'ferry at-rest file key v2';
const V2_KEYED_BYTES = 66;
const COMMITMENT_BYTES = 20;

/** A data key of the keyring: its id and its 32 bytes. */
export interface DataEncryptionKey {
  readonly id: string;
  readonly key: Uint8Array;
}

/** What opens stored files: the keyring's data keys (format 2) and the master keys (format 1). */
export interface AtRestKeys {
  /** Master keys that may have wrapped the file key of a format-1 file. */
  readonly masterKeys: readonly Uint8Array[];
  /** The data key with this id; fails with `decryption_failed` when it cannot be had. */
  dataKey(id: string): Promise<Uint8Array>;
}

/** What also writes them: the data key new files are encrypted under. */
export interface AtRestKeyring extends AtRestKeys {
  activeDataKey(): Promise<DataEncryptionKey>;
}

/** The id written into format-1 headers for a master key; not secret (one-way). */
export function masterKeyId(masterKey: Uint8Array): Buffer {
  checkKey(masterKey);
  return createHmac('sha256', masterKey).update(KEY_ID_LABEL).digest().subarray(0, 8);
}

function checkKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== 32)
    throw invalid('masterKey', 'must be 32 bytes (a base64 FERRY_ENCRYPTION_KEY of 32 bytes)');
}

function unreadable(why: string): FerryError {
  return new FerryError('decryption_failed', `cannot decrypt the stored file: ${why}`);
}

/** True when `bytes` (the start of a file) carries this format's magic. */
export function isEncryptedAtRest(bytes: Uint8Array): boolean {
  return bytes.length >= MAGIC.length && MAGIC.equals(bytes.subarray(0, MAGIC.length));
}

/** Ciphertext size for a plaintext size. */
export function encryptedSize(plaintextBytes: number, segmentSize = SEGMENT_BYTES): number {
  const segments = Math.max(1, Math.ceil(plaintextBytes / segmentSize));
  return HEADER_BYTES + plaintextBytes + segments * TAG_BYTES;
}

/** What a header says about the key that opens it (not secret). */
export type HeaderKeyRef =
  | { readonly version: 1; readonly masterKeyId: string }
  | { readonly version: 2; readonly dataKeyId: string };

/** The version and key reference of a header; `decryption_failed` when it is not one. */
export function headerKeyRef(header: Uint8Array): HeaderKeyRef {
  const bytes = Buffer.from(header.buffer, header.byteOffset, header.byteLength);
  if (bytes.length < HEADER_BYTES) throw unreadable('the file is shorter than its header');
  if (!isEncryptedAtRest(bytes)) throw unreadable('it is not a Ferry encrypted file (no FERRY1 header)');
  const segmentSize = bytes.readUInt32BE(7);
  if (segmentSize < 1 || segmentSize > MAX_SEGMENT_BYTES) throw unreadable('the header is corrupted');
  if (bytes[6] === 1) return { version: 1, masterKeyId: bytes.subarray(11, 19).toString('hex') };
  if (bytes[6] === 2) return { version: 2, dataKeyId: uuidText(bytes.subarray(11, 27)) };
  throw unreadable(`unsupported format version ${bytes[6]}`);
}

function uuidText(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function uuidBytes(id: string): Buffer {
  const hex = id.replaceAll('-', '');
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw invalid('dataKey.id', 'must be a uuid');
  return Buffer.from(hex, 'hex');
}

/** A parsed header with its file key: everything needed to decrypt segments. */
export interface OpenedHeader {
  readonly header: Buffer;
  readonly segmentSize: number;
  readonly dataKey: Buffer;
  readonly noncePrefix: Buffer;
}

/** Where the plaintext of a file of `ciphertextBytes` lives, from its opened header. */
export function layoutOf(
  opened: OpenedHeader,
  ciphertextBytes: number,
): { segments: number; plaintextBytes: number } {
  const body = ciphertextBytes - HEADER_BYTES;
  const stride = opened.segmentSize + TAG_BYTES;
  const segments = Math.ceil(body / stride);
  const last = body - (segments - 1) * stride;
  if (body < TAG_BYTES || last < TAG_BYTES) throw unreadable('the file is truncated');
  return { segments, plaintextBytes: body - segments * TAG_BYTES };
}

function segmentNonce(prefix: Buffer, index: number, final: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  prefix.copy(nonce, 0);
  nonce.writeUInt32BE(index, 7);
  nonce[11] = final ? 1 : 0;
  return nonce;
}

/** The file key and key commitment of a format-2 header (its first 66 bytes are set). */
function fileKeyV2(dataKey: Uint8Array, header: Buffer): { fileKey: Buffer; commitment: Buffer } {
  const info = Buffer.concat([Buffer.from(FILE_KEY_LABEL), header.subarray(0, V2_KEYED_BYTES)]);
  const out = Buffer.from(hkdfSync('sha256', dataKey, header.subarray(34, 66), info, 32 + COMMITMENT_BYTES));
  return { fileKey: out.subarray(0, 32), commitment: out.subarray(32) };
}

/** A format-2 header for a data key of the keyring, with a fresh salt and nonce prefix. */
function newHeaderV2(dek: DataEncryptionKey, segmentSize: number): OpenedHeader {
  if (!(dek.key instanceof Uint8Array) || dek.key.length !== 32) throw invalid('dataKey', 'must be 32 bytes');
  const noncePrefix = randomBytes(7);
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header[6] = 2;
  header.writeUInt32BE(segmentSize, 7);
  uuidBytes(dek.id).copy(header, 11);
  noncePrefix.copy(header, 27);
  randomBytes(32).copy(header, 34);
  const { fileKey, commitment } = fileKeyV2(dek.key, header);
  commitment.copy(header, V2_KEYED_BYTES);
  return { header, segmentSize, dataKey: fileKey, noncePrefix };
}

/** A format-1 header: a fresh random file key wrapped by `masterKey`. */
function newHeaderV1(masterKey: Uint8Array, segmentSize: number): OpenedHeader {
  const dataKey = randomBytes(32);
  const noncePrefix = randomBytes(7);
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header[6] = 1;
  header.writeUInt32BE(segmentSize, 7);
  masterKeyId(masterKey).copy(header, 11);
  noncePrefix.copy(header, 19);
  const wrapNonce = randomBytes(12);
  wrapNonce.copy(header, 26);
  const wrap = createCipheriv('aes-256-gcm', masterKey, wrapNonce);
  wrap.setAAD(header.subarray(0, WRAP_AAD_BYTES));
  const wrapped = Buffer.concat([wrap.update(dataKey), wrap.final(), wrap.getAuthTag()]);
  wrapped.copy(header, 38);
  return { header, segmentSize, dataKey, noncePrefix };
}

/**
 * Parses a header and derives or unwraps its file key: format 2 with the keyring's data key
 * it names, format 1 with whichever configured master key wrote it.
 */
export async function openHeader(keys: AtRestKeys, header: Buffer): Promise<OpenedHeader> {
  const ref = headerKeyRef(header);
  const copy = Buffer.from(header.subarray(0, HEADER_BYTES));
  const segmentSize = copy.readUInt32BE(7);
  if (ref.version === 1) return openHeaderV1(masterKeyList(keys.masterKeys), copy, segmentSize);
  const dataKey = await keys.dataKey(ref.dataKeyId);
  const { fileKey, commitment } = fileKeyV2(dataKey, copy);
  if (!timingSafeEqual(commitment, copy.subarray(V2_KEYED_BYTES, HEADER_BYTES)))
    throw unreadable('the header is corrupted or its data key is wrong');
  return { header: copy, segmentSize, dataKey: fileKey, noncePrefix: copy.subarray(27, 34) };
}

function openHeaderV1(keys: readonly Uint8Array[], header: Buffer, segmentSize: number): OpenedHeader {
  const keyId = header.subarray(11, 19);
  const masterKey = keys.find((key) => masterKeyId(key).equals(keyId));
  if (!masterKey)
    throw unreadable('it was encrypted with a master key that is not configured (see FERRY_ENCRYPTION_KEY)');
  try {
    const unwrap = createDecipheriv('aes-256-gcm', masterKey, header.subarray(26, 38));
    unwrap.setAAD(header.subarray(0, WRAP_AAD_BYTES));
    unwrap.setAuthTag(header.subarray(70, 86));
    const dataKey = Buffer.concat([unwrap.update(header.subarray(38, 70)), unwrap.final()]);
    return { header, segmentSize, dataKey, noncePrefix: header.subarray(19, 26) };
  } catch {
    throw unreadable('the header is corrupted or the master key is wrong');
  }
}

function masterKeyList(keys: readonly Uint8Array[]): readonly Uint8Array[] {
  for (const key of keys) checkKey(key);
  return keys;
}

class EncryptTransform extends Transform {
  readonly #opened: OpenedHeader;
  readonly #queue = new ByteQueue();
  #index = 0;

  constructor(opened: OpenedHeader) {
    super();
    this.#opened = opened;
    this.push(opened.header);
  }

  #seal(plaintext: Buffer, final: boolean): Buffer {
    if (this.#index > 0xffffffff) throw new FerryError('payload_too_large', 'file too large to encrypt');
    const { dataKey, noncePrefix, header } = this.#opened;
    const cipher = createCipheriv('aes-256-gcm', dataKey, segmentNonce(noncePrefix, this.#index++, final));
    cipher.setAAD(header);
    return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#queue.push(chunk);
    const size = this.#opened.segmentSize;
    try {
      // A full segment is sealed only once more bytes follow it: the last one must be flagged final.
      while (this.#queue.length > size) this.push(this.#seal(this.#queue.take(size), false));
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    let last: Buffer;
    try {
      last = this.#seal(this.#queue.take(this.#queue.length), true);
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback(null, last);
  }
}

interface SegmentWindow {
  /** Index of the first segment in the input. */
  first: number;
  /** Index of the file's last (final) segment, when known in advance. */
  final: number;
  /** Index of the last segment the input must contain. */
  last: number;
}

class DecryptTransform extends Transform {
  readonly #keys: AtRestKeys | undefined;
  readonly #passthroughPlaintext: boolean;
  #opened: OpenedHeader | undefined;
  #window: SegmentWindow | undefined;
  #mode: 'header' | 'segments' | 'plain' = 'header';
  #sniffed = false;
  readonly #queue = new ByteQueue();
  #index = 0;

  constructor(
    options:
      | { keys: AtRestKeys; passthroughPlaintext: boolean }
      | { opened: OpenedHeader; window: SegmentWindow },
  ) {
    super();
    if ('keys' in options) {
      this.#keys = options.keys;
      this.#passthroughPlaintext = options.passthroughPlaintext;
    } else {
      this.#keys = undefined;
      this.#passthroughPlaintext = false;
      this.#opened = options.opened;
      this.#window = options.window;
      this.#index = options.window.first;
      this.#mode = 'segments';
    }
  }

  /** Verifies one whole segment and returns its plaintext; nothing of a failing segment escapes. */
  #open(sealed: Buffer, final: boolean): Buffer {
    const { dataKey, noncePrefix, header } = this.#opened!;
    const index = this.#index++;
    if (sealed.length < TAG_BYTES) throw unreadable('the file is truncated');
    try {
      const decipher = createDecipheriv('aes-256-gcm', dataKey, segmentNonce(noncePrefix, index, final));
      decipher.setAAD(header);
      decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
      return Buffer.concat([
        decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES)),
        decipher.final(),
      ]);
    } catch {
      throw unreadable(
        `segment ${index} failed authentication (the file was altered, truncated or reordered)`,
      );
    }
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let opening: Promise<void> | undefined;
    try {
      opening = this.#consume(chunk);
    } catch (err) {
      callback(err as Error);
      return;
    }
    // Only the header waits (its data key may come from the keyring); segments are synchronous.
    if (opening) opening.then(() => callback(), callback);
    else callback();
  }

  #consume(chunk: Buffer): Promise<void> | undefined {
    if (this.#mode === 'plain') {
      this.push(chunk);
      return undefined;
    }
    this.#queue.push(chunk);
    if (this.#mode === 'header') {
      if (this.#passthroughPlaintext && !this.#sniffed && this.#queue.length >= MAGIC.length) {
        this.#sniffed = true;
        const start = this.#queue.take(this.#queue.length);
        if (!isEncryptedAtRest(start)) {
          this.#mode = 'plain';
          this.push(start);
          return undefined;
        }
        this.#queue.push(start);
      }
      if (this.#queue.length < HEADER_BYTES) return undefined;
      return openHeader(this.#keys!, this.#queue.take(HEADER_BYTES)).then((opened) => {
        this.#opened = opened;
        this.#mode = 'segments';
        this.#segments();
      });
    }
    this.#segments();
    return undefined;
  }

  #segments(): void {
    const stride = this.#opened!.segmentSize + TAG_BYTES;
    while (this.#queue.length > stride) this.push(this.#open(this.#queue.take(stride), false));
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.#finish();
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback();
  }

  #finish(): void {
    if (this.#mode === 'plain') return;
    if (this.#mode === 'header') {
      // Shorter than the magic: it cannot be an encrypted file, so it is plaintext.
      if (this.#passthroughPlaintext && this.#queue.length < MAGIC.length) {
        this.push(this.#queue.take(this.#queue.length));
        return;
      }
      throw unreadable('the file is shorter than its header');
    }
    const window = this.#window;
    const final = window ? this.#index === window.final : true;
    this.push(this.#open(this.#queue.take(this.#queue.length), final));
    if (window && this.#index !== window.last + 1) throw unreadable('the file is truncated');
  }
}

function checkSegmentSize(segmentSize: number): void {
  if (!Number.isInteger(segmentSize) || segmentSize < 1 || segmentSize > MAX_SEGMENT_BYTES)
    throw invalid('segmentSize', `must be an integer from 1 to ${MAX_SEGMENT_BYTES}`);
}

/** Encrypts a byte stream into format 2 under a data key of the keyring. */
export function encryptStream(dataKey: DataEncryptionKey, options: { segmentSize?: number } = {}): Transform {
  const segmentSize = options.segmentSize ?? SEGMENT_BYTES;
  checkSegmentSize(segmentSize);
  return new EncryptTransform(newHeaderV2(dataKey, segmentSize));
}

/**
 * Encrypts a byte stream into format 1 (a file key wrapped by `masterKey`), as Ferry wrote
 * files before the keyring; kept so that such files can be produced to test reading and
 * rotating them. New files are format 2.
 */
export function encryptStreamV1(masterKey: Uint8Array, options: { segmentSize?: number } = {}): Transform {
  const segmentSize = options.segmentSize ?? SEGMENT_BYTES;
  checkSegmentSize(segmentSize);
  checkKey(masterKey);
  return new EncryptTransform(newHeaderV1(masterKey, segmentSize));
}

/**
 * Decrypts a stream written by `encryptStream` (or format 1). The header says which data
 * key (or, for format 1, master key) opens it. Fails with `decryption_failed` on
 * tampering, truncation, reordering or a key that is not to be had, and never releases
 * plaintext of a segment that did not verify. With `passthroughPlaintext`, input that
 * does not start with the magic is passed on unchanged (files stored before encryption
 * at rest was switched on).
 */
export function decryptStream(keys: AtRestKeys, options: { passthroughPlaintext?: boolean } = {}): Transform {
  masterKeyList(keys.masterKeys);
  return new DecryptTransform({ keys, passthroughPlaintext: options.passthroughPlaintext ?? false });
}

/**
 * Decrypts the segments `first..last` of a file, given its opened header and the
 * index of its final segment; the input is exactly those segments' bytes (from
 * `segmentByteRange`). Used to serve byte ranges without decrypting from the start.
 */
export function decryptSegments(opened: OpenedHeader, window: SegmentWindow): Transform {
  return new DecryptTransform({ opened, window });
}

/** The ciphertext byte range (inclusive) holding the segments that cover plaintext bytes start..end. */
export function segmentByteRange(
  opened: OpenedHeader,
  ciphertextBytes: number,
  plain: { start: number; end: number },
): { first: number; last: number; final: number; start: number; end: number; skip: number } {
  const { segments } = layoutOf(opened, ciphertextBytes);
  const size = opened.segmentSize;
  const stride = size + TAG_BYTES;
  const first = Math.floor(plain.start / size);
  const last = Math.min(Math.floor(plain.end / size), segments - 1);
  return {
    first,
    last,
    final: segments - 1,
    start: HEADER_BYTES + first * stride,
    end: Math.min(HEADER_BYTES + (last + 1) * stride, ciphertextBytes) - 1,
    skip: plain.start - first * size,
  };
}
