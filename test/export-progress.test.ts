import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ExportHarness, exportHarness, requestExport } from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';
import { connectStream, type StreamClient } from './support/fixtures/stream.ts';

/** Progress of computed reports over the API: an estimate before any row, the real count at the end. */
for (const dialect of DIALECTS) {
  describe(`computed export progress on ${dialect}`, () => {
    let h: ExportHarness;

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true, conversations: 40 });
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    it('analytics: the estimate is the (day, site) pairs that had conversations, and the rows match it', async () => {
      const created = await requestExport(h.app, h.keys.admin, {
        datasets: ['analytics'],
        format: 'csv',
        pii: 'complete',
        from: '2026-08-01',
        to: '2026-09-30',
        options: { granularity: 'daily' },
      });
      const done = await h.waitForExport(created.id);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      // Counted independently: days (in the tenant's zone) and sites with a conversation.
      const expected = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM (
          SELECT DISTINCT (c.start_timestamp AT TIME ZONE tn.timezone)::date, c.site_id
          FROM conversations c JOIN tenants tn ON tn.id = c.tenant_id
          WHERE c.tenant_id = ${h.tenant.id}
            AND c.start_timestamp >= ('2026-08-01'::timestamp AT TIME ZONE tn.timezone)
            AND c.start_timestamp < ('2026-10-01'::timestamp AT TIME ZONE tn.timezone)) x`.execute(
        h.database.db,
      );
      const n = Number(expected.rows[0]!.n);
      expect(n).toBeGreaterThan(0);
      expect(done.progress.records_estimated).toBe(n);
      expect(done.progress.records).toBe(n);
      expect(done.files[0]!.records).toBe(n);
      expect(done.progress.percentage).toBe(100);
    });

    it('revenue attribution: the estimate bounds the rows from above', async () => {
      const created = await requestExport(h.app, h.keys.admin, {
        datasets: ['revenue_attribution'],
        format: 'ndjson',
        pii: 'complete',
      });
      const done = await h.waitForExport(created.id);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      const events = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM revenue_events
        WHERE tenant_id = ${h.tenant.id} AND cardinality(conversation_ids) > 0`.execute(h.database.db);
      expect(done.progress.records_estimated).toBe(Number(events.rows[0]!.n));
      expect(done.progress.records).toBeLessThanOrEqual(done.progress.records_estimated!);
      expect(done.progress.records).toBe(done.files[0]!.records);
    });
  });
}

/** The live stream's `exports` stream: progress of the exports the key may read, and no others. */
for (const dialect of DIALECTS) {
  describe(`export progress on the live stream (${dialect})`, () => {
    let h: ExportHarness;
    let url: string;

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true, conversations: 30 });
      await h.app.listen({ host: '127.0.0.1', port: 0 });
      const address = h.app.server.address() as AddressInfo;
      url = `ws://127.0.0.1:${address.port}/api/v1/stream/export`;
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    async function watch(key: string): Promise<StreamClient> {
      const client = await connectStream(url);
      client.send({ type: 'auth', token: key, tenant_id: h.tenant.id });
      expect((await client.next()).type).toBe('authenticated');
      client.send({ type: 'subscribe', stream: 'exports' });
      expect(await client.next()).toEqual({ type: 'subscribed', stream: 'exports' });
      return client;
    }

    it('an admin sees every export finish; an analyst sees only their own', async () => {
      const admin = await watch(h.keys.admin);
      const analyst = await watch(h.keys.analyst);
      try {
        const mine = await requestExport(h.app, h.keys.admin, {
          datasets: ['conversations'],
          format: 'csv',
          pii: 'full',
        });
        const done = await admin.next(
          (m) => m.type === 'export.progress' && m.export_id === mine.id && m.status === 'completed',
        );
        const finished = await h.waitForExport(mine.id);
        expect(done).toMatchObject({
          records: finished.files[0]!.records,
          bytes: finished.files[0]!.bytes,
          percentage: 100,
          eta_seconds: 0,
          datasets: ['conversations'],
        });
        const theirs = await requestExport(h.app, h.keys.analyst, {
          datasets: ['conversations'],
          format: 'csv',
          pii: 'complete',
        });
        await analyst.next(
          (m) => m.type === 'export.progress' && m.export_id === theirs.id && m.status === 'completed',
        );
        await admin.next(
          (m) => m.type === 'export.progress' && m.export_id === theirs.id && m.status === 'completed',
        );
        expect(analyst.messages.some((m) => m.export_id === mine.id)).toBe(false);
        // Filters belong to the conversations stream.
        analyst.send({ type: 'subscribe', stream: 'exports', filters: { site_urls: ['https://x.example'] } });
        expect(await analyst.next()).toMatchObject({ type: 'error', code: 'conflict' });
      } finally {
        admin.close();
        analyst.close();
      }
    });
  });
}
