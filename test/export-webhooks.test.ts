import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, requestExport } from './support/fixtures/export-jobs.ts';
import { sha256 } from './support/fixtures/streams.ts';
import { DIALECTS } from './support/databases.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';

interface Message {
  event: string;
  timestamp: string;
  export_id?: string;
  tenant_id: string;
  data: Record<string, unknown>;
}

/**
 * API exports announce their state changes to the tenant's webhook endpoints, through
 * the outbox and a real HTTP receiver on loopback (allowed by FERRY_OUTBOUND_ALLOW):
 * `export.started` and `export.completed` (with a working signed link) or `export.failed`.
 */
for (const dialect of DIALECTS) {
  describe(`webhooks of API exports (${dialect})`, () => {
    let h: ExportHarness;
    let receiver: TestWebhookReceiver;

    beforeAll(async () => {
      receiver = await startWebhookReceiver();
      h = await exportHarness(dialect, {
        workers: true,
        env: { FERRY_OUTBOUND_ALLOW: '127.0.0.1', FERRY_PUBLIC_URL: 'https://ferry.example.com/' },
      });
      const res = await h.app.inject({
        method: 'POST',
        url: '/api/v1/webhooks',
        headers: bearer(h.keys.admin),
        payload: { url: receiver.url, events: ['*'] },
      });
      expect(res.statusCode, res.body).toBe(201);
      receiver.setSecrets([res.json().secret]);
    }, 120_000);
    afterAll(async () => {
      await h?.close();
      await receiver?.stop();
    });

    /** The verified messages about one export, once `count` arrived (and a moment for duplicates). */
    async function messagesOf(exportId: string, count: number): Promise<Message[]> {
      const deadline = Date.now() + 60_000;
      const mine = () =>
        receiver.requests
          .map((r) => ({ r, body: JSON.parse(r.body) as Message }))
          .filter(({ body }) => body.export_id === exportId);
      while (mine().length < count && Date.now() < deadline) await sleep(100);
      await sleep(500);
      const found = mine();
      for (const { r } of found) expect(r.verifiedWith).toEqual([0]);
      return found.map(({ body }) => body);
    }

    it('sends export.started and export.completed with a link that downloads the file', async () => {
      const created = await requestExport(h.app, h.keys.admin, {
        datasets: ['conversations'],
        format: 'csv',
        from: '2026-08-01',
        to: '2026-09-30',
      });
      const done = await h.waitForExport(created.id, ['completed']);
      const file = done.files[0]!;

      const messages = await messagesOf(created.id, 2);
      expect(messages.map((m) => m.event).sort()).toEqual(['export.completed', 'export.started']);
      const started = messages.find((m) => m.event === 'export.started')!;
      expect(started).toMatchObject({
        tenant_id: h.tenant.id,
        data: {
          export_type: 'conversations',
          format: 'csv',
          date_range: { start: '2026-08-01', end: '2026-09-30' },
        },
      });
      const completed = messages.find((m) => m.event === 'export.completed')!;
      expect(Object.keys(completed)).toEqual(['event', 'timestamp', 'export_id', 'tenant_id', 'data']);
      expect(completed.data).toMatchObject({
        export_type: 'conversations',
        date_range: { start: '2026-08-01', end: '2026-09-30' },
        format: 'csv',
        record_count: file.records,
        file_size_bytes: file.bytes,
        compression: 'none',
        checksum: { algorithm: 'sha256', value: file.sha256 },
      });
      expect(Object.keys(completed.data)).toEqual([
        'export_type',
        'date_range',
        'format',
        'record_count',
        'file_size_bytes',
        'compression',
        'download_url',
        'expires_at',
        'checksum',
      ]);
      const url = new URL(completed.data.download_url as string);
      expect(url.origin).toBe('https://ferry.example.com');
      const got = await h.app.inject({ method: 'GET', url: `${url.pathname}${url.search}` });
      expect(got.statusCode).toBe(200);
      expect(sha256(got.rawPayload)).toBe(file.sha256);
    });

    it('sends export.failed with the error once the export failed for good', async () => {
      await h.database.db
        .updateTable('tenants')
        .set({ plan: 'enterprise' })
        .where('id', '=', h.tenant.id)
        .execute();
      await h.database.db
        .insertInto('settings')
        .values({
          tenant_id: h.tenant.id,
          key: 'ferry.limits',
          value: JSON.stringify({ max_file_bytes: 200 }),
        } as never)
        .execute();
      try {
        const created = await requestExport(h.app, h.keys.admin, { datasets: ['messages'], format: 'json' });
        const done = await h.waitForExport(created.id, ['failed']);
        const messages = await messagesOf(created.id, 2);
        expect(messages.map((m) => m.event).sort()).toEqual(['export.failed', 'export.started']);
        const failed = messages.find((m) => m.event === 'export.failed')!;
        expect(failed).toMatchObject({
          tenant_id: h.tenant.id,
          data: {
            export_type: 'messages',
            format: 'json',
            error: { code: 'quota_exceeded', message: done.error!.message },
          },
        });
      } finally {
        await h.database.db
          .deleteFrom('settings')
          .where('tenant_id', '=', h.tenant.id)
          .where('key', '=', 'ferry.limits')
          .execute();
        await h.database.db
          .updateTable('tenants')
          .set({ plan: 'agency' })
          .where('id', '=', h.tenant.id)
          .execute();
      }
    });
  });
}
