import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parse as parseCsv } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import type { Config } from '../src/config/config.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { createJobQueue, type JobQueue } from '../src/jobs/queue.ts';
import { createAdapters, JOBS } from '../src/compose.ts';
import { startWorkers } from '../src/jobs/workers.ts';
import { createLogger } from '../src/lib/logger.ts';
import { seed } from '../src/seed/seed.ts';
import { authTestConfig, bearer } from './support/fixtures/auth.ts';
import { getRun } from './support/fixtures/schedules.ts';
import { waitForRun } from './support/wait.ts';
import { createTestDatabase, dropJobsSchema, DIALECTS, type TestDatabase } from './support/databases.ts';
import { testAdapters } from './support/keyring.ts';

const run = promisify(execFile);
const SECRET = 'schedules-window-test-secret-0123456789ab';
/** "Now" for the API: a manual run's slot, 10:00 in New York. */
const NOW = new Date('2026-09-15T14:00:00Z');

for (const dialect of DIALECTS) {
  describe(`window and full selections in a zip package on ${dialect}`, () => {
    let t: TestDatabase;
    let config: Config;
    let queue: JobQueue;
    let app: FerryApp;
    let tenantId: string;
    let key: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 120,
        messagesPerConversation: 3,
        seed: 31,
        since: new Date('2026-09-01T00:00:00Z'),
        until: new Date('2026-09-21T00:00:00Z'),
        secretKey: SECRET,
      });
      tenantId = summary.tenants[0]!.id;
      await t.database.db.updateTable('tenants').set({ plan: 'agency' }).where('id', '=', tenantId).execute();
      config = authTestConfig({
        FERRY_SECRET_KEY: SECRET,
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
        now: () => NOW,
      });
      await app.ready();
      await startWorkers(
        queue,
        {
          database: t.database,
          config,
          logger,
          store,
          queue,
          now: () => new Date(),
          keyring,
          secrets,
          ...adapters,
        },
        JOBS,
      );
      key = (await createApiKey(t.database, { tenantId, role: 'admin' })).key;
    }, 180_000);

    afterAll(async () => {
      await app?.close();
      await queue?.stop(2_000);
      await t?.drop();
      if (config) await dropJobsSchema(config);
    });

    test('the previous day in the schedule zone, the last 7 days and everything, packaged with checksums', async () => {
      const created = await app.inject({
        method: 'POST',
        url: '/api/v1/schedules',
        headers: bearer(key),
        payload: {
          name: 'Weekly report pack',
          frequency: { type: 'weekly', days: ['tuesday'] },
          time: '10:00',
          timezone: 'America/New_York',
          datasets: [
            { dataset: 'analytics', mode: 'window', period: 'previous_day' },
            { dataset: 'messages', mode: 'window', days: 7 },
            { dataset: 'sites', mode: 'full' },
          ],
          format: 'csv',
          package: 'zip',
        },
      });
      expect(created.statusCode, created.body).toBe(201);
      const id = created.json().id;
      const queued = await app.inject({
        method: 'POST',
        url: `/api/v1/schedules/${id}/run`,
        headers: bearer(key),
      });
      expect(queued.statusCode, queued.body).toBe(202);
      await waitForRun(t.database, queued.json().id, ['delivered']);
      const done = await getRun(app, key, id, queued.json().id);
      expect(done.status, JSON.stringify(done.error)).toBe('delivered');
      expect(done.due_at).toBe(NOW.toISOString());
      expect(done.deliveries).toEqual([]);
      expect(done.files).toHaveLength(1);
      const file = done.files[0]!;
      expect(file.name).toBe('weekly-report-pack-20260915T140000Z-r1.zip');
      expect(done.checksum).toEqual({ algorithm: 'sha256', value: file.sha256 });
      expect(file.counts.analytics).toMatchObject({ mode: 'window', from: '2026-09-14', to: '2026-09-14' });
      // 7 days back from the slot; EDT is UTC-4.
      expect(file.counts.messages).toMatchObject({
        mode: 'window',
        from: '2026-09-08T14:00:00.000Z',
        to: '2026-09-15T14:00:00.000Z',
      });
      expect(file.counts.sites).toMatchObject({ mode: 'full', from: null, to: null });

      // The file is an export of the tenant: downloadable with a signed link, the bytes as recorded.
      const link = await app.inject({
        url: `/api/v1/exports/${file.export_id}/download`,
        headers: bearer(key),
      });
      expect(link.statusCode, link.body).toBe(200);
      const url = new URL(link.json().url);
      const download = await app.inject({ url: `${url.pathname}${url.search}` });
      expect(download.statusCode).toBe(200);
      expect(createHash('sha256').update(download.rawPayload).digest('hex')).toBe(file.sha256);

      const dir = await mkdtemp(path.join(tmpdir(), 'ferry-schedule-zip-'));
      await writeFile(path.join(dir, file.name), download.rawPayload);
      await run('unzip', ['-q', file.name, '-d', 'out'], { cwd: dir });
      const [root] = await readdir(path.join(dir, 'out'));
      expect(root).toBe('weekly-report-pack-20260915T140000Z-r1');
      const inside = path.join(dir, 'out', root!);
      expect((await readdir(inside)).sort()).toEqual([
        'analytics.csv',
        'checksums.sha256',
        'messages.csv',
        'sites.csv',
      ]);
      await run('sha256sum', ['-c', 'checksums.sha256'], { cwd: inside });

      const csv = async (name: string) =>
        parseCsv(await readFile(path.join(inside, name)), { columns: true }) as Record<string, string>[];
      const analytics = await csv('analytics.csv');
      expect(analytics.length).toBeGreaterThan(0);
      for (const row of analytics) expect(row.date).toBe('2026-09-14');
      const messages = await csv('messages.csv');
      const expected = await t.database.db
        .selectFrom('messages')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('tenant_id', '=', tenantId)
        .where('created_at', '>=', new Date('2026-09-08T14:00:00Z'))
        .where('created_at', '<', NOW)
        .executeTakeFirstOrThrow();
      expect(messages.length).toBe(Number(expected.n));
      expect(messages.length).toBeGreaterThan(0);
      for (const row of messages) {
        const at = new Date(row.timestamp!).getTime();
        expect(at).toBeGreaterThanOrEqual(new Date('2026-09-08T14:00:00Z').getTime());
        expect(at).toBeLessThan(NOW.getTime());
      }
      const sites = await t.database.db
        .selectFrom('sites')
        .select('id')
        .where('tenant_id', '=', tenantId)
        .execute();
      expect((await csv('sites.csv')).length).toBe(sites.length);
      expect(file.records).toBe(analytics.length + messages.length + sites.length);
    }, 180_000);
  });
}
