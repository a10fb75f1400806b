/**
 * Partitioned exports: one CSV export of every message of the benchmark tenant, written by
 * `ferry worker` processes through the real job path (POST /api/v1/exports, pg-boss, the
 * partitions table, the local object store), against the raw dump of the same rows.
 *
 *   BENCH_ONLY=partitions npm run bench                  # 1,000,000 messages
 *   BENCH_PARTITION_MESSAGES=10000000 npx node bench/partitions.ts
 *
 * Runs on the schema bench/export.ts seeds (`ferry_bench_<N>`). The time of an export is from
 * its request to its completion (queue pick-up, planning, partitions, assembly, commit).
 */
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createApiKey } from '../src/auth/keys.ts';
import { loadConfig } from '../src/config/config.ts';
import { createJobQueue } from '../src/jobs/queue.ts';
import { JOBS } from '../src/compose.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { buildApp } from '../src/http/app.ts';
import { createLogger } from '../src/lib/logger.ts';
import { killGroup, startWorker } from '../test/support/worker-process.ts';
import { pgFixture } from './export.ts';
import { PG_URL, rawDumpSeconds } from './raw-dump.ts';

const MESSAGES = Number(process.env.BENCH_PARTITION_MESSAGES ?? '1000000');
const OUT = path.resolve('bench/out/partitions');

interface Setup {
  name: string;
  workers: number;
  env: Record<string, string>;
}

const SETUPS: Setup[] = [
  { name: 'one stream, one worker', workers: 1, env: { FERRY_EXPORT_PARTITION_ROWS: '0' } },
  {
    name: 'two partitions, one worker writing both',
    workers: 1,
    env: { FERRY_EXPORT_PARTITIONS: '2', FERRY_EXPORT_PARTITION_CONCURRENCY: '2' },
  },
  {
    name: 'two partitions, two workers',
    workers: 2,
    env: { FERRY_EXPORT_PARTITIONS: '2', FERRY_EXPORT_PARTITION_CONCURRENCY: '1' },
  },
  {
    name: 'four partitions, two workers (two streams each)',
    workers: 2,
    env: { FERRY_EXPORT_PARTITIONS: '4', FERRY_EXPORT_PARTITION_CONCURRENCY: '2' },
  },
];

const { schema, tenant } = await pgFixture(MESSAGES);
rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
const secret = randomBytes(32).toString('base64url');
const baseEnv: Record<string, string> = {
  DATABASE_URL: PG_URL,
  DATABASE_SCHEMA: schema,
  FERRY_DATA_DIR: OUT,
  FERRY_SECRET_KEY: secret,
  FERRY_DEMO: 'off',
  FERRY_WORKER_CONCURRENCY: '1',
  LOG_LEVEL: 'warn',
  // Every export of the benchmark tenant is as large as it is: split into the most partitions allowed.
  FERRY_EXPORT_PARTITION_ROWS: String(Math.floor(MESSAGES / 8)),
};
const config = loadConfig(baseEnv);
const database = postgresDatabase({ connectionString: PG_URL, schema, max: 4 });
await database.db.updateTable('tenants').set({ plan: 'enterprise' }).where('id', '=', tenant).execute();
const logger = createLogger({ logLevel: 'silent' });
const queue = await createJobQueue(database, config, logger, { definitions: JOBS, supervise: false });
const app = await buildApp({ database, config, logger, queue });
await app.ready();
const { key } = await createApiKey(database, { tenantId: tenant, role: 'admin' });

const rows: string[] = [];
const refFile = path.join(OUT, 'reference.csv');
rawDumpSeconds(schema, tenant, 'messages', refFile); // warm the cache
for (const setup of SETUPS) {
  const raw = rawDumpSeconds(schema, tenant, 'messages', refFile);
  const workers = Array.from({ length: setup.workers }, () => startWorker({ ...baseEnv, ...setup.env }));
  // Timed from the request, with every worker already polling.
  const deadline = Date.now() + 60_000;
  while (!workers.every((w) => w.output.join('').includes('processing jobs'))) {
    if (Date.now() > deadline)
      throw new Error(`workers did not start: ${workers.flatMap((w) => w.output).join('')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const started = process.hrtime.bigint();
  const response = await app.inject({
    method: 'POST',
    url: '/api/v1/exports',
    headers: { authorization: `Bearer ${key}` },
    payload: { datasets: ['messages'], format: 'csv', pii: 'full' },
  });
  if (response.statusCode !== 202)
    throw new Error(`POST /api/v1/exports: ${response.statusCode} ${response.body}`);
  const id = (response.json() as { id: string }).id;
  let status = 'queued';
  while (!['completed', 'failed', 'cancelled'].includes(status)) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const row = await database.db
      .withTables<{ export_requests: { id: string; status: string } }>()
      .selectFrom('export_requests')
      .select('status')
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    status = row.status;
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  for (const w of workers) {
    killGroup(w, 'SIGTERM');
    await w.exited;
  }
  if (status !== 'completed')
    throw new Error(`export ${id} ${status}: ${workers.flatMap((w) => w.output).join('')}`);
  const parts = await database.db
    .withTables<{ export_partitions: { export_id: string; idx: number } }>()
    .selectFrom('export_partitions')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('export_id', '=', id)
    .executeTakeFirstOrThrow();
  rows.push(
    `| ${MESSAGES.toLocaleString('en')} | ${setup.name} | ${Number(parts.n) || 1} | ${(raw / seconds).toFixed(2)}x | ${seconds.toFixed(2)} | ${raw.toFixed(2)} |`,
  );
  process.stderr.write(`${rows.at(-1)}\n`);
}
await app.close();
await queue.stop(1_000);
await database.close();
rmSync(OUT, { recursive: true, force: true });
process.stdout.write(
  [
    '| messages | setup | partitions | ratio to raw dump | Ferry s (request to completed) | raw dump s |',
    '|---:|---|---:|---:|---:|---:|',
    ...rows,
  ].join('\n') + '\n',
);
