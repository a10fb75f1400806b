import { planLimits } from '../auth/limits.ts';
import { PLANS, type Plan } from '../auth/context.ts';
import type { Db } from 'pg-boss';
import type { JobQueue } from '../jobs/queue.ts';
import type { JobDefinition } from '../jobs/types.ts';
import { exportDb } from './tables.ts';
import { cleanUpExports } from './cleanup.ts';
import { exportJobs } from './repository.ts';
import { recordFailure, runExportJob } from './export-job.ts';
import { PARTITION_JOB } from './partitions.ts';

export const EXPORT_QUEUE = 'export';
/** Export jobs that ran out of retries land here, to mark their export failed. */
export const EXPORT_DEAD_QUEUE = 'export-dead';
export const EXPORT_CLEANUP_QUEUE = 'export-cleanup';

/** Attempts after the first, with exponential backoff from FERRY_JOB_RETRY_DELAY_SECONDS. */
export const EXPORT_RETRY_LIMIT = 3;
/** The hard cap on one attempt; heartbeats catch dead workers long before. */
const EXPORT_EXPIRE_SECONDS = 6 * 60 * 60;

/**
 * Sends the job of an export. The job id is the export id, so a second send (the
 * cleanup re-sending a job it believes lost) cannot create a second job. The job's
 * group is its tenant, so a tenant runs at most its plan's `concurrentJobs` exports
 * at once across all workers.
 */
export async function sendExportJob(
  queue: JobQueue,
  exportId: string,
  tenant: { id: string; plan: Plan },
  /** A connection of the caller's transaction, so the job exists only if the export does. */
  db?: Db,
): Promise<void> {
  await queue.send(
    EXPORT_QUEUE,
    { id: exportId },
    { id: exportId, group: { id: tenant.id, tier: tenant.plan }, ...(db ? { db } : {}) },
  );
}

const runExport: JobDefinition = {
  name: EXPORT_QUEUE,
  queue: (config) => ({
    retryLimit: EXPORT_RETRY_LIMIT,
    retryDelay: config.jobs.retryDelaySeconds,
    retryBackoff: true,
    retryDelayMax: 15 * 60,
    expireInSeconds: EXPORT_EXPIRE_SECONDS,
    heartbeatSeconds: config.jobs.heartbeatSeconds,
    deadLetter: EXPORT_DEAD_QUEUE,
  }),
  work: () => ({
    groupConcurrency: {
      default: 1,
      tiers: Object.fromEntries(PLANS.map((plan) => [plan, planLimits(plan).concurrentJobs])),
    },
  }),
  handle: runExportJob,
};

const markDead: JobDefinition = {
  name: EXPORT_DEAD_QUEUE,
  queue: () => ({ retryLimit: 5, retryDelay: 30, retryBackoff: true }),
  work: () => ({ localConcurrency: 1 }),
  async handle(job, ctx) {
    const exportId = job.data.id;
    if (!exportId) return;
    const failure = {
      code: 'export_interrupted' as const,
      message: `the export was interrupted ${EXPORT_RETRY_LIMIT + 1} times (its worker stopped or lost the database) and was given up`,
    };
    const failed = await exportJobs(ctx.database).fail(exportId, null, failure, ctx.now());
    if (failed) {
      ctx.logger.warn({ export_id: exportId }, 'export given up after its retries');
      await recordFailure(ctx, failed, failure);
    }
  },
};

const cleanup: JobDefinition = {
  name: EXPORT_CLEANUP_QUEUE,
  queue: () => ({ retryLimit: 1, retryDelay: 60, expireInSeconds: 30 * 60 }),
  schedule: { cron: '*/10 * * * *' },
  work: () => ({ localConcurrency: 1 }),
  async handle(_job, ctx) {
    await cleanUpExports({
      ...ctx,
      resend: async (exportId, tenantId) => {
        const tenant = await exportDb(ctx.database)
          .selectFrom('tenants')
          .select(['id', 'plan'])
          .where('id', '=', tenantId)
          .executeTakeFirst();
        if (tenant) await sendExportJob(ctx.queue, exportId, tenant);
      },
    });
  },
};

/** The export jobs, dead-letter queue first (a queue's dead letter must exist before it). */
export const EXPORT_JOBS: readonly JobDefinition[] = [markDead, runExport, cleanup, PARTITION_JOB];
