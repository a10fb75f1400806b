import type { FerryJob, JobContext, JobDefinition, JobQueue } from './types.ts';

/** How often an idle worker asks for work. */
const POLL_SECONDS = 1;

/**
 * Starts a worker for every job definition given (JOBS in src/compose.ts lists them all)
 * and registers their cron schedules. Payloads are ids only; each handler reloads its
 * state. Handler failures are logged with the queue and job id, then rethrown so pg-boss
 * applies the queue's retry policy.
 */
export async function startWorkers(
  queue: JobQueue,
  context: JobContext,
  definitions: readonly JobDefinition[],
): Promise<void> {
  for (const definition of definitions) {
    const log = context.logger.child({ queue: definition.name });
    await queue.work<FerryJob['data']>(
      definition.name,
      {
        batchSize: 1,
        includeMetadata: true,
        pollingIntervalSeconds: POLL_SECONDS,
        localConcurrency: context.config.jobs.concurrency,
        ...definition.work?.(context.config),
      },
      async (jobs) => {
        for (const job of jobs as unknown as FerryJob[]) {
          try {
            await definition.handle(job, { ...context, logger: log.child({ job_id: job.id }) });
          } catch (err) {
            log.warn({ err, job_id: job.id, retry: job.retryCount }, 'job attempt failed');
            throw err;
          }
        }
      },
    );
    if (definition.schedule) {
      await queue.schedule(definition.name, definition.schedule.cron, null, {
        ...(definition.schedule.tz ? { tz: definition.schedule.tz } : {}),
      });
    }
  }
}
