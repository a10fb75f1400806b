import type { DeliveryResult } from '../deliver/types.ts';

/**
 * Webhook events and their envelopes. Every message body is
 * `{"event", "timestamp", <ids>, "tenant_id", "data"}`; docs/webhooks.md shows each
 * event's `data`. New events are appended here (a test keeps the docs in step).
 */
export const WEBHOOK_EVENTS = [
  'export.started',
  'export.completed',
  'export.failed',
  'schedule.run.completed',
  'schedule.run.failed',
  'delivery.failed',
  'dsar.received',
  'dsar.identity_pending',
  'dsar.verified',
  'dsar.awaiting_approval',
  'dsar.in_progress',
  'dsar.extended',
  'dsar.completed',
  'dsar.denied',
  'dsar.cancelled',
  'dsar.failed',
  'dsar.overdue',
  'retention.swept',
  'legal_hold.created',
  'legal_hold.released',
  'account.closed',
  'account.reopened',
  'backup.completed',
  'backup.failed',
  'backup.verified',
  'restore.completed',
  'drill.completed',
  'import.completed',
  'import.failed',
  'data.deleted',
  'api_key.expiring',
] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

/** An endpoint's events filter entry for "every event, present and future". */
export const ALL_EVENTS = '*';

export function isWebhookEvent(name: string): name is WebhookEvent {
  return (WEBHOOK_EVENTS as readonly string[]).includes(name);
}

/**
 * What an event carries besides its name, time and tenant: top-level ids such as
 * `export_id` (placed before `tenant_id`) and the event's `data`.
 */
export interface EventBody {
  readonly export_id?: string;
  readonly schedule_id?: string;
  readonly dsar_id?: string;
  readonly data: Readonly<Record<string, unknown>>;
}

/** The exact JSON body of a message, with its members in the documented order. */
export function envelope(event: string, timestamp: Date, tenantId: string, body: EventBody): string {
  const { data, ...ids } = body;
  return JSON.stringify({ event, timestamp: timestamp.toISOString(), ...ids, tenant_id: tenantId, data });
}

export interface ExportCompletedInput {
  readonly exportId: string;
  /** The dataset, or `package` for a company package. */
  readonly exportType: string;
  readonly dateRange: { readonly start: string | null; readonly end: string | null };
  readonly format: string;
  readonly recordCount: number;
  readonly fileSizeBytes: number;
  readonly compression: string;
  readonly downloadUrl: string;
  readonly expiresAt: Date;
  readonly sha256: string;
}

/** The body of `export.completed`, exactly as documented. */
export function exportCompletedBody(input: ExportCompletedInput): EventBody {
  return {
    export_id: input.exportId,
    data: {
      export_type: input.exportType,
      date_range: { start: input.dateRange.start, end: input.dateRange.end },
      format: input.format,
      record_count: input.recordCount,
      file_size_bytes: input.fileSizeBytes,
      compression: input.compression,
      download_url: input.downloadUrl,
      expires_at: input.expiresAt.toISOString(),
      checksum: { algorithm: 'sha256', value: input.sha256 },
    },
  };
}

/** The body of `delivery.failed` for a file destination (S3, SFTP, email, webhook target). */
export function deliveryFailedBody(input: {
  readonly exportId: string;
  readonly scheduleId?: string;
  readonly result: DeliveryResult;
}): EventBody {
  return {
    export_id: input.exportId,
    ...(input.scheduleId ? { schedule_id: input.scheduleId } : {}),
    data: {
      destination: input.result.target.type,
      name: input.result.target.name,
      target: input.result.target.label,
      attempts: input.result.attempts,
      reason: input.result.error ?? 'failed',
      error_code: input.result.errorCode ?? 'delivery_failed',
    },
  };
}
