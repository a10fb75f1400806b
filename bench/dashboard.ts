/**
 * Dashboard page latency: `ferry serve --no-worker` in its own process on PostgreSQL, one
 * tenant with 1M messages (125,000 conversations of 8 messages), 10,000 completed exports
 * and 50,000 audit events. One signed-in member asks for each page again and again, one
 * request at a time. The time is measured from sending the request to the last byte, so it
 * is the server-side render plus a loopback round trip.
 *
 *   npx node bench/dashboard.ts
 *   BENCH_DASHBOARD_CONVERSATIONS=20000 BENCH_DASHBOARD_REQUESTS=100 npx node bench/dashboard.ts
 *
 * Prints a Markdown table: p50/p95/max in milliseconds per page (goal: p95 < 100 ms).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { migrateToLatest } from '../src/db/migrate.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { jobsSchema } from '../src/jobs/queue.ts';
import { seed } from '../src/seed/seed.ts';
import { firstAdmin, issueToken } from '../src/web/accounts.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const CONVERSATIONS = Number(process.env.BENCH_DASHBOARD_CONVERSATIONS ?? '125000');
const EXPORTS = Number(process.env.BENCH_DASHBOARD_EXPORTS ?? '10000');
const AUDIT = Number(process.env.BENCH_DASHBOARD_AUDIT ?? '50000');
const REQUESTS = Number(process.env.BENCH_DASHBOARD_REQUESTS ?? '200');
const SECRET = randomBytes(32).toString('base64url');

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

const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-bench-dashboard-'));
const schema = `ferry_bench_dash_${randomBytes(4).toString('hex')}`;
const admin = postgresDatabase({ connectionString: PG_URL, max: 1 });
await admin.exec(`CREATE SCHEMA ${schema}`);
const database = postgresDatabase({ connectionString: PG_URL, schema });
let server: ChildProcess | undefined;
const rows: string[] = [];
let messages = 0;
try {
  await migrateToLatest(database.db);
  const summary = await seed(database, {
    tenants: 1,
    conversations: CONVERSATIONS,
    messagesPerConversation: 8,
    seed: 1,
    since: new Date(Date.now() - 365 * 86_400_000),
    until: new Date(),
    secretKey: SECRET,
  });
  const tenant = summary.tenants[0]!;
  messages = Number(
    (await sql<{ n: string }>`SELECT count(*) AS n FROM messages`.execute(database.db)).rows[0]!.n,
  );
  const member = (await firstAdmin(database, tenant.id))!;
  // 10,000 completed exports with a file each, spread over the last year, and the audit trail.
  const config = JSON.stringify({
    datasets: ['conversations'],
    scope: { kind: 'tenant' },
    format: 'csv',
    compression: 'gzip',
    package: 'none',
    from: null,
    to: null,
    filters: {},
    columns: null,
    pii: 'enhanced',
    timezone: null,
    options: {},
    bom: false,
    csv_guard: true,
    recipients: [],
  });
  await sql`INSERT INTO export_requests (id, tenant_id, actor, team_member_id, status, kind, datasets, config,
      retention_days, records_done, records_estimated, bytes_done, created_at, started_at, finished_at, expires_at)
    SELECT gen_random_uuid(), ${tenant.id}, ${`team_member:${member.id}`}, ${member.id}, 'completed', 'dataset',
      ARRAY['conversations'], ${config}::jsonb, 90, 1000 + i, 1000 + i, 400000 + i,
      now() - (i || ' minutes')::interval, now() - (i || ' minutes')::interval,
      now() - (i || ' minutes')::interval + interval '3 seconds', now() + interval '90 days'
    FROM generate_series(1, ${EXPORTS}) AS i`.execute(database.db);
  await sql`INSERT INTO export_files (id, export_id, tenant_id, name, storage_key, content_type, bytes, records, sha256)
    SELECT gen_random_uuid(), e.id, e.tenant_id, 'conversations.csv.gz', 'bench/' || e.id, 'application/gzip',
      e.bytes_done, e.records_done, repeat('a', 64)
    FROM export_requests e`.execute(database.db);
  await sql`INSERT INTO audit_events (id, tenant_id, occurred_at, actor, action, data_type, record_count, success)
    SELECT gen_random_uuid(), ${tenant.id}, now() - (i || ' seconds')::interval, ${`team_member:${member.id}`},
      CASE WHEN i % 3 = 0 THEN 'export.downloaded' ELSE 'export.requested' END, 'conversations', i, true
    FROM generate_series(1, ${AUDIT}) AS i`.execute(database.db);
  await sql`ANALYZE`.execute(database.db);
  const token = await issueToken(
    database,
    { tenantId: tenant.id, memberId: member.id },
    'sign_in',
    new Date(),
  );
  const exportId = (
    await sql<{ id: string }>`SELECT id FROM export_requests ORDER BY created_at DESC LIMIT 1`.execute(
      database.db,
    )
  ).rows[0]!.id;

  const port = await freePort();
  server = spawn(process.execPath, ['bin/ferry.js', 'serve', '--no-worker', '--port', String(port)], {
    cwd: ROOT,
    env: {
      ...process.env,
      DATABASE_URL: PG_URL,
      DATABASE_SCHEMA: schema,
      FERRY_SECRET_KEY: SECRET,
      FERRY_DATA_DIR: dataDir,
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (
      await fetch(`${base}/readyz`)
        .then((r) => r.ok)
        .catch(() => false)
    )
      break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const signIn = await fetch(`${base}/signin/link/${token}`, { redirect: 'manual' });
  const cookie = signIn.headers
    .getSetCookie()
    .map((c) => c.split(';')[0])
    .join('; ');
  const second = await fetch(`${base}/app/exports`, { headers: { cookie } });
  const cursor = /href="\/app\/exports\?cursor=([^"]+)"/.exec(await second.text())?.[1] ?? '';
  const pages = [
    '/app/exports',
    `/app/exports?cursor=${cursor}`,
    '/app/exports?status=completed&dataset=conversations',
    `/app/exports/${exportId}`,
    '/app/export',
    '/app/schedules',
    '/app/webhooks',
    '/app/usage',
    '/app/keys',
    '/app/audit',
    '/app/privacy',
    '/app/account',
    `/privacy/${tenant.slug}`,
  ];
  for (const page of pages) {
    const times: number[] = [];
    let status = 0;
    for (let i = 0; i < REQUESTS + 10; i++) {
      const t0 = performance.now();
      const res = await fetch(`${base}${page}`, { headers: { cookie }, redirect: 'manual' });
      await res.arrayBuffer();
      status = res.status;
      if (i >= 10) times.push(performance.now() - t0); // the first ten warm up
    }
    times.sort((a, b) => a - b);
    const ms = (v: number) => v.toFixed(1);
    rows.push(
      `| \`${page.replace(/cursor=[^&]+/, 'cursor=…').replace(/[0-9a-f-]{36}/, '{id}')}\` | ${status} | ${ms(percentile(times, 50))} | ${ms(percentile(times, 95))} | ${ms(times.at(-1)!)} |`,
    );
  }
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
    `Dashboard pages on PostgreSQL: one tenant with ${messages.toLocaleString('en-US')} messages, ` +
      `${EXPORTS.toLocaleString('en-US')} exports and ${AUDIT.toLocaleString('en-US')} audit events; ` +
      `${REQUESTS} sequential requests per page; ms (goal: p95 < 100 ms)`,
    '',
    '| page | status | p50 | p95 | max |',
    '|---|---:|---:|---:|---:|',
    ...rows,
    '',
  ].join('\n'),
);
