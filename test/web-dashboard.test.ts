import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, webGet, webPost } from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';

for (const dialect of DIALECTS) {
  describe(`the dashboard on ${dialect}`, () => {
    let h: ExportHarness;
    beforeAll(async () => {
      h = await exportHarness(dialect, { web: true, workers: true });
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    it('sends a visitor without a session to the sign-in page, and back afterwards', async () => {
      const res = await h.app.inject({ url: '/app/keys' });
      expect(res.statusCode).toBe(303);
      expect(res.headers.location).toBe('/signin?next=%2Fapp%2Fkeys');
    });

    it('starts an export from the conversations panel and shows it completed with its checksum', async () => {
      const session = await signInAs(h.app, h.database, h.tenant, 'admin');
      const form = await webGet(h.app, session, '/app/export');
      expect(form.statusCode).toBe(200);
      const res = await webPost(h.app, session, '/app/export', {
        panel: 'conversations',
        dataset: 'conversations',
        range: 'all',
        format: 'csv',
        compression: 'none',
        pii: 'enhanced',
        intent: 'start',
      });
      expect(res.statusCode, res.body).toBe(303);
      const id = /\/app\/exports\/([0-9a-f-]{36})$/.exec(String(res.headers.location))![1]!;
      const done = await h.waitForExport(id);
      expect(done.status).toBe('completed');
      const page = await webGet(h.app, session, `/app/exports/${id}`);
      expect(page.body).toContain(done.files[0]!.sha256);
      expect((done.request as { pii: string }).pii).toBe('enhanced');
    });

    it('refuses a form without its CSRF token', async () => {
      const session = await signInAs(h.app, h.database, h.tenant, 'admin');
      const res = await webPost(h.app, session, '/app/keys', { role: 'analyst' }, { csrf: false });
      expect(res.statusCode).toBe(403);
    });
  });
}
