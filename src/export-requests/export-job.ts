import { createHash, randomUUID } from 'node:crypto';
import { pipeline, type Readable, Transform, type TransformCallback } from 'node:stream';
import { sql } from 'kysely';
import { recordAudit } from '../auth/audit.ts';
import { quotaExceeded } from '../auth/quotas.ts';
import { encryptForRecipients } from '../crypto/age.ts';
import { type ErrorCode, errorDefinition, isErrorCode } from '../domain/error-catalog.ts';
import { exportCompanyPackage } from '../pipeline/company-package.ts';
import type { Database } from '../db/database.ts';
import { rangeFrom } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { buildExportQuery } from '../collect/query.ts';
import { acceptedExportRequest, type ExportRequest, parseExportRequest } from '../collect/request.ts';
import { compressionSuffix, exportDataset, loadTenant, zonesFor } from '../pipeline/export-dataset.ts';
import { getWriter } from '../format/registry.ts';
import type { FerryJob, JobContext } from '../jobs/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { ObjectStore, PendingObject } from '../store/object-store.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { toPackageRequest } from './config.ts';
import { ExportStopped, ProgressTracker } from './progress.ts';
import { type ExportJobs, type ExportRow, exportJobs } from './repository.ts';

/** How often a running attempt writes its progress (and checks it still owns the export). */
export const PROGRESS_INTERVAL_MS = 1_000;

/** Codes of failures that another attempt may fix; every other FerryError fails the export at once. */
const RETRYABLE_CODES = new Set<ErrorCode>(['internal', 'service_unavailable', 'package_aborted']);

const DAY_MS = 86_400_000;

/** Where an export's files live: `exports/<tenant>/<export>/<attempt>/<name>`. */
export function exportPrefix(tenantId: string, exportId: string): string {
  return `exports/${tenantId}/${exportId}/`;
}

interface FileSpec {
  name: string;
  contentType: string;
}

function stamp(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

/** The file an export writes: its name (with extensions) and media type, known before any byte. */
export function fileSpec(config: ExportConfig, createdAt: Date): FileSpec {
  const encrypted = config.recipients.length > 0;
  const age = (spec: FileSpec): FileSpec =>
    encrypted ? { name: `${spec.name}.age`, contentType: 'application/octet-stream' } : spec;
  if (config.package !== 'none') {
    const zip = config.package === 'zip';
    return age({
      name: `company-export-${stamp(createdAt)}.${zip ? 'zip' : 'tar.gz'}`,
      contentType: zip ? 'application/zip' : 'application/gzip',
    });
  }
  const format = config.format ?? 'json';
  const base =
    format === 'markdown'
      ? { extension: 'md.zip', contentType: 'application/zip' }
      : { extension: getWriter(format).extension, contentType: getWriter(format).contentType };
  const compression = config.compression ?? 'none';
  const contentType =
    compression === 'gzip'
      ? 'application/gzip'
      : compression === 'zstd'
        ? 'application/zstd'
        : base.contentType;
  return age({
    name: `${config.datasets[0]}-${stamp(createdAt)}.${base.extension}${compressionSuffix(compression)}`,
    contentType,
  });
}

interface Failure {
  code: ErrorCode;
  message: string;
  retryable: boolean;
}

/** The stable code and the user-facing message of a failure; internals stay in the log. */
export function describeFailure(err: unknown): Failure {
  if (err instanceof FerryError && isErrorCode(err.code)) {
    const retryable = RETRYABLE_CODES.has(err.code);
    const message = err.code === 'internal' ? errorDefinition('internal').description : err.message;
    return { code: err.code, message, retryable };
  }
  return {
    code: 'internal',
    message: 'an unexpected error stopped the export; the worker logged it with the export id',
    retryable: true,
  };
}

/**
 * Runs one attempt of an export job: claims the export (a lease for this attempt),
 * streams the data through the engine into a pending object in the store, checks its
 * checksum, commits it, and only then marks the export completed with the file's size
 * and SHA-256. A crash at any point leaves either nothing visible or a committed file
 * that the next attempt removes before it starts; never a completed export without its
 * file. Temporary data is discarded in `finally`.
 */
export async function runExportJob(job: FerryJob, ctx: JobContext): Promise<void> {
  const exportId = job.data.id;
  if (!exportId) throw new Error('export job without an export id');
  const jobs = exportJobs(ctx.database);
  const attemptId = randomUUID();
  const row = await jobs.claim(exportId, attemptId, ctx.now());
  if (!row) {
    ctx.logger.info({ export_id: exportId }, 'export is no longer active; nothing to do');
    return;
  }
  const log = ctx.logger.child({ export_id: exportId, tenant_id: row.tenant_id, attempt: row.attempts });
  log.info({ datasets: row.datasets, kind: row.kind }, 'export attempt started');

  const controller = new AbortController();
  const tracker = new ProgressTracker({
    jobs,
    exportId,
    attemptId,
    now: ctx.now,
    intervalMs: PROGRESS_INTERVAL_MS,
    onLost: (reason) => {
      log.info({ reason }, 'export no longer owned by this attempt; aborting');
      controller.abort(new ExportStopped(reason));
    },
  });
  const signal = AbortSignal.any([controller.signal, job.signal]);
  // A produced file that is neither committed nor handed to commitFile is discarded in `finally`.
  let unsettled: PendingObject | undefined;
  try {
    await removeLeftovers(ctx.store, exportPrefix(row.tenant_id, exportId));
    const file = await produceFile(ctx, row, attemptId, tracker, signal);
    unsettled = file.pending;
    // From here the lease is checked by the state changes themselves (packaging, completed).
    tracker.stop();
    const progress = tracker.snapshot();
    if (!(await jobs.toPackaging(exportId, attemptId, ctx.now())))
      throw await lostError(controller, jobs, exportId);
    unsettled = undefined; // commitFile commits it, or discards or deletes it on failure
    const committed = await commitFile(ctx, jobs, row, attemptId, file, progress);
    if (!committed) throw await lostError(controller, jobs, exportId);
    log.info(
      { bytes: file.pending.bytes, records: file.records, sha256: file.pending.sha256 },
      'export completed',
    );
    await recordAudit(ctx.database, {
      tenantId: row.tenant_id,
      actor: row.actor,
      action: 'export.completed',
      dataType: row.datasets.join(','),
      dateRange: dateRange(row.config),
      recordCount: file.records,
      fileBytes: file.pending.bytes,
      success: true,
      retentionUntil: new Date(progress.at.getTime() + row.retention_days * DAY_MS),
      targetId: exportId,
    }).catch((err: unknown) => log.error({ err }, 'export completed but its audit entry was not written'));
  } catch (err) {
    const stopped = stopOf(controller.signal, err);
    if (stopped) {
      log.info({ reason: stopped.reason }, 'export attempt stopped');
      return;
    }
    if (job.signal.aborted) {
      // pg-boss took the job back (the worker is stopping, or its claim lapsed): hand the
      // export back to the queue; the job's retry runs it again.
      await jobs
        .requeue(
          exportId,
          attemptId,
          { code: 'service_unavailable', message: 'the worker stopped' },
          ctx.now(),
        )
        .catch(() => {});
      throw err;
    }
    const failure = describeFailure(err);
    const last = job.retryCount >= job.retryLimit;
    log.error({ err, code: failure.code, retryable: failure.retryable, last }, 'export attempt failed');
    if (!failure.retryable || last) {
      const failed = await jobs.fail(exportId, attemptId, failure, ctx.now());
      if (failed) await auditFailure(ctx, failed, failure);
      if (!failure.retryable) return;
    } else {
      await jobs.requeue(exportId, attemptId, failure, ctx.now());
    }
    throw err;
  } finally {
    tracker.stop();
    await unsettled?.discard().catch(() => {});
  }
}

interface ProducedFile {
  id: string;
  name: string;
  key: string;
  contentType: string;
  records: number;
  encrypted: boolean;
  pending: PendingObject;
}

/** Streams the export into a pending (invisible) object and verifies what the store received. */
async function produceFile(
  ctx: JobContext,
  row: ExportRow,
  attemptId: string,
  tracker: ProgressTracker,
  signal: AbortSignal,
): Promise<ProducedFile> {
  const config = row.config;
  const spec = fileSpec(config, row.created_at);
  const key = `${exportPrefix(row.tenant_id, row.id)}${attemptId}/${spec.name}`;
  const encrypted = config.recipients.length > 0;
  const maxBytes = row.max_file_bytes === null ? null : Number(row.max_file_bytes);

  // What the engine writes: hashed and counted here, then (optionally) age-encrypted, then stored.
  const produced = new MeteredStream((bytes) => {
    tracker.update({ bytes });
    if (maxBytes !== null && bytes > maxBytes)
      throw quotaExceeded(
        'max_file_bytes',
        `the export grew past the plan's file size limit of ${maxBytes} bytes; narrow it with from/to, ` +
          'filters or columns, or upgrade the plan',
        null,
      );
  });
  const body: Readable = encrypted
    ? pipeline(produced, encryptForRecipients(config.recipients), () => {})
    : produced;
  const putting = ctx.store.put(key, body, { contentType: spec.contentType });

  const producing = (async () => {
    if (config.package === 'none') {
      const request = acceptedExportRequest(row.tenant_id, config);
      // Only for the percentage: an estimate that cannot be made leaves it unknown.
      tracker.update({ estimated: await estimateRecords(ctx.database, request).catch(() => null) });
      const outcome = await exportDataset(ctx.database, request, produced, {
        exportId: row.id,
        signal,
        onProgress: (p) => tracker.update({ records: p.records }),
      });
      return { records: outcome.records, sha256: outcome.sha256 };
    }
    tracker.update({
      estimated: await estimatePackage(ctx.database, row.tenant_id, config).catch(() => null),
    });
    const perDataset = new Map<string, number>();
    const outcome = await exportCompanyPackage(
      ctx.database,
      toPackageRequest(row.tenant_id, config),
      produced,
      {
        exportId: row.id,
        signal,
        onProgress: (p) => {
          perDataset.set(p.dataset, Math.max(perDataset.get(p.dataset) ?? 0, p.records));
          tracker.update({ records: [...perDataset.values()].reduce((a, b) => a + b, 0) });
        },
      },
    );
    return { records: outcome.records, sha256: outcome.sha256 };
  })().catch((err: unknown) => {
    produced.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  });

  const [made, stored] = await Promise.allSettled([producing, putting]);
  if (made.status === 'rejected' || stored.status === 'rejected') {
    if (stored.status === 'fulfilled') await stored.value.discard().catch(() => {});
    if (signal.aborted) throw signal.reason;
    throw made.status === 'rejected' ? made.reason : (stored as PromiseRejectedResult).reason;
  }
  const pending = stored.value;
  const records = made.value.records;
  const plainSha = produced.hash.digest('hex');
  // The store hashed what it received; without age encryption that is exactly what the engine wrote.
  const expected = encrypted ? null : plainSha;
  if ((made.value.sha256 && made.value.sha256 !== plainSha) || (expected && pending.sha256 !== expected)) {
    await pending.discard().catch(() => {});
    throw new FerryError('internal', `checksum mismatch between the export and the stored file "${key}"`);
  }
  tracker.update({ records, bytes: pending.bytes });
  return {
    id: randomUUID(),
    name: spec.name,
    key,
    contentType: spec.contentType,
    records,
    encrypted,
    pending,
  };
}

/** Commits the pending object, then records it and marks the export completed; undoes the commit if the attempt lost the export. */
async function commitFile(
  ctx: JobContext,
  jobs: ExportJobs,
  row: ExportRow,
  attemptId: string,
  file: ProducedFile,
  progress: ReturnType<ProgressTracker['snapshot']>,
): Promise<boolean> {
  let committed = false;
  try {
    await file.pending.commit();
    committed = true;
    const at = ctx.now();
    const done = await jobs.complete(
      row.id,
      attemptId,
      {
        id: file.id,
        name: file.name,
        storageKey: file.key,
        contentType: file.contentType,
        bytes: file.pending.bytes,
        records: file.records,
        sha256: file.pending.sha256,
        encrypted: file.encrypted,
      },
      { ...progress, records: file.records, bytes: file.pending.bytes, at },
      new Date(at.getTime() + row.retention_days * DAY_MS),
    );
    if (!done) await ctx.store.delete(file.key);
    return done;
  } catch (err) {
    if (!committed) await file.pending.discard().catch(() => {});
    else await ctx.store.delete(file.key).catch(() => {});
    throw err;
  }
}

/** Removes objects of earlier attempts: at most a committed file whose export was never marked completed. */
export async function removeLeftovers(store: ObjectStore, prefix: string): Promise<number> {
  let removed = 0;
  for await (const object of store.list(prefix)) {
    await store.delete(object.key);
    removed++;
  }
  return removed;
}

/** Rows a tabular export will produce (one count query), for the progress percentage; null for documents. */
async function estimateRecords(database: Database, request: ExportRequest): Promise<number | null> {
  const dataset = REFERENCE_DATAMAP.datasets[request.dataset];
  if (!dataset || dataset.kind === 'document') return null;
  const zones = zonesFor(request, await loadTenant(database, request.tenantId));
  // The pseudonym key only shapes projected values; any well-formed key counts the same rows.
  const query = buildExportQuery(dataset, request, { ...zones, anonymizeKey: '0'.repeat(32), input: 'csv' });
  const result = await sql<{ n: number }>`SELECT count(*)::int AS n ${sql.raw(rangeFrom(query))}`.execute(
    database.db,
  );
  return result.rows[0]?.n ?? null;
}

/** Rows of the package's tabular datasets: close to its record count (documents add a few). */
async function estimatePackage(
  database: Database,
  tenantId: string,
  config: ExportConfig,
): Promise<number | null> {
  let total = 0;
  for (const dataset of config.datasets) {
    const declared = REFERENCE_DATAMAP.datasets[dataset];
    if (!declared || declared.kind === 'document') continue;
    const from = config.from ?? config.history_from ?? undefined;
    const dated = declared.filters.some((f) => f.name === 'from');
    const request = parseExportRequest({
      tenantId,
      dataset,
      pii: config.pii,
      ...(dated ? { from, to: config.to ?? undefined } : {}),
      scope: config.scope,
    });
    total += (await estimateRecords(database, request).catch(() => null)) ?? 0;
  }
  return total;
}

function stopOf(signal: AbortSignal, err: unknown): ExportStopped | undefined {
  if (err instanceof ExportStopped) return err;
  if (signal.aborted && signal.reason instanceof ExportStopped) return signal.reason;
  return undefined;
}

/** The attempt lost its lease: learn why (cancelled or taken over) and stop. */
async function lostError(
  controller: AbortController,
  jobs: ExportJobs,
  exportId: string,
): Promise<ExportStopped> {
  if (controller.signal.reason instanceof ExportStopped) return controller.signal.reason;
  const row = await jobs.load(exportId);
  return new ExportStopped(!row || row.status === 'cancelled' ? 'cancelled' : 'superseded');
}

function dateRange(config: ExportConfig): { from?: string; to?: string } | null {
  if (!config.from && !config.to) return null;
  return { ...(config.from ? { from: config.from } : {}), ...(config.to ? { to: config.to } : {}) };
}

export async function auditFailure(
  ctx: Pick<JobContext, 'database'>,
  row: ExportRow,
  failure: { code: string; message: string },
): Promise<void> {
  await recordAudit(ctx.database, {
    tenantId: row.tenant_id,
    actor: row.actor,
    action: 'export.failed',
    dataType: row.datasets.join(','),
    dateRange: dateRange(row.config),
    success: false,
    error: `${failure.code}: ${failure.message}`,
    targetId: row.id,
  });
}

/** Passes bytes through, hashing and counting them; `onBytes` may throw to stop the stream. */
class MeteredStream extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  readonly #onBytes: (bytes: number) => void;

  constructor(onBytes: (bytes: number) => void) {
    super();
    this.#onBytes = onBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    try {
      this.#onBytes(this.bytes);
    } catch (err) {
      done(err as Error);
      return;
    }
    done(null, chunk);
  }
}
