/**
 * Export-request latency: `POST /api/v1/exports` against a server listening on
 * 127.0.0.1, with 100 concurrent clients (keep-alive connections). Measures what the
 * endpoint does on the request path: authenticate, validate, authorize, check the
 * quota, insert the export, enqueue its job, count and audit. No worker runs (as with
 * `ferry serve --no-worker`), so the numbers are the API's alone.
 *
 *   npx node bench/api.ts
 *   BENCH_API_CLIENTS=100 BENCH_API_REQUESTS=30 BENCH_API_DATABASES=postgres,pglite npx node bench/api.ts
 *
 * Prints a Markdown table: p50/p90/p99/max latency in milliseconds and requests per second,
 * without and with an Idempotency-Key (a unique key per request).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { createApiKey } from '../src/auth/keys.ts';
import { loadConfig } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { pgliteDatabase } from '../src/db/pglite-database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { buildApp } from '../src/http/app.ts';
import { createJobQueue, jobsSchema } from '../src/jobs/queue.ts';
import { JOBS } from '../src/jobs/registry.ts';
import { createLogger } from '../src/lib/logger.ts';
import { seed } from '../src/seed/seed.ts';
import { createObjectStore } from '../src/store/create-object-store.ts';

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const CLIENTS = Number(process.env.BENCH_API_CLIENTS ?? '100');
const REQUESTS = Number(process.env.BENCH_API_REQUESTS ?? '30');
const DATABASES = (process.env.BENCH_API_DATABASES ?? 'postgres').split(',');
const TENANTS = Number(process.env.BENCH_API_TENANTS ?? '10');
const SECRET = randomBytes(32).toString('base64url');
const BODY = JSON.stringify({
  datasets: ['conversations'],
  format: 'csv',
  compression: 'gzip',
  pii: 'enhanced',
});

interface Result {
  database: string;
  variant: string;
  latencies: number[];
  seconds: number;
  statuses: Map<number, number>;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function open(
  kind: string,
): Promise<{ database: Database; env: Record<string, string>; drop(): Promise<void> }> {
  if (kind === 'pglite') {
    const database = await pgliteDatabase();
    await migrateToLatest(database.db);
    return { database, env: {}, drop: () => database.close() };
  }
  const schema = `ferry_bench_api_${randomBytes(4).toString('hex')}`;
  const admin = postgresDatabase({ connectionString: PG_URL, max: 1 });
  await admin.exec(`CREATE SCHEMA ${schema}`);
  const database = postgresDatabase({ connectionString: PG_URL, schema });
  await migrateToLatest(database.db);
  return {
    database,
    env: { DATABASE_URL: PG_URL, DATABASE_SCHEMA: schema },
    async drop() {
      await database.close();
      await admin.exec(`DROP SCHEMA ${schema} CASCADE`);
      await admin.exec(`DROP SCHEMA IF EXISTS ${jobsSchema({ databaseSchema: schema })} CASCADE`);
      await admin.close();
    },
  };
}

async function run(kind: string): Promise<Result[]> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-bench-api-'));
  const { database, env, drop } = await open(kind);
  const config = loadConfig({
    FERRY_DATA_DIR: dataDir,
    FERRY_SECRET_KEY: SECRET,
    LOG_LEVEL: 'silent',
    ...env,
  });
  const logger = createLogger(config);
  const summary = await seed(database, {
    tenants: TENANTS,
    conversations: 20,
    messagesPerConversation: 4,
    seed: 1,
    since: new Date(Date.now() - 30 * 86_400_000),
    until: new Date(),
    secretKey: SECRET,
  });
  const tenantIds = summary.tenants.map((t) => t.id);
  // Enterprise with room for the benchmark: no monthly cap, a high request budget.
  await database.db.updateTable('tenants').set({ plan: 'enterprise' }).where('id', 'in', tenantIds).execute();
  for (const tenantId of tenantIds) {
    await database.db
      .insertInto('settings')
      .values({
        tenant_id: tenantId,
        key: 'ferry.limits',
        value: JSON.stringify({ rate_limit_per_hour: 100_000_000, concurrent_jobs: 1_000_000 }),
      } as never)
      .execute();
  }
  const store = await createObjectStore(config);
  const queue = await createJobQueue(database, config, logger, { definitions: JOBS, supervise: false });
  const app = await buildApp({ database, config, logger, queue, store });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/api/v1/exports`;
  // One key per client, the clients spread over the tenants; and one key shared by all.
  const keys: string[] = [];
  for (let i = 0; i < CLIENTS; i++)
    keys.push(
      (await createApiKey(database, { tenantId: tenantIds[i % tenantIds.length]!, role: 'admin' })).key,
    );
  const shared = keys[0]!;

  const results: Result[] = [];
  try {
    const variants = [
      { name: 'warm-up', shared: false, idempotency: false },
      { name: `${CLIENTS} API keys, ${TENANTS} tenants`, shared: false, idempotency: false },
      { name: `${CLIENTS} API keys, ${TENANTS} tenants, Idempotency-Key`, shared: false, idempotency: true },
      { name: '1 API key shared by all clients', shared: true, idempotency: false },
    ];
    for (const variant of variants) {
      const latencies: number[] = [];
      const statuses = new Map<number, number>();
      const perClient = variant.name === 'warm-up' ? Math.max(2, Math.ceil(REQUESTS / 5)) : REQUESTS;
      const started = performance.now();
      await Promise.all(
        keys.map(async (own) => {
          const key = variant.shared ? shared : own;
          for (let i = 0; i < perClient; i++) {
            const headers: Record<string, string> = {
              authorization: `Bearer ${key}`,
              'content-type': 'application/json',
            };
            if (variant.idempotency) headers['idempotency-key'] = randomUUID();
            const t0 = performance.now();
            const res = await fetch(url, { method: 'POST', headers, body: BODY });
            await res.arrayBuffer();
            latencies.push(performance.now() - t0);
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      if (variant.name !== 'warm-up')
        results.push({ database: kind, variant: variant.name, latencies, seconds, statuses });
    }
  } finally {
    await app.close();
    await queue.stop(1_000);
    await drop();
    rmSync(dataDir, { recursive: true, force: true });
  }
  return results;
}

const rows: string[] = [];
for (const kind of DATABASES) {
  for (const r of await run(kind)) {
    const sorted = [...r.latencies].sort((a, b) => a - b);
    const ms = (v: number) => v.toFixed(1);
    const statuses = [...r.statuses].map(([s, n]) => `${s}×${n}`).join(' ');
    rows.push(
      `| ${r.database} | ${r.variant} | ${CLIENTS} | ${sorted.length} | ${ms(percentile(sorted, 50))} | ` +
        `${ms(percentile(sorted, 90))} | ${ms(percentile(sorted, 99))} | ${ms(sorted[sorted.length - 1]!)} | ` +
        `${(sorted.length / r.seconds).toFixed(0)} | ${statuses} |`,
    );
  }
}
process.stdout.write(
  [
    'POST /api/v1/exports (insert + enqueue), latency in ms (goal: p99 ≤ 50 ms at 100 clients)',
    '',
    '| database | variant | clients | requests | p50 | p90 | p99 | max | req/s | statuses |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n'),
);
