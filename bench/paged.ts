/**
 * Paged-endpoint throughput: `GET /api/v1/export/messages` walked page by page with the
 * cursor, against the raw dump of the same rows (bench/raw-dump.ts) and the CLI engine's
 * export of them (`exportDataset`), all on the seeded benchmark schema of bench/export.ts
 * (run that first, or set BENCH_PAGED_MESSAGES to a size it has seeded).
 *
 *   npx node bench/paged.ts            # 1,000,000 messages, pages of 10,000
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { createApiKey } from '../src/auth/keys.ts';
import { loadConfig } from '../src/config/config.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { buildApp } from '../src/http/app.ts';
import { createLogger } from '../src/lib/logger.ts';
import { rawDumpSeconds } from './raw-dump.ts';

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const MESSAGES = Number(process.env.BENCH_PAGED_MESSAGES ?? '1000000');
const PAGE_SIZE = Number(process.env.BENCH_PAGED_PAGE_SIZE ?? '10000');
const schema = `ferry_bench_${MESSAGES}`;

const database = postgresDatabase({ connectionString: PG_URL, schema, max: 4 });
const tenant = await database.db.selectFrom('tenants').select(['id', 'plan']).executeTakeFirst();
if (!tenant)
  throw new Error(`schema ${schema} has no data: run BENCH_MESSAGES=${MESSAGES} npm run bench first`);
// The whole history, whatever the plan's window.
await database.db.updateTable('tenants').set({ plan: 'enterprise' }).where('id', '=', tenant.id).execute();

const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-bench-paged-'));
const config = loadConfig({
  FERRY_DATA_DIR: dataDir,
  FERRY_SECRET_KEY: randomBytes(32).toString('base64url'),
  LOG_LEVEL: 'silent',
  FERRY_ENTERPRISE_RATE_LIMIT: '1000000',
});
const app = await buildApp({ database, config, logger: createLogger(config) });
await app.listen({ host: '127.0.0.1', port: 0 });
const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
const { key } = await createApiKey(database, { tenantId: tenant.id, role: 'admin' });

function devNull(): Writable {
  return new Writable({ write: (_c, _e, done) => done() });
}

// The raw dump of the same rows: the ceiling.
const refFile = path.join(dataDir, 'reference.csv');
rawDumpSeconds(schema, tenant.id, 'messages', refFile); // warm the cache
const rawSeconds = rawDumpSeconds(schema, tenant.id, 'messages', refFile);
rmSync(refFile, { force: true });

// The engine, as `ferry export` runs it.
const started = process.hrtime.bigint();
const engine = await exportDataset(
  database,
  parseExportRequest({ tenantId: tenant.id, dataset: 'messages', format: 'ndjson', pii: 'full' }),
  devNull(),
);
const engineSeconds = Number(process.hrtime.bigint() - started) / 1e9;

/** Newlines in a response body, counted on its bytes (the client does no more work than that). */
async function countLines(body: ReadableStream<Uint8Array> | null): Promise<number> {
  let lines = 0;
  if (!body) return 0;
  for await (const chunk of body) {
    for (let at = chunk.indexOf(10); at !== -1; at = chunk.indexOf(10, at + 1)) lines++;
  }
  return lines;
}

function requestPage(cursor: string): Promise<Response> {
  const url = `${base}/api/v1/export/messages?format=ndjson&include_pii=full&page_size=${PAGE_SIZE}${cursor ? `&cursor=${cursor}` : ''}`;
  return fetch(url, { headers: { authorization: `Bearer ${key}` } });
}

/**
 * The paged endpoint, following the cursor to the end. With `ahead`, the next page is asked for
 * as soon as a response's headers arrive (`X-Next-Cursor` comes before the body), so the
 * server plans and starts the next page while the client reads this one: two requests in flight.
 */
async function walk(ahead: boolean): Promise<{ rows: number; pages: number; seconds: number }> {
  const began = process.hrtime.bigint();
  let rows = 0;
  let pages = 0;
  let pending = requestPage('');
  for (;;) {
    const response = await pending;
    if (response.status !== 200)
      throw new Error(`page ${pages + 1}: HTTP ${response.status} ${await response.text()}`);
    const end = response.headers.get('x-end-of-stream') === 'true';
    const next = response.headers.get('x-next-cursor') ?? '';
    if (ahead && !end && next) pending = requestPage(next);
    rows += await countLines(response.body);
    pages++;
    if (end || !next) break;
    if (!ahead) pending = requestPage(next);
  }
  return { rows, pages, seconds: Number(process.hrtime.bigint() - began) / 1e9 };
}

const sequential = await walk(false);
const ahead = await walk(true);
await app.close();
await database.close();
rmSync(dataDir, { recursive: true, force: true });

process.stdout.write(
  [
    '| path | rows | pages | seconds | rows/s | ratio to raw dump | ratio to the engine |',
    '|---|---:|---:|---:|---:|---:|---:|',
    `| raw dump (psql \\copy … csv) | ${engine.records} | 1 | ${rawSeconds.toFixed(2)} | ${Math.round(engine.records / rawSeconds)} | 1.00x | - |`,
    `| engine (ferry export, NDJSON) | ${engine.records} | 1 | ${engineSeconds.toFixed(2)} | ${Math.round(engine.records / engineSeconds)} | ${(rawSeconds / engineSeconds).toFixed(2)}x | 1.00x |`,
    ...[
      ['one page after another', sequential],
      ['next page asked for on the headers', ahead],
    ].map(([how, w]) => {
      const { rows, pages, seconds } = w as { rows: number; pages: number; seconds: number };
      return `| GET /api/v1/export/messages, pages of ${PAGE_SIZE}, ${how as string} | ${rows} | ${pages} | ${seconds.toFixed(2)} | ${Math.round(rows / seconds)} | ${(rawSeconds / seconds).toFixed(2)}x | ${(rows / seconds / (engine.records / engineSeconds)).toFixed(2)}x |`;
    }),
  ].join('\n') + '\n',
);
