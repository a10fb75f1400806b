import { Readable } from 'node:stream';
import { FerryError } from '../domain/ferry-error.ts';
import { sha256Hex } from '../lib/metered-hash.ts';
import { deliver } from './deliver.ts';
import type { DeliveryContext, DeliveryResult, DeliveryTarget } from './types.ts';

/** The file a connection test writes: small, named for what it is, in the target's own path. */
export const CONNECTION_TEST_FILE = 'ferry-connection-test.txt';

/**
 * Tests a stored delivery target the way a run uses it: one attempt (no retries) to
 * deliver a small text file through the same adapter, with the same credentials, path
 * and checksum check. S3 and SFTP targets keep the file (`ferry-connection-test.txt`,
 * replaced by the next test); an email target receives it as an attachment. Webhook
 * endpoints are not tested here: a test would reach the receiver as a real
 * `export.completed` event (the Webhooks page shows each endpoint's deliveries instead).
 * Never throws for a failed delivery: the result says why, with secrets scrubbed.
 */
export async function testConnection(
  target: DeliveryTarget,
  ctx: DeliveryContext,
  tenant: { id: string; slug: string; name: string },
): Promise<DeliveryResult> {
  if (target.type === 'webhook')
    throw new FerryError(
      'invalid_parameter',
      'webhook destinations are not tested with a file: their endpoint answers every event, as its delivery log shows',
    );
  const now = (ctx.now ?? (() => new Date()))();
  const body = Buffer.from(
    `Ferry connection test for ${tenant.name} (${tenant.slug}) at ${now.toISOString()}.\n` +
      'Ferry writes this file when someone tests this destination; it holds no data and can be removed.\n',
  );
  return deliver(
    target,
    {
      open: async () => Readable.from([body]),
      filename: CONNECTION_TEST_FILE,
      bytes: body.length,
      sha256: sha256Hex(body),
      contentType: 'text/plain; charset=utf-8',
      exportId: 'connection-test',
      tenantId: tenant.id,
      tenantSlug: tenant.slug,
      tenantName: tenant.name,
      dataset: 'connection-test',
      recordCounts: {},
      expiresAt: now,
      downloadUrl: '',
    },
    { ...ctx, retryDelays: [], pathTime: now },
  );
}
