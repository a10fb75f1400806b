import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { S3Config } from '../src/config/config.ts';
import { EncryptedObjectStore } from '../src/store/encrypted-object-store.ts';
import { createS3Client } from '../src/store/s3-client.ts';
import { type S3Api, S3ObjectStore } from '../src/store/s3-object-store.ts';
import { chunked, readAll } from './support/fixtures/streams.ts';
import { memoryKeyring } from './support/keyring.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';

const MiB = 1024 * 1024;

let server: TestS3Server;
let config: S3Config;
beforeAll(async () => {
  server = await startS3Server();
  config = {
    bucket: server.bucket,
    region: server.region,
    endpoint: server.endpoint,
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
    forcePathStyle: true,
  };
});
afterAll(async () => {
  await server?.stop();
});

/** The real SDK client, with some calls replaced to inject faults or observe requests. */
function storeWith(overrides: Partial<S3Api> = {}): S3ObjectStore {
  const client = createS3Client(config);
  const api: S3Api = {
    createMultipartUpload: (input) => client.createMultipartUpload(input),
    uploadPart: (input) => client.uploadPart(input),
    completeMultipartUpload: (input) => client.completeMultipartUpload(input),
    abortMultipartUpload: (input) => client.abortMultipartUpload(input),
    putObject: (input) => client.putObject(input),
    headObject: (input) => client.headObject(input),
    getObject: (input) => client.getObject(input),
    deleteObject: (input) => client.deleteObject(input),
    listObjectsV2: (input) => client.listObjectsV2(input),
    ...overrides,
  };
  return new S3ObjectStore({ api, bucket: config.bucket, presign: async () => 'unused' });
}

describe('S3 object store against a real S3-protocol server', () => {
  test('a failed part aborts the multipart upload; nothing is left', async () => {
    const real = createS3Client(config);
    let calls = 0;
    const store = storeWith({
      uploadPart: (input) => {
        calls++;
        if (input.PartNumber === 2) return Promise.reject(new Error('connection reset'));
        return real.uploadPart(input);
      },
    });
    await expect(store.put('fault/part.bin', chunked(randomBytes(20 * MiB)))).rejects.toThrow(
      'connection reset',
    );
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(await store.head('fault/part.bin')).toBeNull();
    expect(await server.incompleteUploads()).toBe(0);
  });

  test('every part is sent with the Content-MD5 of its bytes, so S3 rejects damaged parts', async () => {
    const real = createS3Client(config);
    const seen: { md5: string | undefined; body: Buffer }[] = [];
    const store = storeWith({
      uploadPart: (input) => {
        seen.push({ md5: input.ContentMD5, body: input.Body as Buffer });
        return real.uploadPart(input);
      },
    });
    const data = randomBytes(9 * MiB);
    await (await store.put('md5/x.bin', chunked(data))).commit();
    expect(seen.map((s) => s.body.length)).toEqual([8 * MiB, MiB]);
    for (const { md5, body } of seen) expect(md5).toBe(createHash('md5').update(body).digest('base64'));
  });

  test('commit verifies the stored size and removes an object the server got wrong', async () => {
    const real = createS3Client(config);
    const store = storeWith({
      // A faulty proxy that forwards one byte less of each part.
      uploadPart: (input) => {
        const body = input.Body as Buffer;
        return real.uploadPart({
          ...input,
          Body: body.subarray(1),
          ContentLength: body.length - 1,
          ContentMD5: undefined,
        });
      },
    });
    const pending = await store.put('verify/short.bin', chunked(randomBytes(1000)));
    await expect(pending.commit()).rejects.toThrow(
      /stored 999 bytes for "verify\/short.bin" instead of 1000/,
    );
    expect(await store.head('verify/short.bin')).toBeNull();
  });

  test('a failed CompleteMultipartUpload can be retried', async () => {
    const real = createS3Client(config);
    let failures = 1;
    const store = storeWith({
      completeMultipartUpload: (input) =>
        failures-- > 0 ? Promise.reject(new Error('503 Slow Down')) : real.completeMultipartUpload(input),
    });
    const data = randomBytes(2 * MiB);
    const pending = await store.put('retry/x.bin', chunked(data));
    await expect(pending.commit()).rejects.toThrow('503 Slow Down');
    expect(await store.head('retry/x.bin')).toBeNull();
    await pending.commit();
    expect((await readAll(await store.get('retry/x.bin'))).equals(data)).toBe(true);
    await expect(pending.discard()).rejects.toMatchObject({ code: 'conflict' });
    expect(await server.incompleteUploads()).toBe(0);
  });

  test('parts are uploaded while the source streams, with at most queueSize in flight', async () => {
    const real = createS3Client(config);
    let inFlight = 0;
    let peak = 0;
    const store = storeWith({
      uploadPart: async (input) => {
        peak = Math.max(peak, ++inFlight);
        try {
          return await real.uploadPart(input);
        } finally {
          inFlight--;
        }
      },
    });
    await (await store.put('queue/x.bin', chunked(randomBytes(4 * 8 * MiB + 1)))).commit();
    expect(peak).toBeGreaterThanOrEqual(1);
    expect(peak).toBeLessThanOrEqual(2);
  });

  test('encrypted at rest on S3: no direct link for encrypted objects, links for plaintext ones', async () => {
    const base = new S3ObjectStore({
      api: createS3Client(config),
      bucket: config.bucket,
      presign: async (input) => `signed:${input.Key}`,
    });
    const store = new EncryptedObjectStore(base, memoryKeyring());
    await (await store.put('enc/secret.zip', chunked(randomBytes(1000)))).commit();
    await (await base.put('enc/plain.zip', chunked(randomBytes(1000)))).commit();
    expect(await store.presignGet('enc/secret.zip', 60)).toBeNull();
    expect(await store.presignGet('enc/plain.zip', 60)).toBe('signed:enc/plain.zip');
    await expect(store.presignGet('enc/missing.zip', 60)).rejects.toMatchObject({ code: 'not_found' });
  });

  test('a range is asked of S3 itself: GetObject gets the Range and returns only those bytes', async () => {
    const real = createS3Client(config);
    const asked: { range: string | undefined; length: number | undefined }[] = [];
    const store = storeWith({
      getObject: async (input) => {
        const res = await real.getObject(input);
        asked.push({ range: input.Range, length: res.ContentLength });
        return res;
      },
    });
    const data = randomBytes(6 * MiB);
    await (await store.put('range/x.bin', chunked(data))).commit();
    const start = 3 * MiB + 17;
    const part = await readAll(await store.get('range/x.bin', { start, end: start + 999 }));
    expect(part.equals(data.subarray(start, start + 1000))).toBe(true);
    expect(asked).toEqual([{ range: `bytes=${start}-${start + 999}`, length: 1000 }]);
    const tail = await readAll(await store.get('range/x.bin', { start: 6 * MiB - 5 }));
    expect(tail.equals(data.subarray(6 * MiB - 5))).toBe(true);
    expect(asked[1]).toEqual({ range: `bytes=${6 * MiB - 5}-`, length: 5 });
  });

  test('encrypted at rest on S3: a range fetches the header and the segments that cover it, nothing more', async () => {
    const real = createS3Client(config);
    const fetched: number[] = [];
    const base = storeWith({
      getObject: async (input) => {
        expect(input.Range).toMatch(/^bytes=\d+-\d+$/);
        const res = await real.getObject(input);
        fetched.push(res.ContentLength ?? 0);
        return res;
      },
    });
    const store = new EncryptedObjectStore(base, memoryKeyring());
    const data = randomBytes(8 * MiB);
    await (await store.put('range/enc.bin', chunked(data))).commit();
    const start = 5 * MiB + 100;
    const part = await readAll(await store.get('range/enc.bin', { start, end: start + 199_999 }));
    expect(part.equals(data.subarray(start, start + 200_000))).toBe(true);
    // The header, then at most the 64 KiB segments under 200,000 bytes (4, with their tags).
    expect(fetched.length).toBe(2);
    expect(fetched[1]).toBeLessThanOrEqual(5 * (64 * 1024 + 16));
  });
});
