import { randomUUID } from 'node:crypto';
import type { AuthContext, Plan } from '../auth/context.ts';
import { checkExportQuota, limitsFor, subjectRequestOf } from '../auth/quotas.ts';
import type { Database } from '../db/database.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import type { FileSetSink, FileSink, ProducedFile, RunProgress } from '../pipeline/run.ts';
import {
  auditCompleted,
  auditFailure,
  describeFailure,
  exportPrefix,
  fileLimits,
  PROGRESS_INTERVAL_MS,
} from './export-job.ts';
import { auditOrganisationTenants } from './organisation-export.ts';
import { ExportStopped, ProgressTracker } from './progress.ts';
import { CLI_ACTOR, type ExportRow, exportJobs } from './repository.ts';
import { recordAccepted } from './service.ts';

const DAY_MS = 86_400_000;

/** The command line acts as an admin of the tenant, audited as `cli`. */
export function cliAuth(tenant: { id: string; plan: string }): AuthContext {
  return {
    tenantId: tenant.id,
    plan: tenant.plan as Plan,
    role: 'admin',
    apiKeyId: null,
    teamMemberId: null,
    scopes: [],
    actor: CLI_ACTOR,
    ip: null,
    userAgent: null,
  };
}

/** What the command line writes: its name (a file or folder) and what it holds. */
export interface LocalOutput {
  readonly name: string;
  readonly contentType: string;
}

/**
 * An export the command line runs itself, recorded like an API export: the same
 * `export_requests` row (actor `cli`), the same `export.requested`, `export.completed`
 * or `export.failed` audit entries, the same monthly count and quota checks, and progress
 * written to the row as the worker writes it. Cancelling it through the API
 * (`DELETE /api/v1/exports/{id}`) aborts `signal`.
 */
export interface LocalExport {
  readonly id: string;
  readonly row: ExportRow;
  /** Aborted when the export is cancelled (or otherwise no longer this process's to run). */
  readonly signal: AbortSignal;
  /** The plan's file size limit, for the pipeline run. */
  readonly maxBytes: number | null;
  readonly tooLarge: (maxBytes: number) => Error;
  progress(progress: RunProgress): void;
  /** The pipeline run's sink for a single file: records it once it is written in full. */
  sink(output: LocalOutput): FileSink;
  /**
   * The sink of a run of several files (the parts of a split package, their manifest and
   * checksums): records them all once every one is written in full. The export's records
   * and bytes are those of the files named by `counted` (the parts).
   */
  setSink(counted: (name: string) => boolean): FileSetSink;
  /** Records output that is not one stream of bytes (a folder) once it is complete. */
  complete(output: LocalOutput, file: { bytes: number; records: number; sha256: string }): Promise<void>;
  /** Records the failure (not a cancellation) and returns the error to throw. */
  fail(err: unknown): Promise<unknown>;
}

/**
 * Accepts an export for the command line: checks the plan's quotas (the same
 * `quota_exceeded` errors as the API), stores the request, its audit entry and the
 * month's count, and takes it as running in this process.
 */
export async function startLocalExport(
  database: Database,
  tenant: { id: string; plan: string },
  config: ExportConfig,
  now: () => Date = () => new Date(),
): Promise<LocalExport> {
  const auth = cliAuth(tenant);
  const acceptedAt = now();
  const limits = await limitsFor(database, auth);
  await checkExportQuota(database, auth, {
    manual: true,
    from: config.from ?? undefined,
    subjectRequest: subjectRequestOf(config.scope),
    now: acceptedAt,
    limits,
  });
  const id = randomUUID();
  await recordAccepted(database, auth, { id, config, limits, repeatOf: null, now: acceptedAt });
  const jobs = exportJobs(database);
  const attemptId = randomUUID();
  const row = await jobs.claim(id, attemptId, now());
  if (!row) throw new ExportStopped('cancelled');

  const controller = new AbortController();
  const tracker = new ProgressTracker({
    jobs,
    exportId: id,
    attemptId,
    now,
    intervalMs: PROGRESS_INTERVAL_MS,
    onLost: (reason) => controller.abort(new ExportStopped(reason)),
  });
  let progress = tracker.snapshot();
  const beforeCommit = async () => {
    tracker.stop();
    progress = tracker.snapshot();
    return jobs.toPackaging(id, attemptId, now());
  };
  const record = async (
    files: readonly (Omit<ProducedFile, 'contentType'> & LocalOutput)[],
    totals: { records: number; bytes: number },
  ) => {
    const at = now();
    const done = await jobs.complete(
      id,
      attemptId,
      files.map((file) => ({
        id: randomUUID(),
        name: file.name,
        storageKey: file.key,
        contentType: file.contentType,
        bytes: file.bytes,
        records: file.records,
        sha256: file.sha256,
        encrypted: file.encrypted,
      })),
      { ...progress, ...totals, at },
      new Date(at.getTime() + row.retention_days * DAY_MS),
    );
    if (done) {
      await auditCompleted(database, row, totals, progress.at);
      await auditOrganisationTenants(database, row, {
        action: 'export.completed',
        dataType: row.datasets.join(','),
        success: true,
        targetId: row.id,
      });
    }
    return done;
  };
  // Ferry keeps no copy: the key only names the file in the record, under the export's prefix.
  const key = `${exportPrefix(row.tenant_id, id)}local`;

  return {
    id,
    row,
    signal: controller.signal,
    ...fileLimits(row),
    progress: (p) => tracker.update(p),
    sink: (output) => ({
      key,
      contentType: output.contentType,
      beforeCommit,
      complete: (file) => record([{ ...file, ...output }], file),
    }),
    setSink: (counted) => ({
      keyOf: (name) => `${key}/${name}`,
      beforeCommit,
      complete: (files) => {
        const parts = files.filter((f) => counted(f.name));
        return record(files, {
          records: parts.reduce((n, f) => n + f.records, 0),
          bytes: parts.reduce((n, f) => n + f.bytes, 0),
        });
      },
    }),
    async complete(output, file) {
      if (!(await beforeCommit()) || !(await record([{ ...file, ...output, key, encrypted: false }], file)))
        throw controller.signal.reason instanceof ExportStopped
          ? controller.signal.reason
          : new ExportStopped('cancelled');
    },
    async fail(err) {
      tracker.stop();
      const stopped =
        controller.signal.reason instanceof ExportStopped ? controller.signal.reason : undefined;
      if (stopped || err instanceof ExportStopped) return stopped ?? err;
      const failure = describeFailure(err);
      const failed = await jobs.fail(id, attemptId, failure, now()).catch(() => undefined);
      if (failed) await auditFailure({ database }, failed, failure).catch(() => {});
      return err;
    },
  };
}
