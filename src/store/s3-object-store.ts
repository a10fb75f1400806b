import { createHash } from 'node:crypto';
import { pipeline, Readable } from 'node:stream';
import type {
  AbortMultipartUploadCommandInput,
  CompletedPart,
  CompleteMultipartUploadCommandInput,
  CreateMultipartUploadCommandInput,
  CreateMultipartUploadCommandOutput,
  DeleteObjectCommandInput,
  GetObjectCommandInput,
  GetObjectCommandOutput,
  HeadObjectCommandInput,
  HeadObjectCommandOutput,
  ListObjectsV2CommandInput,
  ListObjectsV2CommandOutput,
  PutObjectCommandInput,
  UploadPartCommandInput,
  UploadPartCommandOutput,
} from '@aws-sdk/client-s3';
import { FerryError } from '../domain/ferry-error.ts';
import { contentDisposition } from './content-disposition.ts';
import {
  checkExpiry,
  checkRange,
  notFound,
  rangeNotSatisfiable,
  validateKey,
  validatePrefix,
} from './object-key.ts';
import type {
  ByteRange,
  ListedObject,
  ObjectInfo,
  ObjectStore,
  PendingObject,
  StoredObject,
} from './object-store.ts';
import { SliceTransform } from './slice-transform.ts';

/**
 * The part of the S3 API this store uses. The SDK's aggregated `S3` client
 * satisfies it; a test can wrap one to inject faults.
 */
export interface S3Api {
  createMultipartUpload(
    input: CreateMultipartUploadCommandInput,
  ): Promise<CreateMultipartUploadCommandOutput>;
  uploadPart(input: UploadPartCommandInput): Promise<UploadPartCommandOutput>;
  completeMultipartUpload(input: CompleteMultipartUploadCommandInput): Promise<unknown>;
  abortMultipartUpload(input: AbortMultipartUploadCommandInput): Promise<unknown>;
  putObject(input: PutObjectCommandInput): Promise<unknown>;
  headObject(input: HeadObjectCommandInput): Promise<HeadObjectCommandOutput>;
  getObject(input: GetObjectCommandInput): Promise<GetObjectCommandOutput>;
  deleteObject(input: DeleteObjectCommandInput): Promise<unknown>;
  listObjectsV2(input: ListObjectsV2CommandInput): Promise<ListObjectsV2CommandOutput>;
}

/** Signs a GET for `input`, valid for `expiresIn` seconds from `signingDate` (the SDK's presigner in production). */
export type S3Presigner = (
  input: { Bucket: string; Key: string; ResponseContentDisposition?: string },
  expiresIn: number,
  signingDate: Date,
) => Promise<string>;

export interface S3ObjectStoreOptions {
  api: S3Api;
  bucket: string;
  presign: S3Presigner;
  /** Size of the first 1000 parts; later parts double every 1000, up to 64 MiB. Default 8 MiB. */
  partSize?: number;
  /** Parts uploaded concurrently; memory use is about (queueSize + 1) × part size. Default 2. */
  queueSize?: number;
  /** The clock presigned URLs are signed with. */
  now?: () => Date;
}

const MiB = 1024 * 1024;
const MAX_PART_SIZE = 64 * MiB;
const MAX_PARTS = 10_000;
const EMPTY_MD5 = createHash('md5').digest('base64');

/**
 * S3-compatible object storage.
 *
 * Atomic commit: `put` streams the source as parts of a multipart upload created
 * for the final key, but does not complete it. S3 shows nothing under a key until
 * CompleteMultipartUpload, so `commit()` is that single call, `discard()` is
 * AbortMultipartUpload, and incomplete uploads never appear in listings. This needs
 * no temporary object and no server-side copy, which matters because CopyObject
 * stops at 5 GiB and copying a large export costs as much time again. An empty
 * source has no parts; its commit is a PutObject of zero bytes. A process that dies
 * between put and commit leaves an invisible incomplete upload: configure the
 * bucket's AbortIncompleteMultipartUpload lifecycle rule (docs/storage.md).
 *
 * Integrity: every part is sent with Content-MD5, which S3 checks before it stores
 * the part (a part damaged in transit is refused with BadDigest). After completing,
 * HEAD must report the size we streamed. The ETag is not compared: for SSE-KMS and
 * SSE-C objects (and some S3-compatible servers) it is not an MD5 digest.
 *
 * Part sizes grow (8 MiB for parts 1–1000, then 16, 32, 64 MiB per 1000 parts), so
 * one object can reach about 490 GiB within S3's 10,000-part limit while memory
 * stays bounded by (queueSize + 1) parts.
 */
export class S3ObjectStore implements ObjectStore {
  readonly kind = 's3';
  readonly bucket: string;
  readonly #api: S3Api;
  readonly #presign: S3Presigner;
  readonly #partSize: number;
  readonly #queueSize: number;
  readonly #now: () => Date;

  constructor(options: S3ObjectStoreOptions) {
    this.#api = options.api;
    this.bucket = options.bucket;
    this.#presign = options.presign;
    this.#partSize = options.partSize ?? 8 * MiB;
    this.#queueSize = options.queueSize ?? 2;
    this.#now = options.now ?? (() => new Date());
  }

  #partSizeFor(partNumber: number): number {
    return Math.min(this.#partSize * 2 ** Math.floor((partNumber - 1) / 1000), MAX_PART_SIZE);
  }

  async put(key: string, source: Readable, options?: { contentType?: string }): Promise<PendingObject> {
    try {
      validateKey(key);
    } catch (err) {
      source.destroy(); // release whatever feeds the source (a database cursor, a file)
      throw err;
    }
    const api = this.#api;
    const Bucket = this.bucket;
    const hash = createHash('sha256');
    let bytes = 0;
    let uploadId: string | undefined;
    const parts: CompletedPart[] = [];
    const inFlight = new Set<Promise<void>>();
    let failure: { error: unknown } | undefined;

    const startPart = async (partNumber: number, body: Buffer) => {
      if (partNumber > MAX_PARTS)
        throw new FerryError('payload_too_large', `"${key}" is larger than S3's ${MAX_PARTS}-part limit`);
      uploadId ??= (await api.createMultipartUpload({ Bucket, Key: key, ContentType: options?.contentType }))
        .UploadId;
      if (!uploadId) throw new FerryError('internal', 'the S3 server returned no multipart upload id');
      const UploadId = uploadId;
      const task = api
        .uploadPart({
          Bucket,
          Key: key,
          UploadId,
          PartNumber: partNumber,
          Body: body,
          ContentLength: body.length,
          ContentMD5: createHash('md5').update(body).digest('base64'),
        })
        .then(
          (res) => {
            parts[partNumber - 1] = { PartNumber: partNumber, ETag: res.ETag };
          },
          (error: unknown) => {
            failure ??= { error };
          },
        )
        .finally(() => inFlight.delete(task));
      inFlight.add(task);
      while (inFlight.size >= this.#queueSize) await Promise.race(inFlight);
      if (failure) throw failure.error;
    };

    try {
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let partNumber = 1;
      for await (const chunk of source) {
        const buf: Buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        hash.update(buf);
        bytes += buf.length;
        pending.push(buf);
        pendingBytes += buf.length;
        while (pendingBytes >= this.#partSizeFor(partNumber)) {
          const size = this.#partSizeFor(partNumber);
          const all = Buffer.concat(pending, pendingBytes);
          pending = all.length > size ? [all.subarray(size)] : [];
          pendingBytes -= size;
          await startPart(partNumber++, all.subarray(0, size));
        }
      }
      if (pendingBytes > 0) await startPart(partNumber, Buffer.concat(pending, pendingBytes));
      await Promise.all(inFlight);
      if (failure) throw failure.error;
    } catch (err) {
      source.destroy();
      await Promise.allSettled(inFlight);
      if (uploadId) {
        // Best effort: the error that matters is `err`; an upload left behind is invisible
        // and removed by the bucket's AbortIncompleteMultipartUpload lifecycle rule.
        await abortUpload(api, Bucket, key, uploadId).catch(() => {});
      }
      throw err;
    }

    const stored: StoredObject = { key, bytes, sha256: hash.digest('hex') };
    let state: 'pending' | 'committed' | 'discarded' = 'pending';
    let committing: Promise<StoredObject> | undefined;
    const complete = async (): Promise<StoredObject> => {
      if (uploadId) {
        await api.completeMultipartUpload({
          Bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
        });
      } else {
        await api.putObject({
          Bucket,
          Key: key,
          Body: Buffer.alloc(0),
          ContentLength: 0,
          ContentMD5: EMPTY_MD5,
          ContentType: options?.contentType,
        });
      }
      const head = await api.headObject({ Bucket, Key: key });
      if (head.ContentLength !== bytes) {
        await api.deleteObject({ Bucket, Key: key });
        throw new FerryError(
          'internal',
          `the S3 server stored ${head.ContentLength} bytes for "${key}" instead of ${bytes}; the object was removed`,
        );
      }
      state = 'committed';
      return stored;
    };
    return {
      ...stored,
      commit() {
        if (state === 'discarded')
          return Promise.reject(new FerryError('conflict', `the pending write of "${key}" was discarded`));
        committing ??= complete().catch((err: unknown) => {
          committing = undefined; // a failed CompleteMultipartUpload may be retried
          throw err;
        });
        return committing;
      },
      async discard() {
        if (state === 'committed' || committing)
          throw new FerryError('conflict', `"${key}" is already committed`);
        if (state === 'discarded') return;
        state = 'discarded';
        if (uploadId) await abortUpload(api, Bucket, key, uploadId);
      },
    };
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    validateKey(key);
    if (range) checkRange(range);
    let res: GetObjectCommandOutput;
    try {
      res = await this.#api.getObject({
        Bucket: this.bucket,
        Key: key,
        Range: range ? `bytes=${range.start}-${range.end ?? ''}` : undefined,
      });
    } catch (err) {
      if (isMissing(err)) throw notFound(key);
      if (s3Status(err) === 416 || s3Code(err) === 'InvalidRange')
        throw rangeNotSatisfiable(range?.start ?? 0);
      throw err;
    }
    const body = res.Body;
    if (body !== undefined && !(body instanceof Readable))
      throw new FerryError('internal', 'the S3 client returned a body that is not a Node.js stream');
    const stream = body ?? Readable.from([]);
    return range ? trimToRange(stream, range, res) : stream;
  }

  async head(key: string): Promise<ObjectInfo | null> {
    validateKey(key);
    try {
      const res = await this.#api.headObject({ Bucket: this.bucket, Key: key });
      return { bytes: res.ContentLength ?? 0, ...(res.ContentType ? { contentType: res.ContentType } : {}) };
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    validateKey(key);
    await this.#api.deleteObject({ Bucket: this.bucket, Key: key });
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    validatePrefix(prefix);
    let ContinuationToken: string | undefined;
    do {
      const page = await this.#api.listObjectsV2({
        Bucket: this.bucket,
        Prefix: prefix || undefined,
        ContinuationToken,
      });
      for (const item of page.Contents ?? []) {
        if (item.Key === undefined) continue;
        yield { key: item.Key, bytes: item.Size ?? 0, lastModified: item.LastModified ?? new Date(0) };
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
  }

  async presignGet(key: string, expiresInSeconds: number, filename?: string): Promise<string> {
    validateKey(key);
    checkExpiry(expiresInSeconds);
    return this.#presign(
      {
        Bucket: this.bucket,
        Key: key,
        ...(filename ? { ResponseContentDisposition: contentDisposition(filename) } : {}),
      },
      expiresInSeconds,
      this.#now(),
    );
  }
}

/**
 * Makes a ranged response exactly the requested bytes. HTTP lets a server ignore
 * Range (200 with the whole object), and some S3-compatible servers return more
 * than asked (s3rver answers `bytes=0-0` with the whole object).
 */
function trimToRange(body: Readable, range: ByteRange, res: GetObjectCommandOutput): Readable {
  const match = /^bytes (\d+)-(\d+)\/(?:\d+|\*)$/.exec(res.ContentRange ?? '');
  let skip: number;
  if (match) {
    if (Number(match[1]) !== range.start) {
      body.destroy();
      throw new FerryError(
        'internal',
        `the S3 server answered range ${res.ContentRange} to a request from byte ${range.start}`,
      );
    }
    skip = 0;
    if (range.end === undefined || Number(match[2]) <= range.end) return body;
  } else {
    skip = range.start; // Range ignored: the body is the whole object
  }
  const count = range.end === undefined ? Number.POSITIVE_INFINITY : range.end - range.start + 1;
  return pipeline(body, new SliceTransform(skip, count), () => {});
}

async function abortUpload(api: S3Api, Bucket: string, Key: string, UploadId: string): Promise<void> {
  try {
    await api.abortMultipartUpload({ Bucket, Key, UploadId });
  } catch (err) {
    if (s3Code(err) !== 'NoSuchUpload') throw err; // already aborted or completed elsewhere
  }
}

function s3Code(err: unknown): string | undefined {
  return (err as { name?: string; Code?: string } | undefined)?.Code ?? (err as Error | undefined)?.name;
}

function s3Status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function isMissing(err: unknown): boolean {
  const code = s3Code(err);
  if (code === 'NoSuchBucket')
    throw new FerryError('service_unavailable', 'the configured S3 bucket (FERRY_S3_BUCKET) does not exist');
  return code === 'NoSuchKey' || code === 'NotFound' || s3Status(err) === 404;
}
