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
let started = process.hrtime.bigint();
const engine = await exportDataset(
  database,
  parseExportRequest({ tenantId: tenant.id, dataset: 'messages', format: 'ndjson', pii: 'full' }),
  devNull(),
);
const engineSeconds = Number(process.hrtime.bigint() - started) / 1e9;

// The paged endpoint, following the cursor to the end.
started = process.hrtime.bigint();
let rows = 0;
let pages = 0;
let cursor = '';
for (;;) {
  const url = `${base}/api/v1/export/messages?format=ndjson&include_pii=full&page_size=${PAGE_SIZE}${cursor ? `&cursor=${cursor}` : ''}`;
  const response = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  if (response.status !== 200)
    throw new Error(`page ${pages + 1}: HTTP ${response.status} ${await response.text()}`);
  const text = await response.text();
  rows += text.length ? text.split('\n').length - 1 : 0;
  pages++;
  if (response.headers.get('x-end-of-stream') === 'true') break;
  cursor = response.headers.get('x-next-cursor') ?? '';
  if (!cursor) break;
}
const pagedSeconds = Number(process.hrtime.bigint() - started) / 1e9;
await app.close();
await database.close();
rmSync(dataDir, { recursive: true, force: true });

process.stdout.write(
  [
    '| path | rows | pages | seconds | rows/s | ratio to raw dump | ratio to the engine |',
    '|---|---:|---:|---:|---:|---:|---:|',
    `| raw dump (psql \\copy … csv) | ${engine.records} | 1 | ${rawSeconds.toFixed(2)} | ${Math.round(engine.records / rawSeconds)} | 1.00x | - |`,
    `| engine (ferry export, NDJSON) | ${engine.records} | 1 | ${engineSeconds.toFixed(2)} | ${Math.round(engine.records / engineSeconds)} | ${(rawSeconds / engineSeconds).toFixed(2)}x | 1.00x |`,
    `| GET /api/v1/export/messages, pages of ${PAGE_SIZE} | ${rows} | ${pages} | ${pagedSeconds.toFixed(2)} | ${Math.round(rows / pagedSeconds)} | ${(rawSeconds / pagedSeconds).toFixed(2)}x | ${(rows / pagedSeconds / (engine.records / engineSeconds)).toFixed(2)}x |`,
  ].join('\n') + '\n',
);
