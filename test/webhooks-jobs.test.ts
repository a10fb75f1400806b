import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type Config, loadConfig } from '../src/config/config.ts';
import { createJobQueue, type JobQueue } from '../src/jobs/queue.ts';
import { createAdapters } from '../src/compose.ts';
import { startWorkers } from '../src/jobs/workers.ts';
import { createLogger } from '../src/lib/logger.ts';
import { emitEvent } from '../src/webhooks/emit.ts';
import { createEndpoint } from '../src/webhooks/endpoints.ts';
import { WEBHOOK_JOBS, WEBHOOK_SWEEP_JOB } from '../src/webhooks/jobs.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { createTenant } from './support/fixtures/auth.ts';
import { createTestDatabase, dropJobsSchema, DIALECTS, type TestDatabase } from './support/databases.ts';
import { until } from './support/wait.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';
import type { SecretBox } from '../src/crypto/secret-box.ts';
import { testAdapters } from './support/keyring.ts';

const SECRET = 'webhook-jobs-test-secret-key-0123456789abcdef';

for (const dialect of DIALECTS) {
  describe(`webhook jobs on pg-boss (${dialect})`, () => {
    let t: TestDatabase;
    let config: Config;
    let queue: JobQueue;
    let secrets: SecretBox;
    let receiver: TestWebhookReceiver;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      config = loadConfig({
        FERRY_DATA_DIR: mkdtempSync(path.join(tmpdir(), 'ferry-webhook-jobs-')),
        FERRY_SECRET_KEY: SECRET,
        FERRY_OUTBOUND_ALLOW: '127.0.0.1',
        FERRY_JOB_SUPERVISE_SECONDS: '2',
        LOG_LEVEL: 'silent',
        ...t.env,
      });
      const logger = createLogger(config);
      queue = await createJobQueue(t.database, config, logger, {
        definitions: WEBHOOK_JOBS,
        supervise: true,
      });
      const { store, keyring, secrets: box } = await testAdapters(t.database, config);
      secrets = box;
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
          ...createAdapters(config),
        },
        WEBHOOK_JOBS,
      );
      receiver = await startWebhookReceiver();
    }, 60_000);
    afterAll(async () => {
      await receiver?.stop();
      await queue?.stop();
      if (config) await dropJobsSchema(config);
      await t?.drop();
    });

    test('a message emitted with the queue is delivered by a webhooks.deliver job', async () => {
      const tenant = await createTenant(t.database);
      const { secret } = await createEndpoint(
        t.database,
        tenant.id,
        { url: receiver.url, events: ['export.started'] },
        { secrets, outbound: outboundPolicy(config.outboundAllow) },
      );
      receiver.setSecrets([secret]);
      const [message] = await emitEvent(
        t.database,
        tenant.id,
        'export.started',
        { export_id: 'e1', data: {} },
        { queue },
      );
      const request = await until(`webhook message ${message!.id}`, () =>
        receiver.requests.find((r) => r.headers['webhook-id'] === message!.id),
      );
      expect(request.verifiedWith).toEqual([0]);
      expect(JSON.parse(request.body)).toMatchObject({ event: 'export.started', tenant_id: tenant.id });
    });

    test('the sweep job delivers messages emitted without a queue', async () => {
      const tenant = await createTenant(t.database);
      const { secret } = await createEndpoint(
        t.database,
        tenant.id,
        { url: receiver.url, events: ['export.failed'] },
        { secrets, outbound: outboundPolicy(config.outboundAllow) },
      );
      receiver.setSecrets([secret]);
      const [message] = await emitEvent(t.database, tenant.id, 'export.failed', {
        export_id: 'e2',
        data: {},
      });
      // The cron runs it every minute; send one now instead of waiting.
      await queue.boss.send(WEBHOOK_SWEEP_JOB, {});
      const request = await until(`webhook message ${message!.id}`, () =>
        receiver.requests.find((r) => r.headers['webhook-id'] === message!.id),
      );
      expect(request.verifiedWith).toEqual([0]);
    });
  });
}
