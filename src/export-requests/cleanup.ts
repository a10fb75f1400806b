import { recordAudit } from '../auth/audit.ts';
import type { JobContext } from '../jobs/types.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { pruneIdempotencyKeys } from './idempotency.ts';
import { exportJobs } from './repository.ts';
import { auditFailure, exportPrefix, removeLeftovers } from './export-job.ts';

/** Exports expired per sweep batch; the sweep loops until none is due. */
const BATCH = 200;
/** A temporary file untouched this long belongs to a worker that died mid-write. */
export const STALE_TEMP_MS = 60 * 60 * 1000;
/** A queued export this old without a job is sent again (its first send was lost). */
const LOST_JOB_MS = 10 * 60 * 1000;

export interface CleanupResult {
  expired: number;
  idempotencyKeys: number;
  staleTempFiles: number;
  requeued: number;
}

/**
 * The periodic export maintenance (a pg-boss cron job): removes the files of exports
 * whose retention period ended and marks them expired (their links then answer 410),
 * prunes old idempotency keys, deletes temporary files left by workers that died
 * mid-write, and re-sends jobs of exports that stayed queued without one.
 */
export async function cleanUpExports(
  ctx: Pick<JobContext, 'database' | 'store' | 'logger' | 'now'> & {
    resend?: (exportId: string, tenantId: string) => Promise<void>;
  },
): Promise<CleanupResult> {
  const now = ctx.now();
  const jobs = exportJobs(ctx.database);
  let expired = 0;
  for (;;) {
    const due = await jobs.dueForExpiry(now, BATCH);
    for (const row of due) {
      await removeLeftovers(ctx.store, exportPrefix(row.tenant_id, row.id));
      if (!(await jobs.expire(row.id, now))) continue;
      expired++;
      await recordAudit(ctx.database, {
        tenantId: row.tenant_id,
        actor: 'system:retention',
        action: 'export.deleted',
        dataType: row.datasets.join(','),
        success: true,
        targetId: row.id,
      });
    }
    if (due.length < BATCH) break;
  }
  const idempotencyKeys = await pruneIdempotencyKeys(ctx.database, now);
  const staleTempFiles = await removeStaleTemp(ctx.store, new Date(now.getTime() - STALE_TEMP_MS));
  // A CLI export runs in the process that asked for it, with no job to retry it: one whose
  // progress stopped is given up, so it does not hold the tenant's concurrent jobs.
  for (const row of await jobs.staleLocal(new Date(now.getTime() - LOST_JOB_MS), BATCH)) {
    const failure = {
      code: 'export_interrupted' as const,
      message: 'the `ferry export` process that ran this export stopped before it finished',
    };
    const failed = await jobs.fail(row.id, null, failure, now);
    if (failed) await auditFailure(ctx, failed, failure);
  }
  let requeued = 0;
  if (ctx.resend) {
    for (const row of await jobs.staleQueued(new Date(now.getTime() - LOST_JOB_MS), BATCH)) {
      await ctx.resend(row.id, row.tenant_id);
      requeued++;
    }
  }
  const result = { expired, idempotencyKeys, staleTempFiles, requeued };
  ctx.logger.info(result, 'export cleanup done');
  return result;
}

/** Local disk keeps writes in progress in a temp folder; S3 uploads that never completed are S3's to expire. */
async function removeStaleTemp(store: ObjectStore, olderThan: Date): Promise<number> {
  const local = findTempSweeper(store);
  return local ? local.removeStaleTemp(olderThan) : 0;
}

interface TempSweeper {
  removeStaleTemp(olderThan: Date): Promise<number>;
}

function findTempSweeper(store: ObjectStore): TempSweeper | undefined {
  let current: unknown = store;
  for (let depth = 0; depth < 3 && current; depth++) {
    if (typeof (current as Partial<TempSweeper>).removeStaleTemp === 'function')
      return current as TempSweeper;
    current = (current as { inner?: unknown }).inner;
  }
  return undefined;
}
