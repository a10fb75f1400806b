import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { encryptStreamV1, HEADER_BYTES, headerKeyRef, SEGMENT_BYTES } from '../src/crypto/at-rest.ts';
import { resolveMasterKeys } from '../src/crypto/master-key.ts';
import { createObjectStore } from '../src/store/create-object-store.ts';
import { EncryptedObjectStore } from '../src/store/encrypted-object-store.ts';
import { LocalObjectStore } from '../src/store/local-object-store.ts';
import type { ByteRange } from '../src/store/object-store.ts';
import { S3ObjectStore } from '../src/store/s3-object-store.ts';
import { chunked, readAll, sha256 } from './support/fixtures/streams.ts';
import { memoryKeyring } from './support/keyring.ts';

const STRIDE = SEGMENT_BYTES + 16;

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
let ring: ReturnType<typeof memoryKeyring>;
const key = randomBytes(32);
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'ferry-enc-store-'));
  local = new LocalObjectStore({ root });
  ring = memoryKeyring(key);
  store = new EncryptedObjectStore(local, ring);
});

/** A file as Ferry wrote it before the keyring (format 1, its key wrapped by `masterKey`). */
async function putV1(name: string, data: Buffer, masterKey: Uint8Array = key): Promise<void> {
  await (await local.put(name, chunked(data).pipe(encryptStreamV1(masterKey)))).commit();
}
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
    const readOnly = new EncryptedObjectStore(local, ring, { encryptWrites: false });
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
    const ranged = new EncryptedObjectStore(spied, ring);
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
    const other = new EncryptedObjectStore(local, memoryKeyring(key));
    expect(await failure(readAll(await other.get('k.bin')))).toMatchObject({
      code: 'decryption_failed',
      message: expect.stringContaining('data key'),
    });
    await expect(other.head('k.bin')).rejects.toMatchObject({ code: 'decryption_failed' });
    // A new active data key leaves the earlier ones readable.
    ring.rotate();
    expect((await readAll(await store.get('k.bin'))).length).toBe(100);
  });

  test('format-1 files read with any configured master key, and not without one', async () => {
    const data = randomBytes(2 * SEGMENT_BYTES + 3);
    await putV1('v1.bin', data);
    expect((await readAll(await store.get('v1.bin'))).equals(data)).toBe(true);
    expect(
      (await readAll(await store.get('v1.bin', { start: SEGMENT_BYTES, end: SEGMENT_BYTES + 9 }))).equals(
        data.subarray(SEGMENT_BYTES, SEGMENT_BYTES + 10),
      ),
    ).toBe(true);
    const rotated = new EncryptedObjectStore(local, memoryKeyring(randomBytes(32), key));
    expect((await readAll(await rotated.get('v1.bin'))).equals(data)).toBe(true);
    const stranger = new EncryptedObjectStore(local, memoryKeyring(randomBytes(32)));
    expect(await failure(readAll(await stranger.get('v1.bin')))).toMatchObject({
      code: 'decryption_failed',
      message: expect.stringContaining('not configured'),
    });
  });

  test('reencrypt: a stale file becomes format 2 under the active key, same bytes, same size', async () => {
    const data = randomBytes(3 * SEGMENT_BYTES + 11);
    await putV1('r/v1.bin', data);
    await (await store.put('r/v2.bin', chunked(data))).commit();
    await (await local.put('r/plain.bin', chunked(data))).commit();
    const old = ring.activeId;
    ring.rotate();
    const stale = (ref: { version: 1 | 2; dataKeyId?: string }) =>
      ref.version === 1 || ref.dataKeyId !== ring.activeId;
    expect(await store.reencrypt('r/v1.bin', stale)).toBe('reencrypted');
    expect(await store.reencrypt('r/v2.bin', stale)).toBe('reencrypted');
    expect(await store.reencrypt('r/plain.bin', stale)).toBe('plaintext');
    expect(await store.reencrypt('r/gone.bin', stale)).toBe('missing');
    expect(await store.reencrypt('r/v2.bin', stale)).toBe('current');
    for (const name of ['r/v1.bin', 'r/v2.bin']) {
      expect(headerKeyRef(await readFile(path.join(root, name)))).toEqual({
        version: 2,
        dataKeyId: ring.activeId,
      });
      expect((await readAll(await store.get(name))).equals(data)).toBe(true);
      expect(await store.head(name)).toEqual({ bytes: data.length });
    }
    // The file no longer needs the old data key, nor the master key.
    ring.forget(old);
    const noMaster = new EncryptedObjectStore(local, { ...ring, masterKeys: [randomBytes(32)] });
    expect((await readAll(await noMaster.get('r/v1.bin'))).equals(data)).toBe(true);
    expect(await local.removeStaleTemp(new Date(Date.now() + 60_000))).toBe(0);
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

  test('otherwise storage.key is created (0600) once and reused; it keeps unwrapping after a secret is set', async () => {
    const first = await resolveMasterKeys(base());
    expect(first.source).toBe('key file');
    const info = await stat(path.join(root, 'storage.key'));
    expect(info.mode & 0o777).toBe(0o600);
    const again = await resolveMasterKeys(base());
    expect(Buffer.from(again.current).equals(Buffer.from(first.current))).toBe(true);

    await putV1('early.bin', Buffer.from('early'), first.current);
    const later = await resolveMasterKeys(base({ FERRY_SECRET_KEY: 'z'.repeat(32) }));
    expect(later.source).toBe('FERRY_SECRET_KEY');
    const reader = new EncryptedObjectStore(local, { ...memoryKeyring(), masterKeys: later.all });
    expect((await readAll(await reader.get('early.bin'))).toString()).toBe('early');
  });

  test('with create: false, nothing is created', async () => {
    expect(await resolveMasterKeys(base(), { create: false })).toBeUndefined();
    await expect(stat(path.join(root, 'storage.key'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('a damaged key file is refused', async () => {
    await writeFile(path.join(root, 'storage.key'), 'not a key\n');
    await expect(resolveMasterKeys(base())).rejects.toThrow(/one base64 key of 32 bytes/);
  });

  test('FERRY_ENCRYPTION_KEY_FILE: keys one a line, the first current; comments and blank lines skipped', async () => {
    const [a, b] = [randomBytes(32), randomBytes(32)];
    const file = path.join(root, 'master.keys');
    await writeFile(file, `# new key first\n${a.toString('base64')}\n\n${b.toString('base64')}\n`);
    const keys = await resolveMasterKeys(base({ FERRY_ENCRYPTION_KEY_FILE: file }));
    expect(keys.source).toBe('FERRY_ENCRYPTION_KEY_FILE');
    expect(Buffer.from(keys.current).equals(a)).toBe(true);
    expect(keys.all.map((k) => Buffer.from(k).toString('hex'))).toEqual([
      a.toString('hex'),
      b.toString('hex'),
    ]);
    await expect(stat(path.join(root, 'storage.key'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('FERRY_ENCRYPTION_KEY_FILE: a missing or malformed file fails without showing its content', async () => {
    const missing = path.join(root, 'nope.keys');
    await expect(resolveMasterKeys(base({ FERRY_ENCRYPTION_KEY_FILE: missing }))).rejects.toMatchObject({
      code: 'master_key_unavailable',
      message: expect.stringContaining('ENOENT'),
    });
    const bad = path.join(root, 'bad.keys');
    const short = randomBytes(16).toString('base64');
    await writeFile(bad, `${randomBytes(32).toString('base64')}\n${short}\n`);
    const err = (await failure(resolveMasterKeys(base({ FERRY_ENCRYPTION_KEY_FILE: bad })))) as Error;
    expect(err).toMatchObject({ code: 'master_key_unavailable', message: expect.stringContaining('line 2') });
    expect(err.message).not.toContain(short);
  });

  test('FERRY_ENCRYPTION_KEY_COMMAND: a shell command prints the keys', async () => {
    const [a, b] = [randomBytes(32), randomBytes(32)];
    const file = path.join(root, 'vault.out');
    await writeFile(file, `${a.toString('base64')}\n${b.toString('base64')}\n`);
    const keys = await resolveMasterKeys(base({ FERRY_ENCRYPTION_KEY_COMMAND: `cat '${file}' | head -n 2` }));
    expect(keys.source).toBe('FERRY_ENCRYPTION_KEY_COMMAND');
    expect(Buffer.from(keys.current).equals(a)).toBe(true);
    expect(keys.all).toHaveLength(2);
    const printed = await resolveMasterKeys(
      base({ FERRY_ENCRYPTION_KEY_COMMAND: `printf '%s\\n' '${b.toString('base64')}'` }),
    );
    expect(Buffer.from(printed.current).equals(b)).toBe(true);
  });

  test('FERRY_ENCRYPTION_KEY_COMMAND: a failing command is one clear error that repeats none of its output', async () => {
    const leaked = randomBytes(32).toString('base64');
    const err = (await failure(
      resolveMasterKeys(base({ FERRY_ENCRYPTION_KEY_COMMAND: `echo ${leaked}; echo ${leaked} >&2; exit 3` })),
    )) as Error;
    expect(err).toMatchObject({
      code: 'master_key_unavailable',
      message: 'FERRY_ENCRYPTION_KEY_COMMAND: the command exited with status 3',
    });
    expect(JSON.stringify(err)).not.toContain(leaked);
    const garbage = (await failure(
      resolveMasterKeys(base({ FERRY_ENCRYPTION_KEY_COMMAND: `echo not-a-key-${leaked.slice(0, 8)}` })),
    )) as Error;
    expect(garbage).toMatchObject({
      code: 'master_key_unavailable',
      message: expect.stringContaining('line 1 is not a base64 key'),
    });
    expect(garbage.message).not.toContain(leaked.slice(0, 8));
    await expect(resolveMasterKeys(base({ FERRY_ENCRYPTION_KEY_COMMAND: 'true' }))).rejects.toMatchObject({
      code: 'master_key_unavailable',
      message: expect.stringContaining('no key found'),
    });
  });

  test('only one explicit source may be set', () => {
    const key = randomBytes(32).toString('base64');
    expect(() =>
      loadConfig({ FERRY_ENCRYPTION_KEY: key, FERRY_ENCRYPTION_KEY_COMMAND: 'cat /dev/null' }),
    ).toThrow(
      /FERRY_ENCRYPTION_KEY_COMMAND: set only one of FERRY_ENCRYPTION_KEY, FERRY_ENCRYPTION_KEY_COMMAND/,
    );
    expect(() =>
      loadConfig({ FERRY_ENCRYPTION_KEY_FILE: '/k', FERRY_ENCRYPTION_KEY_COMMAND: 'cat /k' }),
    ).toThrow(/set only one of/);
  });
});

describe('createObjectStore', () => {
  const config = (env: Record<string, string> = {}) => loadConfig({ FERRY_DATA_DIR: root, ...env });
  const keyringOf = async (c: ReturnType<typeof config>) => ({
    ...memoryKeyring(),
    master: await resolveMasterKeys(c),
  });

  test('default: local disk under <data>/files, encrypted at rest under the keyring', async () => {
    const c = config();
    const created = await createObjectStore(c, await keyringOf(c));
    expect(created).toBeInstanceOf(EncryptedObjectStore);
    expect(created.kind).toBe('local');
    await (await created.put('a/b.txt', chunked(Buffer.from('hello')))).commit();
    const raw = await readFile(path.join(root, 'files', 'a', 'b.txt'));
    expect(raw.subarray(0, 6).toString()).toBe('FERRY1');
    expect(raw[6]).toBe(2);
  });

  test('encryption off: writes plaintext, still reads encrypted files', async () => {
    const secret = { FERRY_SECRET_KEY: 'q'.repeat(32) };
    const keys = await keyringOf(config(secret));
    const on = await createObjectStore(config({ ...secret, FERRY_STORAGE_ENCRYPTION: 'on' }), keys);
    await (await on.put('e.txt', chunked(Buffer.from('sealed')))).commit();
    const off = await createObjectStore(config({ ...secret, FERRY_STORAGE_ENCRYPTION: 'off' }), keys);
    await (await off.put('p.txt', chunked(Buffer.from('open')))).commit();
    expect((await readFile(path.join(root, 'files', 'p.txt'))).toString()).toBe('open');
    expect((await readAll(await off.get('e.txt'))).toString()).toBe('sealed');
  });

  test('S3: unencrypted by default (bucket-side encryption and presigned links); on needs a shared key', async () => {
    const s3 = { FERRY_STORAGE: 's3', FERRY_S3_BUCKET: 'exports', FERRY_S3_ENDPOINT: 'http://127.0.0.1:9' };
    const plain = await createObjectStore(config(s3), await keyringOf(config(s3)));
    expect(plain.inner).toBeInstanceOf(S3ObjectStore);
    const on = config({ ...s3, FERRY_STORAGE_ENCRYPTION: 'on' });
    await expect(createObjectStore(on, await keyringOf(on))).rejects.toMatchObject({
      code: 'invalid_parameter',
    });
    const shared = config({
      ...s3,
      FERRY_STORAGE_ENCRYPTION: 'on',
      FERRY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    });
    const withKey = await createObjectStore(shared, await keyringOf(shared));
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
      encryptionKeyFile: undefined,
      encryptionKeyCommand: undefined,
      dataKeyRotationDays: 90,
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
    expect(() => loadConfig({ FERRY_DATA_KEY_ROTATION_DAYS: '-1' })).toThrow(/FERRY_DATA_KEY_ROTATION_DAYS/);
    expect(loadConfig({ FERRY_DATA_KEY_ROTATION_DAYS: '0' }).storage.dataKeyRotationDays).toBe(0);
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
