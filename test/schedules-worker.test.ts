import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import type { Config } from '../src/config/config.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import { createJobQueue, type JobQueue } from '../src/jobs/queue.ts';
import { createAdapters, JOBS } from '../src/compose.ts';
import { createLogger } from '../src/lib/logger.ts';
import { scheduleDb } from '../src/schedules/tables.ts';
import { seed } from '../src/seed/seed.ts';
import { authTestConfig, bearer } from './support/fixtures/auth.ts';
import { getRun, s3Objects, startTcpRelay, type TcpRelay } from './support/fixtures/schedules.ts';
import { until, waitForRun } from './support/wait.ts';
import { createTestDatabase, dropJobsSchema, type TestDatabase, testsDialect } from './support/databases.ts';
import { killGroup, startWorker, type WorkerProcess as Worker } from './support/worker-process.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';
import { startSftpServer, type TestSftpServer } from './support/sftp-server.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';
import { testAdapters } from './support/keyring.ts';

const SECRET = 'schedules-worker-test-secret-0123456789ab';
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

describe.skipIf(!testsDialect('postgres'))('a worker killed during a scheduled run', () => {
  let t: TestDatabase;
  let config: Config;
  let env: Record<string, string>;
  let queue: JobQueue;
  let app: FerryApp;
  let s3: TestS3Server;
  let sftp: TestSftpServer;
  let relay: TcpRelay;
  let receiver: TestWebhookReceiver;
  let tenantId: string;
  let key: string;
  const workers: Worker[] = [];

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    env = {
      ...t.env,
      FERRY_SECRET_KEY: SECRET,
      FERRY_OUTBOUND_ALLOW: '127.0.0.1',
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
      conversations: 30,
      messagesPerConversation: 4,
      seed: 23,
      since: new Date('2026-08-01T00:00:00Z'),
      until: new Date('2026-10-01T00:00:00Z'),
      secretKey: SECRET,
    });
    tenantId = summary.tenants[0]!.id;
    await t.database.db.updateTable('tenants').set({ plan: 'agency' }).where('id', '=', tenantId).execute();
    [s3, sftp, receiver] = await Promise.all([startS3Server(), startSftpServer(), startWebhookReceiver()]);
    relay = await startTcpRelay({ host: sftp.host, port: sftp.port });
    const logger = createLogger({ logLevel: 'silent' });
    // This process is an API-only server: the workers are child processes.
    const store = (await testAdapters(t.database, config)).store;
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
    await Promise.all([relay?.stop(), s3?.stop(), sftp?.stop(), receiver?.stop()]);
    await t?.drop();
    if (config) await dropJobsSchema(config);
  });

  it('is retried by another worker: each target gets each file exactly once, the checkpoint moves only then', async () => {
    const endpoint = await app.inject({
      method: 'POST',
      url: '/api/v1/webhooks',
      headers: bearer(key),
      payload: { url: receiver.url, events: ['export.completed'] },
    });
    expect(endpoint.statusCode, endpoint.body).toBe(201);
    receiver.setSecrets([endpoint.json().secret]);
    const created = await app.inject({
      method: 'POST',
      url: '/api/v1/schedules',
      headers: bearer(key),
      payload: {
        name: 'Crash-safe backup',
        frequency: { type: 'daily' },
        time: '03:00',
        timezone: 'UTC',
        datasets: [{ dataset: 'conversations' }, { dataset: 'messages' }],
        format: 'ndjson',
        compression: 'gzip',
        pii: 'full',
        targets: [
          {
            type: 's3',
            bucket: s3.bucket,
            prefix: 'crash/',
            region: s3.region,
            endpoint: s3.endpoint,
            force_path_style: true,
            access_key_id: s3.accessKeyId,
            secret_access_key: s3.secretAccessKey,
          },
          {
            type: 'sftp',
            host: '127.0.0.1',
            port: relay.port,
            username: sftp.username,
            private_key: sftp.privateKey,
            host_key: sftp.hostKeyFingerprint,
            directory: sftp.uploadDir,
          },
          { type: 'webhook', endpoint_id: endpoint.json().id },
        ],
      },
    });
    expect(created.statusCode, created.body).toBe(201);
    const scheduleId = created.json().id as string;
    expect(created.json().datasets.map((d: { mode: string }) => d.mode)).toEqual([
      'incremental',
      'incremental',
    ]);
    const checkpoints = () =>
      scheduleDb(t.database)
        .selectFrom('schedule_checkpoints')
        .select(['dataset', 'cursor'])
        .where('schedule_id', '=', scheduleId)
        .execute();
    const deliveries = (runId: string) =>
      scheduleDb(t.database)
        .selectFrom('schedule_run_deliveries')
        .select(['export_id', 'target_type', 'status'])
        .where('run_id', '=', runId)
        .execute();
    const logs = () =>
      workers
        .flatMap((w) => w.output)
        .join('')
        .slice(-4000);

    // The SFTP server hangs: the run will be stuck delivering there.
    relay.mode = 'hang';
    const queued = await app.inject({
      method: 'POST',
      url: `/api/v1/schedules/${scheduleId}/run`,
      headers: bearer(key),
    });
    expect(queued.statusCode).toBe(202);
    const runId = queued.json().id as string;

    const first = startWorker(env);
    workers.push(first);
    // Mid-run: both files made, S3 and the webhook served, the SFTP connection hanging.
    await until(
      'the first worker to be mid-delivery',
      async () => {
        const rows = await deliveries(runId);
        const delivered = rows.filter((r) => r.status === 'delivered');
        return delivered.length === 4 && relay.accepted.hang > 0 ? true : undefined;
      },
      { timeoutMs: 120_000, context: logs },
    );
    const running = await scheduleDb(t.database)
      .selectFrom('schedule_runs')
      .selectAll()
      .where('id', '=', runId)
      .executeTakeFirstOrThrow();
    expect(running.status).toBe('running');
    expect(running.attempts).toBe(1);
    killGroup(first, 'SIGKILL');
    await first.exited;

    // Killed: the run still claims to run, nothing reached SFTP, the checkpoint has not moved.
    expect(await checkpoints()).toEqual([]);
    expect(readdirSync(sftp.uploadDir)).toEqual([]);
    relay.mode = 'forward';

    const second = startWorker(env);
    workers.push(second);
    await waitForRun(t.database, runId, ['delivered'], { timeoutMs: 180_000, context: logs });
    const run = await getRun(app, key, scheduleId, runId);
    expect(run.status, JSON.stringify(run.error)).toBe('delivered');
    expect(run.attempts).toBe(2);
    expect(run.files).toHaveLength(2);

    // Exactly one successful delivery per file and target; the retry did not repeat S3 or the webhook.
    const rows = await deliveries(runId);
    const delivered = rows.filter((r) => r.status === 'delivered');
    expect(delivered).toHaveLength(6);
    for (const type of ['s3', 'sftp', 'webhook'])
      expect(new Set(delivered.filter((r) => r.target_type === type).map((r) => r.export_id)).size).toBe(2);
    expect((await s3Objects(s3, 'crash/')).map((o) => o.key)).toEqual(
      run.files.map((f) => `crash/${f.name}`).sort(),
    );
    expect(readdirSync(sftp.uploadDir).sort()).toEqual(run.files.map((f) => f.name).sort());
    const hooks = receiver.requests.map((r) => ({ body: JSON.parse(r.body), verified: r.verifiedWith }));
    expect(hooks.map((h) => h.body.export_id).sort()).toEqual(run.files.map((f) => f.export_id).sort());
    for (const hook of hooks) expect(hook.verified).toEqual([0]);

    // The files are whole and complete (a first run exports everything), and the checkpoint moved.
    for (const file of run.files) {
      const bytes = readFileSync(path.join(sftp.uploadDir, file.name));
      expect(sha256(bytes)).toBe(file.sha256);
      const dataset = file.datasets[0]!;
      const chunks: Buffer[] = [];
      await exportDataset(
        t.database,
        parseExportRequest({ tenantId, dataset, format: 'ndjson', pii: 'full' }),
        new Writable({
          write(chunk, _enc, done) {
            chunks.push(chunk as Buffer);
            done();
          },
        }),
      );
      const sorted = (text: string) => text.split('\n').filter(Boolean).sort();
      expect(sorted(gunzipSync(bytes).toString('utf8'))).toEqual(
        sorted(Buffer.concat(chunks).toString('utf8')),
      );
    }
    expect((await checkpoints()).map((c) => c.dataset).sort()).toEqual(['conversations', 'messages']);
  }, 400_000);
});
