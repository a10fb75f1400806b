/**
 * Export-request latency: `POST /api/v1/exports` against `ferry serve --no-worker` running
 * in its own process (as in production), driven by 100 clients from this process, each
 * with its own keep-alive connection and its own API key (10 tenants). Measures what the
 * endpoint does on the request path: authenticate, count the rate limit, validate,
 * authorize, check the quotas, store the export, enqueue its job and audit it. No worker
 * runs, so the numbers are the API's alone.
 *
 *   npx node bench/api.ts
 *   BENCH_API_CLIENTS=100 BENCH_API_SECONDS=10 BENCH_API_RATES=250,500,1000 npx node bench/api.ts
 *
 * Two kinds of load, both with 100 clients:
 * - open loop: the clients together send a fixed number of requests per second, each
 *   client on its own schedule, whether or not earlier answers came back. Latency is
 *   measured from the moment a request was due, so a slow answer also counts against the
 *   requests queued behind it (no coordinated omission). This is the latency a caller sees
 *   at that load.
 * - closed loop: every client sends its next request as soon as the last one is answered.
 *   This finds the most requests per second the server sustains; latency is then set by
 *   the queue (Little's law: clients / throughput), not by the request's own cost.
 *
 * Prints a Markdown table: p50/p90/p99/max latency in milliseconds, and requests per second.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bindApiKeyPepper, createApiKey } from '../src/auth/keys.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { jobsSchema } from '../src/jobs/queue.ts';
import { seed } from '../src/seed/seed.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const CLIENTS = Number(process.env.BENCH_API_CLIENTS ?? '100');
const TENANTS = Number(process.env.BENCH_API_TENANTS ?? '10');
const SECONDS = Number(process.env.BENCH_API_SECONDS ?? '10');
const RATES = (process.env.BENCH_API_RATES ?? '100,250,500,750').split(',').map(Number);
const SECRET = randomBytes(32).toString('base64url');
const BODY = JSON.stringify({
  datasets: ['conversations'],
  format: 'csv',
  compression: 'gzip',
  pii: 'enhanced',
});

interface Sample {
  latencies: number[];
  statuses: Map<number, number>;
  seconds: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** `ferry serve --no-worker` in its own process; resolves once /readyz answers. */
async function startServer(env: Record<string, string>, port: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      ...(process.env.BENCH_API_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      'bin/ferry.js',
      'serve',
      '--no-worker',
      '--port',
      String(port),
    ],
    {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`ferry serve exited with ${child.exitCode}`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) return child;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('ferry serve did not become ready');
}

/** One client: its own key and one keep-alive connection (requests queue behind each other). */
interface Client {
  key: string;
  agent: http.Agent;
}

function post(port: number, client: Client, idempotency: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {
      authorization: `Bearer ${client.key}`,
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(BODY)),
    };
    if (idempotency) headers['idempotency-key'] = randomUUID();
    const req = http.request(
      { host: '127.0.0.1', port, path: '/api/v1/exports', method: 'POST', headers, agent: client.agent },
      (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
        res.once('error', reject);
      },
    );
    req.once('error', reject);
    req.end(BODY);
  });
}

async function closedLoop(port: number, clients: Client[], seconds: number, idempotency = false) {
  const sample: Sample = { latencies: [], statuses: new Map(), seconds: 0 };
  const started = performance.now();
  const until = started + seconds * 1000;
  await Promise.all(
    clients.map(async (client) => {
      while (performance.now() < until) {
        const t0 = performance.now();
        const status = await post(port, client, idempotency);
        sample.latencies.push(performance.now() - t0);
        sample.statuses.set(status, (sample.statuses.get(status) ?? 0) + 1);
      }
    }),
  );
  sample.seconds = (performance.now() - started) / 1000;
  return sample;
}

/** `rate` requests per second in all, spread evenly over the clients, each on its own schedule. */
async function openLoop(port: number, clients: Client[], seconds: number, rate: number) {
  const sample: Sample = { latencies: [], statuses: new Map(), seconds: 0 };
  const interval = (1000 * clients.length) / rate;
  const perClient = Math.max(1, Math.floor((seconds * 1000) / interval));
  const started = performance.now();
  await Promise.all(
    clients.map(async (client, i) => {
      const offset = (i * interval) / clients.length;
      const pending: Promise<void>[] = [];
      for (let n = 0; n < perClient; n++) {
        const due = started + offset + n * interval;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        pending.push(
          post(port, client, false).then((status) => {
            sample.latencies.push(performance.now() - due);
            sample.statuses.set(status, (sample.statuses.get(status) ?? 0) + 1);
          }),
        );
      }
      await Promise.all(pending);
    }),
  );
  sample.seconds = (performance.now() - started) / 1000;
  return sample;
}

function row(name: string, sample: Sample): string {
  const sorted = [...sample.latencies].sort((a, b) => a - b);
  const ms = (v: number) => v.toFixed(1);
  const statuses = [...sample.statuses].map(([s, n]) => `${s}×${n}`).join(' ');
  return (
    `| ${name} | ${sorted.length} | ${ms(percentile(sorted, 50))} | ${ms(percentile(sorted, 90))} | ` +
    `${ms(percentile(sorted, 99))} | ${ms(sorted[sorted.length - 1] ?? Number.NaN)} | ` +
    `${(sorted.length / sample.seconds).toFixed(0)} | ${statuses} |`
  );
}

const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-bench-api-'));
const schema = `ferry_bench_api_${randomBytes(4).toString('hex')}`;
const admin = postgresDatabase({ connectionString: PG_URL, max: 1 });
await admin.exec(`CREATE SCHEMA ${schema}`);
const database = postgresDatabase({ connectionString: PG_URL, schema });
// Keys are hashed with the pepper the server derives from the same FERRY_SECRET_KEY.
bindApiKeyPepper(database, () => SECRET);
let server: ChildProcess | undefined;
const rows: string[] = [];
try {
  await migrateToLatest(database.db);
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
  const clients: Client[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const { key } = await createApiKey(database, {
      tenantId: tenantIds[i % tenantIds.length]!,
      role: 'admin',
    });
    clients.push({ key, agent: new http.Agent({ keepAlive: true, maxSockets: 1 }) });
  }
  const port = await freePort();
  server = await startServer(
    {
      DATABASE_URL: PG_URL,
      DATABASE_SCHEMA: schema,
      FERRY_SECRET_KEY: SECRET,
      FERRY_DATA_DIR: dataDir,
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'warn',
    },
    port,
  );

  await closedLoop(port, clients, 3); // warm-up: connections, JIT, caches
  for (const rate of RATES)
    rows.push(row(`open loop, ${rate} req/s`, await openLoop(port, clients, SECONDS, rate)));
  rows.push(row('closed loop (saturation)', await closedLoop(port, clients, SECONDS)));
  rows.push(row('closed loop, Idempotency-Key', await closedLoop(port, clients, SECONDS, true)));
} finally {
  server?.kill('SIGTERM');
  if (server && server.exitCode === null) await new Promise((r) => server!.once('exit', r));
  await database.close();
  await admin.exec(`DROP SCHEMA ${schema} CASCADE`);
  await admin.exec(`DROP SCHEMA IF EXISTS ${jobsSchema({ databaseSchema: schema })} CASCADE`);
  await admin.close();
  rmSync(dataDir, { recursive: true, force: true });
}

process.stdout.write(
  [
    `POST /api/v1/exports on PostgreSQL, ${CLIENTS} clients (${TENANTS} tenants), ${SECONDS} s per load; ` +
      'latency in ms (goal: p99 ≤ 50 ms)',
    '',
    '| load | requests | p50 | p90 | p99 | max | req/s | statuses |',
    '|---|---:|---:|---:|---:|---:|---:|---|',
    ...rows,
    '',
  ].join('\n'),
);
