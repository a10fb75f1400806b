import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../src/config/config.ts';
import { cleanUpExports } from '../src/export-requests/cleanup.ts';
import { createAdapters, JOBS } from '../src/compose.ts';
import { createJobQueue, type JobQueue } from '../src/jobs/queue.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import { createLogger } from '../src/lib/logger.ts';
import { seed } from '../src/seed/seed.ts';
import type { ObjectStore } from '../src/store/object-store.ts';
import { createApiKey } from '../src/auth/keys.ts';
import { authTestConfig, bearer } from './support/fixtures/auth.ts';
import { type ExportJson, getExport, requestExport, SECRET } from './support/fixtures/export-jobs.ts';
import { createTestDatabase, dropJobsSchema, type TestDatabase, testsDialect } from './support/databases.ts';
import { sha256 } from './support/fixtures/streams.ts';
import { waitForExport } from './support/wait.ts';
import { killGroup, startWorker, type WorkerProcess as Worker } from './support/worker-process.ts';
import { testAdapters } from './support/keyring.ts';

interface Row {
  status: string;
  records_done: number;
  attempts: number;
}

async function exportRow(t: TestDatabase, id: string): Promise<Row> {
  return t.database.db
    .withTables<{ export_requests: { id: string } & Row }>()
    .selectFrom('export_requests')
    .select(['status', 'records_done', 'attempts'])
    .where('id', '=', id)
    .executeTakeFirstOrThrow();
}

async function objects(store: ObjectStore, prefix: string): Promise<{ key: string; bytes: number }[]> {
  const found: { key: string; bytes: number }[] = [];
  for await (const o of store.list(prefix)) found.push({ key: o.key, bytes: o.bytes });
  return found;
}

describe.skipIf(!testsDialect('postgres'))('a worker killed mid-export', () => {
  let t: TestDatabase;
  let config: Config;
  let env: Record<string, string>;
  let queue: JobQueue;
  let store: ObjectStore;
  let app: FerryApp;
  let key: string;
  let tenantId: string;
  const workers: Worker[] = [];

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    env = {
      ...t.env,
      FERRY_SECRET_KEY: SECRET,
      FERRY_JOB_HEARTBEAT_SECONDS: '10',
      FERRY_JOB_SUPERVISE_SECONDS: '2',
      FERRY_JOB_RETRY_DELAY_SECONDS: '1',
      FERRY_WORKER_CONCURRENCY: '1',
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'info',
    };
    config = authTestConfig(env);
    env.FERRY_DATA_DIR = config.dataDir;
    const summary = await seed(t.database, {
      tenants: 1,
      conversations: 3000,
      messagesPerConversation: 15,
      seed: 9,
      since: new Date('2026-06-01T00:00:00Z'),
      until: new Date('2026-10-01T00:00:00Z'),
      secretKey: SECRET,
    });
    tenantId = summary.tenants[0]!.id;
    await t.database.db.updateTable('tenants').set({ plan: 'agency' }).where('id', '=', tenantId).execute();
    const logger = createLogger({ logLevel: 'silent' });
    // This process is an API-only server (`ferry serve --no-worker`): the workers are child processes.
    store = (await testAdapters(t.database, config)).store;
    queue = await createJobQueue(t.database, config, logger, { definitions: JOBS, supervise: false });
    app = await buildApp({
      database: t.database,
      config,
      logger,
      queue,
      store,
      signer: createAdapters(config).signer,
    });
    await app.ready();
    key = (await createApiKey(t.database, { tenantId, role: 'admin' })).key;
  }, 180_000);

  afterAll(async () => {
    for (const w of workers) {
      killGroup(w, 'SIGTERM');
      await w.exited;
    }
    await app?.close();
    await queue?.stop(1_000);
    await t?.drop();
    if (config) await rm(config.dataDir, { recursive: true, force: true });
    if (config) await dropJobsSchema(config);
  });

  it('is retried by another worker: completed once, one committed file, checksum intact, no partial file left', async () => {
    const created = await requestExport(app, key, { datasets: ['messages'], format: 'xml', pii: 'complete' });
    const prefix = `exports/${tenantId}/${created.id}/`;
    const first = startWorker(env);
    workers.push(first);
    const logs = () =>
      workers
        .flatMap((w) => w.output)
        .join('')
        .slice(-4000);

    // Running, with progress written: the worker is streaming the export into a pending object.
    const running = await waitForExport(t.database, created.id, ['running'], {
      where: (e) => e.records_done > 0,
      timeoutMs: 120_000,
      context: logs,
    });
    expect(running.attempts).toBe(1);
    killGroup(first, 'SIGKILL');
    await first.exited;

    // Killed mid-write: nothing committed, the export still claims to run, a partial temp file is on disk.
    expect(await objects(store, prefix)).toEqual([]);
    const stale = await exportRow(t, created.id);
    expect(stale.status).toBe('running');
    const tmp = path.join(config.storage.localDir, '.tmp');
    expect((await readdir(tmp)).length).toBe(1);

    const second = startWorker(env);
    workers.push(second);
    await waitForExport(t.database, created.id, ['completed'], { timeoutMs: 180_000, context: logs });
    const done = await getExport(app, key, created.id);
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    expect(done.attempts).toBe(2);
    expect(done.files).toHaveLength(1);
    const file = done.files[0]!;
    expect(file.records).toBe(
      Number(
        (
          await t.database.db
            .selectFrom('messages')
            .select((eb) => eb.fn.countAll<number>().as('n'))
            .where('tenant_id', '=', tenantId)
            .executeTakeFirstOrThrow()
        ).n,
      ),
    );

    // Exactly one committed object for the export, and its bytes are the file's.
    const committed = await objects(store, prefix);
    expect(committed).toHaveLength(1);
    const link = await app.inject({
      method: 'GET',
      url: `/api/v1/exports/${created.id}/download`,
      headers: bearer(key),
    });
    const url = (link.json() as { url: string }).url;
    const body = await app.inject({ method: 'GET', url: url.slice(url.indexOf('/api/')) });
    expect(body.statusCode).toBe(200);
    expect(body.rawPayload.length).toBe(file.bytes);
    expect(sha256(body.rawPayload)).toBe(file.sha256);
    expect(body.rawPayload.subarray(0, 5).toString()).toBe('<?xml');

    // The killed worker's partial write is a stale temp file: the periodic cleanup removes it.
    const later = new Date(Date.now() + 2 * 60 * 60 * 1000);
    const cleaned = await cleanUpExports({
      database: t.database,
      store,
      logger: createLogger({ logLevel: 'silent' }),
      now: () => later,
    });
    expect(cleaned.staleTempFiles).toBe(1);
    expect(await readdir(tmp)).toEqual([]);
    expect(await objects(store, prefix)).toHaveLength(1);
    const after = (
      await app.inject({ method: 'GET', url: `/api/v1/exports/${created.id}`, headers: bearer(key) })
    ).json() as ExportJson;
    expect(after.status).toBe('completed');
  }, 400_000);
});
