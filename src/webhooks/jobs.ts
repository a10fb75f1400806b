import type { JobContext, JobDefinition } from '../jobs/types.ts';
import { outboundPolicy } from '../lib/ssrf.ts';
import { attemptMessage, deliverDueMessages, type WebhookDispatchOptions } from './dispatch.ts';
import { WEBHOOK_DELIVER_JOB } from './emit.ts';

/** The periodic sweep of the outbox: messages emitted without a queue, and any whose job was lost. */
export const WEBHOOK_SWEEP_JOB = 'webhooks.sweep';

/** Messages one sweep attempts per batch, and how long a sweep may keep going. */
const SWEEP_BATCH = 100;
const SWEEP_BUDGET_MS = 45_000;

/** What tests change in the webhook jobs: a shorter retry schedule and timeout. */
export interface WebhookJobOptions {
  /** Retry delays; default WEBHOOK_RETRY_DELAYS. */
  readonly schedule?: readonly number[];
  /** One attempt's timeout; default 15 s. */
  readonly timeoutMs?: number;
}

/** The dispatcher's dependencies for a job, from the job context. */
export function dispatchOptions(ctx: JobContext, options: WebhookJobOptions = {}): WebhookDispatchOptions {
  return {
    database: ctx.database,
    secrets: ctx.secrets,
    outbound: outboundPolicy(ctx.config.outboundAllow),
    now: ctx.now,
    queue: ctx.queue,
    logger: ctx.logger,
    ...(ctx.mailer ? { mailer: ctx.mailer } : {}),
    ...(options.schedule ? { schedule: options.schedule } : {}),
    ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
  };
}

/**
 * The webhook jobs. `webhooks.deliver` makes one attempt of one message. Failed attempts
 * are not job failures: the dispatcher records them and sends a delayed job for the next
 * attempt. A thrown error (the database went away) is retried by pg-boss; the message's
 * lease keeps two workers from sending it at once. `webhooks.sweep` attempts whatever is due.
 */
export function webhookJobs(options: WebhookJobOptions = {}): JobDefinition[] {
  const deliver: JobDefinition = {
    name: WEBHOOK_DELIVER_JOB,
    queue: () => ({ retryLimit: 3, retryDelay: 10, retryBackoff: true, expireInSeconds: 120 }),
    async handle(job, ctx) {
      if (!job.data.id) return;
      await attemptMessage(dispatchOptions(ctx, options), job.data.id);
    },
  };

  const sweep: JobDefinition = {
    name: WEBHOOK_SWEEP_JOB,
    queue: () => ({ retryLimit: 0, expireInSeconds: 120 }),
    schedule: { cron: '* * * * *' },
    work: () => ({ localConcurrency: 1 }),
    async handle(_job, ctx) {
      const dispatch = dispatchOptions(ctx, options);
      const started = Date.now();
      while ((await deliverDueMessages(dispatch, SWEEP_BATCH)) === SWEEP_BATCH) {
        if (Date.now() - started > SWEEP_BUDGET_MS) break;
      }
    },
  };

  return [deliver, sweep];
}

/** The webhook jobs, listed in JOBS in src/compose.ts. */
export const WEBHOOK_JOBS: readonly JobDefinition[] = webhookJobs();
