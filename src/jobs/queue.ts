import type { PGlite } from '@electric-sql/pglite';
import { type ConstructorOptions, fromPglite, PgBoss } from 'pg-boss';
import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { SESSION_OPTIONS } from '../db/postgres-database.ts';
import type { Logger } from '../lib/logger.ts';
import type { JobDefinition, JobQueue } from './types.ts';

export type { JobQueue };

export interface JobQueueOptions {
  /**
   * The queues to create (or update to the current policy) at start. A queue must
   * exist before a job can be sent to it.
   */
  readonly definitions: readonly JobDefinition[];
  /**
   * Run pg-boss's supervisor (retrying the jobs of workers that died, maintenance) and
   * its cron scheduler in this process. Workers do; API-only processes need not.
   */
  readonly supervise?: boolean;
}

/** How long stop() waits for running handlers by default. */
const STOP_TIMEOUT_MS = 8_000;

/** pg-boss's schema: `pgboss`, or `<DATABASE_SCHEMA>_pgboss` when Ferry has its own schema. */
export function jobsSchema(config: Pick<Config, 'databaseSchema'>): string {
  return config.databaseSchema ? `${config.databaseSchema}_pgboss` : 'pgboss';
}

function hasPglite(database: Database): database is Database & { pglite: PGlite } {
  return database.kind === 'pglite' && 'pglite' in database;
}

export async function createJobQueue(
  database: Database,
  config: Config,
  logger: Logger,
  options: JobQueueOptions,
): Promise<JobQueue> {
  const supervise = options.supervise ?? true;
  const schema = jobsSchema(config);
  const common: ConstructorOptions = {
    schema,
    supervise,
    schedule: supervise,
    superviseIntervalSeconds: config.jobs.superviseSeconds,
    monitorIntervalSeconds: config.jobs.superviseSeconds,
    instanceName: supervise ? 'ferry-worker' : 'ferry-api',
  };
  let boss: PgBoss;
  if (hasPglite(database)) {
    boss = new PgBoss({ ...common, db: fromPglite(database.pglite), backend: 'pglite' });
  } else {
    if (!config.databaseUrl) throw new Error('a PostgreSQL database needs DATABASE_URL for the job queue');
    boss = new PgBoss({
      ...common,
      connectionString: config.databaseUrl,
      max: config.jobs.concurrency + 4,
      application_name: 'ferry-jobs',
      options: SESSION_OPTIONS,
    });
  }
  const log = logger.child({ component: 'jobs' });
  boss.on('error', (err) => log.error({ err }, 'job queue error'));
  boss.on('warning', (warning) => log.warn({ warning: warning.data }, warning.message));
  await boss.start();
  try {
    for (const definition of options.definitions) {
      const policy = definition.queue(config);
      if (await boss.getQueue(definition.name)) {
        const { policy: _policy, partition: _partition, deadLetter, ...rest } = policy;
        await boss.updateQueue(definition.name, { ...rest, ...(deadLetter ? { deadLetter } : {}) });
      } else {
        await boss.createQueue(definition.name, policy).catch(async (err: unknown) => {
          // Another process created it between the check and here.
          if (!(await boss.getQueue(definition.name))) throw err;
        });
      }
    }
  } catch (err) {
    await boss.stop({ graceful: false, timeout: 1_000 }).catch(() => {});
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    boss,
    schema,
    send: (name, data, sendOptions) => boss.send(name, data, sendOptions ?? {}),
    work: (name, workOptions, handler) => boss.work(name, workOptions, handler),
    schedule: (name, cron, data, scheduleOptions) =>
      boss.schedule(name, cron, data ?? null, scheduleOptions ?? {}),
    stop(timeoutMs = STOP_TIMEOUT_MS) {
      stopping ??= (async () => {
        const stopped = new Promise<void>((resolve) => boss.once('stopped', () => resolve()));
        await boss.stop({ graceful: true, timeout: timeoutMs });
        // 'stopped' fires once the handlers settled (or their grace ran out).
        await Promise.race([
          stopped,
          new Promise((resolve) => setTimeout(resolve, timeoutMs + 2_000).unref()),
        ]);
      })();
      return stopping;
    },
  };
}
