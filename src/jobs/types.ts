import type {
  JobWithMetadata,
  PgBoss,
  Queue,
  ScheduleOptions,
  SendOptions,
  WorkHandler,
  WorkOptions,
} from 'pg-boss';
import type { Config } from '../config/config.ts';
import type { Keyring } from '../crypto/keyring.ts';
import type { LinkSigner } from '../crypto/link-signer.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import type { Mailer } from '../deliver/mailer.ts';
import type { DeliveryClients } from '../deliver/types.ts';
import type { Logger } from '../lib/logger.ts';
import type { ObjectStore } from '../store/object-store.ts';

/**
 * The job queue: pg-boss on the same database as everything else (PostgreSQL through
 * its own connection pool, or the embedded PGlite through `fromPglite`), in a schema
 * of its own. Any number of processes on any number of machines share it.
 */
export interface JobQueue {
  readonly boss: PgBoss;
  /** The schema holding pg-boss's tables. */
  readonly schema: string;
  send(name: string, data: { id: string }, options?: SendOptions): Promise<string | null>;
  work<T>(name: string, options: WorkOptions, handler: WorkHandler<T>): Promise<string>;
  schedule(name: string, cron: string, data?: object | null, options?: ScheduleOptions): Promise<void>;
  /** Stops fetching, waits up to `timeoutMs` for running handlers (then fails them for retry), closes. */
  stop(timeoutMs?: number): Promise<void>;
}

/** What a job handler gets: the adapters, built once by the composition root (src/compose.ts). */
export interface JobContext {
  readonly database: Database;
  readonly config: Config;
  readonly logger: Logger;
  readonly store: ObjectStore;
  readonly queue: JobQueue;
  readonly now: () => Date;
  /** Signs the download links in what jobs deliver and announce. */
  readonly signer: LinkSigner;
  /** The data keys of encryption at rest (key rotation works on it). */
  readonly keyring: Keyring;
  /** Seals and opens stored secrets (delivery credentials, webhook secrets, receipt keys). */
  readonly secrets: SecretBox;
  /** The operator's SMTP mailer; absent when FERRY_SMTP_URL is not set. */
  readonly mailer?: Mailer | undefined;
  /** The clients the delivery targets send through (tenant S3 buckets, SFTP servers, the webhook outbox). */
  readonly deliveryClients: DeliveryClients;
  /**
   * Destroys a tenant's backup keys and deletes its backups at every destination (account
   * purge); returns the keys destroyed. Absent where backups are not wired in (tests).
   */
  readonly destroyBackups?: ((tenantId: string) => Promise<number>) | undefined;
}

/** A job's payload: ids only. The handler reloads everything else. */
export interface JobData {
  readonly id?: string;
}

export type FerryJob = JobWithMetadata<JobData>;

/**
 * One kind of job: its queue (retry, expiry and heartbeat policy sit next to the
 * handler), an optional cron schedule, and the handler. Listed in JOBS in
 * src/compose.ts.
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
