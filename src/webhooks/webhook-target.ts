import type { DeliveryArtifact, DeliveryContext, DeliveryOutcome, WebhookTarget } from '../deliver/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { attemptMessage } from './dispatch.ts';
import { emitEvent } from './emit.ts';
import { exportCompletedBody } from './events.ts';

/**
 * The webhook delivery target (`DeliveryClients.webhook`, wired in src/compose.ts).
 * Sends `export.completed` to one registered endpoint of the tenant (whatever its
 * events filter) and makes the first attempt now. A failed first attempt fails this
 * delivery, but the message keeps its place in the outbox and is retried on the
 * webhook schedule (docs/webhooks.md) with the same `webhook-id`.
 */
export async function deliverToWebhook(
  target: WebhookTarget,
  artifact: DeliveryArtifact,
  ctx: DeliveryContext,
): Promise<DeliveryOutcome> {
  if (!ctx.database) throw new FerryError('internal', 'webhook delivery needs the database in its context');
  const body = exportCompletedBody({
    exportId: artifact.exportId,
    exportType: artifact.dataset ?? 'export',
    dateRange: artifact.dateRange ?? { start: null, end: null },
    format: artifact.format ?? artifact.contentType,
    recordCount: Object.values(artifact.recordCounts).reduce((a, b) => a + b, 0),
    fileSizeBytes: artifact.bytes,
    compression: artifact.compression ?? 'none',
    downloadUrl: artifact.downloadUrl,
    expiresAt: artifact.expiresAt,
    sha256: artifact.sha256,
  });
  const [message] = await emitEvent(ctx.database, artifact.tenantId, 'export.completed', body, {
    now: ctx.now,
    endpointIds: [target.endpoint_id],
  });
  if (!message)
    throw new FerryError(
      'not_found',
      `webhook endpoint ${target.endpoint_id} does not exist in this tenant or is disabled`,
    );
  const options = {
    database: ctx.database,
    secretKey: ctx.secretKey,
    outbound: ctx.outbound,
    now: ctx.now,
    mailer: ctx.mailer,
    logger: ctx.logger,
  };
  const outcome = await attemptMessage(options, message.id);
  const location = `webhook:${target.endpoint_id}#${message.id}`;
  if (outcome.status === 'delivered')
    return { location, bytesSent: Buffer.byteLength(JSON.stringify(body)), checksumVerified: false };
  if (outcome.status === 'retrying')
    throw new FerryError(
      'delivery_failed',
      `webhook: ${outcome.error}; message ${message.id} will be retried at ${outcome.nextAttemptAt.toISOString()} and on the webhook schedule after that`,
    );
  if (outcome.status === 'failed') throw new FerryError('delivery_failed', `webhook: ${outcome.error}`);
  throw new FerryError('delivery_failed', `webhook: message ${message.id} was not attempted`);
}
