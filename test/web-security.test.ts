import { backupContext } from '../src/backup/context.ts';
import { runBackup } from '../src/backup/service.ts';
import { sql } from 'kysely';
import { importContext } from '../src/imports/context.ts';
import { createImport } from '../src/imports/service.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import { registeredWebRoutes } from '../src/web/plugin.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, requestExport } from './support/fixtures/export-jobs.ts';
import { signInAs, webGet, webPost } from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';

const XSS = '<script>alert("x")</script>';

/**
 * The dashboard's security properties: no route answers with another tenant's data when
 * given that tenant's ids, every text a page shows is escaped, the Content-Security-Policy
 * allows no inline code, and roles see only what they may do.
 */
for (const dialect of DIALECTS) {
  describe(`dashboard security on ${dialect}`, () => {
    let h: ExportHarness;
    const others: Record<string, string> = {};

    beforeAll(async () => {
      h = await exportHarness(dialect, {
        web: true,
        workers: true,
        env: { FERRY_OUTBOUND_ALLOW: '127.0.0.1' },
      });
      // One object of every kind in the other tenant.
      const exported = await requestExport(h.app, h.otherKeys.admin, {
        datasets: ['account'],
        format: 'json',
      });
      others.exports = exported.id;
      others['organisation/exports'] = exported.id;
      others.keys = (
        await createApiKey(h.database, { tenantId: h.other.id, role: 'analyst', name: 'other' })
      ).id;
      const dsar = await h.app.inject({
        method: 'POST',
        url: '/api/v1/dsar',
        headers: bearer(h.otherKeys.admin),
        payload: {
          type: 'access',
          regulation: 'gdpr',
          source: 'api',
          subject: { email: 'other@example.com' },
        },
      });
      expect(dsar.statusCode, dsar.body).toBe(201);
      others['privacy/requests'] = dsar.json().id;
      const schedule = await h.app.inject({
        method: 'POST',
        url: '/api/v1/schedules',
        headers: bearer(h.otherKeys.admin),
        payload: {
          name: 'other nightly',
          frequency: { type: 'daily' },
          time: '02:30',
          timezone: 'UTC',
          datasets: [{ dataset: 'conversations' }],
          format: 'csv',
          targets: [{ type: 'email', name: 'team', to: ['ops@example.com'] }],
        },
      });
      expect(schedule.statusCode, schedule.body).toBe(201);
      others.schedules = schedule.json().id;
      const saved = await h.app.inject({
        method: 'POST',
        url: '/api/v1/export-configs',
        headers: bearer(h.otherKeys.admin),
        payload: { export_name: 'other nightly export', filters: { escalated: true } },
      });
      expect(saved.statusCode, saved.body).toBe(201);
      others['export-configs'] = saved.json().id;
      const hook = await h.app.inject({
        method: 'POST',
        url: '/api/v1/webhooks',
        headers: bearer(h.otherKeys.admin),
        payload: { url: 'http://127.0.0.1:9/hook', events: ['export.completed'] },
      });
      expect(hook.statusCode, hook.body).toBe(201);
      others.webhooks = hook.json().id;
      const hold = await h.app.inject({
        method: 'POST',
        url: '/api/v1/legal-holds',
        headers: bearer(h.otherKeys.admin),
        payload: { scope: 'tenant', reason: 'other hold', matter: 'OTHER-1' },
      });
      expect(hold.statusCode, hold.body).toBe(201);
      others['retention/holds'] = hold.json().id;
      const processor = await h.app.inject({
        method: 'POST',
        url: '/api/v1/processors',
        headers: bearer(h.otherKeys.admin),
        payload: {
          name: 'other processor',
          purpose: 'x',
          data_categories: ['contact'],
          location: 'US',
          retention: '1 year',
          deletion_channel: 'email',
          deletion_contact: 'dpo@other.example',
        },
      });
      expect(processor.statusCode, processor.body).toBe(201);
      others['compliance/processors'] = processor.json().id;
      const backup = await runBackup(
        backupContext({ database: h.database, config: h.config, store: h.store, secrets: h.secrets }),
        {
          tenantId: h.other.id,
          trigger: 'manual',
          actor: 'test',
        },
      );
      others.backups = backup.id;
      const plan = await createImport(
        importContext({ database: h.database, config: h.config, store: h.store }),
        {
          tenantId: h.other.id,
          source: 'csv',
          input: {
            kind: 'stored',
            key: `imports/${h.other.id}/x/customers.csv`,
            name: 'customers.csv',
            bytes: 0,
          },
          dryRun: true,
          conflict: { default: 'skip' },
          allOrNothing: false,
          notify: false,
          actor: 'test',
        },
      );
      await sql`UPDATE imports SET status = 'completed' WHERE id = ${plan.id}`.execute(h.database.db);
      others.imports = plan.id;
      const otherSession = await signInAs(h.app, h.database, h.other, 'admin');
      expect(otherSession.cookies.ferry_session).toBeTruthy();
      const row = await sql<{
        id: string;
      }>`SELECT id FROM web_sessions WHERE tenant_id = ${h.other.id} LIMIT 1`.execute(h.database.db);
      others['account/sessions'] = row.rows[0]!.id;
    }, 180_000);
    afterAll(async () => {
      await h?.close();
    });

    it("answers every dashboard route given another tenant's id without showing or changing it", async () => {
      const session = await signInAs(h.app, h.database, h.tenant, 'admin');
      const withId = registeredWebRoutes().filter((r) => r.url.startsWith('/app/') && r.url.includes(':id'));
      expect(withId.length).toBeGreaterThanOrEqual(10);
      const tried: string[] = [];
      for (const route of withId) {
        const kind = /^\/app\/(.+?)\/:id/.exec(route.url)![1]!;
        const id = others[kind];
        expect(id, `an id of the other tenant for ${route.url}`).toBeTruthy();
        const url = route.url.replace(':id', id!).replace(':op', 'approve');
        const res =
          route.method === 'GET' ? await webGet(h.app, session, url) : await webPost(h.app, session, url, {});
        tried.push(`${route.method} ${url} ${res.statusCode}`);
        // Not found, or (ending a session) a redirect that did nothing: never a page of it.
        expect([404, 303], `${route.method} ${route.url}`).toContain(res.statusCode);
        expect(res.body).not.toContain('other nightly');
        expect(res.body).not.toContain('other@example.com');
      }
      // Nothing of the other tenant changed.
      const ended = await sql<{
        ended_at: Date | null;
      }>`SELECT ended_at FROM web_sessions WHERE id = ${others['account/sessions']}`.execute(h.database.db);
      expect(ended.rows[0]!.ended_at).toBeNull();
      const key = await sql<{
        revoked_at: Date | null;
      }>`SELECT revoked_at FROM api_keys WHERE id = ${others.keys}`.execute(h.database.db);
      expect(key.rows[0]!.revoked_at).toBeNull();
      const held = await sql<{
        released_at: Date | null;
      }>`SELECT released_at FROM legal_holds WHERE id = ${others['retention/holds']}`.execute(h.database.db);
      expect(held.rows[0]!.released_at).toBeNull();
      const kept = await sql<{
        n: number | string;
      }>`SELECT count(*) AS n FROM processors WHERE id = ${others['compliance/processors']}`.execute(
        h.database.db,
      );
      expect(Number(kept.rows[0]!.n)).toBe(1);
      const config = await sql<{
        n: number | string;
      }>`SELECT count(*) AS n FROM export_configs WHERE id = ${others['export-configs']}`.execute(
        h.database.db,
      );
      expect(Number(config.rows[0]!.n)).toBe(1);
      expect(tried.length).toBe(withId.length);
    });

    it('escapes every text the pages show', async () => {
      const tenant = h.tenant.id;
      await sql`UPDATE tenants SET name = ${`Acme ${XSS}`} WHERE id = ${tenant}`.execute(h.database.db);
      await sql`UPDATE team_members SET name = ${`Ann ${XSS}`} WHERE tenant_id = ${tenant}`.execute(
        h.database.db,
      );
      await sql`UPDATE sites SET name = ${`Shop ${XSS}`} WHERE tenant_id = ${tenant}`.execute(h.database.db);
      await createApiKey(h.database, { tenantId: tenant, role: 'analyst', name: `key ${XSS}` });
      const dsar = await h.app.inject({
        method: 'POST',
        url: '/api/v1/dsar',
        headers: bearer(h.keys.admin),
        payload: {
          type: 'erasure',
          regulation: 'gdpr',
          source: 'api',
          subject: { email: 'x@example.com' },
          note: XSS,
        },
      });
      expect(dsar.statusCode, dsar.body).toBe(201);
      const session = await signInAs(h.app, h.database, h.tenant, 'admin');
      await webPost(h.app, session, '/app/privacy/center', {
        name: `Brand ${XSS}`,
        primary_color: '#123456',
      });
      const slug = (
        await sql<{ slug: string }>`SELECT slug FROM tenants WHERE id = ${tenant}`.execute(h.database.db)
      ).rows[0]!.slug;
      const pages = [
        '/app/exports',
        '/app/export',
        '/app/keys',
        '/app/privacy',
        `/app/privacy/requests/${dsar.json().id}`,
        '/app/privacy/center',
        '/app/account',
        `/privacy/${slug}`,
        `/privacy/${slug}/delete`,
      ];
      for (const url of pages) {
        const res = await webGet(h.app, session, url);
        expect(res.statusCode, url).toBe(200);
        expect(res.body, url).not.toContain('<script>alert');
        expect(res.body, url).toMatch(/&#60;script&#62;alert/);
      }
      // The error page too: a path parameter comes back escaped.
      const missing = await webGet(h.app, session, `/privacy/${encodeURIComponent('<script>x')}`);
      expect(missing.body).not.toContain('<script>x');
    });

    it('serves pages with a Content-Security-Policy that allows no inline code, and no inline code', async () => {
      const session = await signInAs(h.app, h.database, h.tenant, 'admin');
      const res = await webGet(h.app, session, '/app/export');
      const csp = String(res.headers['content-security-policy']);
      expect(csp).toContain("script-src 'self'");
      expect(csp).toContain("style-src 'self'");
      expect(csp).not.toContain('unsafe-inline');
      expect(csp).not.toContain('unsafe-eval');
      expect(res.body).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
      expect(res.body).not.toMatch(/\sstyle="/);
      expect(res.body).not.toMatch(/\son[a-z]+="/);
      expect(res.headers['x-frame-options']).toBe('SAMEORIGIN');
    });

    it('shows each role only what it may do, and refuses the rest when forced', async () => {
      const analyst = await signInAs(h.app, h.database, h.tenant, 'analyst');
      const page = await webGet(h.app, analyst, '/app/exports');
      expect(page.body).not.toContain('href="/app/keys"');
      expect(page.body).not.toContain('href="/app/privacy"');
      expect(page.body).toContain('href="/app/export"');
      expect((await webGet(h.app, analyst, '/app/keys')).statusCode).toBe(403);
      expect((await webPost(h.app, analyst, '/app/keys', { role: 'admin' })).statusCode).toBe(403);
      expect((await webGet(h.app, analyst, '/app/privacy')).statusCode).toBe(403);
      // The analyst's export panel offers only anonymized levels, and a forced full export is refused.
      const form = await webGet(h.app, analyst, '/app/export');
      expect(form.body).not.toContain('value="full"');
      const forced = await webPost(h.app, analyst, '/app/export', {
        panel: 'conversations',
        range: 'all',
        format: 'csv',
        pii: 'full',
        intent: 'start',
      });
      expect(forced.statusCode).toBe(403);
      expect(forced.body).toContain('may not export personal data');
      const agent = await signInAs(h.app, h.database, h.tenant, 'agent');
      expect((await webGet(h.app, agent, '/app/export')).body).not.toContain('panel-analytics');
    });
  });
}
