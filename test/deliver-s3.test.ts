import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { Readable } from 'node:stream';
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { DELIVERY_CLIENTS } from '../src/compose.ts';
import { createTargetS3Client } from '../src/deliver/clients.ts';
import { deliver, deliverAll } from '../src/deliver/deliver.ts';
import { applyRetention } from '../src/deliver/s3-target.ts';
import { parseTarget, sealTarget } from '../src/deliver/targets.ts';
import type { DeliveryArtifact, DeliveryContext, DeliveryTarget, S3Target } from '../src/deliver/types.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';
import type { SecretBox } from '../src/crypto/secret-box.ts';
import { scratchSecrets } from './support/keyring.ts';

let secrets: SecretBox;
let scratch: Awaited<ReturnType<typeof scratchSecrets>> | undefined;
const MiB = 1024 * 1024;

function artifactOf(bytes: Buffer, extra: Partial<DeliveryArtifact> = {}): DeliveryArtifact {
  return {
    async open() {
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += 256 * 1024) chunks.push(bytes.subarray(i, i + 256 * 1024));
      return Readable.from(chunks);
    },
    filename: 'conversations-2026-11-22.csv.gz',
    bytes: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    contentType: 'text/csv',
    exportId: 'exp_0001',
    tenantId: '7d0c5b2e-1111-4a6b-9a57-000000000001',
    tenantSlug: 'acme',
    dataset: 'conversations',
    recordCounts: { conversations: 42 },
    expiresAt: new Date('2026-11-29T00:00:00Z'),
    downloadUrl: 'https://ferry.example.com/d/abc',
    ...extra,
  };
}

let server: TestS3Server;
let ctx: DeliveryContext;
beforeAll(async () => {
  scratch = await scratchSecrets();
  secrets = scratch.secrets;
  server = await startS3Server();
  ctx = {
    secrets,
    outbound: outboundPolicy(['127.0.0.1']),
    clients: DELIVERY_CLIENTS,
    retryDelays: [1, 1, 1],
    now: () => new Date('2026-11-22T03:15:00Z'),
  };
});
afterAll(async () => {
  await scratch?.close();
  await server?.stop();
});
afterEach(() => {
  vi.restoreAllMocks();
});

async function s3Target(extra: Record<string, unknown> = {}): Promise<DeliveryTarget> {
  return sealTarget(
    parseTarget({
      type: 's3',
      name: 'Lake',
      bucket: server.bucket,
      prefix: 'daily-exports/{tenant}/{date}/',
      endpoint: server.endpoint,
      access_key_id: server.accessKeyId,
      secret_access_key: server.secretAccessKey,
      ...extra,
    }),
    secrets,
  );
}

function client() {
  return createTargetS3Client(
    {
      type: 's3',
      bucket: server.bucket,
      prefix: '',
      region: server.region,
      endpoint: server.endpoint,
      force_path_style: true,
      access_key_id: server.accessKeyId,
      secret_access_key: server.secretAccessKey,
      verify: 'head',
    },
    outboundPolicy(['127.0.0.1']),
  );
}

async function readObject(key: string): Promise<Buffer> {
  const got = await client().send(new GetObjectCommand({ Bucket: server.bucket, Key: key }));
  return Buffer.from(await got.Body!.transformToByteArray());
}

describe('S3 delivery against a real S3-protocol server', () => {
  test('uploads in parts under the rendered prefix, with the sha256 as metadata', async () => {
    const bytes = randomBytes(12 * MiB + 123);
    const artifact = artifactOf(bytes);
    const result = await deliver(await s3Target(), artifact, ctx);
    expect(result).toEqual({
      target: { type: 's3', name: 'Lake', label: `s3://${server.bucket}/daily-exports/{tenant}/{date}/` },
      status: 'delivered',
      attempts: 1,
      location: `s3://${server.bucket}/daily-exports/acme/2026-11-22/conversations-2026-11-22.csv.gz`,
      bytesSent: bytes.length,
      checksumVerified: true,
    });
    const key = 'daily-exports/acme/2026-11-22/conversations-2026-11-22.csv.gz';
    expect((await readObject(key)).equals(bytes)).toBe(true);
    const head = await client().send(new HeadObjectCommand({ Bucket: server.bucket, Key: key }));
    expect(head.Metadata?.sha256).toBe(artifact.sha256);
    expect(head.ContentType).toBe('text/csv');
    expect(await server.incompleteUploads()).toBe(0);
  });

  test('verify "read" downloads the object again and hashes it', async () => {
    const bytes = randomBytes(3000);
    const result = await deliver(
      await s3Target({ verify: 'read', prefix: 'read-check/' }),
      artifactOf(bytes),
      ctx,
    );
    expect(result).toMatchObject({ status: 'delivered', checksumVerified: true, bytesSent: 3000 });
  });

  test('a source that does not match its recorded checksum fails, and the object is removed', async () => {
    const bytes = randomBytes(5000);
    const lying = { ...artifactOf(bytes), sha256: 'f'.repeat(64) };
    const result = await deliver(await s3Target({ prefix: 'lying/' }), lying, ctx);
    expect(result).toMatchObject({ status: 'failed', errorCode: 'checksum_mismatch', attempts: 4 });
    expect(result.error).toContain('expected 5000 bytes with sha256 ffff');
    const listed = await client().send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: 'lying/' }));
    expect(listed.Contents ?? []).toEqual([]);
  });

  test('a missing bucket fails after the retries with backoff, naming the S3 error', async () => {
    const sleeps: number[] = [];
    const result = await deliver(await s3Target({ bucket: 'no-such-bucket' }), artifactOf(randomBytes(10)), {
      ...ctx,
      retryDelays: [1000, 4000, 16000],
      sleep: async (ms) => {
        sleeps.push(ms);
      },
    });
    expect(result.status).toBe('failed');
    expect(result.attempts).toBe(4);
    expect(sleeps).toEqual([1000, 4000, 16000]);
    expect(result.error).toBe(
      's3 upload of s3://no-such-bucket/daily-exports/acme/2026-11-22/conversations-2026-11-22.csv.gz failed: ' +
        'NoSuchBucket (HTTP 404): The specified bucket does not exist',
    );
  });

  test('an endpoint on a private address is refused before any socket is opened', async () => {
    const connect = vi.spyOn(net.Socket.prototype, 'connect');
    const result = await deliver(await s3Target(), artifactOf(randomBytes(10)), {
      ...ctx,
      outbound: outboundPolicy([]),
    });
    expect(result).toMatchObject({ status: 'failed', errorCode: 'outbound_blocked', attempts: 1 });
    expect(result.error).toContain('127.0.0.1 is a loopback address');
    expect(connect).not.toHaveBeenCalled();
  });

  test('retention removes old objects under the fixed part of the prefix only', async () => {
    const api = client();
    for (const key of ['ret/a/2026-01-01/old.csv', 'ret/b/2026-01-02/old2.csv', 'elsewhere/keep.csv'])
      await api.send(new PutObjectCommand({ Bucket: server.bucket, Key: key, Body: 'x' }));
    const target = (await s3Target({ prefix: 'ret/{tenant}/{date}/' })) as S3Target;
    // Everything was written just now: a cut-off in the past keeps all of it.
    const none = await applyRetention(target, new Date(Date.now() - 3_600_000), ctx);
    expect(none).toEqual({ deleted: [], kept: 2, errors: [] });
    const swept = await applyRetention(target, new Date(Date.now() + 60_000), ctx);
    expect(swept.deleted.sort()).toEqual(['ret/a/2026-01-01/old.csv', 'ret/b/2026-01-02/old2.csv']);
    const rest = await api.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: 'elsewhere/' }));
    expect(rest.Contents?.map((c) => c.Key)).toEqual(['elsewhere/keep.csv']);
    await expect(
      applyRetention((await s3Target({ prefix: '{tenant}/' })) as S3Target, new Date(), ctx),
    ).rejects.toThrow('retention needs a prefix that starts with a fixed folder');
  });

  test('deliverAll: one failing target does not stop the others', async () => {
    const bytes = randomBytes(2048);
    const targets = [
      await s3Target({ prefix: 'all-1/' }),
      await s3Target({ bucket: 'missing-bucket', name: 'Broken' }),
      await s3Target({ prefix: 'all-2/' }),
    ];
    const results = await deliverAll(targets, artifactOf(bytes), ctx);
    expect(results.map((r) => r.status)).toEqual(['delivered', 'failed', 'delivered']);
    expect(results[1]!.target.name).toBe('Broken');
    expect((await readObject('all-2/conversations-2026-11-22.csv.gz')).equals(bytes)).toBe(true);
  });
});
