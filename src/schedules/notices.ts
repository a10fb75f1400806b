import { recordAudit } from '../auth/audit.ts';
import { notifyFailure } from '../deliver/notify.ts';
import { applyRetention } from '../deliver/s3-target.ts';
import type { DeliveryArtifact, S3Target } from '../deliver/types.ts';
import { loadTenant, type TenantInfo } from '../collect/tenant.ts';
import type { Logger } from '../lib/logger.ts';
import { emitEvent } from '../webhooks/emit.ts';
import { deliveryFailedBody, exportCompletedBody } from '../webhooks/events.ts';
import type { RunFile } from './model.ts';
import type { RunConfig } from './run-file.ts';
import type { DeliveryRow, RunRow } from './repository.ts';
import type { Outcome, RunDeps } from './run-types.ts';

/**
 * What follows a run's outcome: target retention, webhook events
 * (`export.completed`, `schedule.run.completed` / `schedule.run.failed`), the audit
 * trail and the notification emails. Best effort: a failure here is logged and never
 * undoes (or redoes) the delivery.
 */

/** A delivery outcome as events, emails and the history show it. */
export function deliverySummary(d: DeliveryRow) {
  return {
    export_id: d.export_id,
    destination: d.target_type,
    name: d.target_name,
    target: d.target_label,
    target_index: d.target_index,
    status: d.status,
    location: d.location,
    attempts: d.attempts,
    error: d.error,
    error_code: d.error_code,
    checksum_verified: d.checksum_verified,
    at: d.created_at.toISOString(),
  };
}

/** The last outcome of each (file, target) pair that was never delivered. */
function undelivered(deliveries: readonly DeliveryRow[]): DeliveryRow[] {
  const last = new Map<string, DeliveryRow>();
  for (const d of deliveries) {
    const key = `${d.export_id}#${d.target_index}`;
    if (last.get(key)?.status === 'delivered') continue;
    last.set(key, d);
  }
  return [...last.values()].filter((d) => d.status === 'failed');
}

function fileSummary(f: RunFile) {
  return {
    export_id: f.export_id,
    name: f.name ?? null,
    datasets: f.datasets,
    bytes: f.bytes ?? 0,
    records: f.records ?? 0,
    tombstones: f.tombstones ?? 0,
    sha256: f.sha256 ?? null,
  };
}

/** Best-effort follow-ups of a delivered run; each failure is logged, none undoes the delivery. */
export async function afterDelivered(
  deps: RunDeps,
  row: RunRow,
  outcome: Outcome,
  log: Logger,
): Promise<void> {
  const { config, tenant, files } = outcome;
  const now = deps.now();
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (err) {
      log.warn({ err }, `after a delivered run: ${what} failed`);
    }
  };
  const retention = config.retention.target_days;
  if (retention !== null) {
    for (const { target } of config.targets) {
      if (target.type !== 's3') continue;
      await step('target retention', async () => {
        const swept = await applyRetention(
          target as S3Target,
          new Date(now.getTime() - retention * 86_400_000),
          {
            secrets: deps.secrets,
            outbound: deps.outbound,
            clients: deps.deliveryClients,
            ...(deps.deliveryTimeoutMs ? { timeoutMs: deps.deliveryTimeoutMs } : {}),
          },
        );
        if (swept.deleted.length || swept.errors.length)
          log.info(
            { bucket: target.bucket, deleted: swept.deleted.length, errors: swept.errors.length },
            'target retention applied',
          );
      });
    }
  }
  const webhookTargets = config.targets.flatMap(({ target }) =>
    target.type === 'webhook' ? [target.endpoint_id] : [],
  );
  for (const file of files) {
    const artifact = outcome.artifacts.get(file.export_id)!;
    await step('export.completed event', () =>
      emitEvent(
        deps.database,
        tenant.id,
        'export.completed',
        exportCompletedBody({
          exportId: file.export_id,
          exportType: file.key,
          dateRange: artifact.dateRange ?? { start: null, end: null },
          format: artifact.format ?? 'file',
          recordCount: (file.records ?? 0) + (file.tombstones ?? 0),
          fileSizeBytes: file.bytes ?? 0,
          compression: artifact.compression ?? 'none',
          downloadUrl: artifact.downloadUrl,
          expiresAt: artifact.expiresAt,
          sha256: file.sha256 ?? '',
        }),
        // Webhook targets of this schedule received it as their delivery already.
        { now: deps.now, excludeEndpointIds: webhookTargets, queue: deps.queue },
      ),
    );
    await step('audit', () =>
      recordAudit(deps.database, {
        tenantId: tenant.id,
        actor: `schedule:${row.schedule_id}`,
        action: 'export.completed',
        dataType: file.datasets.join(','),
        recordCount: (file.records ?? 0) + (file.tombstones ?? 0),
        fileBytes: file.bytes ?? 0,
        success: true,
        retentionUntil: file.expires_at ? new Date(file.expires_at) : null,
        targetId: file.export_id,
        occurredAt: now,
      }),
    );
  }
  const deliveries = outcome.deliveries.map(deliverySummary);
  await step('schedule.run.completed event', () =>
    emitEvent(
      deps.database,
      tenant.id,
      'schedule.run.completed',
      {
        schedule_id: row.schedule_id,
        data: {
          run_id: row.id,
          run_number: row.run_number,
          schedule_name: config.name,
          trigger: row.trigger,
          due_at: row.due_at.toISOString(),
          status: 'delivered',
          records: files.reduce((n, f) => n + (f.records ?? 0), 0),
          tombstones: files.reduce((n, f) => n + (f.tombstones ?? 0), 0),
          bytes: files.reduce((n, f) => n + (f.bytes ?? 0), 0),
          files: files.map(fileSummary),
          deliveries,
        },
      },
      { now: deps.now, queue: deps.queue },
    ),
  );
  await step('audit', () =>
    recordAudit(deps.database, {
      tenantId: tenant.id,
      actor: `schedule:${row.schedule_id}`,
      action: 'schedule.run.completed',
      dataType: files.flatMap((f) => f.datasets).join(','),
      recordCount: files.reduce((n, f) => n + (f.records ?? 0) + (f.tombstones ?? 0), 0),
      fileBytes: files.reduce((n, f) => n + (f.bytes ?? 0), 0),
      success: true,
      targetId: row.id,
      occurredAt: now,
    }),
  );
  if (config.notifications.success.length && deps.mailer) {
    const mailer = deps.mailer;
    await step('success email', () =>
      mailer.send({
        to: config.notifications.success,
        subject: `Delivered: scheduled export "${config.name}"`,
        text: successText(config, row, tenant, files, outcome.deliveries, outcome.artifacts),
      }),
    );
  }
}

function successText(
  config: RunConfig,
  row: RunRow,
  tenant: TenantInfo,
  files: readonly RunFile[],
  deliveries: readonly DeliveryRow[],
  artifacts: Map<string, DeliveryArtifact>,
): string {
  const delivered = deliveries.filter((d) => d.status === 'delivered');
  return [
    `Scheduled export "${config.name}" for ${tenant.name} was delivered (run ${row.run_number}, due ${row.due_at.toISOString()}).`,
    '',
    'Files:',
    ...files.map(
      (f) =>
        `- ${f.name}: ${f.bytes} bytes, ${f.records ?? 0} records${f.tombstones ? `, ${f.tombstones} deletions` : ''}, sha256 ${f.sha256}` +
        `\n  download until ${artifacts.get(f.export_id)?.expiresAt.toISOString()}: ${artifacts.get(f.export_id)?.downloadUrl}`,
    ),
    '',
    'Delivered to:',
    ...(delivered.length
      ? delivered.map((d) => `- ${d.target_label}: ${d.location ?? ''}`)
      : ['- (no delivery targets: download links only)']),
    '',
  ].join('\n');
}

/** Events, emails and audit of a run that failed for good. */
export async function afterFailed(
  deps: Pick<RunDeps, 'database' | 'mailer' | 'now'> & { readonly queue?: RunDeps['queue'] },
  row: RunRow,
  failure: { code: string; message: string },
  deliveries: readonly DeliveryRow[],
  log: Logger,
): Promise<void> {
  const config = row.config as RunConfig;
  const now = deps.now();
  try {
    await emitEvent(
      deps.database,
      row.tenant_id,
      'schedule.run.failed',
      {
        schedule_id: row.schedule_id,
        data: {
          run_id: row.id,
          run_number: row.run_number,
          schedule_name: config.name,
          trigger: row.trigger,
          due_at: row.due_at.toISOString(),
          status: 'failed',
          attempts: row.attempts,
          error: { code: failure.code, message: failure.message },
          deliveries: deliveries.map(deliverySummary),
        },
      },
      { now: deps.now, ...(deps.queue ? { queue: deps.queue } : {}) },
    );
    // Each destination that never got its file: one delivery.failed, as for any export.
    for (const d of undelivered(deliveries))
      await emitEvent(
        deps.database,
        row.tenant_id,
        'delivery.failed',
        deliveryFailedBody({
          exportId: d.export_id,
          scheduleId: row.schedule_id,
          result: {
            target: { type: d.target_type, name: d.target_name, label: d.target_label },
            status: 'failed',
            attempts: d.attempts,
            location: null,
            ...(d.error ? { error: d.error } : {}),
            ...(d.error_code ? { errorCode: d.error_code } : {}),
            bytesSent: 0,
            checksumVerified: false,
          },
        }),
        { now: deps.now, ...(deps.queue ? { queue: deps.queue } : {}) },
      );
    await recordAudit(deps.database, {
      tenantId: row.tenant_id,
      actor: `schedule:${row.schedule_id}`,
      action: 'schedule.run.failed',
      dataType: config.datasets.map((d) => d.dataset).join(','),
      success: false,
      error: `${failure.code}: ${failure.message}`,
      targetId: row.id,
      occurredAt: now,
    });
    if (config.notifications.failure.length && deps.mailer) {
      const tenant = await loadTenant(deps.database, row.tenant_id);
      await notifyFailure(deps.mailer, {
        to: config.notifications.failure,
        subject: `Scheduled export "${config.name}"`,
        reason: failure.message,
        occurredAt: now,
        tenantName: tenant.name,
        results: undelivered(deliveries).map((d) => ({
          target: { type: d.target_type, name: d.target_name, label: d.target_label },
          status: d.status,
          attempts: d.attempts,
          location: d.location,
          ...(d.error ? { error: d.error } : {}),
          bytesSent: Number(d.bytes_sent),
          checksumVerified: d.checksum_verified,
        })),
        action:
          `Run ${row.run_number} gave up after ${row.attempts} attempt(s); nothing was skipped: the next run starts ` +
          `from the same checkpoint. History: GET /api/v1/schedules/${row.schedule_id}/runs`,
      });
    }
  } catch (err) {
    log.warn({ err }, 'could not send the notices of a failed run');
  }
}
