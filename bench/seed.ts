/**
 * Seed benchmark: `npx tsx bench/seed.ts [--postgres N] [--pglite N] [--url URL]`.
 * Seeds about N messages (default 1,000,000 into a fresh schema of PostgreSQL and
 * 100,000 into in-memory PGlite; 0 skips one) and prints messages/second as a JSON
 * line and a readable line per database. Env: FERRY_BENCH_SEED_POSTGRES,
 * FERRY_BENCH_SEED_PGLITE, FERRY_BENCH_DATABASE_URL.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { Database } from '../src/db/database.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { pgliteDatabase } from '../src/db/pglite-database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { type SeedProgress, seed } from '../src/seed/seed.ts';

const { values } = parseArgs({
  options: {
    postgres: { type: 'string' },
    pglite: { type: 'string' },
    url: { type: 'string' },
    tenants: { type: 'string' },
  },
});
const env = process.env;
const count = (flag: string | undefined, variable: string | undefined, fallback: number) => {
  const n = Number(flag ?? variable ?? fallback);
  if (!Number.isInteger(n) || n < 0)
    throw new Error(`message count must be a non-negative integer, got ${flag ?? variable}`);
  return n;
};
const url = values.url ?? env.FERRY_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const tenants = Number(values.tenants ?? 4);
const MEAN = 8;

interface Result {
  bench: 'seed';
  database: 'postgres' | 'pglite';
  messages: number;
  conversations: number;
  rows: number;
  seconds: number;
  messages_per_second: number;
  message_phase_seconds: number;
  phases: Record<string, number>;
  /** CPU seconds used by this process per phase (the rest of the wall time is the database). */
  node_cpu_seconds: Record<string, number>;
  peak_rss_mb: number;
  peak_heap_mb: number;
}

async function run(kind: 'postgres' | 'pglite', messages: number): Promise<Result> {
  let database: Database;
  let cleanup = async () => {};
  if (kind === 'pglite') {
    database = await pgliteDatabase();
  } else {
    const schema = `ferry_bench_${randomBytes(4).toString('hex')}`;
    const admin = postgresDatabase({ connectionString: url, max: 1 });
    await admin.exec(`CREATE SCHEMA ${schema}`);
    await admin.close();
    database = postgresDatabase({ connectionString: url, schema, max: 4 });
    cleanup = async () => {
      const drop = postgresDatabase({ connectionString: url, max: 1 });
      await drop.exec(`DROP SCHEMA ${schema} CASCADE`);
      await drop.close();
    };
  }
  try {
    await migrateToLatest(database.db);
    const conversations = Math.max(1, Math.round(messages / (tenants * MEAN)));
    const phases: Record<string, number> = {};
    const cpu: Record<string, number> = {};
    const cpuNow = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    };
    let phase = '';
    let phaseStart = 0;
    let phaseCpu = 0;
    let peak = process.memoryUsage().rss;
    let peakHeap = process.memoryUsage().heapUsed;
    const started = performance.now();
    const onProgress = (p: SeedProgress) => {
      const memory = process.memoryUsage();
      peak = Math.max(peak, memory.rss);
      peakHeap = Math.max(peakHeap, memory.heapUsed);
      if (p.phase === phase) return;
      const now = performance.now();
      if (phase) {
        phases[phase] = (now - phaseStart) / 1000;
        cpu[phase] = cpuNow() - phaseCpu;
      }
      phase = p.phase;
      phaseStart = now;
      phaseCpu = cpuNow();
    };
    const summary = await seed(
      database,
      {
        tenants,
        conversations,
        messagesPerConversation: MEAN,
        seed: 42,
        since: new Date(Date.UTC(2025, 0, 1)),
        until: new Date(Date.UTC(2025, 3, 1)),
        secretKey: 'bench-secret-key-0123456789abcdefghij',
      },
      onProgress,
    );
    const seconds = (performance.now() - started) / 1000;
    const done = summary.counts['messages'] ?? 0;
    return {
      bench: 'seed',
      database: kind,
      messages: done,
      conversations: summary.counts['conversations'] ?? 0,
      rows: Object.values(summary.counts).reduce((s, n) => s + n, 0),
      seconds: Math.round(seconds * 100) / 100,
      messages_per_second: Math.round(done / seconds),
      message_phase_seconds: Math.round((phases['messages'] ?? 0) * 100) / 100,
      phases: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, Math.round(v * 100) / 100])),
      node_cpu_seconds: Object.fromEntries(
        Object.entries(cpu).map(([k, v]) => [k, Math.round(v * 100) / 100]),
      ),
      peak_rss_mb: Math.round(peak / 1048576),
      peak_heap_mb: Math.round(peakHeap / 1048576),
    };
  } finally {
    await database.close();
    await cleanup();
  }
}

const plan: ['postgres' | 'pglite', number][] = [
  ['postgres', count(values.postgres, env.FERRY_BENCH_SEED_POSTGRES, 1_000_000)],
  ['pglite', count(values.pglite, env.FERRY_BENCH_SEED_PGLITE, 100_000)],
];
for (const [kind, messages] of plan) {
  if (messages === 0) continue;
  const r = await run(kind, messages);
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.stdout.write(
    `seed ${kind}: ${r.messages.toLocaleString('en')} messages (${r.rows.toLocaleString('en')} rows) in ${r.seconds} s = ` +
      `${r.messages_per_second.toLocaleString('en')} messages/s (messages phase ${r.message_phase_seconds} s, peak RSS ${r.peak_rss_mb} MB)\n`,
  );
}
