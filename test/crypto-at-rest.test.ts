import { randomBytes } from 'node:crypto';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, test } from 'vitest';
import {
  type AtRestKeys,
  decryptStream,
  encryptedSize,
  encryptStream,
  encryptStreamV1,
  HEADER_BYTES,
  headerKeyRef,
  masterKeyId,
  SEGMENT_BYTES,
} from '../src/crypto/at-rest.ts';
import { chunked, readAll } from './support/fixtures/streams.ts';
import { memoryKeyring } from './support/keyring.ts';

const STRIDE = SEGMENT_BYTES + 16;
const key = randomBytes(32);
const ring = memoryKeyring(key);

async function encrypt(data: Buffer): Promise<Buffer> {
  return readAll(chunked(data, 10_007).pipe(encryptStream(await ring.activeDataKey())));
}

async function encryptV1(data: Buffer, masterKey: Uint8Array = key): Promise<Buffer> {
  return readAll(chunked(data, 10_007).pipe(encryptStreamV1(masterKey)));
}

/** Master keys only (format 1), no data keys. */
function masterOnly(...keys: Uint8Array[]): AtRestKeys {
  return { masterKeys: keys, dataKey: () => ring.dataKey('00000000-0000-0000-0000-000000000000') };
}

/** Runs `cipher` through a decryptor, returning what it emitted and the error it failed with. */
async function decrypt(
  cipher: Buffer,
  decryptor: Transform = decryptStream(ring),
): Promise<{ output: Buffer; error: unknown }> {
  const chunks: Buffer[] = [];
  let error: unknown;
  try {
    await pipeline(chunked(cipher, 7_001), decryptor, async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) chunks.push(chunk);
    });
  } catch (err) {
    error = err;
  }
  return { output: Buffer.concat(chunks), error };
}

describe('encryption at rest (FERRY1 segmented AES-256-GCM)', () => {
  for (const size of [0, 1, 65_535, 65_536, 65_537, 3 * 1024 * 1024]) {
    test(`round trip of ${size} bytes`, async () => {
      const data = randomBytes(size);
      const cipher = await encrypt(data);
      expect(cipher.subarray(0, 6).toString()).toBe('FERRY1');
      expect(cipher.length).toBe(encryptedSize(size));
      const { output, error } = await decrypt(cipher);
      expect(error).toBeUndefined();
      expect(output.equals(data)).toBe(true);
    });
  }

  test('the ciphertext does not contain the plaintext, and two encryptions differ', async () => {
    const data = Buffer.from('customer@example.com '.repeat(1000));
    const a = await encrypt(data);
    const b = await encrypt(data);
    expect(a.includes(Buffer.from('customer@example.com'))).toBe(false);
    expect(a.equals(b)).toBe(false);
  });

  test('a flipped byte in any segment fails', async () => {
    const cipher = await encrypt(randomBytes(3 * SEGMENT_BYTES + 100));
    for (const offset of [HEADER_BYTES + 5, HEADER_BYTES + STRIDE + 40_000, cipher.length - 1]) {
      const bad = Buffer.from(cipher);
      bad[offset]! ^= 0x01;
      const { error } = await decrypt(bad);
      expect(error).toMatchObject({
        code: 'decryption_failed',
        message: expect.stringMatching(/segment \d+/),
      });
    }
  });

  test('a flipped byte in the header (size, data key id, nonce prefix, salt, commitment) fails', async () => {
    const cipher = await encrypt(randomBytes(1000));
    for (const offset of [7, 11, 20, 30, 40, 60, 70, 85]) {
      const bad = Buffer.from(cipher);
      bad[offset]! ^= 0x80;
      expect((await decrypt(bad)).error, `offset ${offset}`).toMatchObject({ code: 'decryption_failed' });
    }
  });

  test('format 2 names its data key in the header; the header alone reveals no key', async () => {
    const cipher = await encrypt(randomBytes(10));
    expect(cipher[6]).toBe(2);
    expect(headerKeyRef(cipher)).toEqual({ version: 2, dataKeyId: ring.activeId });
    const dataKey = await ring.dataKey(ring.activeId);
    expect(cipher.includes(Buffer.from(dataKey))).toBe(false);
    expect(cipher.includes(key)).toBe(false);
  });

  test('a data key that is not the one named fails before any segment is read', async () => {
    const cipher = await encrypt(randomBytes(5000));
    const wrong: AtRestKeys = { masterKeys: [key], dataKey: async () => randomBytes(32) };
    const { output, error } = await decrypt(cipher, decryptStream(wrong));
    expect(output.length).toBe(0);
    expect(error).toMatchObject({
      code: 'decryption_failed',
      message: expect.stringContaining('data key is wrong'),
    });
  });

  test('a file whose data key is gone fails with the keyring error', async () => {
    const other = memoryKeyring(key);
    const cipher = await readAll(chunked(randomBytes(100)).pipe(encryptStream(await other.activeDataKey())));
    other.forget(other.activeId);
    expect((await decrypt(cipher, decryptStream(other))).error).toMatchObject({
      code: 'decryption_failed',
      message: expect.stringContaining('is not here'),
    });
  });

  test('format 1 (a file key wrapped by the master key) is still read', async () => {
    const data = randomBytes(3 * SEGMENT_BYTES + 7);
    const cipher = await encryptV1(data);
    expect(cipher[6]).toBe(1);
    expect(headerKeyRef(cipher)).toEqual({ version: 1, masterKeyId: masterKeyId(key).toString('hex') });
    expect(cipher.length).toBe(encryptedSize(data.length));
    const { output, error } = await decrypt(cipher);
    expect(error).toBeUndefined();
    expect(output.equals(data)).toBe(true);
    for (const offset of [7, 11, 19, 30, 40, 80]) {
      const bad = Buffer.from(cipher);
      bad[offset]! ^= 0x80;
      expect((await decrypt(bad)).error, `offset ${offset}`).toMatchObject({ code: 'decryption_failed' });
    }
  });

  test('truncation fails: a whole final segment dropped, a cut mid-segment, the header alone', async () => {
    const cipher = await encrypt(randomBytes(3 * SEGMENT_BYTES + 100));
    const cuts = [
      HEADER_BYTES + 3 * STRIDE,
      HEADER_BYTES + 2 * STRIDE,
      cipher.length - 1,
      HEADER_BYTES + 10,
      HEADER_BYTES,
      50,
    ];
    for (const cut of cuts) {
      const { error } = await decrypt(cipher.subarray(0, cut));
      expect(error, `cut at ${cut}`).toMatchObject({ code: 'decryption_failed' });
    }
  });

  test('swapped, duplicated or dropped segments fail', async () => {
    const cipher = await encrypt(randomBytes(4 * SEGMENT_BYTES));
    const header = cipher.subarray(0, HEADER_BYTES);
    const seg = (i: number) => cipher.subarray(HEADER_BYTES + i * STRIDE, HEADER_BYTES + (i + 1) * STRIDE);
    const variants = {
      swapped: [seg(1), seg(0), seg(2), seg(3)],
      duplicated: [seg(0), seg(0), seg(1), seg(2), seg(3)],
      dropped: [seg(0), seg(2), seg(3)],
      'final moved': [seg(0), seg(1), seg(3), seg(2)],
    };
    for (const [name, segments] of Object.entries(variants)) {
      const { error } = await decrypt(Buffer.concat([header, ...segments]));
      expect(error, name).toMatchObject({ code: 'decryption_failed' });
    }
  });

  test('format 1: a wrong master key fails and says the key is not configured', async () => {
    const cipher = await encryptV1(randomBytes(5000));
    const { output, error } = await decrypt(cipher, decryptStream(masterOnly(randomBytes(32))));
    expect(output.length).toBe(0);
    expect(error).toMatchObject({
      code: 'decryption_failed',
      message: expect.stringContaining('not configured'),
    });
  });

  test('format 1: a file decrypts with any configured master key', async () => {
    const oldKey = randomBytes(32);
    const data = randomBytes(70_000);
    const cipher = await encryptV1(data, oldKey);
    const { output, error } = await decrypt(cipher, decryptStream(masterOnly(randomBytes(32), oldKey)));
    expect(error).toBeUndefined();
    expect(output.equals(data)).toBe(true);
  });

  test('no plaintext of a corrupted segment is emitted; verified segments before it are', async () => {
    const data = randomBytes(3 * SEGMENT_BYTES);
    const cipher = await encrypt(data);
    const bad = Buffer.from(cipher);
    bad[HEADER_BYTES + STRIDE + 10]! ^= 0xff; // inside segment 1
    const { output, error } = await decrypt(bad);
    expect(error).toMatchObject({ code: 'decryption_failed', message: expect.stringContaining('segment 1') });
    expect(output.length).toBe(SEGMENT_BYTES);
    expect(output.equals(data.subarray(0, SEGMENT_BYTES))).toBe(true);
  });

  test('plaintext passthrough is opt-in and only for input without the magic', async () => {
    const plain = Buffer.from('id,name\n1,Ada\n');
    expect((await decrypt(plain)).error).toMatchObject({ code: 'decryption_failed' });
    const passed = await decrypt(plain, decryptStream(ring, { passthroughPlaintext: true }));
    expect(passed.error).toBeUndefined();
    expect(passed.output.equals(plain)).toBe(true);
    const tiny = await decrypt(Buffer.from('ab'), decryptStream(ring, { passthroughPlaintext: true }));
    expect(tiny.output.toString()).toBe('ab');
    // An encrypted file is still authenticated in passthrough mode.
    const cipher = await encrypt(randomBytes(1000));
    cipher[cipher.length - 3]! ^= 1;
    expect((await decrypt(cipher, decryptStream(ring, { passthroughPlaintext: true }))).error).toMatchObject({
      code: 'decryption_failed',
    });
  });

  test('keys must be 32 bytes', () => {
    expect(() => encryptStreamV1(randomBytes(16))).toThrow(/32 bytes/);
    expect(() => encryptStream({ id: ring.activeId, key: randomBytes(16) })).toThrow(/32 bytes/);
    expect(() => decryptStream(masterOnly(randomBytes(16)))).toThrow(/32 bytes/);
  });

  test('a 64 MiB stream pipes through encrypt and decrypt', async () => {
    const piece = randomBytes(1024 * 1024);
    let total = 0;
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < 64; i++) yield piece;
      })(),
    );
    const dek = await ring.activeDataKey();
    await pipeline(source, encryptStream(dek), decryptStream(ring), async (stream: AsyncIterable<Buffer>) => {
      for await (const chunk of stream) total += chunk.length;
    });
    expect(total).toBe(64 * 1024 * 1024);
  });
});
