import type { LinkSigner } from '../crypto/link-signer.ts';
import type { Database } from '../db/database.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import type { Logger } from '../lib/logger.ts';
import { emitEvent, type WebhookQueue } from '../webhooks/emit.ts';
import { type EventBody, exportCompletedBody } from '../webhooks/events.ts';
import { downloadPath, linkBase } from './links.ts';
import type { ExportRow } from './repository.ts';

/**
 * The webhook events of an API export (`export.started`, `export.completed`,
 * `export.failed`; payloads as docs/webhooks.md shows them), written to the outbox at the
 * export's state changes. Each is keyed by the export, so an attempt that runs again
 * (a retry, a worker that took over) finds the message an earlier attempt made instead
 * of announcing the same change twice.
 */
export interface ExportEventDeps {
  readonly database: Database;
  readonly config: { publicUrl: string | undefined; host: string; port: number };
  readonly signer: LinkSigner;
  readonly queue?: WebhookQueue | undefined;
  readonly now: () => Date;
  readonly logger: Logger;
}

/** The longest a download link in a message stays valid (the export's retention may end sooner). */
const LINK_MAX_SECONDS = 7 * 86_400;

/** The dataset, or `package` for a company package. */
function exportType(row: ExportRow): string {
  return row.config.package === 'none' ? row.config.datasets[0]! : 'package';
}

/** The file's format (a dataset file defaults to JSON), or the format of a package's tabular files (CSV). */
function format(config: ExportConfig): string {
  return config.format ?? (config.package === 'none' ? 'json' : 'csv');
}

function dateRange(config: ExportConfig): { start: string | null; end: string | null } {
  return { start: config.from, end: config.to };
}

/** The file as the export job committed it. */
export interface CompletedFile {
  readonly id: string;
  readonly records: number;
  readonly bytes: number;
  readonly sha256: string;
}

async function emit(deps: ExportEventDeps, row: ExportRow, event: string, body: EventBody): Promise<void> {
  // An event that cannot be written must not undo the export's state change; the log keeps it.
  await emitEvent(deps.database, row.tenant_id, event, body, {
    now: deps.now,
    key: `${event}:${row.id}`,
    ...(deps.queue ? { queue: deps.queue } : {}),
  }).catch((err: unknown) =>
    deps.logger.error({ err, export_id: row.id, event }, 'the webhook event of an export was not written'),
  );
}

/** `export.started`: the first attempt of the export began running. */
export function exportStarted(deps: ExportEventDeps, row: ExportRow): Promise<void> {
  return emit(deps, row, 'export.started', {
    export_id: row.id,
    data: { export_type: exportType(row), format: format(row.config), date_range: dateRange(row.config) },
  });
}

/** `export.completed`: the file is committed; the message carries a signed link to it. */
export function exportCompleted(
  deps: ExportEventDeps,
  row: ExportRow,
  file: CompletedFile,
  expiresAt: Date,
): Promise<void> {
  const now = deps.now().getTime();
  const expires = Math.floor(Math.min(expiresAt.getTime(), now + LINK_MAX_SECONDS * 1000) / 1000);
  const target = { tenantId: row.tenant_id, exportId: row.id, fileId: file.id, expires };
  const config = row.config;
  return emit(
    deps,
    row,
    'export.completed',
    exportCompletedBody({
      exportId: row.id,
      exportType: exportType(row),
      dateRange: dateRange(config),
      format: format(config),
      recordCount: file.records,
      fileSizeBytes: file.bytes,
      compression: config.package === 'none' ? (config.compression ?? 'none') : config.package,
      downloadUrl: `${linkBase(deps.config)}${downloadPath(target, deps.signer.sign(target))}`,
      expiresAt: new Date(expires * 1000),
      sha256: file.sha256,
    }),
  );
}

/** `export.failed`: the export failed for good (no retry follows). */
export function exportFailed(
  deps: ExportEventDeps,
  row: ExportRow,
  failure: { code: string; message: string },
): Promise<void> {
  return emit(deps, row, 'export.failed', {
    export_id: row.id,
    data: {
      export_type: exportType(row),
      format: format(row.config),
      date_range: dateRange(row.config),
      error: { code: failure.code, message: failure.message },
    },
  });
}
