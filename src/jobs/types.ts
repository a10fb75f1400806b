import type { JobWithMetadata, Queue, WorkOptions } from 'pg-boss';
import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import type { Logger } from '../lib/logger.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { JobQueue } from './queue.ts';

/** What a job handler gets: the adapters, built once by the composition root. */
export interface JobContext {
  readonly database: Database;
  readonly config: Config;
  readonly logger: Logger;
  readonly store: ObjectStore;
  readonly queue: JobQueue;
  readonly now: () => Date;
}

/** A job's payload: ids only. The handler reloads everything else. */
export interface JobData {
  readonly id?: string;
}

export type FerryJob = JobWithMetadata<JobData>;

/**
 * One kind of job: its queue (retry, expiry and heartbeat policy sit next to the
 * handler), an optional cron schedule, and the handler. Listed in JOBS in
 * src/jobs/registry.ts.
 */
export interface JobDefinition {
  /** The pg-boss queue name: letters, digits, `_ . - /`. */
  readonly name: string;
  /** The queue's policy for this configuration. */
  queue(config: Config): Omit<Queue, 'name'>;
  /** For periodic jobs: a cron expression (evaluated in UTC unless `tz` is given). */
  readonly schedule?: { readonly cron: string; readonly tz?: string };
  /** Extra `work()` options (concurrency per node, group limits); concurrency defaults to FERRY_WORKER_CONCURRENCY. */
  work?(config: Config): WorkOptions;
  /**
   * Runs one job. Throwing fails the attempt (pg-boss retries it per the queue policy);
   * `job.signal` aborts when the job's claim is lost or the worker stops.
   */
  handle(job: FerryJob, context: JobContext): Promise<void>;
}
