import type { Mailer } from './mailer.ts';
import type { DeliveryResult } from './types.ts';

/** What failed, for a failure notice. Only names, ids and reasons: never data or secrets. */
export interface FailureNotice {
  readonly to: readonly string[];
  /** What failed, e.g. `Scheduled export "Daily conversations"` or `Webhook https://…`. */
  readonly subject: string;
  /** Why, in a sentence. */
  readonly reason: string;
  readonly occurredAt: Date;
  readonly tenantName?: string;
  readonly exportId?: string;
  /** Per-target results; the failed ones are listed with their errors. */
  readonly results?: readonly DeliveryResult[];
  /** What the reader can do next, e.g. where to fix the target or re-enable a webhook. */
  readonly action?: string;
}

/**
 * Emails a failure notice (a failed scheduled export or delivery, a disabled webhook
 * endpoint). Returns false without sending when there is no recipient.
 */
export async function notifyFailure(mailer: Mailer, notice: FailureNotice): Promise<boolean> {
  if (notice.to.length === 0) return false;
  const failed = (notice.results ?? []).filter((r) => r.status === 'failed');
  const lines = [
    `${notice.subject} failed${notice.tenantName ? ` for ${notice.tenantName}` : ''}.`,
    '',
    `Reason: ${notice.reason}`,
    `When: ${notice.occurredAt.toISOString().slice(0, 19).replace('T', ' ')} UTC`,
    ...(notice.exportId ? [`Export id: ${notice.exportId}`] : []),
    ...(failed.length > 0
      ? [
          '',
          'Failed destinations:',
          ...failed.map(
            (r) =>
              `- ${r.target.name ?? r.target.label} (${r.target.label}): ${r.error ?? 'failed'} after ${r.attempts} attempt(s)`,
          ),
        ]
      : []),
    ...(notice.action ? ['', notice.action] : []),
    '',
  ];
  await mailer.send({ to: notice.to, subject: `Failed: ${notice.subject}`, text: lines.join('\n') });
  return true;
}
