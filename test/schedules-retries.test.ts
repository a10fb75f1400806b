import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import type { Config } from '../src/config/config.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { createJobQueue, type JobQueue } from '../src/jobs/queue.ts';
import { createAdapters, JOBS } from '../src/compose.ts';
import { startWorkers } from '../src/jobs/workers.ts';
import { createLogger } from '../src/lib/logger.ts';
import { SCHEDULE_JOBS, SCHEDULE_RUN_QUEUE, scheduleJobs } from '../src/schedules/jobs.ts';
import type { RunStatus } from '../src/domain/schedule-state.ts';
import type { RunView } from '../src/schedules/presenter.ts';
import { scheduleDb } from '../src/schedules/tables.ts';
import { seed } from '../src/seed/seed.ts';
import { WEBHOOK_JOBS, webhookJobs } from '../src/webhooks/jobs.ts';
import { webhookDb } from '../src/webhooks/tables.ts';
import { authTestConfig, bearer } from './support/fixtures/auth.ts';
import { getRun, s3Objects } from './support/fixtures/schedules.ts';
import { settle, waitForRun } from './support/wait.ts';
import { createTestDatabase, DIALECTS, dropJobsSchema, type TestDatabase } from './support/databases.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';
import { startSftpServer, type TestSftpServer } from './support/sftp-server.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';
import { testAdapters } from './support/keyring.ts';

const SECRET = 'schedules-retries-test-secret-0123456789';
/** The webhook retry schedule, shortened for the test (the documented one starts at 5 s). */
const WEBHOOK_DELAYS = [300, 600, 900, 1_200, 1_500, 1_800, 2_100];
/** The documented jitter: each delay is at least 90 % of its base. */
const JITTER = 0.1;
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Every file under `dir`, recursively, as paths relative to it. */
function walk(dir: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? walk(path.join(dir, entry.name), `${prefix}${entry.name}/`)
      : [`${prefix}${entry.name}`],
  );
}

for (const dialect of DIALECTS) {
  describe(`retried deliveries of scheduled runs on ${dialect}`, () => {
    let t: TestDatabase;
    let config: Config;
    let queue: JobQueue;
    let app: FerryApp;
    let s3: TestS3Server;
    let sftp: TestSftpServer;
    let receiver: TestWebhookReceiver;
    let tenantId: string;
    let key: string;
    let endpointId: string;
    /** The workers' clock runs this far ahead of the real one. */
    let offsetMs = 0;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 6,
        messagesPerConversation: 2,
        seed: 29,
        since: new Date('2026-09-01T00:00:00Z'),
        until: new Date('2026-10-01T00:00:00Z'),
        secretKey: SECRET,
      });
      tenantId = summary.tenants[0]!.id;
      await t.database.db.updateTable('tenants').set({ plan: 'agency' }).where('id', '=', tenantId).execute();
      [s3, sftp, receiver] = await Promise.all([startS3Server(), startSftpServer(), startWebhookReceiver()]);
      config = authTestConfig({
        FERRY_SECRET_KEY: SECRET,
        FERRY_OUTBOUND_ALLOW: '127.0.0.1',
        FERRY_JOB_HEARTBEAT_SECONDS: '10',
        FERRY_JOB_SUPERVISE_SECONDS: '2',
        FERRY_JOB_RETRY_DELAY_SECONDS: '1',
        ...t.env,
      });
      const logger = createLogger({ logLevel: 'silent' });
      const { store, keyring, secrets } = await testAdapters(t.database, config);
      queue = await createJobQueue(t.database, config, logger, { definitions: JOBS, supervise: true });
      const adapters = createAdapters(config);
      app = await buildApp({
        database: t.database,
        config,
        logger,
        queue,
        store,
        signer: adapters.signer,
        secrets,
      });
      await app.ready();
      // The real jobs, with the webhook schedule and the timeouts shortened alike for the
      // run (which makes a message's first attempt) and the outbox (which makes its retries).
      const definitions = [
        ...JOBS.filter((d) => !SCHEDULE_JOBS.includes(d) && !WEBHOOK_JOBS.includes(d)),
        ...webhookJobs({ schedule: WEBHOOK_DELAYS, timeoutMs: 2_000 }),
        ...scheduleJobs({
          deliveryRetryDelays: [50, 50],
          deliveryTimeoutMs: 2_000,
          webhookRetryDelays: WEBHOOK_DELAYS,
        }),
      ];
      await startWorkers(
        queue,
        {
          database: t.database,
          config,
          logger,
          store,
          queue,
          now: () => new Date(Date.now() + offsetMs),
          keyring,
          secrets,
          ...adapters,
        },
        definitions,
      );
      key = (await createApiKey(t.database, { tenantId, role: 'admin' })).key;
      // Subscribed to export.completed too: as a target it must still get each file once.
      const endpoint = await app.inject({
        method: 'POST',
        url: '/api/v1/webhooks',
        headers: bearer(key),
        payload: { url: receiver.url, events: ['export.completed'] },
      });
      expect(endpoint.statusCode, endpoint.body).toBe(201);
      endpointId = endpoint.json().id;
      receiver.setSecrets([endpoint.json().secret]);
    }, 180_000);

    afterAll(async () => {
      await app?.close();
      await queue?.stop(2_000);
      await Promise.all([s3?.stop(), sftp?.stop(), receiver?.stop()]);
      await t?.drop();
      if (config) await dropJobsSchema(config);
    });

    const webhookTarget = () => ({ type: 'webhook', name: 'loader', endpoint_id: endpointId });

    async function schedule(name: string, targets: unknown[]): Promise<string> {
      const created = await app.inject({
        method: 'POST',
        url: '/api/v1/schedules',
        headers: bearer(key),
        payload: {
          name,
          frequency: { type: 'daily' },
          time: '02:30',
          timezone: 'UTC',
          datasets: [{ dataset: 'conversations', mode: 'incremental' }],
          format: 'ndjson',
          pii: 'full',
          targets,
        },
      });
      expect(created.statusCode, created.body).toBe(201);
      return created.json().id;
    }

    async function setTargets(scheduleId: string, targets: unknown[]): Promise<void> {
      const patched = await app.inject({
        method: 'PATCH',
        url: `/api/v1/schedules/${scheduleId}`,
        headers: bearer(key),
        payload: { targets },
      });
      expect(patched.statusCode, patched.body).toBe(200);
    }

    async function runNow(scheduleId: string): Promise<string> {
      await settle(t.database);
      const res = await app.inject({
        method: 'POST',
        url: `/api/v1/schedules/${scheduleId}/run`,
        headers: bearer(key),
      });
      expect(res.statusCode, res.body).toBe(202);
      return res.json().id;
    }

    /** Waits until the run is stored in one of `statuses`, then returns it as the API lists it. */
    async function finished(
      scheduleId: string,
      runId: string,
      statuses: readonly RunStatus[],
    ): Promise<RunView> {
      await waitForRun(t.database, runId, statuses, { timeoutMs: 120_000 });
      return getRun(app, key, scheduleId, runId);
    }

    /** What reached the receiver for one file, in arrival order. */
    const requestsFor = (exportId: string) =>
      receiver.requests.filter((r) => JSON.parse(r.body).export_id === exportId);

    /** The outbox messages to our endpoint that carry a file. */
    async function messagesFor(exportId: string) {
      const rows = await webhookDb(t.database)
        .selectFrom('webhook_messages')
        .selectAll()
        .where('endpoint_id', '=', endpointId)
        .execute();
      return rows.filter((m) => JSON.parse(m.payload).export_id === exportId);
    }

    async function attemptTimes(messageId: string): Promise<number[]> {
      const rows = await webhookDb(t.database)
        .selectFrom('webhook_attempts')
        .select(['attempt', 'started_at'])
        .where('message_id', '=', messageId)
        .orderBy('attempt')
        .execute();
      return rows.map((r) => new Date(r.started_at).getTime());
    }

    for (const failures of [1, 2, 5]) {
      test(`a receiver that fails the first ${failures} attempt(s) gets the file as one message, retried on the schedule`, async () => {
        const scheduleId = await schedule(`Webhook, ${failures} failure(s)`, [webhookTarget()]);
        receiver.failNext(failures, 503);
        const done = await finished(scheduleId, await runNow(scheduleId), ['delivered']);
        expect(done.status, JSON.stringify(done.error)).toBe('delivered');
        const [file] = done.files;

        const requests = requestsFor(file!.export_id);
        expect(new Set(requests.map((r) => r.headers['webhook-id'])).size).toBe(1);
        expect(requests.map((r) => r.answered)).toEqual([...Array(failures).fill(503), 200]);
        expect(new Set(requests.map((r) => r.body)).size).toBe(1);
        for (const request of requests) expect(request.verifiedWith).toEqual([0]);

        // One message in the outbox, delivered: nothing is left to arrive later.
        const [message, ...others] = await messagesFor(file!.export_id);
        expect(others).toEqual([]);
        expect(message).toMatchObject({
          id: requests[0]!.headers['webhook-id'],
          status: 'delivered',
          attempts: failures + 1,
        });
        // Each retry waited its turn on the schedule (at least the delay less the jitter).
        const times = await attemptTimes(message!.id);
        expect(times).toHaveLength(failures + 1);
        for (let i = 1; i < times.length; i++)
          expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(WEBHOOK_DELAYS[i - 1]! * (1 - JITTER));

        // The history counts every attempt once and the run waited for the outcome.
        const [webhook] = done.deliveries;
        expect(webhook!.status).toBe('delivered');
        expect(webhook!.files).toMatchObject([{ status: 'delivered', attempts: failures + 1 }]);
        expect(new Date(done.finished_at!).getTime()).toBeGreaterThanOrEqual(times.at(-1)!);
        const rows = await scheduleDb(t.database)
          .selectFrom('schedule_run_deliveries')
          .select(['status', 'attempts'])
          .where('run_id', '=', done.id)
          .execute();
        expect(rows.filter((r) => r.status === 'delivered')).toHaveLength(1);
        expect(rows.reduce((n, r) => n + r.attempts, 0)).toBe(failures + 1);
      }, 180_000);
    }

    test('a receiver that times out gets the retry with the same webhook-id', async () => {
      const scheduleId = await schedule('Webhook, hanging receiver', [webhookTarget()]);
      receiver.hangNext(1);
      const done = await finished(scheduleId, await runNow(scheduleId), ['delivered']);
      expect(done.status, JSON.stringify(done.error)).toBe('delivered');
      const requests = requestsFor(done.files[0]!.export_id);
      expect(requests.map((r) => r.answered)).toEqual([null, 200]);
      expect(new Set(requests.map((r) => r.headers['webhook-id'])).size).toBe(1);
      const [message, ...others] = await messagesFor(done.files[0]!.export_id);
      expect(others).toEqual([]);
      expect(message).toMatchObject({ status: 'delivered', attempts: 2 });
    }, 180_000);

    test("a later run's file reaches the target only after the earlier run's file was delivered", async () => {
      const scheduleId = await schedule('Webhook, in run order', [webhookTarget()]);
      receiver.failNext(3, 503);
      const first = await runNow(scheduleId);
      const second = await runNow(scheduleId);
      const third = await runNow(scheduleId);
      const runs: RunView[] = [];
      for (const id of [first, second, third]) runs.push(await finished(scheduleId, id, ['delivered']));
      expect(runs.map((r) => r.status)).toEqual(['delivered', 'delivered', 'delivered']);
      // Each file is one message; in arrival order, no request of a later run comes before
      // the earlier run's file was accepted.
      const order = receiver.requests
        .map((r) => ({ exportId: JSON.parse(r.body).export_id as string, answered: r.answered }))
        .filter((r) => runs.some((run) => run.files[0]!.export_id === r.exportId))
        .map((r) => ({
          run: runs.findIndex((run) => run.files[0]!.export_id === r.exportId),
          ok: r.answered,
        }));
      expect(order).toEqual([
        { run: 0, ok: 503 },
        { run: 0, ok: 503 },
        { run: 0, ok: 503 },
        { run: 0, ok: 200 },
        { run: 1, ok: 200 },
        { run: 2, ok: 200 },
      ]);
      for (const later of runs.slice(1))
        expect(new Date(later.started_at!).getTime()).toBeGreaterThanOrEqual(
          new Date(runs[0]!.finished_at!).getTime(),
        );
    }, 180_000);

    test("a run that fails for good gives up its waiting message: it never arrives after the next run's file", async () => {
      const scheduleId = await schedule('Webhook, failed run', [webhookTarget()]);
      // An SFTP target whose host key does not match fails the run at once.
      await setTargets(scheduleId, [
        webhookTarget(),
        {
          type: 'sftp',
          host: sftp.host,
          port: sftp.port,
          username: sftp.username,
          private_key: sftp.privateKey,
          host_key: sftp.otherFingerprint,
          directory: sftp.uploadDir,
        },
      ]);
      receiver.answer(503);
      const failed = await finished(scheduleId, await runNow(scheduleId), ['failed']);
      expect(failed.status).toBe('failed');
      expect(failed.error?.message).toMatch(/host key/);
      const stale = failed.files[0]!.export_id;
      const [message] = await messagesFor(stale);
      expect(message).toMatchObject({ status: 'failed', next_attempt_at: null });
      expect(message!.last_error).toMatch(/^given up: run \d+ failed before this message was delivered$/);
      expect(requestsFor(stale)).toHaveLength(message!.attempts);

      receiver.answer(200);
      await setTargets(scheduleId, [webhookTarget()]);
      const next = await finished(scheduleId, await runNow(scheduleId), ['delivered']);
      expect(next.status, JSON.stringify(next.error)).toBe('delivered');
      const fresh = receiver.requests.findIndex(
        (r) => JSON.parse(r.body).export_id === next.files[0]!.export_id,
      );
      expect(fresh).toBeGreaterThanOrEqual(0);
      expect(receiver.requests.slice(fresh).filter((r) => JSON.parse(r.body).export_id === stale)).toEqual(
        [],
      );
      expect((await messagesFor(stale))[0]).toMatchObject({ status: 'failed', attempts: message!.attempts });
    }, 180_000);

    test('a target that is not required does not hold the run back: its waiting message is given up', async () => {
      const scheduleId = await schedule('Webhook, optional', [{ ...webhookTarget(), required: false }]);
      receiver.failNext(1, 503);
      const done = await finished(scheduleId, await runNow(scheduleId), ['delivered']);
      expect(done.status, JSON.stringify(done.error)).toBe('delivered');
      const exportId = done.files[0]!.export_id;
      const [message, ...others] = await messagesFor(exportId);
      expect(others).toEqual([]);
      expect(message).toMatchObject({ status: 'failed', next_attempt_at: null });
      expect(message!.last_error).toMatch(/^given up: run \d+ was delivered without this optional target$/);
      expect(requestsFor(exportId)).toHaveLength(message!.attempts);
    }, 180_000);

    test('an attempt that died after its uploads is retried a day later: S3, SFTP and the webhook still hold the file once', async () => {
      const scheduleId = await schedule('Every target, retried', [
        {
          type: 's3',
          bucket: s3.bucket,
          prefix: 'retried/{date}/{datetime}/',
          region: s3.region,
          endpoint: s3.endpoint,
          force_path_style: true,
          access_key_id: s3.accessKeyId,
          secret_access_key: s3.secretAccessKey,
        },
        {
          type: 'sftp',
          host: sftp.host,
          port: sftp.port,
          username: sftp.username,
          private_key: sftp.privateKey,
          host_key: sftp.hostKeyFingerprint,
          directory: `${sftp.uploadDir}/retried/{date}/{datetime}`,
        },
        webhookTarget(),
      ]);
      const runId = await runNow(scheduleId);
      const delivered = await finished(scheduleId, runId, ['delivered']);
      expect(delivered.status, JSON.stringify(delivered.error)).toBe('delivered');
      const [file] = delivered.files;

      // As if the attempt had died after its uploads and before it recorded them: the run
      // is left running under a lease that ran out, with no delivery recorded. Another
      // attempt takes it over a day later (by the workers' clock).
      const db = scheduleDb(t.database);
      await db.deleteFrom('schedule_run_deliveries').where('run_id', '=', runId).execute();
      await db
        .updateTable('schedule_runs')
        .set({ status: 'running', lease_until: new Date(Date.now() - 60_000), finished_at: null })
        .where('id', '=', runId)
        .execute();
      offsetMs = 86_400_000 + 3_600_000;
      try {
        await queue.send(SCHEDULE_RUN_QUEUE, { id: runId });
        const again = await finished(scheduleId, runId, ['delivered']);
        expect(again.finished_at).not.toBeNull();
        expect(again.attempts).toBe(2);
        expect(again.deliveries.map((d) => [d.target.type, d.status])).toEqual([
          ['s3', 'delivered'],
          ['sftp', 'delivered'],
          ['webhook', 'delivered'],
        ]);
      } finally {
        offsetMs = 0;
      }

      // One object, one remote file, one message: the retry wrote where the first attempt did.
      const objects = (await s3Objects(s3, 'retried/')).filter((o) => o.key.endsWith(`/${file!.name}`));
      expect(objects).toHaveLength(1);
      expect(sha256(objects[0]!.body)).toBe(file!.sha256);
      const copies = walk(path.join(sftp.uploadDir, 'retried')).filter((p) => p.endsWith(file!.name));
      expect(copies).toHaveLength(1);
      expect(sha256(readFileSync(path.join(sftp.uploadDir, 'retried', copies[0]!)))).toBe(file!.sha256);
      const requests = requestsFor(file!.export_id);
      expect(requests.map((r) => r.answered)).toEqual([200]);
      expect(await messagesFor(file!.export_id)).toHaveLength(1);
    }, 180_000);
  });
}
