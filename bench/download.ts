/**
 * Download throughput: a 1 GB export file served by Ferry's signed download route from
 * local disk (stored as it is, and encrypted at rest), against `cat file > /dev/null` and
 * `curl` of the same file from a minimal static Node.js server. Each is run 3 times
 * (median reported); the file is in the page cache for all of them (it was just written,
 * and `cat` reads it once before the runs). The peak RSS of the serving process is reset
 * before each run (Linux `clear_refs`) and read after it (`VmHWM`).
 *
 *   npx node bench/download.ts           # 1 GB; BENCH_DOWNLOAD_BYTES=300000000 for a quicker run
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { bindApiKeyPepper, createApiKey } from '../src/auth/keys.ts';
import { loadConfig } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { TENANT_SCOPE } from '../src/domain/export-scope.ts';
import { exportPrefix } from '../src/export-requests/export-job.ts';
import { exportJobs, tenantExports } from '../src/export-requests/repository.ts';
import { seed } from '../src/seed/seed.ts';
import { openKeyring } from '../src/crypto/open-keyring.ts';
import { createObjectStore, createPlainObjectStore } from '../src/store/create-object-store.ts';
import type { ObjectStore } from '../src/store/object-store.ts';

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const SIZE = Number(process.env.BENCH_DOWNLOAD_BYTES ?? '1000000000');
const RUNS = 3;
const BIN = path.resolve('bin/ferry.js');
const schema = `ferry_bench_download_${process.pid}`;

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

/** The file: 64 KiB blocks of varied bytes (what they are does not matter to a download). */
function content(): Readable {
  const block = randomBytes(1 << 16);
  return Readable.from(
    (function* () {
      for (let sent = 0, n = 0; sent < SIZE; sent += block.length, n++) {
        block.writeUInt32LE(n, 0);
        yield Buffer.from(block.subarray(0, Math.min(block.length, SIZE - sent)));
      }
    })(),
  );
}

/** A completed export with `source` as its one file, recorded through the export tables' own state changes. */
async function storedExport(database: Database, store: ObjectStore, tenantId: string, name: string) {
  const exportId = randomUUID();
  const attemptId = randomUUID();
  const now = new Date();
  await tenantExports(database, tenantId).insert({
    id: exportId,
    tenantId,
    actor: 'bench',
    apiKeyId: null,
    teamMemberId: null,
    config: {
      datasets: ['messages'],
      scope: TENANT_SCOPE,
      format: 'csv',
      compression: null,
      package: 'none',
      from: null,
      to: null,
      filters: {},
      columns: null,
      pii: 'full',
      timezone: null,
      options: {},
      bom: false,
      csv_guard: true,
      recipients: [],
    },
    retentionDays: 30,
    maxFileBytes: null,
    repeatOf: null,
    createdAt: now,
  });
  const jobs = exportJobs(database);
  await jobs.claim(exportId, attemptId, now);
  const key = `${exportPrefix(tenantId, exportId)}${attemptId}/${name}`;
  const pending = await store.put(key, content());
  await pending.commit();
  await jobs.toPackaging(exportId, attemptId, now);
  await jobs.complete(
    exportId,
    attemptId,
    {
      id: randomUUID(),
      name,
      storageKey: key,
      contentType: 'application/octet-stream',
      bytes: pending.bytes,
      records: 0,
      sha256: pending.sha256,
      encrypted: false,
    },
    { records: 0, estimated: null, bytes: pending.bytes, at: now },
    new Date(now.getTime() + 86_400_000),
  );
  return { exportId, key };
}

function procKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) : Number.NaN;
}

async function waitFor(url: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if ((await fetch(url).catch(() => null))?.ok) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${url} did not answer`);
}

interface Measure {
  seconds: number;
  /** Peak RSS of the serving process during the run, and its resident size before it (MiB). */
  peakMiB: number | null;
  baseMiB: number | null;
}

/** `curl` of `url` to /dev/null; the serving process's peak RSS is reset before and read after. */
function curl(url: () => Promise<string>, server: ChildProcess | null): () => Promise<Measure> {
  return async () => {
    const link = await url();
    const pid = server?.pid;
    const baseMiB = pid ? procKiB(pid, 'VmRSS') / 1024 : null;
    if (pid) writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const started = process.hrtime.bigint();
    const out = execFileSync('curl', ['-sf', '-o', '/dev/null', '-w', '%{size_download}', link], {
      encoding: 'utf8',
    });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (Number(out) !== SIZE) throw new Error(`curl got ${out} bytes of ${SIZE}`);
    return { seconds, peakMiB: pid ? procKiB(pid, 'VmHWM') / 1024 : null, baseMiB };
  };
}

/** `cat file > /dev/null`; the peak RSS is cat's own, by `/usr/bin/time`. */
function cat(file: string): () => Promise<Measure> {
  return async () => {
    const started = process.hrtime.bigint();
    const result = spawnSync('/usr/bin/time', ['-f', '%M', 'sh', '-c', `cat "${file}" > /dev/null`], {
      encoding: 'utf8',
    });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (result.status !== 0) throw new Error(`cat failed: ${result.stderr}`);
    const kib = Number(result.stderr.trim().split('\n').at(-1));
    return { seconds, peakMiB: Number.isFinite(kib) ? kib / 1024 : null, baseMiB: null };
  };
}

async function median(run: () => Promise<Measure>): Promise<Measure> {
  const results: Measure[] = [];
  for (let i = 0; i < RUNS; i++) results.push(await run());
  results.sort((a, b) => a.seconds - b.seconds);
  const peak = Math.max(...results.map((r) => r.peakMiB ?? Number.NaN));
  return { ...results[Math.floor(RUNS / 2)]!, peakMiB: Number.isNaN(peak) ? null : peak };
}

const work = mkdtempSync(path.join(tmpdir(), 'ferry-bench-download-'));
const admin = postgresDatabase({ connectionString: PG_URL, max: 1 });
await admin.exec(`CREATE SCHEMA ${schema}`);
await admin.close();
const database = postgresDatabase({ connectionString: PG_URL, schema, max: 2 });
const children: ChildProcess[] = [];
try {
  await migrateToLatest(database.db);
  const summary = await seed(database, {
    tenants: 1,
    conversations: 2,
    messagesPerConversation: 2,
    seed: 1,
    since: new Date('2026-08-01T00:00:00Z'),
    until: new Date('2026-09-01T00:00:00Z'),
  });
  const tenantId = summary.tenants[0]!.id;
  const port = await freePort();
  const env = {
    ...process.env,
    DATABASE_URL: PG_URL,
    DATABASE_SCHEMA: schema,
    FERRY_DATA_DIR: path.join(work, 'data'),
    FERRY_SECRET_KEY: randomBytes(32).toString('base64url'),
    FERRY_DEMO: 'off',
    LOG_LEVEL: 'silent',
  };
  const config = loadConfig(env);
  process.stderr.write(`writing two files of ${SIZE} bytes (as stored, and encrypted at rest)…\n`);
  const plain = await storedExport(database, createPlainObjectStore(config), tenantId, 'plain.bin');
  const { keyring } = await openKeyring(database, config);
  const encrypted = await storedExport(
    database,
    await createObjectStore(config, keyring),
    tenantId,
    'encrypted.bin',
  );
  const plainFile = path.join(config.storage.localDir, ...plain.key.split('/'));
  bindApiKeyPepper(database, () => env.FERRY_SECRET_KEY);
  const { key } = await createApiKey(database, { tenantId, role: 'admin' });

  const ferry = spawn(process.execPath, [BIN, 'serve', '--port', String(port), '--no-worker'], {
    env,
    stdio: 'ignore',
  });
  children.push(ferry);
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/healthz`);
  const staticPort = await freePort();
  const staticServer = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { createServer } from 'node:http';
       import { createReadStream, statSync } from 'node:fs';
       const file = ${JSON.stringify(plainFile)};
       createServer((req, res) => {
         res.writeHead(200, { 'content-length': statSync(file).size, 'content-type': 'application/octet-stream' });
         createReadStream(file).pipe(res);
       }).listen(${staticPort}, '127.0.0.1');`,
    ],
    { stdio: 'ignore' },
  );
  children.push(staticServer);
  await waitFor(`http://127.0.0.1:${staticPort}/`);

  const signed = (exportId: string) => async () => {
    const res = await fetch(`${base}/api/v1/exports/${exportId}/download`, {
      headers: { authorization: `Bearer ${key}` },
    });
    if (!res.ok) throw new Error(`download link: HTTP ${res.status} ${await res.text()}`);
    return ((await res.json()) as { url: string }).url;
  };

  await cat(plainFile)(); // into the page cache
  const rows: [string, Measure][] = [
    ['`cat file > /dev/null`', await median(cat(plainFile))],
    [
      '`curl` from a static Node.js server (`fs.createReadStream` piped to the response)',
      await median(curl(async () => `http://127.0.0.1:${staticPort}/`, staticServer)),
    ],
    [
      '`curl` of a Ferry signed link, file stored as it is',
      await median(curl(signed(plain.exportId), ferry)),
    ],
    [
      '`curl` of a Ferry signed link, file encrypted at rest (AES-256-GCM, 64 KiB segments)',
      await median(curl(signed(encrypted.exportId), ferry)),
    ],
  ];
  const reference = rows[0]![1].seconds;
  const mib = (n: number | null) => (n === null ? '-' : n.toFixed(0));
  process.stdout.write(
    [
      `Serving ${(SIZE / 1e9).toFixed(2)} GB from local disk (page cache), median of ${RUNS} runs.`,
      '',
      '| path | seconds | MB/s | vs cat | server peak RSS (MiB) | server RSS before (MiB) |',
      '|---|---:|---:|---:|---:|---:|',
      ...rows.map(
        ([name, m]) =>
          `| ${name} | ${m.seconds.toFixed(2)} | ${Math.round(SIZE / 1e6 / m.seconds)} | ${(reference / m.seconds).toFixed(2)}x | ${mib(m.peakMiB)} | ${mib(m.baseMiB)} |`,
      ),
    ].join('\n') + '\n',
  );
} finally {
  for (const child of children) child.kill('SIGTERM');
  await database.close();
  const cleanup = postgresDatabase({ connectionString: PG_URL, max: 1 });
  await cleanup.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await cleanup.exec(`DROP SCHEMA IF EXISTS ${schema}_pgboss CASCADE`);
  await cleanup.close();
  rmSync(work, { recursive: true, force: true });
}
