import closeWithGrace from 'close-with-grace';
import { type Command, InvalidArgumentError } from 'commander';
import { composeWorker, JOBS } from '../compose.ts';
import { type Config, loadConfig } from '../config/config.ts';
import { jobsSchema } from '../jobs/queue.ts';
import { FerryError } from '../domain/ferry-error.ts';

export interface WorkerOptions {
  concurrency?: number;
}

/** How long running jobs get after SIGTERM/SIGINT before they are handed back to the queue. */
const SHUTDOWN_GRACE_MS = 15_000;

export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description('run job workers only (exports, cleanup); start as many as you like, on any machine')
    .option(
      '--concurrency <n>',
      'jobs this process runs at once (default: $FERRY_WORKER_CONCURRENCY or 2)',
      parseConcurrency,
    )
    .action(async (options: WorkerOptions) => {
      await worker(options);
    });
}

/**
 * Runs the job workers until SIGTERM/SIGINT: then stops taking jobs, gives running
 * ones the grace period to finish and hands the rest back to the queue (another
 * worker retries them), and closes the database.
 */
export async function worker(options: WorkerOptions): Promise<void> {
  const base = loadConfig();
  const config: Config = Object.freeze({
    ...base,
    jobs: Object.freeze({ ...base.jobs, concurrency: options.concurrency ?? base.jobs.concurrency }),
  });
  if (!config.databaseUrl)
    throw new FerryError(
      'invalid_parameter',
      'ferry worker needs PostgreSQL (set DATABASE_URL): the embedded database belongs to one process, ' +
        'and `ferry serve` already runs the workers in it',
      { parameter: 'DATABASE_URL' },
    );
  const ferry = await composeWorker(config);
  const { logger } = ferry;
  closeWithGrace(
    {
      delay: SHUTDOWN_GRACE_MS,
      logger: { error: (msg: unknown) => logger.error(msg) },
      onSecondSignal: (signal) => logger.error({ signal }, 'second signal: exiting immediately'),
      onTimeout: (delay) => logger.error(`running jobs did not stop within ${delay} ms: exiting`),
    },
    async ({ signal, err }) => {
      if (err) logger.error({ err }, 'stopping after an uncaught error');
      else logger.info({ signal }, 'shutting down: handing running jobs back');
      await ferry.close();
      logger.info('stopped');
    },
  );
  const database = `PostgreSQL${config.databaseSchema ? ` (schema ${config.databaseSchema})` : ''}`;
  logger.info(
    {
      pid: process.pid,
      concurrency: config.jobs.concurrency,
      queues: JOBS.map((j) => j.name),
      jobs_schema: jobsSchema(config),
    },
    'worker started',
  );
  process.stderr.write(
    `ferry: worker ${process.pid} processing jobs (${JOBS.map((j) => j.name).join(', ')}) ` +
      `with concurrency ${config.jobs.concurrency} on ${database}\n`,
  );
}

function parseConcurrency(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 64)
    throw new InvalidArgumentError(`--concurrency must be an integer from 1 to 64, got "${value}"`);
  return n;
}
