import { randomUUID } from 'node:crypto';
import type { Plan } from '../auth/context.ts';
import type { PlanLimits } from '../auth/limits.ts';
import { limitsFor } from '../auth/quotas.ts';
import type { DeliveryArtifact } from '../deliver/types.ts';
import { loadTenant, type TenantInfo } from '../collect/tenant.ts';
import { downloadPath, linkBase } from '../export-requests/links.ts';
import type { FerryJob } from '../jobs/types.ts';
import type { ErrorCode } from '../domain/error-catalog.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { Logger } from '../lib/logger.ts';
import type { RunFile } from './model.ts';
import { LAKE_MANIFEST, writeLake } from './lake.ts';
import { afterDelivered, afterFailed } from './notices.ts';
import { deliverRunFiles, giveUpWebhookDeliveries, waitForWebhooks } from './run-delivery.ts';
import { abandonFile, produceFile, type RunConfig, runFileSpecs } from './run-file.ts';
import type { DeliveryRow, RunRow } from './repository.ts';
import { scheduleRuns } from './run-repository.ts';
import type { Outcome, RunDeps } from './run-types.ts';
import { dispatchReady } from './tick.ts';

/** Failures no retry can fix: the run fails at once. */
const PERMANENT = new Set<ErrorCode>([
  'invalid_parameter',
  'forbidden',
  'not_found',
  'quota_exceeded',
  'unsupported_format',
]);

class RunLost extends Error {
  override name = 'RunLost';
}

interface Failure {
  code: ErrorCode;
  message: string;
  retryable: boolean;
}

function describe(err: unknown): Failure {
  if (err instanceof FerryError)
    return {
      code: err.code,
      message:
        err.code === 'internal' ? 'an unexpected error stopped the run; the worker logged it' : err.message,
      retryable: !PERMANENT.has(err.code) && err.details?.permanent !== true,
    };
  return {
    code: 'internal',
    message: 'an unexpected error stopped the run; the worker logged it with the run id',
    retryable: true,
  };
}

/**
 * Runs one attempt of a scheduled run: takes its lease, produces the files that earlier
 * attempts did not (see produce.ts), delivers each file to every target that has not
 * received it yet (one failing target does not stop the others; each outcome is recorded
 * as it happens), and, once every required target has every file, marks the run
 * delivered and moves the checkpoints in one transaction. Then it applies target
 * retention and sends the events and emails. A failed attempt leaves the checkpoints as
 * they were and throws, so pg-boss retries the job with backoff; the retry starts from
 * the same checkpoints and reuses the files already made. When all that is missing is
 * webhook messages waiting for their next attempt, the run waits for them instead
 * (`waitForWebhooks`); a run that ends gives up whatever webhook messages still wait.
 */
export async function runScheduleJob(job: FerryJob, deps: RunDeps): Promise<void> {
  const runId = job.data.id;
  if (!runId) throw new Error('schedule run job without a run id');
  const runs = scheduleRuns(deps.database);
  const attemptId = randomUUID();
  const leaseMs = deps.config.jobs.heartbeatSeconds * 1000;
  const row = await runs.claim(runId, attemptId, deps.now(), leaseMs);
  if (!row) {
    await unclaimed(deps, runId);
    return;
  }
  const log = deps.logger.child({ run_id: row.id, schedule_id: row.schedule_id, attempt: row.attempts });
  log.info({ run_number: row.run_number, due_at: row.due_at }, 'scheduled run started');

  const controller = new AbortController();
  const renewal = setInterval(
    () => {
      runs.renew(row.id, attemptId, deps.now(), leaseMs).then(
        (owned) => {
          if (!owned) controller.abort(new RunLost('the run was taken over by another attempt'));
        },
        (err: unknown) => log.warn({ err }, 'could not renew the run lease'),
      );
    },
    Math.max(1_000, Math.floor(leaseMs / 3)),
  );
  renewal.unref();
  const signal = AbortSignal.any([controller.signal, job.signal]);
  let results: DeliveryRow[] = [];
  try {
    const outcome = await execute(deps, row, attemptId, signal, log);
    results = outcome.deliveries;
    if (!outcome.delivered && outcome.waitUntil) {
      await waitForWebhooks(deps, row, attemptId, outcome, log);
      return;
    }
    if (!outcome.delivered)
      throw new FerryError('delivery_failed', outcome.reason, { permanent: outcome.permanent });
    // Only a target that is not required can still have a message waiting: it is given up
    // here, so it never reaches its endpoint after a later run's file.
    await giveUpWebhookDeliveries(
      deps,
      row.id,
      `run ${row.run_number} was delivered without this optional target`,
      log,
    );
    // A lake run counts what it wrote at its first target that is up to date.
    const lake = outcome.lake?.find((r) => r.manifest)?.manifest?.totals;
    const totals = lake
      ? { records: lake.rows_written, tombstones: 0, bytes: lake.bytes_written }
      : {
          records: outcome.files.reduce((n, f) => n + (f.records ?? 0), 0),
          tombstones: outcome.files.reduce((n, f) => n + (f.tombstones ?? 0), 0),
          bytes: outcome.files.reduce((n, f) => n + (f.bytes ?? 0), 0),
        };
    const cursors = outcome.files.flatMap((f) =>
      Object.entries(f.cursors ?? {}).map(([dataset, c]) => ({ dataset, since: c.since, next: c.next })),
    );
    const done = await runs.deliver(row, attemptId, totals, cursors, deps.now());
    if (!done.delivered) throw new RunLost('the run was taken over before it was marked delivered');
    if (done.advanced.length !== cursors.length)
      log.warn({ advanced: done.advanced }, 'a checkpoint had moved meanwhile and was left as it was');
    log.info({ ...totals, checkpoints: done.advanced }, 'scheduled run delivered');
    await afterDelivered(deps, row, outcome, log);
  } catch (err) {
    if (
      err instanceof RunLost ||
      (controller.signal.aborted && controller.signal.reason instanceof RunLost)
    ) {
      log.info({ reason: (err as Error).message }, 'scheduled run attempt stopped');
      return;
    }
    const failure = describe(err);
    if (job.signal.aborted) {
      // pg-boss took the job back (the worker is stopping): the retry continues the run.
      await runs
        .retrying(
          row.id,
          attemptId,
          { code: 'service_unavailable', message: 'the worker stopped' },
          deps.now(),
        )
        .catch(() => {});
      throw err;
    }
    const last = job.retryCount >= job.retryLimit;
    log.error(
      { err, code: failure.code, retryable: failure.retryable, last },
      'scheduled run attempt failed',
    );
    if (!failure.retryable || last) {
      // While the attempt still owns the run: its waiting webhook messages are given up
      // before the schedule's next run may start.
      if (await runs.renew(row.id, attemptId, deps.now(), leaseMs).catch(() => false))
        await giveUpWebhookDeliveries(
          deps,
          row.id,
          `run ${row.run_number} failed before this message was delivered`,
          log,
        ).catch((e: unknown) => log.warn({ err: e }, 'could not give up the webhook messages of the run'));
      const failed = await runs.fail(row.id, attemptId, failure, deps.now());
      if (failed)
        await afterFailed(
          deps,
          failed,
          failure,
          results.length ? results : await runs.deliveries(row.id),
          log,
        );
      if (!failure.retryable) return;
    } else {
      await runs.retrying(row.id, attemptId, failure, deps.now());
    }
    throw err;
  } finally {
    clearInterval(renewal);
    // The next run of the schedule may have been waiting for this one.
    await dispatchReady(deps, row.schedule_id).catch((err: unknown) =>
      log.warn({ err }, 'could not dispatch the next run of the schedule'),
    );
  }
}

/** Why a job found nothing to claim; a run waiting for an earlier one is parked. */
async function unclaimed(deps: RunDeps, runId: string): Promise<void> {
  const runs = scheduleRuns(deps.database);
  const row = await runs.load(runId);
  if (!row || row.status === 'delivered' || row.status === 'failed') return;
  if (row.status === 'running')
    // Another attempt holds a live lease (its worker may have just died): retry later.
    throw new FerryError('service_unavailable', `run ${runId} is running in another worker`);
  if (await runs.blocked(runId)) {
    await runs.park(runId);
    // The earlier run may have ended between the claim and the park.
    if (!(await runs.blocked(runId))) await dispatchReady(deps, row.schedule_id);
  }
}

async function execute(
  deps: RunDeps,
  row: RunRow,
  attemptId: string,
  signal: AbortSignal,
  log: Logger,
): Promise<Outcome> {
  const runs = scheduleRuns(deps.database);
  const config = row.config as RunConfig;
  const tenant = await loadTenant(deps.database, row.tenant_id);
  const limits = await limitsFor(deps.database, { tenantId: tenant.id, plan: tenant.plan as Plan });

  // Files an attempt that died left half made: fail their exports and drop their bytes.
  let files: RunFile[] = [];
  for (const file of row.files) {
    if (file.state === 'ready') files.push(file);
    else await abandonFile(deps, tenant.id, file.export_id, null, null);
  }
  if (files.length !== row.files.length) await save(runs, row, attemptId, files, deps);
  if (config.layout === 'lake') return executeLake(deps, row, { tenant, limits, config, signal, log });

  for (const spec of runFileSpecs(config)) {
    if (files.some((f) => f.key === spec.key)) continue;
    if (signal.aborted) throw signal.reason;
    const made = await produceFile(deps, {
      run: row,
      config,
      tenant,
      limits,
      spec,
      signal,
      onStarted: (file) => save(runs, row, attemptId, [...files, file], deps),
    });
    files = [...files, made];
    await save(runs, row, attemptId, files, deps);
    log.info(
      { file: made.name, bytes: made.bytes, records: made.records, tombstones: made.tombstones },
      'file produced',
    );
  }

  const artifacts = new Map(files.map((f) => [f.export_id, artifactOf(deps, f, tenant, config)]));
  const round = await deliverRunFiles(deps, row, files, artifacts, signal);
  return { ...round, files, tenant, config, artifacts };
}

/**
 * A run of the `lake` layout (lake.ts): every target's lake is brought up to date, and the
 * outcome per target is recorded as the run's delivery to it (under the run's id, since a
 * lake run makes no export file).
 */
async function executeLake(
  deps: RunDeps,
  row: RunRow,
  input: { tenant: TenantInfo; limits: PlanLimits; config: RunConfig; signal: AbortSignal; log: Logger },
): Promise<Outcome> {
  const runs = scheduleRuns(deps.database);
  const { tenant, config, signal } = input;
  const results = await writeLake(deps, { run: row, config, tenant, limits: input.limits, signal });
  for (const result of results) {
    const target = config.targets[result.index]!.target;
    const totals = result.manifest?.totals;
    await runs.recordDelivery(
      row,
      row.id,
      result.index,
      {
        target: { type: target.type, name: target.name ?? null, label: result.label },
        status: result.status,
        attempts: 1,
        location:
          result.status === 'delivered'
            ? `${result.label}${result.label.endsWith('/') ? '' : '/'}${LAKE_MANIFEST}`
            : null,
        ...(result.error ? { error: result.error, errorCode: 'delivery_failed' } : {}),
        bytesSent: totals?.bytes_written ?? 0,
        checksumVerified: result.status === 'delivered',
      },
      deps.now(),
    );
    input.log.info({ target: result.label, status: result.status, ...(totals ?? {}) }, 'lake target written');
  }
  const missing = results.filter((r) => r.required && r.status !== 'delivered');
  return {
    delivered: missing.length === 0,
    permanent: false,
    reason: missing
      .map((r) => `${r.label}: lake not brought up to date (${r.error ?? 'unknown'})`)
      .join('; '),
    deliveries: await runs.deliveries(row.id),
    files: [],
    tenant,
    config,
    artifacts: new Map(),
    lake: results,
  };
}

async function save(
  runs: ReturnType<typeof scheduleRuns>,
  row: RunRow,
  attemptId: string,
  files: RunFile[],
  deps: RunDeps,
): Promise<void> {
  if (!(await runs.saveFiles(row.id, attemptId, files, deps.now())))
    throw new RunLost('the run was taken over');
}

const LINK_MAX_SECONDS = 7 * 86_400;

function artifactOf(deps: RunDeps, file: RunFile, tenant: TenantInfo, config: RunConfig): DeliveryArtifact {
  const now = deps.now();
  const fileExpiry = file.expires_at ? new Date(file.expires_at).getTime() : now.getTime();
  const expires = Math.floor(Math.min(fileExpiry, now.getTime() + LINK_MAX_SECONDS * 1000) / 1000);
  const target = { tenantId: tenant.id, exportId: file.export_id, fileId: file.file_id!, expires };
  const counts = file.counts ?? {};
  const single = file.key !== 'package' ? counts[file.key] : undefined;
  return {
    open: () => deps.store.get(file.storage_key!),
    filename: file.name!,
    bytes: file.bytes!,
    sha256: file.sha256!,
    contentType: file.content_type!,
    exportId: file.export_id,
    tenantId: tenant.id,
    recordCounts: Object.fromEntries(Object.entries(counts).map(([d, c]) => [d, c.records + c.tombstones])),
    expiresAt: new Date(expires * 1000),
    downloadUrl: `${linkBase(deps.config)}${downloadPath(target, deps.signer.sign(target))}`,
    tenantSlug: tenant.slug,
    tenantName: tenant.name,
    dataset: file.key,
    format: file.name!.split('.')[1] ?? 'file',
    compression: config.package === 'none' ? config.compression : config.package,
    dateRange: { start: single?.from ?? null, end: single?.to ?? null },
  };
}
