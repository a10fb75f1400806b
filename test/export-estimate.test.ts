import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, requestExport } from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';

interface Estimate {
  datasets: string[];
  rows: number | null;
  bytes: number | null;
  seconds: number | null;
  basis: 'history' | 'default';
}

interface Quota {
  quota: string;
  used: number | null;
}

for (const dialect of DIALECTS) {
  describe(`export estimates on ${dialect}`, () => {
    let h: ExportHarness;

    beforeAll(async () => {
      h = await exportHarness(dialect);
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    const estimate = (key: string, payload: Record<string, unknown>) =>
      h.app.inject({ method: 'POST', url: '/api/v1/exports/estimate', headers: bearer(key), payload });

    const count = async (query: ReturnType<typeof sql<{ n: number }>>) =>
      Number((await query.execute(h.database.db)).rows[0]!.n);
    const conversations = () =>
      count(
        sql<{ n: number }>`SELECT count(*)::int AS n FROM conversations WHERE tenant_id = ${h.tenant.id}`,
      );
    const messages = () =>
      count(sql<{ n: number }>`SELECT count(*)::int AS n FROM messages m
        JOIN conversations c ON c.id = m.conversation_id WHERE c.tenant_id = ${h.tenant.id}`);
    const exportRequests = () => count(sql<{ n: number }>`SELECT count(*)::int AS n FROM export_requests`);
    const auditEvents = () => count(sql<{ n: number }>`SELECT count(*)::int AS n FROM audit_events`);
    /** The plan's quotas and their use, but the calling key's own request count. */
    const usage = async () => {
      const res = await h.app.inject({ url: '/api/v1/usage', headers: bearer(h.keys.admin) });
      expect(res.statusCode, res.body).toBe(200);
      return (res.json() as { quotas: Quota[] }).quotas.filter((q) => q.quota !== 'rate_limit');
    };

    it('counts the rows of a dataset export and sizes it by default figures, creating nothing', async () => {
      const before = { exports: await exportRequests(), audit: await auditEvents(), usage: await usage() };
      const res = await estimate(h.keys.admin, {
        datasets: ['conversations'],
        format: 'csv',
        compression: 'gzip',
        pii: 'complete',
      });
      expect(res.statusCode, res.body).toBe(200);
      const body = res.json() as Estimate;
      const rows = await conversations();
      expect(rows).toBeGreaterThan(0);
      expect(body).toEqual({
        datasets: ['conversations'],
        rows,
        bytes: rows * 200,
        seconds: 1,
        basis: 'default',
      });
      expect(await exportRequests()).toBe(before.exports);
      expect(await auditEvents()).toBe(before.audit);
      expect(await usage()).toEqual(before.usage);
    });

    it('counts what a filter and the date range leave', async () => {
      const res = await estimate(h.keys.manager, {
        datasets: ['conversations'],
        format: 'ndjson',
        from: '2026-09-01T00:00:00Z',
        filters: { status: 'resolved' },
      });
      expect(res.statusCode, res.body).toBe(200);
      const rows = await count(sql<{ n: number }>`SELECT count(*)::int AS n FROM conversations
        WHERE tenant_id = ${h.tenant.id} AND status = 'resolved' AND start_timestamp >= '2026-09-01T00:00:00Z'`);
      expect(rows).toBeGreaterThan(0);
      expect(rows).toBeLessThan(await conversations());
      const body = res.json() as Estimate;
      expect(body.rows).toBe(rows);
      expect(body.bytes).toBe(rows * 700);
    });

    it("narrows an agent's estimate to the agent's own conversations", async () => {
      const agent = h.tenant.members.agent;
      await sql`UPDATE conversations SET assigned_agent_id = ${agent}::uuid WHERE id IN (
        SELECT id FROM conversations WHERE tenant_id = ${h.tenant.id} ORDER BY id LIMIT 5)`.execute(
        h.database.db,
      );
      const res = await estimate(h.keys.agent, { datasets: ['conversations'] });
      expect(res.statusCode, res.body).toBe(200);
      const own = await count(sql<{ n: number }>`SELECT count(*)::int AS n FROM conversations t
        WHERE t.tenant_id = ${h.tenant.id} AND (t.assigned_agent_id = ${agent}::uuid OR EXISTS (
          SELECT 1 FROM messages p WHERE p.conversation_id = t.id AND p.sender_id = ${agent}))`);
      expect((res.json() as Estimate).rows).toBe(own);
      expect(own).toBeGreaterThan(0);
      expect(own).toBeLessThan(await conversations());
    });

    it('adds up the tabular datasets of a package, and gives no figures for a document dataset', async () => {
      const pkg = await estimate(h.keys.admin, { datasets: ['conversations', 'messages'], pii: 'basic' });
      expect(pkg.statusCode, pkg.body).toBe(200);
      const rows = (await conversations()) + (await messages());
      expect(pkg.json()).toEqual({
        datasets: ['conversations', 'messages'],
        rows,
        bytes: rows * 200,
        seconds: 1,
        basis: 'default',
      });

      const doc = await estimate(h.keys.admin, { datasets: ['knowledge_base'] });
      expect(doc.statusCode, doc.body).toBe(200);
      expect(doc.json()).toEqual({
        datasets: ['knowledge_base'],
        rows: null,
        bytes: null,
        seconds: null,
        basis: 'default',
      });
    });

    it('refuses what the role may not export, and what the data map does not know, as problems', async () => {
      const before = await exportRequests();
      const forbidden = await estimate(h.keys.analyst, { datasets: ['conversations'], pii: 'full' });
      expect(forbidden.statusCode).toBe(403);
      expect(forbidden.headers['content-type']).toBe(PROBLEM);
      expect(forbidden.json()).toMatchObject({ code: 'forbidden' });

      const unknown = await estimate(h.keys.admin, { datasets: ['no_such_dataset'] });
      expect(unknown.statusCode).toBe(400);
      expect(unknown.headers['content-type']).toBe(PROBLEM);
      expect(unknown.json()).toMatchObject({ code: 'invalid_parameter' });
      expect(JSON.stringify(unknown.json().errors)).toContain('datasets');

      const site = await estimate(h.keys.admin, {
        datasets: ['conversations'],
        filters: { site_url: 'https://not-a-site.example' },
      });
      expect(site.statusCode).toBe(400);
      expect(site.headers['content-type']).toBe(PROBLEM);

      const anonymous = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports/estimate',
        payload: { datasets: ['conversations'] },
      });
      expect(anonymous.statusCode).toBe(401);
      expect(await exportRequests()).toBe(before);
    });

    it("sizes by the tenant's own completed exports of the same dataset, format and compression", async () => {
      await h.startWorkers();
      const body = { datasets: ['conversations'], format: 'csv', pii: 'complete' };
      const created = await requestExport(h.app, h.keys.admin, body);
      const done = await h.waitForExport(created.id, ['completed']);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      const file = done.files[0]!;

      const res = await estimate(h.keys.admin, body);
      expect(res.statusCode, res.body).toBe(200);
      const rows = await conversations();
      // The test clock stands still, so the export took no measurable time: the default speed.
      expect(res.json()).toEqual({
        datasets: ['conversations'],
        rows,
        bytes: Math.round((rows * file.bytes) / file.records),
        seconds: 1,
        basis: 'history',
      });

      // An export that took 4 seconds for its rows: the estimate runs at that speed.
      await sql`UPDATE export_requests SET started_at = finished_at - interval '4 seconds'
        WHERE id = ${created.id}`.execute(h.database.db);
      const timed = await estimate(h.keys.admin, body);
      expect((timed.json() as Estimate).seconds).toBe(Math.ceil(rows / (file.records / 4)));
      expect((timed.json() as Estimate).seconds).toBeGreaterThan(1);

      // Another compression has no history yet.
      const gzip = await estimate(h.keys.admin, { ...body, compression: 'gzip' });
      expect((gzip.json() as Estimate).basis).toBe('default');
    });
  });
}
