import { rm } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acceptedExportRequest } from '../src/collect/request.ts';
import { createAdapters, JOBS } from '../src/compose.ts';
import type { Config } from '../src/config/config.ts';
import { anonymizeKeyOf } from '../src/export-requests/partitions.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import { createJobQueue, type JobQueue } from '../src/jobs/queue.ts';
import { createLogger } from '../src/lib/logger.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { seed } from '../src/seed/seed.ts';
import type { ObjectStore } from '../src/store/object-store.ts';
import { createApiKey } from '../src/auth/keys.ts';
import type { ExportConfig } from '../src/domain/export-config.ts';
import { authTestConfig } from './support/fixtures/auth.ts';
import { getExport, requestExport, SECRET } from './support/fixtures/export-jobs.ts';
import { sha256 } from './support/fixtures/streams.ts';
import { createTestDatabase, dropJobsSchema, type TestDatabase, testsDialect } from './support/databases.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';
import { until, waitForExport } from './support/wait.ts';
import { killGroup, startWorker, type WorkerProcess } from './support/worker-process.ts';
import { testAdapters } from './support/keyring.ts';

interface Partition {
  idx: number;
  attempt_id: string;
  status: string;
  claimed_by: string | null;
  coordinator: string;
  attempts: number;
  records: number | null;
}

async function partitions(t: TestDatabase, exportId: string): Promise<Partition[]> {
  return t.database.db
    .withTables<{ export_partitions: Partition & { export_id: string } }>()
    .selectFrom('export_partitions')
    .select(['idx', 'attempt_id', 'status', 'claimed_by', 'coordinator', 'attempts', 'records'])
    .where('export_id', '=', exportId)
    .orderBy('idx')
    .execute();
}

async function objects(store: ObjectStore, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for await (const o of store.list(prefix)) found.push(o.key);
  return found;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The same export as one stream, in this process: the bytes a partitioned export must equal. */
async function singleStream(
  t: TestDatabase,
  tenantId: string,
  config: ExportConfig,
  anonymizeKey?: string,
): Promise<Buffer> {
  const out = new PassThrough();
  const [bytes] = await Promise.all([
    readAll(out),
    exportDataset(
      t.database,
      acceptedExportRequest(tenantId, config),
      out,
      anonymizeKey ? { anonymizeKey } : {},
    ),
  ]);
  return bytes;
}

async function exportConfig(t: TestDatabase, exportId: string): Promise<ExportConfig> {
  const row = await t.database.db
    .withTables<{ export_requests: { id: string; config: ExportConfig } }>()
    .selectFrom('export_requests')
    .select('config')
    .where('id', '=', exportId)
    .executeTakeFirstOrThrow();
  return row.config;
}

for (const storage of ['local', 's3'] as const) {
  describe.skipIf(!testsDialect('postgres'))(`partitioned exports across two workers (${storage})`, () => {
    let t: TestDatabase;
    let s3: TestS3Server | undefined;
    let config: Config;
    let env: Record<string, string>;
    let queue: JobQueue;
    let store: ObjectStore;
    let app: FerryApp;
    let key: string;
    let tenantId: string;
    let messages: number;
    const workers: WorkerProcess[] = [];
    const logs = () =>
      workers
        .flatMap((w) => w.output)
        .join('')
        .slice(-4000);

    beforeAll(async () => {
      t = await createTestDatabase('postgres');
      s3 = storage === 's3' ? await startS3Server() : undefined;
      env = {
        ...t.env,
        FERRY_SECRET_KEY: SECRET,
        FERRY_JOB_HEARTBEAT_SECONDS: '10',
        FERRY_JOB_SUPERVISE_SECONDS: '2',
        FERRY_JOB_RETRY_DELAY_SECONDS: '1',
        FERRY_WORKER_CONCURRENCY: '1',
        FERRY_EXPORT_PARTITION_ROWS: '12000',
        FERRY_EXPORT_PARTITIONS: '4',
        // The coordinator writes one partition at a time, so the helping worker (which picks its
        // job up within a poll, 1 s) finds partitions left to take even when they are quick.
        FERRY_EXPORT_PARTITION_CONCURRENCY: '1',
        FERRY_EXPORT_PARTITION_LEASE_SECONDS: '2',
        FERRY_DEMO: 'off',
        LOG_LEVEL: 'info',
        ...(s3
          ? {
              FERRY_STORAGE: 's3',
              FERRY_S3_BUCKET: s3.bucket,
              FERRY_S3_ENDPOINT: s3.endpoint,
              FERRY_S3_REGION: s3.region,
              FERRY_S3_ACCESS_KEY_ID: s3.accessKeyId,
              FERRY_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
            }
          : {}),
      };
      config = authTestConfig(env);
      env.FERRY_DATA_DIR = config.dataDir;
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 4000,
        messagesPerConversation: 15,
        seed: 16,
        since: new Date('2026-06-01T00:00:00Z'),
        until: new Date('2026-10-01T00:00:00Z'),
        secretKey: SECRET,
      });
      tenantId = summary.tenants[0]!.id;
      await t.database.exec('ANALYZE');
      await t.database.db.updateTable('tenants').set({ plan: 'agency' }).where('id', '=', tenantId).execute();
      messages = Number(
        (
          await t.database.db
            .selectFrom('messages')
            .select((eb) => eb.fn.countAll<number>().as('n'))
            .where('tenant_id', '=', tenantId)
            .executeTakeFirstOrThrow()
        ).n,
      );
      const logger = createLogger({ logLevel: 'silent' });
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
      workers.push(startWorker(env), startWorker(env));
    }, 240_000);

    afterAll(async () => {
      for (const w of workers) {
        killGroup(w, 'SIGTERM');
        await w.exited;
      }
      await app?.close();
      await queue?.stop(1_000);
      await t?.drop();
      await s3?.stop();
      if (config) await rm(config.dataDir, { recursive: true, force: true });
      if (config) await dropJobsSchema(config);
    });

    it('writes a CSV in key-range partitions whose file is byte for byte the single-stream export', async () => {
      const created = await requestExport(app, key, { datasets: ['messages'], format: 'csv', pii: 'full' });
      await waitForExport(t.database, created.id, ['completed', 'failed'], {
        timeoutMs: 180_000,
        context: logs,
      });
      const done = await getExport(app, key, created.id);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      const parts = await partitions(t, created.id);
      expect(parts.map((p) => p.idx)).toEqual([0, 1, 2, 3]);
      expect(parts.every((p) => p.status === 'done')).toBe(true);
      // Every row in exactly one partition.
      expect(parts.reduce((sum, p) => sum + Number(p.records), 0)).toBe(messages);
      expect(parts.every((p) => Number(p.records) > 0)).toBe(true);

      const file = done.files[0]!;
      expect(file.records).toBe(messages);
      const prefix = `exports/${tenantId}/${created.id}/`;
      // The parts are gone; the export's one file is left.
      const keys = await objects(store, prefix);
      expect(keys).toHaveLength(1);
      const bytes = await readAll(await store.get(keys[0]!));
      expect(bytes.length).toBe(file.bytes);
      expect(sha256(bytes)).toBe(file.sha256);
      const expected = await singleStream(t, tenantId, await exportConfig(t, created.id));
      expect(bytes.length).toBe(expected.length);
      expect(sha256(bytes)).toBe(sha256(expected));
    }, 240_000);

    it('writes gzip NDJSON as one member per partition that decompresses to the single-stream export', async () => {
      const created = await requestExport(app, key, {
        datasets: ['messages'],
        format: 'ndjson',
        compression: 'gzip',
        pii: 'full',
      });
      await waitForExport(t.database, created.id, ['completed', 'failed'], {
        timeoutMs: 180_000,
        context: logs,
      });
      const done = await getExport(app, key, created.id);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      expect((await partitions(t, created.id)).length).toBe(4);
      const keys = await objects(store, `exports/${tenantId}/${created.id}/`);
      const bytes = await readAll(await store.get(keys[0]!));
      expect(sha256(bytes)).toBe(done.files[0]!.sha256);
      const expected = gunzipSync(await singleStream(t, tenantId, await exportConfig(t, created.id)));
      expect(gunzipSync(bytes).equals(expected)).toBe(true);
    }, 240_000);

    it.runIf(storage === 'local')(
      'a partition whose worker is killed is written again, alone, and the file is still exact',
      async () => {
        // Anonymized: slower partitions, so one is still being written when its worker is killed.
        // Which worker takes which partition is up to the queue: an export whose partitions the
        // coordinator's process wrote alone is left to finish, and another is asked for.
        let created: { id: string } | undefined;
        let victim: Partition | null = null;
        for (let tries = 0; !victim && tries < 5; tries++) {
          const exportId = (
            await requestExport(app, key, { datasets: ['messages'], format: 'csv', pii: 'complete' })
          ).id;
          created = { id: exportId };
          victim = await until(
            'a partition taken by the helping worker, or the export finished without one',
            async () => {
              const parts = await partitions(t, exportId);
              const taken = parts.find((p) => p.status === 'running' && p.claimed_by !== p.coordinator);
              if (taken) return taken;
              const state = (await getExport(app, key, exportId)).status;
              return state === 'completed' || state === 'failed' ? null : undefined;
            },
            { timeoutMs: 120_000, last: logs },
          );
        }
        if (!victim || !created) throw new Error('the helping worker took no partition in five exports');
        const pid = Number(victim.claimed_by!.split(':').at(-1));
        process.kill(pid, 'SIGKILL');
        await waitForExport(t.database, created.id, ['completed', 'failed'], {
          timeoutMs: 180_000,
          context: logs,
        });
        const done = await getExport(app, key, created.id);
        expect(done.status, JSON.stringify(done.error)).toBe('completed');
        expect(done.attempts).toBe(1);
        const parts = await partitions(t, created.id);
        const retried = parts.find((p) => p.idx === victim.idx)!;
        expect(retried.status).toBe('done');
        expect(retried.attempts).toBe(2);
        expect(retried.claimed_by).not.toBe(victim.claimed_by);
        // Only that partition was written twice.
        for (const p of parts.filter((x) => x.idx !== victim.idx)) expect(p.attempts).toBe(1);
        const keys = await objects(store, `exports/${tenantId}/${created.id}/`);
        expect(keys).toHaveLength(1);
        const bytes = await readAll(await store.get(keys[0]!));
        expect(sha256(bytes)).toBe(done.files[0]!.sha256);
        const expected = await singleStream(
          t,
          tenantId,
          await exportConfig(t, created.id),
          anonymizeKeyOf(config, created.id, retried.attempt_id),
        );
        expect(sha256(bytes)).toBe(sha256(expected));
      },
      300_000,
    );
  });
}
