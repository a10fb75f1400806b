import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { encryptedSize } from '../src/crypto/at-rest.ts';
import { EncryptedObjectStore } from '../src/store/encrypted-object-store.ts';
import { LocalObjectStore } from '../src/store/local-object-store.ts';
import type { ObjectStore } from '../src/store/object-store.ts';
import { s3ObjectStore } from '../src/store/s3-client.ts';
import { chunked, collect, failingSource, readAll, sha256 } from './support/fixtures/streams.ts';
import { memoryKeyring } from './support/keyring.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';

const MiB = 1024 * 1024;
const VARIANTS = ['local', 's3', 'local, encrypted at rest', 's3, encrypted at rest'] as const;
type Variant = (typeof VARIANTS)[number];

let s3: TestS3Server;
beforeAll(async () => {
  s3 = await startS3Server();
});
afterAll(async () => {
  await s3?.stop();
});

function s3Store(now?: () => Date) {
  return s3ObjectStore(
    {
      bucket: s3.bucket,
      region: s3.region,
      endpoint: s3.endpoint,
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
      forcePathStyle: true,
    },
    now ? { now } : {},
  );
}

interface Harness {
  store: ObjectStore;
  /** A fresh key prefix: tests share one bucket. */
  ns: string;
  /** Writes in progress that were neither committed nor discarded (temp files, incomplete uploads). */
  leftovers(): Promise<number>;
  cleanup(): Promise<void>;
}

let counter = 0;
async function harness(variant: Variant): Promise<Harness> {
  const ns = `t${++counter}-${randomBytes(3).toString('hex')}/`;
  const encrypted = variant.endsWith('encrypted at rest');
  const wrap = (store: ObjectStore) => {
    if (!encrypted) return store;
    return new EncryptedObjectStore(store, memoryKeyring());
  };
  if (variant.startsWith('local')) {
    const root = await mkdtemp(path.join(tmpdir(), 'ferry-store-'));
    return {
      store: wrap(new LocalObjectStore({ root })),
      ns,
      leftovers: async () => (await readdir(path.join(root, '.tmp')).catch(() => [])).length,
      cleanup: () => rm(root, { recursive: true, force: true }),
    };
  }
  return { store: wrap(s3Store()), ns, leftovers: () => s3.incompleteUploads(), cleanup: async () => {} };
}

for (const variant of VARIANTS) {
  describe(`object store: ${variant}`, () => {
    let h: Harness;
    let store: ObjectStore;
    beforeEach(async () => {
      h = await harness(variant);
      store = h.store;
    });
    afterEach(async () => {
      await h.cleanup();
    });

    test('put streams a 12 MiB object without publishing it; commit publishes the same bytes', async () => {
      const data = randomBytes(12 * MiB + 5);
      const key = `${h.ns}export/part-1.zip`;
      const pending = await store.put(key, chunked(data), { contentType: 'application/zip' });
      expect(pending).toMatchObject({ key, bytes: data.length, sha256: sha256(data) });

      expect(await store.head(key)).toBeNull();
      expect(await collect(store.list(h.ns))).toEqual([]);
      await expect(store.get(key)).rejects.toMatchObject({ code: 'not_found' });

      expect(await pending.commit()).toEqual({ key, bytes: data.length, sha256: sha256(data) });
      const back = await readAll(await store.get(key));
      expect(back.length).toBe(data.length);
      expect(back.equals(data)).toBe(true);
      const head = await store.head(key);
      expect(head?.bytes).toBe(data.length);
      if (variant.startsWith('s3')) expect(head?.contentType).toBe('application/zip');
      expect(await h.leftovers()).toBe(0);
    });

    test('an empty object round-trips', async () => {
      const key = `${h.ns}empty.csv`;
      const pending = await store.put(key, chunked(Buffer.alloc(0)));
      expect(pending.sha256).toBe(sha256(Buffer.alloc(0)));
      await pending.commit();
      expect((await readAll(await store.get(key))).length).toBe(0);
      expect(await store.head(key)).toMatchObject({ bytes: 0 });
    });

    test('a source that fails mid-stream leaves nothing under the key and no temporary object', async () => {
      const data = randomBytes(10 * MiB);
      const key = `${h.ns}broken.zip`;
      await expect(store.put(key, failingSource(data, 9 * MiB))).rejects.toThrow('source failed');
      expect(await store.head(key)).toBeNull();
      expect(await collect(store.list(h.ns))).toEqual([]);
      expect(await collect(store.list(''))).not.toContainEqual(expect.objectContaining({ key }));
      expect(await h.leftovers()).toBe(0);
    });

    test('discard removes the written bytes; commit after discard is refused', async () => {
      const key = `${h.ns}discarded.bin`;
      const pending = await store.put(key, chunked(randomBytes(3 * MiB)));
      expect(await h.leftovers()).toBe(1);
      await pending.discard();
      expect(await h.leftovers()).toBe(0);
      expect(await store.head(key)).toBeNull();
      expect(await collect(store.list(h.ns))).toEqual([]);
      await expect(pending.commit()).rejects.toMatchObject({ code: 'conflict' });
    });

    test('committing over an existing key replaces it whole', async () => {
      const key = `${h.ns}replace.txt`;
      await (await store.put(key, chunked(Buffer.from('first version')))).commit();
      const pending = await store.put(key, chunked(Buffer.from('second')));
      expect((await readAll(await store.get(key))).toString()).toBe('first version');
      await pending.commit();
      expect((await readAll(await store.get(key))).toString()).toBe('second');
    });

    test('range reads: inclusive start/end, open end, clamped end, unsatisfiable start', async () => {
      const data = randomBytes(200 * 1024 + 17);
      const key = `${h.ns}range.bin`;
      await (await store.put(key, chunked(data, 10_000))).commit();
      const read = async (start: number, end?: number) =>
        readAll(await store.get(key, end === undefined ? { start } : { start, end }));

      expect((await read(0, 0)).equals(data.subarray(0, 1))).toBe(true);
      expect((await read(65_530, 65_545)).equals(data.subarray(65_530, 65_546))).toBe(true);
      expect((await read(131_072, 196_607)).equals(data.subarray(131_072, 196_608))).toBe(true);
      expect((await read(100_000)).equals(data.subarray(100_000))).toBe(true);
      expect((await read(1000, 10 * MiB)).equals(data.subarray(1000))).toBe(true);
      expect((await read(data.length - 1)).equals(data.subarray(data.length - 1))).toBe(true);
      await expect(store.get(key, { start: data.length })).rejects.toMatchObject({
        code: 'range_not_satisfiable',
      });
      await expect(store.get(key, { start: 10, end: 5 })).rejects.toMatchObject({
        code: 'invalid_parameter',
      });
      await expect(store.get(key, { start: -1 })).rejects.toMatchObject({ code: 'invalid_parameter' });
    });

    test('head and delete', async () => {
      const key = `${h.ns}a/b/c.json`;
      expect(await store.head(key)).toBeNull();
      await expect(store.get(key)).rejects.toMatchObject({ code: 'not_found' });
      await (await store.put(key, chunked(Buffer.from('{"ok":true}')))).commit();
      expect(await store.head(key)).toMatchObject({ bytes: 11 });
      await store.delete(key);
      expect(await store.head(key)).toBeNull();
      await expect(store.get(key)).rejects.toMatchObject({ code: 'not_found' });
      await store.delete(key); // deleting a missing object is not an error
    });

    test('list returns committed objects under a prefix, in key order', async () => {
      const names = ['b/4', 'a/2', 'ab/3', 'a/1', 'a-b'];
      for (const [i, name] of names.entries())
        await (await store.put(`${h.ns}${name}`, chunked(Buffer.alloc(i + 1, 1)))).commit();
      const pending = await store.put(`${h.ns}a/pending`, chunked(Buffer.from('not yet')));

      // s3rver lists in its own order (real S3 and local disk sort by key bytes).
      const sorted = variant.startsWith('s3');
      const keys = async (prefix: string) => {
        const listed = (await collect(store.list(prefix))).map((o) => o.key);
        return sorted ? listed.sort() : listed;
      };
      expect(await keys(`${h.ns}a/`)).toEqual([`${h.ns}a/1`, `${h.ns}a/2`]);
      expect(await keys(`${h.ns}a`)).toEqual([`${h.ns}a-b`, `${h.ns}a/1`, `${h.ns}a/2`, `${h.ns}ab/3`]);
      expect(await keys(h.ns)).toEqual(['a-b', 'a/1', 'a/2', 'ab/3', 'b/4'].map((n) => h.ns + n));
      expect(await keys(`${h.ns}zzz`)).toEqual([]);

      const listed = await collect(store.list(`${h.ns}b/`));
      const plainBytes = 1;
      const stored = variant.endsWith('encrypted at rest') ? encryptedSize(plainBytes) : plainBytes;
      expect(listed).toEqual([{ key: `${h.ns}b/4`, bytes: stored, lastModified: expect.any(Date) }]);
      await pending.discard();
    });

    test('keys are validated: no traversal, absolute paths, empty or dot segments', async () => {
      const bad = [
        '',
        '/abs/file',
        '../escape',
        'a/../../b',
        'a//b',
        '.tmp/x',
        'a/./b',
        'a\\b',
        'a/.hidden',
        'sp ace',
      ];
      for (const key of bad) {
        await expect(store.put(key, chunked(Buffer.from('x')))).rejects.toMatchObject({
          code: 'invalid_parameter',
        });
        await expect(store.get(key)).rejects.toMatchObject({ code: 'invalid_parameter' });
        await expect(store.head(key)).rejects.toMatchObject({ code: 'invalid_parameter' });
        await expect(store.delete(key)).rejects.toMatchObject({ code: 'invalid_parameter' });
      }
      await expect(collect(store.list('../'))).rejects.toMatchObject({ code: 'invalid_parameter' });
      await expect(store.head('tenant-1/exports/2026-11-22T10=00/file.v2+final@x_y.csv')).resolves.toBeNull();
    });

    test('presigned links', async () => {
      const key = `${h.ns}download.zip`;
      const data = randomBytes(100_000);
      await (await store.put(key, chunked(data))).commit();
      await expect(store.presignGet(key, 0)).rejects.toMatchObject({ code: 'invalid_parameter' });
      await expect(store.presignGet(key, 604_801)).rejects.toMatchObject({ code: 'invalid_parameter' });
      const url = await store.presignGet(key, 60, 'Export – März.zip');
      if (variant !== 's3') {
        // Local disk and encrypted objects are served by the API's own signed route.
        expect(url).toBeNull();
        return;
      }
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
      const res = await fetch(url!);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-disposition')).toBe(
        `attachment; filename="Export _ M_rz.zip"; filename*=UTF-8''Export%20%E2%80%93%20M%C3%A4rz.zip`,
      );
      expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true);

      // Signed 10 s ago for 1 s: expired. (s3rver checks expiry, not signatures.)
      const past = s3Store(() => new Date(Date.now() - 10_000));
      const expired = await past.presignGet(key, 1);
      expect((await fetch(expired)).status).toBe(403);
    });
  });
}
