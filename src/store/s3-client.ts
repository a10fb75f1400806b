import { GetObjectCommand, S3 } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { S3Config } from '../config/config.ts';
import { S3ObjectStore, type S3ObjectStoreOptions } from './s3-object-store.ts';

/**
 * The AWS SDK client for the configured bucket. Checksums are only sent and
 * checked where S3 requires them: since SDK 3.729 the default adds CRC32 trailers
 * with aws-chunked encoding, which many S3-compatible servers (MinIO releases,
 * Ceph, s3rver, …) mishandle, some by storing the chunk framing as the object's
 * bytes. Part integrity is covered by Content-MD5 instead (see S3ObjectStore).
 */
export function createS3Client(config: S3Config): S3 {
  return new S3({
    region: config.region,
    ...(config.endpoint ? { endpoint: config.endpoint } : {}),
    forcePathStyle: config.forcePathStyle,
    ...(config.accessKeyId && config.secretAccessKey
      ? { credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey } }
      : {}),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/** An S3 object store for the configured bucket, with SigV4 presigned GET links. */
export function s3ObjectStore(
  config: S3Config,
  options: Pick<S3ObjectStoreOptions, 'partSize' | 'queueSize' | 'now'> = {},
): S3ObjectStore {
  const client = createS3Client(config);
  return new S3ObjectStore({
    ...options,
    api: client,
    bucket: config.bucket,
    presign: (input, expiresIn, signingDate) =>
      getSignedUrl(client, new GetObjectCommand(input), { expiresIn, signingDate }),
  });
}
