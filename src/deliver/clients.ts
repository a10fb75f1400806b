// The clients of the delivery targets. Only the composition root (src/compose.ts) builds
// them; the targets get them through `DeliveryContext.clients`.
import { S3 } from '@aws-sdk/client-s3';
import Client from 'ssh2-sftp-client';
import { invalid } from '../domain/ferry-error.ts';
import { guardedAgents, type OutboundPolicy } from '../lib/ssrf.ts';
import type { S3Target, SftpClient } from './types.ts';

/**
 * An S3 client for a tenant's bucket. Every connection goes through the outbound
 * guard (the endpoint is tenant-supplied). Checksums only where S3 requires them:
 * many S3-compatible servers mishandle the SDK's default aws-chunked CRC trailers.
 * The tenant's own keys are required, so the server's credential chain (instance
 * role, environment) can never be used on a tenant's behalf.
 */
export function createTargetS3Client(
  target: S3Target<string>,
  outbound: OutboundPolicy,
  timeoutMs = 30_000,
): S3 {
  if (!target.access_key_id || !target.secret_access_key)
    throw invalid('secret_access_key', 'an S3 target needs access_key_id and secret_access_key');
  // The aggregated client (an S3Client with a method per command): deliveries send commands,
  // backup destinations use it as an object store.
  return new S3({
    region: target.region,
    ...(target.endpoint ? { endpoint: target.endpoint } : {}),
    forcePathStyle: target.force_path_style,
    credentials: { accessKeyId: target.access_key_id, secretAccessKey: target.secret_access_key },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Retries are the delivery's own (with backoff); one SDK retry covers a dropped keep-alive.
    maxAttempts: 2,
    requestHandler: {
      ...guardedAgents(outbound, { keepAlive: true }),
      connectionTimeout: timeoutMs,
      requestTimeout: timeoutMs,
    },
  });
}

/** A new SFTP client; the SFTP target connects it to the checked address and ends it after the attempt. */
export function createSftpClient(): SftpClient {
  return new Client('ferry-delivery');
}
