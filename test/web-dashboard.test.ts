import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, type WebSession, webGet, webPost } from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';

interface StoredConfig {
  datasets: string[];
  format: string;
  compression: string | null;
  package: string;
  pii: string;
  from: string | null;
  to: string | null;
  filters: Record<string, unknown>;
  options: Record<string, string>;
  timezone: string | null;
  split_size?: number | null;
}

/** The export pages of the dashboard: each panel makes the request the API would, history, progress, actions. */
for (const dialect of DIALECTS) {
  describe(`the dashboard's export pages on ${dialect}`, () => {
    let h: ExportHarness;
    let admin: WebSession;
    beforeAll(async () => {
      h = await exportHarness(dialect, { web: true, workers: true });
      admin = await signInAs(h.app, h.database, h.tenant, 'admin');
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    const start = async (form: Record<string, string | string[]>) => {
      const res = await webPost(h.app, admin, '/app/export', { ...form, intent: 'start' });
      expect(res.statusCode, res.body).toBe(303);
      return /\/app\/exports\/([0-9a-f-]{36})$/.exec(String(res.headers.location))![1]!;
    };
    const stored = async (id: string) =>
      (
        await sql<{ config: StoredConfig }>`SELECT config FROM export_requests WHERE id = ${id}`.execute(
          h.database.db,
        )
      ).rows[0]!.config;

    it('sends a visitor without a session to the sign-in page, and back afterwards', async () => {
      const res = await h.app.inject({ url: '/app/keys' });
      expect(res.statusCode).toBe(303);
      expect(res.headers.location).toBe('/signin?next=%2Fapp%2Fkeys');
      expect((await h.app.inject({ url: '/' })).headers.location).toBe('/app');
    });

    it('starts an export from the conversations panel and shows it completed with its checksum', async () => {
      const id = await start({
        panel: 'conversations',
        dataset: 'conversations',
        range: 'custom',
        from: '2026-08-01',
        to: '2026-08-31',
        format: 'csv',
        compression: 'gzip',
        pii: 'enhanced',
        status: 'resolved',
        escalated: 'false',
      });
      const config = await stored(id);
      expect(config).toMatchObject({
        datasets: ['conversations'],
        format: 'csv',
        compression: 'gzip',
        pii: 'enhanced',
        from: '2026-08-01',
        to: '2026-08-31',
        // Filters are stored as the API stores them (text).
        filters: { status: 'resolved', escalated: 'false' },
      });
      const done = await h.waitForExport(id);
      expect(done.status).toBe('completed');
      const page = await webGet(h.app, admin, `/app/exports/${id}`);
      expect(page.body).toContain(done.files[0]!.sha256);
      expect(page.body).toContain('csv + gzip');
      // The download button hands out a signed link to the same bytes.
      const download = await webGet(h.app, admin, `/app/exports/${id}/download?file=${done.files[0]!.name}`);
      expect(download.statusCode).toBe(302);
      const file = await h.app.inject({
        url:
          new URL(String(download.headers.location)).pathname +
          new URL(String(download.headers.location)).search,
      });
      expect(file.statusCode).toBe(200);
      expect(file.rawPayload.length).toBe(done.files[0]!.bytes);
    });

    it('turns the analytics, knowledge base, account and package panels into their requests', async () => {
      const analytics = await stored(
        await start({
          panel: 'analytics',
          metrics: ['performance', 'revenue'],
          granularity: 'weekly',
          timezone: 'America/New_York',
          format: 'ndjson',
          range: 'all',
          pii: 'full',
        }),
      );
      expect(analytics).toMatchObject({
        datasets: ['analytics'],
        format: 'ndjson',
        timezone: 'America/New_York',
        options: { metrics: 'performance,revenue', granularity: 'weekly' },
      });
      // The panel's other reports take only the options they declare.
      const rollups = await stored(
        await start({
          panel: 'analytics',
          report: 'rollups',
          metrics: ['performance'],
          granularity: 'monthly',
          format: 'csv',
          range: 'all',
          pii: 'full',
        }),
      );
      expect(rollups).toMatchObject({ datasets: ['rollups'], options: { granularity: 'monthly' } });
      const topics = await stored(
        await start({
          panel: 'analytics',
          report: 'topic_summary',
          granularity: 'daily',
          range: 'all',
          pii: 'full',
        }),
      );
      expect(topics).toMatchObject({ datasets: ['topic_summary'], options: {} });
      const panel = await webGet(h.app, admin, '/app/export');
      for (const report of [
        'rollups',
        'site_summary',
        'topic_summary',
        'daily_totals',
        'channel_performance',
      ])
        expect(panel.body).toContain(`<option value="${report}">`);
      const kb = await stored(
        await start({ panel: 'knowledge_base', format: 'markdown', include_embeddings: 'true' }),
      );
      expect(kb).toMatchObject({
        datasets: ['knowledge_base'],
        format: 'markdown',
        options: { include_embeddings: 'true' },
      });
      const account = await stored(await start({ panel: 'account' }));
      expect(account).toMatchObject({ datasets: ['account'], format: 'json', options: {} });
      const pkg = await stored(
        await start({ panel: 'package', package: 'tar.gz', format: 'parquet', range: 'all', pii: 'basic' }),
      );
      expect(pkg.package).toBe('tar.gz');
      expect(pkg.format).toBe('parquet');
      expect(pkg.datasets).toContain('messages');
      expect(pkg.datasets).toContain('account');
      expect(pkg.split_size ?? null).toBeNull();
      const parts = await stored(
        await start({ panel: 'package', package: 'zip', split_size: '2GB', range: 'all', pii: 'basic' }),
      );
      expect(parts.split_size).toBe(2_000_000_000);
      // The page offers the sizes the API takes.
      const form = await webGet(h.app, admin, '/app/export');
      expect(form.body).toContain('<option value="2GB">Parts of 2 GB</option>');
    });

    it('exports only the knowledge-base parts and account sections that are ticked', async () => {
      const download = async (id: string) => {
        const done = await h.waitForExport(id);
        expect(done.status).toBe('completed');
        const link = await webGet(h.app, admin, `/app/exports/${id}/download`);
        const url = new URL(String(link.headers.location));
        return JSON.parse((await h.app.inject({ url: url.pathname + url.search })).body);
      };
      const kbId = await start({
        panel: 'knowledge_base',
        format: 'json',
        include_shown: '1',
        include: ['metadata'],
      });
      expect((await stored(kbId)).options).toEqual({ include: 'metadata' });
      const kb = await download(kbId);
      expect(kb.documents.length).toBeGreaterThan(0);
      for (const doc of kb.documents) {
        expect(doc.metadata).toBeTruthy();
        expect(doc.content).toBeUndefined();
        expect(doc.usage_statistics).toBeUndefined();
        for (const chunk of doc.chunks) expect(chunk.content).toBeUndefined();
      }
      const accountId = await start({
        panel: 'account',
        sections_shown: '1',
        sections: ['settings', 'integrations'],
      });
      const account = (await download(accountId)).account;
      expect(account.settings).toBeTruthy();
      expect(account.integrations).toBeTruthy();
      expect(account.team_members).toBeUndefined();
      expect(account.sites).toBeTruthy();
      // Unticking every box is a mistake to show, not "everything".
      const none = await webPost(h.app, admin, '/app/export', {
        panel: 'account',
        sections_shown: '1',
        intent: 'start',
      });
      expect(none.statusCode).toBe(400);
      expect(none.body).toContain('choose at least one of settings, users, integrations');
      // The API checks the option's words too.
      const bad = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: { authorization: `Bearer ${h.keys.admin}` },
        payload: { datasets: ['knowledge_base'], format: 'json', options: { include: 'content,secrets' } },
      });
      expect(bad.statusCode).toBe(400);
      expect(bad.body).toContain('unknown value \\"secrets\\"');
    });

    it('estimates before starting, as a fragment for htmx and on the page without JavaScript, creating nothing', async () => {
      const count = async () =>
        Number(
          (await sql<{ n: string }>`SELECT count(*) AS n FROM export_requests`.execute(h.database.db))
            .rows[0]!.n,
        );
      const before = await count();
      const conversations = Number(
        (
          await sql<{
            n: string;
          }>`SELECT count(*) AS n FROM conversations WHERE tenant_id = ${h.tenant.id}`.execute(h.database.db)
        ).rows[0]!.n,
      );
      const form = {
        panel: 'conversations',
        dataset: 'conversations',
        range: 'all',
        format: 'csv',
        pii: 'full',
      };
      const fragment = await webPost(h.app, admin, '/app/export/estimate', form);
      expect(fragment.statusCode).toBe(200);
      expect(fragment.body).toMatch(new RegExp(`^About ${conversations.toLocaleString('en-US')} rows, `));
      const page = await webPost(h.app, admin, '/app/export', { ...form, intent: 'estimate' });
      expect(page.body).toContain(`About ${conversations.toLocaleString('en-US')} rows`);
      const bad = await webPost(h.app, admin, '/app/export/estimate', {
        ...form,
        range: 'custom',
        from: 'yesterday-ish',
      });
      expect(bad.body).toContain('class="error"');
      expect(await count()).toBe(before);
    });

    it('shows a refused request on the form with the reason, not an error page', async () => {
      const res = await webPost(h.app, admin, '/app/export', {
        panel: 'conversations',
        range: 'custom',
        from: '2026-13-45',
        format: 'csv',
        pii: 'full',
        intent: 'start',
      });
      expect(res.statusCode).toBe(400);
      expect(res.body).toContain('panel-conversations');
      expect(res.body).toMatch(/<p class="error" role="alert">[^<]*from/);
    });

    it('streams progress as Server-Sent Events until the export is done', async () => {
      const id = await start({ panel: 'account' });
      const res = await webGet(h.app, admin, `/app/exports/${id}/events`);
      expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
      const events = [...res.body.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
      expect(events.at(-1)).toBe('done');
      expect(events).toContain('progress');
      expect(res.body).toMatch(/event: done\ndata: completed/);
    });

    it('filters and pages the history, and runs an export again, cancels and deletes files', async () => {
      // 30 more exports, so the history has a second page.
      for (let i = 0; i < 30; i++) await start({ panel: 'account' });
      const first = await webGet(h.app, admin, '/app/exports');
      const rows = (body: string) =>
        [...body.matchAll(/href="\/app\/exports\/([0-9a-f-]{36})"/g)].map((m) => m[1]!);
      expect(rows(first.body)).toHaveLength(25);
      const older = /href="(\/app\/exports\?cursor=[^"]+)" rel="next"/
        .exec(first.body)![1]!
        .replaceAll('&#38;', '&');
      const second = await webGet(h.app, admin, older);
      expect(second.statusCode).toBe(200);
      expect(rows(second.body).filter((id) => rows(first.body).includes(id))).toEqual([]);
      // The analytics export, and the two packages (one whole, one in parts) that hold analytics too.
      const filtered = await webGet(h.app, admin, '/app/exports?dataset=analytics');
      expect(rows(filtered.body)).toHaveLength(3);
      const analytics = [];
      for (const candidate of rows(filtered.body))
        if ((await stored(candidate)).package === 'none') analytics.push(candidate);
      expect(analytics).toHaveLength(1);
      const id = analytics[0]!;
      await h.waitForExport(id);
      const again = await webPost(h.app, admin, `/app/exports/${id}/repeat`);
      expect(again.statusCode).toBe(303);
      const repeatId = /([0-9a-f-]{36})$/.exec(String(again.headers.location))![1]!;
      expect((await stored(repeatId)).options).toEqual((await stored(id)).options);

      const deleted = await webPost(h.app, admin, `/app/exports/${id}/delete`);
      expect(deleted.statusCode).toBe(303);
      const after = await h.waitForExport(id, ['expired']);
      expect(after.status).toBe('expired');
    });

    it('refuses a form without its CSRF token', async () => {
      const res = await webPost(h.app, admin, '/app/keys', { role: 'analyst' }, { csrf: false });
      expect(res.statusCode).toBe(403);
    });
  });
}
