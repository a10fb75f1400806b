import type { JobContext, JobDefinition } from '../jobs/types.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { outboundPolicy } from '../lib/ssrf.ts';
import { scheduleRuns } from './run-repository.ts';
import { afterFailed } from './notices.ts';
import { giveUpWebhookDeliveries } from './run-delivery.ts';
import { runScheduleJob } from './run-job.ts';
import type { RunDeps } from './run-types.ts';
import { SCHEDULE_RUN_QUEUE, tickSchedules } from './tick.ts';

export const SCHEDULE_TICK_QUEUE = 'schedule-tick';
/** Run jobs that ran out of retries (their workers kept dying) land here, to mark the run failed. */
export const SCHEDULE_RUN_DEAD_QUEUE = 'schedule-run-dead';
export { SCHEDULE_RUN_QUEUE };

/** Attempts after the first, with exponential backoff from FERRY_JOB_RETRY_DELAY_SECONDS (capped at 30 minutes). */
export const RUN_RETRY_LIMIT = 5;
const RUN_EXPIRE_SECONDS = 6 * 60 * 60;

export interface ScheduleJobOptions {
  /** Waits between delivery attempts inside one run attempt (default 1 s, 4 s, 16 s). */
  readonly deliveryRetryDelays?: readonly number[];
  /** Per-request timeout of the delivery adapters (default 30 s). */
  readonly deliveryTimeoutMs?: number;
  /** The retry schedule of webhook targets' messages (default the webhook schedule). */
  readonly webhookRetryDelays?: readonly number[];
}

/** The run's adapters from the job context, with the secret key and the outbound guard. */
export function runDeps(ctx: JobContext, options: ScheduleJobOptions = {}): RunDeps {
  return {
    database: ctx.database,
    config: ctx.config,
    logger: ctx.logger,
    store: ctx.store,
    queue: ctx.queue,
    now: ctx.now,
    secretKey: loadOrCreateSecretKey(ctx.config),
    secrets: ctx.secrets,
    outbound: outboundPolicy(ctx.config.outboundAllow),
    mailer: ctx.mailer,
    signer: ctx.signer,
    deliveryClients: ctx.deliveryClients,
    deliveryRetryDelays: options.deliveryRetryDelays,
    deliveryTimeoutMs: options.deliveryTimeoutMs,
    webhookRetryDelays: options.webhookRetryDelays,
  };
}

/** The schedule jobs: the dead-letter queue first (it must exist before the queue naming it). */
export function scheduleJobs(options: ScheduleJobOptions = {}): JobDefinition[] {
  const markDead: JobDefinition = {
    name: SCHEDULE_RUN_DEAD_QUEUE,
    queue: () => ({ retryLimit: 5, retryDelay: 30, retryBackoff: true }),
    work: () => ({ localConcurrency: 1 }),
    async handle(job, ctx) {
      const runId = job.data.id;
      if (!runId) return;
      const failure = {
        code: 'export_interrupted' as const,
        message: `the run was interrupted ${RUN_RETRY_LIMIT + 1} times (its worker stopped or lost the database) and was given up`,
      };
      const runs = scheduleRuns(ctx.database);
      await giveUpWebhookDeliveries(
        ctx,
        runId,
        'the run was given up before this message was delivered',
        ctx.logger,
      );
      const failed = await runs.fail(runId, null, failure, ctx.now());
      if (failed) {
        ctx.logger.warn({ run_id: runId }, 'scheduled run given up after its retries');
        const deps = runDeps(ctx, options);
        await afterFailed(deps, failed, failure, await runs.deliveries(runId), ctx.logger);
      }
    },
  };

  const run: JobDefinition = {
    name: SCHEDULE_RUN_QUEUE,
    queue: (config) => ({
      retryLimit: RUN_RETRY_LIMIT,
      retryDelay: config.jobs.retryDelaySeconds,
      retryBackoff: true,
      retryDelayMax: 30 * 60,
      expireInSeconds: RUN_EXPIRE_SECONDS,
      heartbeatSeconds: config.jobs.heartbeatSeconds,
      deadLetter: SCHEDULE_RUN_DEAD_QUEUE,
    }),
    handle: (job, ctx) => runScheduleJob(job, runDeps(ctx, options)),
  };

  const tick: JobDefinition = {
    name: SCHEDULE_TICK_QUEUE,
    queue: () => ({ retryLimit: 0, expireInSeconds: 5 * 60 }),
    schedule: { cron: '* * * * *' },
    work: () => ({ localConcurrency: 1 }),
    async handle(_job, ctx) {
      await tickSchedules({ database: ctx.database, queue: ctx.queue, now: ctx.now, logger: ctx.logger });
    },
  };

  return [markDead, run, tick];
}

/** The schedule jobs as every worker runs them. */
export const SCHEDULE_JOBS: readonly JobDefinition[] = scheduleJobs();
