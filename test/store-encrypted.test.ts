import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { HEADER_BYTES, SEGMENT_BYTES } from '../src/crypto/at-rest.ts';
import { type MasterKeys, resolveMasterKeys } from '../src/crypto/master-key.ts';
import { createObjectStore } from '../src/store/create-object-store.ts';
import { EncryptedObjectStore } from '../src/store/encrypted-object-store.ts';
import { LocalObjectStore } from '../src/store/local-object-store.ts';
import type { ByteRange } from '../src/store/object-store.ts';
import { S3ObjectStore } from '../src/store/s3-object-store.ts';
import { chunked, readAll, sha256 } from './support/fixtures/streams.ts';

const STRIDE = SEGMENT_BYTES + 16;

function ring(...keys: Uint8Array[]): MasterKeys {
  return { current: keys[0]!, all: keys, source: 'FERRY_ENCRYPTION_KEY' };
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  return undefined;
}

let root: string;
let local: LocalObjectStore;
let store: EncryptedObjectStore;
const key = randomBytes(32);
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'ferry-enc-store-'));
  local = new LocalObjectStore({ root });
  store = new EncryptedObjectStore(local, ring(key));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('encrypted object store', () => {
  test('stores ciphertext; reports and returns plaintext', async () => {
    const data = Buffer.from('email,name\nada@example.com,Ada Lovelace\n'.repeat(5000));
    const stored = await (await store.put('t/contacts.csv', chunked(data))).commit();
    expect(stored).toEqual({ key: 't/contacts.csv', bytes: data.length, sha256: sha256(data) });

    const raw = await readFile(path.join(root, 't', 'contacts.csv'));
    expect(raw.subarray(0, 6).toString()).toBe('FERRY1');
    expect(raw.includes(Buffer.from('ada@example.com'))).toBe(false);

    expect((await readAll(await store.get('t/contacts.csv'))).equals(data)).toBe(true);
    expect(await store.head('t/contacts.csv')).toEqual({ bytes: data.length });
  });

  test('objects stored before encryption was switched on read back unchanged', async () => {
    const data = randomBytes(100_000);
    await (await local.put('old/plain.bin', chunked(data))).commit();
    expect((await readAll(await store.get('old/plain.bin'))).equals(data)).toBe(true);
    expect(
      (await readAll(await store.get('old/plain.bin', { start: 10, end: 19 }))).equals(data.subarray(10, 20)),
    ).toBe(true);
    expect(await store.head('old/plain.bin')).toEqual({ bytes: data.length });
  });

  test('with encryptWrites off, new objects are plaintext and encrypted ones still decrypt', async () => {
    const data = randomBytes(5000);
    await (await store.put('a/enc.bin', chunked(data))).commit();
    const readOnly = new EncryptedObjectStore(local, ring(key), { encryptWrites: false });
    await (await readOnly.put('a/plain.bin', chunked(data))).commit();
    expect((await readFile(path.join(root, 'a', 'plain.bin'))).equals(data)).toBe(true);
    expect((await readAll(await readOnly.get('a/enc.bin'))).equals(data)).toBe(true);
  });

  test('a range decrypts only the segments that cover it', async () => {
    const data = randomBytes(10 * SEGMENT_BYTES + 500);
    await (await store.put('big.bin', chunked(data))).commit();
    const requested: (ByteRange | undefined)[] = [];
    class SpiedStore extends LocalObjectStore {
      override get(k: string, range?: ByteRange) {
        requested.push(range);
        return super.get(k, range);
      }
    }
    const spied = new SpiedStore({ root });
    const ranged = new EncryptedObjectStore(spied, ring(key));
    const start = 5 * SEGMENT_BYTES + 10;
    const out = await readAll(await ranged.get('big.bin', { start, end: start + 100 }));
    expect(out.equals(data.subarray(start, start + 101))).toBe(true);
    expect(requested).toEqual([
      { start: 0, end: HEADER_BYTES - 1 },
      { start: HEADER_BYTES + 5 * STRIDE, end: HEADER_BYTES + 6 * STRIDE - 1 },
    ]);

    // Across a segment boundary to the end of the file (the short final segment).
    const tail = await readAll(await ranged.get('big.bin', { start: 9 * SEGMENT_BYTES - 3 }));
    expect(tail.equals(data.subarray(9 * SEGMENT_BYTES - 3))).toBe(true);
    await expect(ranged.get('big.bin', { start: data.length })).rejects.toMatchObject({
      code: 'range_not_satisfiable',
    });
  });

  test('tampering on disk fails the read of the altered segment, loudly', async () => {
    const data = randomBytes(4 * SEGMENT_BYTES);
    await (await store.put('x.bin', chunked(data))).commit();
    const file = path.join(root, 'x.bin');
    const raw = await readFile(file);
    raw[HEADER_BYTES + 2 * STRIDE + 7]! ^= 1; // segment 2
    await writeFile(file, raw);

    expect(await failure(readAll(await store.get('x.bin')))).toMatchObject({ code: 'decryption_failed' });
    expect(
      await failure(
        readAll(await store.get('x.bin', { start: 2 * SEGMENT_BYTES + 1, end: 2 * SEGMENT_BYTES + 2 })),
      ),
    ).toMatchObject({
      code: 'decryption_failed',
    });
    // Other segments still verify on their own.
    expect(
      (await readAll(await store.get('x.bin', { start: 0, end: 99 }))).equals(data.subarray(0, 100)),
    ).toBe(true);
  });

  test('a truncated file fails, even for a range before the cut', async () => {
    const data = randomBytes(3 * SEGMENT_BYTES + 10);
    await (await store.put('t.bin', chunked(data))).commit();
    const file = path.join(root, 't.bin');
    await writeFile(file, (await readFile(file)).subarray(0, HEADER_BYTES + 2 * STRIDE));
    expect(await failure(readAll(await store.get('t.bin')))).toMatchObject({ code: 'decryption_failed' });
    // The last remaining segment now claims to be final, which authentication refutes.
    expect(await failure(readAll(await store.get('t.bin', { start: SEGMENT_BYTES + 5 })))).toMatchObject({
      code: 'decryption_failed',
    });
  });

  test('a store without the writing key cannot read, and says so', async () => {
    await (await store.put('k.bin', chunked(randomBytes(100)))).commit();
    const other = new EncryptedObjectStore(local, ring(randomBytes(32)));
    expect(await failure(readAll(await other.get('k.bin')))).toMatchObject({
      code: 'decryption_failed',
      message: expect.stringContaining('not configured'),
    });
    await expect(other.head('k.bin')).rejects.toMatchObject({ code: 'decryption_failed' });
    // After rotation the retired key stays in the ring and old files read.
    const rotated = new EncryptedObjectStore(local, ring(randomBytes(32), key));
    expect((await readAll(await rotated.get('k.bin'))).length).toBe(100);
  });

  test('a failing source stores nothing', async () => {
    const source = chunked(randomBytes(300_000));
    source.on('data', () => source.destroy(new Error('database went away')));
    await expect(store.put('f.bin', source)).rejects.toThrow();
    expect(await store.head('f.bin')).toBeNull();
    expect(await local.removeStaleTemp(new Date(Date.now() + 60_000))).toBe(0);
  });
});

describe('master keys', () => {
  const base = (env: Record<string, string> = {}) => loadConfig({ FERRY_DATA_DIR: root, ...env });

  test('FERRY_ENCRYPTION_KEY wins; its first key encrypts, all decrypt', async () => {
    const [a, b] = [randomBytes(32), randomBytes(32)];
    const keys = await resolveMasterKeys(
      base({
        FERRY_ENCRYPTION_KEY: `${a.toString('base64')},${b.toString('base64')}`,
        FERRY_SECRET_KEY: 'x'.repeat(32),
      }),
    );
    expect(keys.source).toBe('FERRY_ENCRYPTION_KEY');
    expect(Buffer.from(keys.current).equals(a)).toBe(true);
    expect(keys.all.map((k) => Buffer.from(k).toString('hex'))).toContain(b.toString('hex'));
    expect(keys.all).toHaveLength(3); // a, b and the key derived from FERRY_SECRET_KEY
  });

  test('without one, a key is derived from FERRY_SECRET_KEY (stable, no file written)', async () => {
    const one = await resolveMasterKeys(base({ FERRY_SECRET_KEY: 's'.repeat(40) }));
    const two = await resolveMasterKeys(base({ FERRY_SECRET_KEY: 's'.repeat(40) }));
    const other = await resolveMasterKeys(base({ FERRY_SECRET_KEY: 't'.repeat(40) }));
    expect(one.source).toBe('FERRY_SECRET_KEY');
    expect(Buffer.from(one.current).equals(Buffer.from(two.current))).toBe(true);
    expect(Buffer.from(one.current).equals(Buffer.from(other.current))).toBe(false);
    await expect(stat(path.join(root, 'storage.key'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('otherwise storage.key is created (0600) once and reused; it keeps decrypting after a secret is set', async () => {
    const first = await resolveMasterKeys(base());
    expect(first.source).toBe('key file');
    const info = await stat(path.join(root, 'storage.key'));
    expect(info.mode & 0o777).toBe(0o600);
    const again = await resolveMasterKeys(base());
    expect(Buffer.from(again.current).equals(Buffer.from(first.current))).toBe(true);

    await (
      await new EncryptedObjectStore(local, first).put('early.bin', chunked(Buffer.from('early')))
    ).commit();
    const later = await resolveMasterKeys(base({ FERRY_SECRET_KEY: 'z'.repeat(32) }));
    expect(later.source).toBe('FERRY_SECRET_KEY');
    expect((await readAll(await new EncryptedObjectStore(local, later).get('early.bin'))).toString()).toBe(
      'early',
    );
  });

  test('S3 never gets a per-machine key file', async () => {
    const config = base({ FERRY_STORAGE: 's3', FERRY_S3_BUCKET: 'b', FERRY_STORAGE_ENCRYPTION: 'on' });
    await expect(resolveMasterKeys(config)).rejects.toMatchObject({
      code: 'invalid_parameter',
      message: expect.stringContaining('FERRY_ENCRYPTION_KEY'),
    });
    expect(await resolveMasterKeys(base(), { create: false })).toBeUndefined();
    await expect(stat(path.join(root, 'storage.key'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('a damaged key file is refused', async () => {
    await writeFile(path.join(root, 'storage.key'), 'not a key\n');
    await expect(resolveMasterKeys(base())).rejects.toThrow(/one base64 key of 32 bytes/);
  });
});

describe('createObjectStore', () => {
  const config = (env: Record<string, string> = {}) => loadConfig({ FERRY_DATA_DIR: root, ...env });

  test('default: local disk under <data>/files, encrypted at rest with a created key file', async () => {
    const created = await createObjectStore(config());
    expect(created).toBeInstanceOf(EncryptedObjectStore);
    expect(created.kind).toBe('local');
    await (await created.put('a/b.txt', chunked(Buffer.from('hello')))).commit();
    expect((await readFile(path.join(root, 'files', 'a', 'b.txt'))).subarray(0, 6).toString()).toBe('FERRY1');
    expect((await stat(path.join(root, 'storage.key'))).isFile()).toBe(true);
  });

  test('encryption off: plain local store, no key file', async () => {
    const created = await createObjectStore(config({ FERRY_STORAGE_ENCRYPTION: 'off' }));
    expect(created).toBeInstanceOf(LocalObjectStore);
    await expect(stat(path.join(root, 'storage.key'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('encryption off with a secret: writes plaintext, still reads encrypted files', async () => {
    const secret = { FERRY_SECRET_KEY: 'q'.repeat(32) };
    const on = await createObjectStore(config({ ...secret, FERRY_STORAGE_ENCRYPTION: 'on' }));
    await (await on.put('e.txt', chunked(Buffer.from('sealed')))).commit();
    const off = await createObjectStore(config({ ...secret, FERRY_STORAGE_ENCRYPTION: 'off' }));
    await (await off.put('p.txt', chunked(Buffer.from('open')))).commit();
    expect((await readFile(path.join(root, 'files', 'p.txt'))).toString()).toBe('open');
    expect((await readAll(await off.get('e.txt'))).toString()).toBe('sealed');
  });

  test('S3: unencrypted by default (bucket-side encryption and presigned links); on needs a shared key', async () => {
    const s3 = { FERRY_STORAGE: 's3', FERRY_S3_BUCKET: 'exports', FERRY_S3_ENDPOINT: 'http://127.0.0.1:9' };
    expect(await createObjectStore(config(s3))).toBeInstanceOf(S3ObjectStore);
    await expect(createObjectStore(config({ ...s3, FERRY_STORAGE_ENCRYPTION: 'on' }))).rejects.toMatchObject({
      code: 'invalid_parameter',
    });
    const withKey = await createObjectStore(
      config({
        ...s3,
        FERRY_STORAGE_ENCRYPTION: 'on',
        FERRY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      }),
    );
    expect(withKey).toBeInstanceOf(EncryptedObjectStore);
    expect(withKey.kind).toBe('s3');
  });
});

describe('storage configuration', () => {
  test('defaults', () => {
    const { storage } = loadConfig({ FERRY_DATA_DIR: '/srv/ferry' });
    expect(storage).toEqual({
      kind: 'local',
      localDir: '/srv/ferry/files',
      s3: undefined,
      encryption: 'auto',
      encryptionKeys: [],
    });
  });

  test('S3 settings; path-style by default only with a custom endpoint', () => {
    const env = { FERRY_STORAGE: 's3', FERRY_S3_BUCKET: 'exports', FERRY_S3_REGION: 'eu-central-1' };
    expect(loadConfig(env).storage.s3).toEqual({
      bucket: 'exports',
      region: 'eu-central-1',
      endpoint: undefined,
      accessKeyId: undefined,
      secretAccessKey: undefined,
      forcePathStyle: false,
    });
    const minio = loadConfig({
      ...env,
      FERRY_S3_ENDPOINT: 'http://127.0.0.1:9000',
      FERRY_S3_ACCESS_KEY_ID: 'id',
      FERRY_S3_SECRET_ACCESS_KEY: 'secret',
    }).storage.s3;
    expect(minio).toMatchObject({ forcePathStyle: true, accessKeyId: 'id', secretAccessKey: 'secret' });
    expect(
      loadConfig({ ...env, FERRY_S3_ENDPOINT: 'https://r2.example', FERRY_S3_FORCE_PATH_STYLE: 'false' })
        .storage.s3?.forcePathStyle,
    ).toBe(false);
  });

  test('invalid settings name the variable', () => {
    expect(() => loadConfig({ FERRY_STORAGE: 's3' })).toThrow(
      /FERRY_S3_BUCKET: required when FERRY_STORAGE=s3/,
    );
    expect(() => loadConfig({ FERRY_STORAGE: 'gcs' })).toThrow(/FERRY_STORAGE/);
    expect(() => loadConfig({ FERRY_S3_ACCESS_KEY_ID: 'id' })).toThrow(/FERRY_S3_SECRET_ACCESS_KEY/);
    expect(() => loadConfig({ FERRY_S3_FORCE_PATH_STYLE: 'yes' })).toThrow(/FERRY_S3_FORCE_PATH_STYLE/);
  });

  test('FERRY_ENCRYPTION_KEY: base64 of 32 bytes, comma-separated for rotation, never echoed', () => {
    const [a, b] = [randomBytes(32), randomBytes(32)];
    const keys = loadConfig({ FERRY_ENCRYPTION_KEY: `${a.toString('base64')}, ${b.toString('base64')}` })
      .storage.encryptionKeys;
    expect(keys.map((k) => Buffer.from(k).toString('hex'))).toEqual([a.toString('hex'), b.toString('hex')]);
    const short = randomBytes(16).toString('base64');
    let message = '';
    try {
      loadConfig({ FERRY_ENCRYPTION_KEY: short });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/FERRY_ENCRYPTION_KEY: must be base64 of exactly 32 bytes/);
    expect(message).not.toContain(short);
  });
});
