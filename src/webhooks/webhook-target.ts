import type { DeliveryArtifact, DeliveryContext, DeliveryOutcome, WebhookTarget } from '../deliver/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { emitEvent, keyedMessageId } from './emit.ts';
import { exportCompletedBody } from './events.ts';
import { type MessageState, settleMessage } from './settle.ts';

/**
 * The webhook delivery target (`DeliveryClients.webhook`, wired in src/compose.ts).
 * Sends `export.completed` to one registered endpoint of the tenant (whatever its
 * events filter). The message is the delivery: with `ctx.deliveryKey` every call for
 * the same file and target finds the same message (one `webhook-id`), so calling again
 * never sends the file a second time. A call attempts the message when it is due and
 * reports where it stands: delivered; waiting for its next attempt on the webhook
 * schedule (docs/webhooks.md), which the outbox makes (a `webhooks.deliver` job when
 * `ctx.queue` is given) and which the error's `retryAt` names; or failed for good.
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
  const options = {
    database: ctx.database,
    secrets: ctx.secrets,
    outbound: ctx.outbound,
    now: ctx.now,
    mailer: ctx.mailer,
    logger: ctx.logger,
    ...(ctx.queue ? { queue: ctx.queue } : {}),
    ...(ctx.webhookRetryDelays ? { schedule: ctx.webhookRetryDelays } : {}),
    ...(ctx.timeoutMs ? { timeoutMs: ctx.timeoutMs } : {}),
  };
  const missing = () =>
    new FerryError(
      'not_found',
      `webhook endpoint ${target.endpoint_id} does not exist in this tenant or is disabled`,
    );
  // The message an earlier call made counts whatever its endpoint's state is now: a file
  // it delivered stays delivered even if the endpoint was disabled since.
  const key = ctx.deliveryKey;
  const earlier = key === undefined ? undefined : keyedMessageId(artifact.tenantId, target.endpoint_id, key);
  const found = earlier ? await settleMessage(options, earlier) : undefined;
  let messageId: string;
  let state: MessageState;
  if (earlier && found) {
    messageId = earlier;
    state = found;
  } else {
    const [message] = await emitEvent(ctx.database, artifact.tenantId, 'export.completed', body, {
      now: ctx.now,
      endpointIds: [target.endpoint_id],
      ...(key !== undefined ? { key } : {}),
    });
    if (!message) throw missing();
    messageId = message.id;
    const settled = await settleMessage(options, message.id);
    if (!settled) throw missing();
    state = settled;
  }
  const { attempts } = state;
  if (state.status === 'delivered')
    return {
      location: `webhook:${target.endpoint_id}#${messageId}`,
      bytesSent: Buffer.byteLength(JSON.stringify(body)),
      checksumVerified: false,
      attempts,
    };
  if (state.status === 'failed')
    throw new FerryError(
      'delivery_failed',
      `webhook: ${state.error}; message ${messageId} failed for good after ${attempts} attempt(s)`,
      { attempts, permanent: true },
    );
  throw new FerryError(
    'delivery_failed',
    `webhook: ${state.error ?? 'not attempted yet'}; message ${messageId} will be retried at ` +
      `${state.nextAttemptAt.toISOString()} and on the webhook schedule after that`,
    { attempts, retryAt: state.nextAttemptAt },
  );
}
