import { EXPORT_JOBS } from '../export-requests/jobs.ts';
import { SCHEDULE_JOBS } from '../schedules/jobs.ts';
import { STREAM_JOBS } from '../live/jobs.ts';
import { WEBHOOK_JOBS } from '../webhooks/jobs.ts';
import type { JobQueue } from './queue.ts';
import type { FerryJob, JobContext, JobDefinition } from './types.ts';

/** Every kind of job Ferry runs. A new job is a definition (src/<area>/jobs.ts) listed here. */
export const JOBS: readonly JobDefinition[] = [
  ...EXPORT_JOBS,
  ...WEBHOOK_JOBS,
  ...SCHEDULE_JOBS,
  ...STREAM_JOBS,
];

/** How often an idle worker asks for work. */
const POLL_SECONDS = 1;

/**
 * Starts a worker for every job definition and registers the cron schedules. Payloads
 * are ids only; each handler reloads its state. Handler failures are logged with the
 * queue and job id, then rethrown so pg-boss applies the queue's retry policy.
 */
export async function startWorkers(
  queue: JobQueue,
  context: JobContext,
  definitions: readonly JobDefinition[] = JOBS,
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
