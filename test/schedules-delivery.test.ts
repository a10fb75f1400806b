import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import type { Config } from '../src/config/config.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { createJobQueue, type JobQueue } from '../src/jobs/queue.ts';
import { createAdapters, JOBS } from '../src/compose.ts';
import { startWorkers } from '../src/jobs/workers.ts';
import { createLogger } from '../src/lib/logger.ts';
import { SCHEDULE_JOBS, scheduleJobs } from '../src/schedules/jobs.ts';
import type { RunStatus } from '../src/domain/schedule-state.ts';
import type { RunView } from '../src/schedules/presenter.ts';
import { scheduleDb } from '../src/schedules/tables.ts';
import { seed } from '../src/seed/seed.ts';
import type { ObjectStore } from '../src/store/object-store.ts';
import { authTestConfig, bearer } from './support/fixtures/auth.ts';
import {
  cloneRow,
  getRun,
  s3Keys,
  s3Objects,
  startTcpRelay,
  type TcpRelay,
} from './support/fixtures/schedules.ts';
import { settle, until, waitForRun } from './support/wait.ts';
import { createTestDatabase, dropJobsSchema, DIALECTS, type TestDatabase } from './support/databases.ts';
import { lines } from './support/fixtures/streams.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';
import { startSftpServer, type TestSftpServer } from './support/sftp-server.ts';
import { startSmtpServer, type TestSmtpServer } from './support/smtp-server.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';
import { testAdapters } from './support/keyring.ts';

const SECRET = 'schedules-delivery-test-secret-0123456789';
const ID_FIELDS = { conversations: 'conversation_id', messages: 'message_id' } as const;
type Dataset = keyof typeof ID_FIELDS;
type Row = Record<string, unknown>;

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

for (const dialect of DIALECTS) {
  describe(`scheduled incremental exports on ${dialect}`, () => {
    let t: TestDatabase;
    let config: Config;
    let store: ObjectStore;
    let queue: JobQueue;
    let app: FerryApp;
    let s3: TestS3Server;
    let sftp: TestSftpServer;
    let relay: TcpRelay;
    let receiver: TestWebhookReceiver;
    let smtp: TestSmtpServer;
    let tenantId: string;
    let key: string;
    let endpointId: string;
    let scheduleId: string;
    /** The worker's clock runs this far ahead of the real one (for the retention test). */
    let offsetMs = 0;
    /** The consumer's copy, built only from what the deliveries brought. */
    const mirror: Record<Dataset, Map<string, Row>> = { conversations: new Map(), messages: new Map() };

    const targets = (sftpHostKey?: string) => [
      {
        type: 's3',
        name: 'warehouse',
        bucket: s3.bucket,
        prefix: 'ferry/{dataset}/',
        region: s3.region,
        endpoint: s3.endpoint,
        force_path_style: true,
        access_key_id: s3.accessKeyId,
        secret_access_key: s3.secretAccessKey,
      },
      {
        type: 'sftp',
        name: 'archive',
        host: '127.0.0.1',
        port: relay.port,
        username: sftp.username,
        private_key: sftp.privateKey,
        host_key: sftpHostKey ?? sftp.hostKeyFingerprint,
        directory: `${sftp.uploadDir}/{dataset}`,
      },
      { type: 'webhook', name: 'loader', endpoint_id: endpointId },
    ];

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 12,
        messagesPerConversation: 3,
        seed: 17,
        since: new Date('2026-09-01T00:00:00Z'),
        until: new Date('2026-10-01T00:00:00Z'),
        secretKey: SECRET,
      });
      tenantId = summary.tenants[0]!.id;
      await t.database.db.updateTable('tenants').set({ plan: 'agency' }).where('id', '=', tenantId).execute();
      [s3, sftp, receiver, smtp] = await Promise.all([
        startS3Server(),
        startSftpServer(),
        startWebhookReceiver(),
        startSmtpServer(),
      ]);
      relay = await startTcpRelay({ host: sftp.host, port: sftp.port });
      config = authTestConfig({
        FERRY_SECRET_KEY: SECRET,
        FERRY_OUTBOUND_ALLOW: '127.0.0.1',
        FERRY_JOB_HEARTBEAT_SECONDS: '10',
        FERRY_JOB_SUPERVISE_SECONDS: '2',
        FERRY_JOB_RETRY_DELAY_SECONDS: '1',
        FERRY_SMTP_URL: smtp.url,
        FERRY_MAIL_FROM: 'ferry@example.com',
        ...t.env,
      });
      const logger = createLogger({ logLevel: 'silent' });
      const keys = await testAdapters(t.database, config);
      store = keys.store;
      queue = await createJobQueue(t.database, config, logger, { definitions: JOBS, supervise: true });
      const adapters = createAdapters(config);
      app = await buildApp({
        database: t.database,
        config,
        logger,
        queue,
        store,
        signer: adapters.signer,
        secrets: keys.secrets,
      });
      await app.ready();
      // The real jobs, with short waits between delivery attempts inside a run attempt.
      const definitions = [
        ...JOBS.filter((d) => !SCHEDULE_JOBS.includes(d)),
        ...scheduleJobs({ deliveryRetryDelays: [50, 50], deliveryTimeoutMs: 5_000 }),
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
          keyring: keys.keyring,
          secrets: keys.secrets,
          ...adapters,
        },
        definitions,
      );
      key = (await createApiKey(t.database, { tenantId, role: 'admin' })).key;
      const endpoint = await app.inject({
        method: 'POST',
        url: '/api/v1/webhooks',
        headers: bearer(key),
        payload: {
          url: receiver.url,
          events: ['export.completed', 'schedule.run.completed', 'schedule.run.failed', 'delivery.failed'],
        },
      });
      expect(endpoint.statusCode, endpoint.body).toBe(201);
      endpointId = endpoint.json().id;
      receiver.setSecrets([endpoint.json().secret]);
      const created = await app.inject({
        method: 'POST',
        url: '/api/v1/schedules',
        headers: bearer(key),
        payload: {
          name: 'Nightly changes',
          frequency: { type: 'daily' },
          time: '02:30',
          timezone: 'Europe/Berlin',
          datasets: [
            { dataset: 'conversations', mode: 'incremental' },
            { dataset: 'messages', mode: 'incremental' },
          ],
          format: 'ndjson',
          compression: 'gzip',
          pii: 'full',
          targets: targets(),
          notifications: { success: ['ops@example.com'], failure: ['oncall@example.com'] },
          retention: { local_days: 30, target_days: 365 },
        },
      });
      expect(created.statusCode, created.body).toBe(201);
      scheduleId = created.json().id;
    }, 180_000);

    afterAll(async () => {
      await app?.close();
      await queue?.stop(2_000);
      await Promise.all([relay?.stop(), s3?.stop(), sftp?.stop(), receiver?.stop(), smtp?.stop()]);
      await t?.drop();
      if (config) await dropJobsSchema(config);
    });

    async function history(): Promise<RunView[]> {
      const res = await app.inject({
        url: `/api/v1/schedules/${scheduleId}/runs?limit=100`,
        headers: bearer(key),
      });
      expect(res.statusCode, res.body).toBe(200);
      return res.json().items;
    }

    async function runNow(): Promise<string> {
      await settle(t.database);
      const res = await app.inject({
        method: 'POST',
        url: `/api/v1/schedules/${scheduleId}/run`,
        headers: bearer(key),
      });
      expect(res.statusCode, res.body).toBe(202);
      expect(res.json()).toMatchObject({ status: 'queued', trigger: 'manual' });
      return res.json().id;
    }

    /** Waits until the run is stored in one of `statuses`, then returns it as the API lists it. */
    async function finished(runId: string, statuses: readonly RunStatus[]): Promise<RunView> {
      await waitForRun(t.database, runId, statuses, { timeoutMs: 120_000 });
      return getRun(app, key, scheduleId, runId);
    }

    async function checkpoints(): Promise<Record<string, string>> {
      const rows = await scheduleDb(t.database)
        .selectFrom('schedule_checkpoints')
        .select(['dataset', 'cursor'])
        .where('schedule_id', '=', scheduleId)
        .execute();
      return Object.fromEntries(rows.map((r) => [r.dataset, r.cursor]));
    }

    /** The dataset as it is in the database now, by id. */
    async function source(dataset: Dataset): Promise<Map<string, Row>> {
      const chunks: Buffer[] = [];
      const out = new Writable({
        write(chunk, _enc, done) {
          chunks.push(chunk as Buffer);
          done();
        },
      });
      await exportDataset(
        t.database,
        parseExportRequest({ tenantId, dataset, format: 'ndjson', pii: 'full' }),
        out,
      );
      const rows = lines(Buffer.concat(chunks).toString('utf8')).map((l) => JSON.parse(l) as Row);
      return new Map(rows.map((r) => [String(r[ID_FIELDS[dataset]]), r]));
    }

    /**
     * Fetches a run's files from every target, checks that the three deliveries agree with
     * the run's history (bytes, SHA-256, the signed webhook), and applies the file to the mirror.
     */
    async function consume(run: RunView): Promise<{ upserts: number; deletes: number }> {
      let upserts = 0;
      let deletes = 0;
      for (const file of run.files) {
        const dataset = file.datasets[0] as Dataset;
        const fromS3 = (await s3Objects(s3, `ferry/${dataset}/`)).filter((o) =>
          o.key.endsWith(`/${file.name}`),
        );
        expect(fromS3).toHaveLength(1);
        const bytes = fromS3[0]!.body;
        expect(bytes.length).toBe(file.bytes);
        expect(sha256(bytes)).toBe(file.sha256);
        const fromSftp = readFileSync(path.join(sftp.uploadDir, dataset, file.name));
        expect(sha256(fromSftp)).toBe(file.sha256);
        // The webhook target's export.completed: signed (reference check), with the file's checksum and a working link.
        const hooks = receiver.requests.filter((r) => JSON.parse(r.body).export_id === file.export_id);
        expect(hooks).toHaveLength(1);
        const hook = hooks[0]!;
        expect(hook.verifiedWith, hook.verifyError ?? '').toEqual([0]);
        const body = JSON.parse(hook.body);
        expect(body).toMatchObject({
          event: 'export.completed',
          tenant_id: tenantId,
          data: {
            export_type: dataset,
            file_size_bytes: file.bytes,
            compression: 'gzip',
            checksum: { algorithm: 'sha256', value: file.sha256 },
          },
        });
        const url = new URL(body.data.download_url);
        const download = await app.inject({ url: `${url.pathname}${url.search}` });
        expect(download.statusCode).toBe(200);
        expect(sha256(download.rawPayload)).toBe(file.sha256);

        for (const line of lines(gunzipSync(bytes).toString('utf8'))) {
          const row = JSON.parse(line) as Row;
          const id = String(row[ID_FIELDS[dataset]]);
          if (row._deleted === true) {
            mirror[dataset].delete(id);
            deletes++;
          } else {
            mirror[dataset].set(id, row);
            upserts++;
          }
        }
      }
      return { upserts, deletes };
    }

    async function expectMirrorIsSource(): Promise<void> {
      for (const dataset of Object.keys(ID_FIELDS) as Dataset[]) {
        const current = await source(dataset);
        expect([...mirror[dataset].keys()].sort()).toEqual([...current.keys()].sort());
        for (const [id, row] of current) expect(mirror[dataset].get(id)).toEqual(row);
      }
    }

    /** Each target received each file of the run exactly once. */
    async function expectDeliveredOnce(run: RunView): Promise<void> {
      expect(run.deliveries.map((d) => [d.target.type, d.status])).toEqual([
        ['s3', 'delivered'],
        ['sftp', 'delivered'],
        ['webhook', 'delivered'],
      ]);
      const rows = await scheduleDb(t.database)
        .selectFrom('schedule_run_deliveries')
        .select(['export_id', 'target_index', 'status'])
        .where('run_id', '=', run.id)
        .where('status', '=', 'delivered')
        .execute();
      expect(rows).toHaveLength(run.files.length * 3);
      expect(new Set(rows.map((r) => `${r.export_id}#${r.target_index}`)).size).toBe(rows.length);
      for (const file of run.files) {
        expect(
          readdirSync(path.join(sftp.uploadDir, file.datasets[0]!)).filter((n) => n === file.name),
        ).toHaveLength(1);
      }
    }

    /** A message added to a conversation, as the platform does it: with the conversation's count. */
    async function addMessage(from: string, conversationId: string): Promise<string> {
      const id = await cloneRow(t.database, 'messages', from, { conversation_id: conversationId });
      await t.database.db
        .updateTable('conversations')
        .set((eb) => ({ message_count: eb('message_count', '+', 1) }))
        .where('id', '=', conversationId)
        .execute();
      return id;
    }
    async function editMessage(id: string, content: string): Promise<void> {
      const row = await t.database.db
        .updateTable('messages')
        .set({ content, edited: true })
        .where('id', '=', id)
        .returning('conversation_id')
        .executeTakeFirstOrThrow();
      // The conversation's transcript changed: the platform bumps it.
      await sql`UPDATE conversations SET last_updated = now() WHERE id = ${row.conversation_id}`.execute(
        t.database.db,
      );
    }
    async function deleteMessage(id: string): Promise<void> {
      const row = await t.database.db
        .deleteFrom('messages')
        .where('id', '=', id)
        .returning('conversation_id')
        .executeTakeFirstOrThrow();
      await t.database.db
        .updateTable('conversations')
        .set((eb) => ({ message_count: eb('message_count', '-', 1) }))
        .where('id', '=', row.conversation_id)
        .execute();
    }

    const conversationIds = async () =>
      (
        await t.database.db
          .selectFrom('conversations')
          .select('id')
          .where('tenant_id', '=', tenantId)
          .orderBy('id')
          .execute()
      ).map((r) => r.id);
    const messageIds = async (conversationId: string) =>
      (
        await t.database.db
          .selectFrom('messages')
          .select('id')
          .where('conversation_id', '=', conversationId)
          .orderBy('id')
          .execute()
      ).map((r) => r.id);

    test('three runs against changing data: the deliveries, applied in order, equal the source exactly', async () => {
      // Run 1: no checkpoint yet, so everything.
      const first = await finished(await runNow(), ['delivered']);
      expect(first.status, JSON.stringify(first.error)).toBe('delivered');
      await expectDeliveredOnce(first);
      expect(first.files.map((f) => f.datasets[0])).toEqual(['conversations', 'messages']);
      const applied1 = await consume(first);
      expect(applied1.deletes).toBe(0);
      expect(first.records).toBe(applied1.upserts);
      await expectMirrorIsSource();
      expect(first.checkpoint_advanced).toBe(true);
      expect(Object.keys(await checkpoints()).sort()).toEqual(['conversations', 'messages']);

      // Between runs 1 and 2, as the platform writes: a new conversation with two messages, an
      // updated conversation, an edited and a deleted message (each keeps its conversation's counts).
      const [a, b, c] = await conversationIds();
      const added = await cloneRow(t.database, 'conversations', a!);
      const [m1, m2] = await messageIds(a!);
      await addMessage(m1!, added);
      await addMessage(m2!, added);
      await t.database.db
        .updateTable('conversations')
        .set({ status: 'resolved', satisfaction_score: 5, tags: ['vip'] })
        .where('id', '=', b!)
        .execute();
      const [bm1, bm2] = await messageIds(b!);
      await editMessage(bm1!, 'edited answer');
      await deleteMessage(bm2!);

      const second = await finished(await runNow(), ['delivered']);
      expect(second.status, JSON.stringify(second.error)).toBe('delivered');
      await expectDeliveredOnce(second);
      const applied2 = await consume(second);
      expect(applied2.deletes).toBe(1);
      // Only what changed: the new conversation and its messages, the updated rows.
      expect(second.files.find((f) => f.datasets[0] === 'conversations')?.records).toBe(2);
      expect(second.files.find((f) => f.datasets[0] === 'conversations')?.tombstones).toBe(0);
      expect(second.files.find((f) => f.datasets[0] === 'messages')).toMatchObject({
        records: 3,
        tombstones: 1,
      });
      await expectMirrorIsSource();

      // Between runs 2 and 3: a conversation deleted (its messages go with it), the new one updated, a message added.
      const gone = await messageIds(c!);
      await t.database.db.deleteFrom('conversations').where('id', '=', c!).execute();
      await t.database.db
        .updateTable('conversations')
        .set({ internal_notes: 'follow up' })
        .where('id', '=', added)
        .execute();
      await addMessage(m1!, b!);

      const third = await finished(await runNow(), ['delivered']);
      expect(third.status, JSON.stringify(third.error)).toBe('delivered');
      await expectDeliveredOnce(third);
      const applied3 = await consume(third);
      expect(applied3.deletes).toBe(1 + gone.length);
      await expectMirrorIsSource();

      // The history shows each run with its counts, size, checksums and per-target results.
      const runs = await history();
      expect(runs.map((r) => r.run_number)).toEqual([3, 2, 1]);
      for (const run of runs) {
        expect(run.bytes).toBe(run.files.reduce((n, f) => n + f.bytes, 0));
        expect(run.checksum).toBeNull(); // two files: each has its own
        for (const f of run.files) expect(f.sha256).toMatch(/^[0-9a-f]{64}$/);
        for (const d of run.deliveries)
          for (const f of d.files) expect(f).toMatchObject({ status: 'delivered' });
      }
      // Every webhook was signed as Standard Webhooks specifies; each run also reported its completion.
      await until('the schedule.run.completed events', async () => {
        const done = receiver.requests.filter((r) => JSON.parse(r.body).event === 'schedule.run.completed');
        return done.length >= 3 ? done : undefined;
      });
      for (const request of receiver.requests) expect(request.verifiedWith).toEqual([0]);
      const completed = receiver.requests
        .map((r) => JSON.parse(r.body))
        .filter((b) => b.event === 'schedule.run.completed')
        .map((b) => b.data.run_number)
        .sort();
      expect(completed).toEqual([1, 2, 3]);
      // The success list got one email per delivered run.
      await until('the success emails', async () => (smtp.messages.length >= 3 ? true : undefined));
      expect(smtp.messages.map((m) => m.to)).toEqual([
        ['ops@example.com'],
        ['ops@example.com'],
        ['ops@example.com'],
      ]);
      expect(smtp.messages[0]!.mail.subject).toBe('Delivered: scheduled export "Nightly changes"');
    }, 300_000);

    test('a run whose SFTP target is down keeps the checkpoint, and its retry delivers once to every target', async () => {
      const before = await checkpoints();
      const [a] = await conversationIds();
      await t.database.db
        .updateTable('conversations')
        .set({ satisfaction_score: 1 })
        .where('id', '=', a!)
        .execute();
      relay.mode = 'refuse';
      const runId = await runNow();
      const failing = await finished(runId, ['retrying', 'delivered', 'failed']);
      expect(failing.status).toBe('retrying');
      expect(failing.error?.code).toBe('delivery_failed');
      expect(failing.deliveries.map((d) => [d.target.type, d.status])).toEqual([
        ['s3', 'delivered'],
        ['sftp', 'failed'],
        ['webhook', 'delivered'],
      ]);
      expect(await checkpoints()).toEqual(before);
      relay.mode = 'forward';

      const done = await finished(runId, ['delivered']);
      expect(done.status, JSON.stringify(done.error)).toBe('delivered');
      expect(done.attempts).toBeGreaterThanOrEqual(2);
      await expectDeliveredOnce(done);
      const others = await scheduleDb(t.database)
        .selectFrom('schedule_run_deliveries')
        .select(['target_type', 'status'])
        .where('run_id', '=', runId)
        .where('target_type', '!=', 'sftp')
        .execute();
      // S3 and the webhook were not delivered again by the retry.
      expect(others.every((r) => r.status === 'delivered')).toBe(true);
      expect(others).toHaveLength(done.files.length * 2);
      expect(await checkpoints()).not.toEqual(before);
      await consume(done);
      await expectMirrorIsSource();
    }, 300_000);

    test('a run that fails for good leaves the checkpoint; the next run delivers what it missed', async () => {
      const before = await checkpoints();
      const [, b] = await conversationIds();
      await t.database.db
        .updateTable('conversations')
        .set({ internal_notes: 'changed while failing' })
        .where('id', '=', b!)
        .execute();
      // A host key that does not match can only be fixed by changing the schedule: the run fails at once.
      const patched = await app.inject({
        method: 'PATCH',
        url: `/api/v1/schedules/${scheduleId}`,
        headers: bearer(key),
        payload: { targets: targets(sftp.otherFingerprint) },
      });
      expect(patched.statusCode, patched.body).toBe(200);
      const failed = await finished(await runNow(), ['failed']);
      expect(failed.status).toBe('failed');
      expect(failed.attempts).toBe(1);
      expect(failed.error?.message).toMatch(/host key/);
      expect(await checkpoints()).toEqual(before);
      const notice = await until('the schedule.run.failed event', async () =>
        receiver.requests.map((r) => JSON.parse(r.body)).find((body) => body.event === 'schedule.run.failed'),
      );
      expect(notice).toMatchObject({
        schedule_id: scheduleId,
        data: { run_id: failed.id, status: 'failed' },
      });
      // One delivery.failed per file that never reached SFTP; none from the run that recovered by retrying.
      const gaveUp = await until('the delivery.failed events', async () => {
        const found = receiver.requests
          .map((r) => JSON.parse(r.body))
          .filter((b) => b.event === 'delivery.failed');
        return found.length >= failed.files.length ? found : undefined;
      });
      expect(gaveUp.map((b) => b.export_id).sort()).toEqual(failed.files.map((f) => f.export_id).sort());
      for (const body of gaveUp)
        expect(body).toMatchObject({
          schedule_id: scheduleId,
          data: { destination: 'sftp', name: 'archive', error_code: 'host_key_mismatch' },
        });
      const email = await until('the failure email', async () =>
        smtp.messages.find((m) => m.mail.subject === 'Failed: Scheduled export "Nightly changes"'),
      );
      expect(email.to).toEqual(['oncall@example.com']);
      expect(email.mail.text).toMatch(/host key/);
      // What reached S3 before the failure is applied by a consumer like any delivery.
      for (const file of failed.files) {
        const dataset = file.datasets[0] as Dataset;
        const [object] = (await s3Objects(s3, `ferry/${dataset}/`)).filter((o) =>
          o.key.endsWith(`/${file.name}`),
        );
        for (const line of lines(gunzipSync(object!.body).toString('utf8'))) {
          const row = JSON.parse(line) as Row;
          if (row._deleted) mirror[dataset].delete(String(row[ID_FIELDS[dataset]]));
          else mirror[dataset].set(String(row[ID_FIELDS[dataset]]), row);
        }
      }

      const fixed = await app.inject({
        method: 'PATCH',
        url: `/api/v1/schedules/${scheduleId}`,
        headers: bearer(key),
        payload: { targets: targets() },
      });
      expect(fixed.statusCode).toBe(200);
      const next = await finished(await runNow(), ['delivered']);
      expect(next.status, JSON.stringify(next.error)).toBe('delivered');
      const conversations = next.files.find((f) => f.datasets[0] === 'conversations')!;
      const [object] = (await s3Objects(s3, 'ferry/conversations/')).filter((o) =>
        o.key.endsWith(`/${conversations.name}`),
      );
      const ids = lines(gunzipSync(object!.body).toString('utf8')).map(
        (l) => (JSON.parse(l) as Row).conversation_id,
      );
      expect(ids).toContain(b);
      await consume(next);
      await expectMirrorIsSource();
    }, 300_000);

    test('retention: files are kept locally for local_days; S3 objects older than target_days under the prefix are removed', async () => {
      const runs = await history();
      const latest = runs[0]!;
      for (const file of latest.files) {
        const expires = new Date(file.expires_at!).getTime();
        const finishedAt = new Date(latest.finished_at!).getTime();
        expect(Math.abs(expires - finishedAt - 30 * 86_400_000)).toBeLessThan(120_000);
        const exported = await app.inject({ url: `/api/v1/exports/${file.export_id}`, headers: bearer(key) });
        expect(exported.json()).toMatchObject({ status: 'completed', expires_at: file.expires_at });
      }
      // An object outside the target's prefix is never touched.
      const client = new S3Client({
        region: s3.region,
        endpoint: s3.endpoint,
        forcePathStyle: true,
        credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
        requestChecksumCalculation: 'WHEN_REQUIRED',
      });
      await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'other/keep.txt', Body: 'keep' }));
      client.destroy();
      expect((await s3Keys(s3, 'ferry/')).length).toBeGreaterThan(2);
      // A year and a day later (the worker's clock), every earlier object is past the S3 retention.
      offsetMs = 366 * 86_400_000;
      const run = await finished(await runNow(), ['delivered']);
      expect(run.status, JSON.stringify(run.error)).toBe('delivered');
      // Retention runs right after the run is marked delivered, before its completion event.
      await until('the completion event of the run', async () =>
        receiver.requests
          .map((r) => JSON.parse(r.body))
          .find((b) => b.event === 'schedule.run.completed' && b.data.run_id === run.id),
      );
      expect(await s3Keys(s3, 'ferry/')).toEqual([]);
      expect(await s3Keys(s3, 'other/')).toEqual(['other/keep.txt']);
      expect(existsSync(path.join(sftp.uploadDir, 'conversations'))).toBe(true);
    }, 300_000);
  });
}
