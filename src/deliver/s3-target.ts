import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream';
import {
  type S3Client,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import { openTarget } from './targets.ts';
import { renderPathTemplate, staticPrefix } from './template.ts';
import type { DeliveryArtifact, DeliveryContext, DeliveryOutcome, S3Target } from './types.ts';

const MiB = 1024 * 1024;
/** Object metadata holding the file's hex SHA-256 (`x-amz-meta-sha256`). */
export const SHA256_METADATA = 'sha256';

/** The object key for an artifact: the rendered prefix and the file name. */
export function objectKey(target: S3Target<unknown>, artifact: DeliveryArtifact, now: Date): string {
  const prefix = renderPathTemplate(target.prefix, {
    now,
    tenant: artifact.tenantSlug ?? artifact.tenantId,
    dataset: artifact.dataset ?? 'export',
    exportId: artifact.exportId,
  });
  return `${prefix}${artifact.filename}`;
}

/**
 * Uploads with multipart (8 MiB parts, two in flight), storing the file's SHA-256 as
 * object metadata. Verification: the bytes sent are hashed on the way and must match
 * the artifact; then either HEAD (default: size and the sha256 metadata match) or,
 * with `verify: "read"`, the object is downloaded again and hashed. A mismatch
 * deletes the object and fails the attempt. The key depends on the file and
 * `ctx.pathTime` only, so a retry writes the same key, and S3 replaces an object in
 * one step: however many attempts, the file is one object.
 */
export async function deliverToS3(
  target: S3Target<string>,
  artifact: DeliveryArtifact,
  ctx: DeliveryContext,
): Promise<DeliveryOutcome> {
  const client = ctx.clients.s3(target, ctx.outbound, ctx.timeoutMs);
  const key = objectKey(target, artifact, ctx.pathTime ?? (ctx.now ?? (() => new Date()))());
  const location = `s3://${target.bucket}/${key}`;
  try {
    const source = await artifact.open();
    const digest = new MeteredHash();
    // Errors of the source destroy the digest, which fails (and aborts) the upload.
    pipeline(source, digest, () => {});
    const upload = new Upload({
      client,
      queueSize: 2,
      partSize: 8 * MiB,
      leavePartsOnError: false,
      params: {
        Bucket: target.bucket,
        Key: key,
        Body: digest,
        ContentType: artifact.contentType,
        Metadata: { [SHA256_METADATA]: artifact.sha256, 'export-id': artifact.exportId },
        ...(target.server_side_encryption ? { ServerSideEncryption: target.server_side_encryption } : {}),
        ...(target.kms_key_id ? { SSEKMSKeyId: target.kms_key_id } : {}),
      },
    });
    await upload.done().catch((err: unknown) => {
      throw s3Error(err, `upload of ${location}`);
    });
    const sent = { bytes: digest.bytes, sha256: digest.sha256 };
    if (sent.bytes !== artifact.bytes || sent.sha256 !== artifact.sha256) {
      await deleteQuietly(client, target.bucket, key);
      throw new FerryError(
        'checksum_mismatch',
        `the file read for ${location} had ${sent.bytes} bytes with sha256 ${sent.sha256}, expected ` +
          `${artifact.bytes} bytes with sha256 ${artifact.sha256}; the uploaded object was deleted`,
      );
    }
    const problem = await verifyObject(client, target, key, artifact);
    if (problem) {
      await deleteQuietly(client, target.bucket, key);
      throw new FerryError('checksum_mismatch', `${location}: ${problem}; the uploaded object was deleted`);
    }
    return { location, bytesSent: sent.bytes, checksumVerified: true };
  } finally {
    client.destroy();
  }
}

async function verifyObject(
  client: S3Client,
  target: S3Target<string>,
  key: string,
  artifact: DeliveryArtifact,
): Promise<string | null> {
  if (target.verify === 'read') {
    const got = await client
      .send(new GetObjectCommand({ Bucket: target.bucket, Key: key }))
      .catch((err: unknown) => {
        throw s3Error(err, `reading back s3://${target.bucket}/${key}`);
      });
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of got.Body as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    const sha256 = hash.digest('hex');
    if (bytes !== artifact.bytes || sha256 !== artifact.sha256)
      return `read back ${bytes} bytes with sha256 ${sha256}, expected ${artifact.bytes} with ${artifact.sha256}`;
    return null;
  }
  const head = await client
    .send(new HeadObjectCommand({ Bucket: target.bucket, Key: key }))
    .catch((err: unknown) => {
      throw s3Error(err, `checking s3://${target.bucket}/${key}`);
    });
  if (head.ContentLength !== artifact.bytes)
    return `the stored object has ${head.ContentLength} bytes, expected ${artifact.bytes}`;
  const stored = head.Metadata?.[SHA256_METADATA];
  if (stored !== artifact.sha256) return `the stored object's sha256 metadata is ${stored ?? 'missing'}`;
  return null;
}

export interface RetentionResult {
  /** Keys removed. */
  readonly deleted: string[];
  /** Objects under the prefix that are recent enough to stay. */
  readonly kept: number;
  readonly errors: { key: string; error: string }[];
}

/**
 * Removes the objects under a target's prefix last modified before `olderThan`. The
 * sweep covers the fixed part of the prefix, up to the last `/` before its first
 * placeholder (`daily-exports/{date}/` sweeps `daily-exports/`), so that folder
 * should hold Ferry's deliveries only. A prefix without such a folder is refused,
 * so retention can never sweep a whole bucket.
 */
export async function applyRetention(
  target: S3Target,
  olderThan: Date,
  ctx: Pick<DeliveryContext, 'secrets' | 'outbound' | 'clients' | 'timeoutMs'>,
): Promise<RetentionResult> {
  const sweep = staticPrefix(target.prefix);
  if (sweep === '')
    throw invalid(
      'prefix',
      'retention needs a prefix that starts with a fixed folder, such as "daily-exports/{date}/"; it never sweeps a whole bucket',
    );
  const opened = (await openTarget(target, ctx.secrets)) as S3Target<string>;
  const client = ctx.clients.s3(opened, ctx.outbound, ctx.timeoutMs);
  const result = { deleted: [] as string[], kept: 0, errors: [] as { key: string; error: string }[] };
  try {
    let token: string | undefined;
    do {
      const page = await client
        .send(new ListObjectsV2Command({ Bucket: target.bucket, Prefix: sweep, ContinuationToken: token }))
        .catch((err: unknown) => {
          throw s3Error(err, `listing s3://${target.bucket}/${sweep}`);
        });
      for (const object of page.Contents ?? []) {
        if (!object.Key) continue;
        if (!object.LastModified || object.LastModified >= olderThan) {
          result.kept++;
          continue;
        }
        try {
          await client.send(new DeleteObjectCommand({ Bucket: target.bucket, Key: object.Key }));
          result.deleted.push(object.Key);
        } catch (err) {
          result.errors.push({ key: object.Key, error: s3Error(err, 'delete').message });
        }
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return result;
  } finally {
    client.destroy();
  }
}

async function deleteQuietly(client: S3Client, bucket: string, key: string): Promise<void> {
  // Best effort: the attempt fails anyway, and a retry overwrites the key.
  await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })).catch(() => undefined);
}

/** S3 errors with the service's code in the message (`NoSuchBucket`, `AccessDenied`, …). */
function s3Error(err: unknown, doing: string): Error {
  if (err instanceof FerryError) return err;
  const e = err as {
    name?: string;
    Code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const status = e.$metadata?.httpStatusCode;
  const code = e.Code ?? e.name ?? 'Error';
  return new FerryError(
    'delivery_failed',
    `s3 ${doing} failed: ${code}${status ? ` (HTTP ${status})` : ''}${e.message && e.message !== code ? `: ${e.message}` : ''}`,
  );
}
