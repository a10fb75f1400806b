import { randomUUID } from 'node:crypto';
import { recordAudit } from '../auth/audit.ts';
import { quotaExceeded } from '../auth/quotas.ts';
import { acceptedExportRequest, parseExportRequest } from '../collect/request.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { type ErrorCode, errorDefinition, isErrorCode } from '../domain/error-catalog.ts';
import type { Database } from '../db/database.ts';
import type { FerryJob, JobContext } from '../jobs/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { stamp } from '../lib/stamp.ts';
import { datasetFileType, estimateDataset } from '../pipeline/export-dataset.ts';
import {
  companyPackageProducer,
  datasetProducer,
  packageProducer,
  type SplitProduced,
  splitPackageProducer,
} from '../pipeline/producers.ts';
import { type FileSetSpec, type FileSpec, runFile, runFileSet } from '../pipeline/run.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { fileRequest, toPackageRequest } from './config.ts';
import { slug } from '../lib/slug.ts';
import { type CompletedFile, exportCompleted, exportFailed, exportStarted } from './events.ts';
import { splitFileNames, splitFileRole } from './split-names.ts';
import { announceProgress, ExportStopped, exportProgressChannel, ProgressTracker } from './progress.ts';
import { progressFigures } from './presenter.ts';
import { subjectPackageFor } from './subject-packages.ts';
import { partitionCount, partitionedProducer } from './partitions.ts';
import { auditOrganisationTenants, organisationFileSpec, organisationRoot } from './organisation-export.ts';
import { type CommittedFile, type ExportJobs, type ExportRow, exportJobs } from './repository.ts';

/** How often a running attempt writes its progress (and checks it still owns the export). */
export const PROGRESS_INTERVAL_MS = 1_000;

/** Codes of failures that another attempt may fix; every other FerryError fails the export at once. */
const RETRYABLE_CODES = new Set<ErrorCode>(['internal', 'service_unavailable', 'package_aborted']);

const DAY_MS = 86_400_000;

/** Where an export's files live: `exports/<tenant>/<export>/<attempt>/<name>`. */
export function exportPrefix(tenantId: string, exportId: string): string {
  return `exports/${tenantId}/${exportId}/`;
}

interface ExportFileType {
  name: string;
  contentType: string;
}

/** The file an export writes: its name (with extensions) and media type, known before any byte. */
export function fileSpec(config: ExportConfig, createdAt: Date): ExportFileType {
  const encrypted = config.recipients.length > 0;
  const age = (spec: ExportFileType): ExportFileType =>
    encrypted ? { name: `${spec.name}.age`, contentType: 'application/octet-stream' } : spec;
  if (config.organisation) {
    const tar = config.package === 'tar.gz';
    return age({
      name: `${organisationRoot(createdAt)}.${tar ? 'tar.gz' : 'zip'}`,
      contentType: tar ? 'application/gzip' : 'application/zip',
    });
  }
  if (config.package !== 'none') {
    const zip = config.package === 'zip';
    return age({
      name: `${packageRoot(config, createdAt)}.${zip ? 'zip' : 'tar.gz'}`,
      contentType: zip ? 'application/zip' : 'application/gzip',
    });
  }
  const type = datasetFileType(config.format ?? 'json', config.compression ?? 'none');
  return age({
    name: `${config.saved_config ? slug(config.saved_config.name, 'export') : config.datasets[0]}-${stamp(createdAt)}.${type.extension}`,
    contentType: type.contentType,
  });
}

/** A package's name without extension (its root folder): the saved configuration's name, else `company-export`. */
function packageRoot(config: ExportConfig, createdAt: Date): string {
  const base = config.saved_config ? slug(config.saved_config.name, 'export') : 'company-export';
  return `${base}-${stamp(createdAt)}`;
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
 * Runs one attempt of an export job: claims the export (a lease for this attempt) and
 * hands the file to the pipeline run, which streams it into a pending object in the
 * store, checks its checksum, commits it, and only then has this attempt mark the export
 * completed with the file's size and SHA-256. A crash at any point leaves either nothing
 * visible or a committed file that the next attempt removes before it starts; never a
 * completed export without its file. A failed run leaves no pending bytes.
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
  await exportStarted(ctx, row);

  const controller = new AbortController();
  const channel = await exportProgressChannel(ctx.database).catch(() => null);
  const announce = (status: string, p: { records: number; estimated: number | null; bytes: number }) => {
    if (!channel) return;
    const now = ctx.now();
    const figures = progressFigures(
      { status, records: p.records, estimated: p.estimated, startedAt: row.started_at ?? now },
      now,
    );
    void announceProgress(ctx.database, channel, {
      tenant_id: row.tenant_id,
      export_id: exportId,
      api_key_id: row.api_key_id,
      team_member_id: row.team_member_id,
      datasets: row.datasets,
      status,
      records: p.records,
      records_estimated: p.estimated,
      bytes: p.bytes,
      ...figures,
      at: now.toISOString(),
    });
  };
  const tracker = new ProgressTracker({
    jobs,
    exportId,
    attemptId,
    now: ctx.now,
    intervalMs: PROGRESS_INTERVAL_MS,
    onWritten: (snapshot) => announce('running', snapshot),
    onLost: (reason) => {
      log.info({ reason }, 'export no longer owned by this attempt; aborting');
      controller.abort(new ExportStopped(reason));
    },
  });
  const signal = AbortSignal.any([controller.signal, job.signal]);
  try {
    await removeLeftovers(ctx.store, exportPrefix(row.tenant_id, exportId));
    let progress = tracker.snapshot();
    let expiresAt = new Date(0);
    const beforeCommit = async () => {
      // From here the lease is checked by the state changes themselves (packaging, completed).
      tracker.stop();
      progress = tracker.snapshot();
      return jobs.toPackaging(exportId, attemptId, ctx.now());
    };
    const completeWith = (files: CommittedFile[], totals: { records: number; bytes: number }) => {
      const at = ctx.now();
      expiresAt = new Date(at.getTime() + row.retention_days * DAY_MS);
      return jobs.complete(exportId, attemptId, files, { ...progress, ...totals, at }, expiresAt);
    };
    const prefix = `${exportPrefix(row.tenant_id, exportId)}${attemptId}/`;
    // What the export's events and audit entry name: its one file, or for a split package
    // the manifest (whose SHA-256 covers every part) with the parts' records and bytes.
    let done: CompletedFile;
    const split = splitRun(ctx.database, row);
    if (split) {
      const ids = new Map<string, string>();
      const outcome = await runFileSet(
        { store: ctx.store },
        split,
        {
          keyOf: (name) => `${prefix}${name}`,
          beforeCommit,
          complete: (files) =>
            completeWith(
              files.map((file) => ({
                id: ids.get(file.name) ?? ids.set(file.name, randomUUID()).get(file.name)!,
                name: file.name,
                storageKey: file.key,
                contentType: file.contentType,
                bytes: file.bytes,
                records: file.records,
                sha256: file.sha256,
                encrypted: file.encrypted,
              })),
              splitTotals(files),
            ),
        },
        { signal, onProgress: (p) => tracker.update(p) },
      );
      if (outcome.status === 'lost') throw await lostError(controller, jobs, exportId);
      const manifest = outcome.produced.manifest;
      done = {
        id: ids.get(manifest.name)!,
        ...splitTotals(outcome.files),
        sha256: manifest.sha256,
      };
      log.info({ ...done, parts: outcome.produced.parts.length }, 'export completed');
    } else {
      const type = fileSpec(row.config, row.created_at);
      const fileId = randomUUID();
      const outcome = await runFile(
        { store: ctx.store },
        exportFileSpec(ctx, row, attemptId),
        {
          key: `${prefix}${type.name}`,
          contentType: type.contentType,
          beforeCommit,
          complete: (file) =>
            completeWith(
              [
                {
                  id: fileId,
                  name: type.name,
                  storageKey: file.key,
                  contentType: file.contentType,
                  bytes: file.bytes,
                  records: file.records,
                  sha256: file.sha256,
                  encrypted: file.encrypted,
                },
              ],
              { records: file.records, bytes: file.bytes },
            ),
        },
        { signal, onProgress: (p) => tracker.update(p) },
      );
      if (outcome.status === 'lost') throw await lostError(controller, jobs, exportId);
      const { file } = outcome;
      done = { id: fileId, records: file.records, bytes: file.bytes, sha256: file.sha256 };
      log.info({ bytes: file.bytes, records: file.records, sha256: file.sha256 }, 'export completed');
    }
    announce('completed', { records: done.records, estimated: progress.estimated, bytes: done.bytes });
    await exportCompleted(ctx, row, done, expiresAt);
    await auditCompleted(ctx.database, row, done, progress.at).catch((err: unknown) =>
      log.error({ err }, 'export completed but its audit entry was not written'),
    );
    await auditOrganisationTenants(ctx.database, row, {
      action: 'export.completed',
      dataType: row.datasets.join(','),
      dateRange: dateRange(row.config),
      success: true,
      targetId: row.id,
    }).catch((err: unknown) =>
      log.error({ err }, "organisation export completed but its tenants' audit entries were not written"),
    );
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
      if (failed) {
        announce('failed', tracker.snapshot());
        await recordFailure(ctx, failed, failure);
      }
      if (!failure.retryable) return;
    } else {
      await jobs.requeue(exportId, attemptId, failure, ctx.now());
    }
    throw err;
  } finally {
    tracker.stop();
  }
}

/** What an export produces: one dataset file or the company package, held to the plan's file size limit. */
function exportFileSpec(ctx: JobContext, row: ExportRow, attemptId: string): FileSpec {
  const database = ctx.database;
  const config = row.config;
  const limits = { recipients: config.recipients, ...fileLimits(row) };
  if (config.organisation) return organisationFileSpec(database, row, limits, fileSpec);
  if (config.package === 'none') {
    const request = acceptedExportRequest(row.tenant_id, config);
    return {
      ...limits,
      // Only for the percentage: an estimate that cannot be made leaves it unknown.
      estimate: () => estimateDataset(database, request),
      produce: async (out, run) => {
        // A large CSV or NDJSON export on PostgreSQL is written by the fleet in partitions.
        const split = await partitionCount(database, request, ctx.config.exports.partitions);
        if (split.parts < 2) return datasetProducer(database, request, { exportId: row.id })(out, run);
        return partitionedProducer(ctx, request, {
          exportId: row.id,
          attemptId,
          partKeyPrefix: `${exportPrefix(row.tenant_id, row.id)}${attemptId}/parts/`,
          ...split,
        })(out, run);
      },
    };
  }
  if (config.files?.length) {
    const kind = config.package === 'tar.gz' ? 'tar.gz' : 'zip';
    const entries = config.files.map((file) => {
      const request = fileRequest(row.tenant_id, config, file);
      return {
        path: `${file.path}.${datasetFileType(request.format, 'none').extension}`,
        produce: datasetProducer(database, request, { exportId: row.id }),
      };
    });
    return {
      ...limits,
      produce: packageProducer(
        kind,
        { root: packageRoot(config, row.created_at), mtime: row.created_at },
        entries,
      ),
    };
  }
  const request = toPackageRequest(row.tenant_id, config);
  const subjectRequest = config.subject_request;
  if (subjectRequest)
    return {
      ...limits,
      produce: async (out, ctx) => {
        const subject = await subjectPackageFor(database, row.tenant_id, subjectRequest);
        return companyPackageProducer(database, { ...request, subject }, { exportId: row.id })(out, ctx);
      },
    };
  return {
    ...limits,
    estimate: () => estimatePackage(database, row.tenant_id, config),
    produce: companyPackageProducer(database, request, { exportId: row.id }),
  };
}

/**
 * The run of a company package split into parts (`split_size`), or null for an export of
 * one file. Part, manifest and checksum names follow the export's file name
 * (`company-export-<stamp>.part001.zip`, `.parts.json`, `.parts.sha256`); the plan's file
 * size limit holds for the parts together.
 */
function splitRun(database: Database, row: ExportRow): FileSetSpec<SplitProduced> | null {
  const config = row.config;
  if (config.package === 'none' || config.package === 'directory' || !config.split_size) return null;
  // An organisation's export is written whole.
  if (config.organisation) return null;
  // A data subject's package is written whole (the privacy code never asks for parts).
  if (config.subject_request) return null;
  const kind = config.package;
  const base = `company-export-${stamp(row.created_at)}`;
  const request = { ...toPackageRequest(row.tenant_id, config), kind };
  return {
    recipients: config.recipients,
    ...fileLimits(row),
    estimate: () => estimatePackage(database, row.tenant_id, config),
    produce: splitPackageProducer(database, request, {
      exportId: row.id,
      partSize: config.split_size,
      names: splitFileNames(base, kind, config.recipients.length > 0),
    }),
  };
}

/** The records and bytes of a split package: those of its parts (the manifest and checksums hold none). */
function splitTotals(files: readonly { name: string; records: number; bytes: number }[]) {
  const parts = files.filter((f) => splitFileRole(f.name)?.role === 'part');
  return {
    records: parts.reduce((n, f) => n + f.records, 0),
    bytes: parts.reduce((n, f) => n + f.bytes, 0),
  };
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

/** Rows of the package's tabular datasets: close to its record count (documents add a few). */
export async function estimatePackage(
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
    total += (await estimateDataset(database, request).catch(() => null)) ?? 0;
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

/** The `export.completed` audit entry of an export whose file was recorded at `at`. */
export async function auditCompleted(
  database: Database,
  row: ExportRow,
  file: { records: number; bytes: number },
  at: Date,
): Promise<void> {
  await recordAudit(database, {
    tenantId: row.tenant_id,
    actor: row.actor,
    action: 'export.completed',
    dataType: row.datasets.join(','),
    dateRange: dateRange(row.config),
    recordCount: file.records,
    fileBytes: file.bytes,
    success: true,
    retentionUntil: new Date(at.getTime() + row.retention_days * DAY_MS),
    targetId: row.id,
  });
}

/** The plan's file size limit of an export, as the pipeline run holds a file to it. */
export function fileLimits(row: ExportRow) {
  return {
    maxBytes: row.max_file_bytes === null ? null : Number(row.max_file_bytes),
    tooLarge: (maxBytes: number) =>
      quotaExceeded(
        'max_file_bytes',
        `the export grew past the plan's file size limit of ${maxBytes} bytes; narrow it with from/to, ` +
          'filters or columns, or upgrade the plan',
        null,
      ),
  };
}

/** The `export.failed` audit entry of an export. */
export async function auditFailure(
  ctx: Pick<JobContext, 'database'>,
  row: ExportRow,
  failure: { code: string; message: string },
): Promise<void> {
  const entry = {
    action: 'export.failed',
    dataType: row.datasets.join(','),
    dateRange: dateRange(row.config),
    success: false,
    error: `${failure.code}: ${failure.message}`,
    targetId: row.id,
  };
  await recordAudit(ctx.database, { ...entry, tenantId: row.tenant_id, actor: row.actor });
  await auditOrganisationTenants(ctx.database, row, entry);
}

/** An export failed for good: the `export.failed` webhook event and the audit entry. */
export async function recordFailure(
  ctx: JobContext,
  row: ExportRow,
  failure: { code: string; message: string },
): Promise<void> {
  await exportFailed(ctx, row, failure);
  await auditFailure(ctx, row, failure);
}
