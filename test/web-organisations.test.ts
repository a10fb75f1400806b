/**
 * The dashboard of an organisation member in Chromium: the tenant switcher in the header
 * (a CSRF-protected form, audited), pages acting in the chosen tenant with the member's role
 * there, a tampered form that names a tenant outside the organisation refused without moving the
 * session, the organisation page (tenants, usage, members, the export across tenants and its
 * download), and a tenant that leaves the organisation dropping out of the session at once.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { AxeBuilder } from '@axe-core/playwright';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeOrganisationTenant } from '../src/organisations/admin.ts';
import type { Organisation } from '../src/organisations/model.ts';
import { issueToken } from '../src/web/accounts.ts';
import { createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { OPERATOR, organisationMember, organisationOf } from './support/fixtures/organisations.ts';
import { DIALECTS } from './support/databases.ts';
import { waitForExport } from './support/wait.ts';

const CHROMIUM = '/usr/bin/chromium';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

for (const dialect of DIALECTS) {
  describe(`an organisation member's dashboard in Chromium on ${dialect}`, () => {
    let h: ExportHarness;
    let organisation: Organisation;
    let home: TestTenant;
    let clientA: TestTenant;
    let clientB: TestTenant;
    let outside: TestTenant;
    let browser: Browser;
    let page: Page;
    let base: string;
    const cspViolations: string[] = [];

    beforeAll(async () => {
      // Signed download links point at FERRY_PUBLIC_URL: the address this test listens on.
      const port = await freePort();
      base = `http://127.0.0.1:${port}`;
      h = await exportHarness(dialect, {
        web: true,
        workers: true,
        conversations: 6,
        env: { FERRY_PUBLIC_URL: base },
      });
      home = h.other;
      clientA = h.tenant;
      clientB = await createTenant(h.database, 'pro');
      outside = await createTenant(h.database, 'pro');
      organisation = await organisationOf(h.database, home, [clientA, clientB]);
      // The home tenant's manager: analyst in the clients by default, admin in B, an organisation admin.
      await organisationMember(h.database, organisation, home.members.manager, {
        admin: true,
        defaultRole: 'analyst',
        tenantRoles: { [clientB.id]: 'admin' },
      });
      for (const row of await h.database.db.selectFrom('tenants').select(['id', 'name']).execute())
        names.set(row.id, row.name);
      await h.app.listen({ host: '127.0.0.1', port });
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
      const context = await browser.newContext({
        acceptDownloads: true,
        viewport: { width: 1280, height: 900 },
      });
      page = await context.newPage();
      page.on('console', (message) => {
        if (/Content Security Policy/i.test(message.text()))
          cspViolations.push(`${page.url()}: ${message.text()}`);
      });
      const token = await issueToken(
        h.database,
        { tenantId: home.id, memberId: home.members.manager },
        'sign_in',
        new Date(),
      );
      await page.goto(`${base}/signin/link/${token}`);
      await page.waitForURL(`${base}/app/exports`);
    }, 240_000);
    afterAll(async () => {
      await browser?.close();
      await h?.close();
    });

    const names = new Map<string, string>();
    const tenantName = (t: TestTenant) => names.get(t.id)!;
    const switcher = () => page.locator('form.tenant-switch select');

    async function auditOf(tenantId: string, action: string) {
      return h.database.db
        .selectFrom('audit_events' as never)
        .select(['actor' as never, 'target_id' as never])
        .where('tenant_id' as never, '=', tenantId as never)
        .where('action' as never, '=', action as never)
        .execute() as Promise<{ actor: string; target_id: string }[]>;
    }

    async function switchTo(tenantId: string) {
      await switcher().selectOption(tenantId);
      await page.getByRole('button', { name: 'Switch' }).click();
      await page.locator('#flash .notice').waitFor();
    }

    it('offers the organisation’s tenants in the header and acts in the chosen one with the role there', async () => {
      const options = await switcher()
        .locator('option')
        .evaluateAll((els) =>
          els.map((el) => ({ value: (el as HTMLOptionElement).value, text: el.textContent })),
        );
      // The home tenant first, then the clients, each with the member's role there.
      expect(options[0]).toEqual({ value: home.id, text: `${tenantName(home)} (manager)` });
      expect(options.slice(1)).toEqual(
        expect.arrayContaining([
          { value: clientA.id, text: `${tenantName(clientA)} (analyst)` },
          { value: clientB.id, text: `${tenantName(clientB)} (admin)` },
        ]),
      );
      expect(options).toHaveLength(3);
      expect(await switcher().inputValue()).toBe(home.id);

      await switchTo(clientA.id);
      expect(await page.locator('#flash .notice').textContent()).toContain(
        `${tenantName(clientA)} now, as analyst`,
      );
      expect(await switcher().inputValue()).toBe(clientA.id);
      // An analyst there: no API keys in the menu, and the page itself is refused.
      expect(await page.locator('header nav a', { hasText: 'API keys' }).count()).toBe(0);
      const keys = await page.goto(`${base}/app/keys`);
      expect(keys!.status()).toBe(403);

      await page.goto(`${base}/app`);
      await switchTo(clientB.id);
      await page.goto(`${base}/app/keys`);
      expect(await page.locator('h1').textContent()).toBe('API keys');
      // B's keys, created in B by the member as the organisation's.
      await page.locator('summary', { hasText: 'Create a key' }).click();
      await page.getByLabel('Name').fill('made in the dashboard');
      await page.getByRole('button', { name: 'Create key' }).click();
      await page.locator('#new-key-value').waitFor();
      const made = await h.database.db
        .selectFrom('api_keys' as never)
        .select(['tenant_id' as never, 'created_by' as never])
        .where('name' as never, '=', 'made in the dashboard' as never)
        .execute();
      expect(made).toEqual([{ tenant_id: clientB.id, created_by: `org_member:${home.members.manager}` }]);
      // Each switch is in the home tenant's trail and the chosen tenant's.
      expect((await auditOf(home.id, 'session.tenant_switched')).map((e) => e.target_id)).toEqual(
        expect.arrayContaining([clientA.id, clientB.id]),
      );
      expect(await auditOf(clientB.id, 'session.tenant_switched')).toEqual([
        { actor: `org_member:${home.members.manager}`, target_id: clientB.id },
      ]);
    });

    it('refuses a tampered switch to a tenant outside the organisation and stays where it was', async () => {
      await page.goto(`${base}/app/exports`);
      for (const tenant of [outside.id, '00000000-0000-4000-8000-000000000000']) {
        // The form as the page sent it, with an option the page never offered.
        await page.evaluate((value) => {
          const select = document.querySelector('form.tenant-switch select') as HTMLSelectElement;
          const option = document.createElement('option');
          option.value = value;
          option.textContent = 'forged';
          select.append(option);
          select.value = value;
        }, tenant);
        const [answer] = await Promise.all([
          page.waitForResponse((r) => r.url().endsWith('/app/organisation/switch')),
          page.getByRole('button', { name: 'Switch' }).click(),
        ]);
        expect(answer.status()).toBe(403);
        await page.getByText('is not a tenant of your organisation').waitFor();
        await page.goto(`${base}/app/exports`);
        expect(await switcher().inputValue()).toBe(clientB.id);
      }
      const refused = await auditOf(home.id, 'organisation.tenant_refused');
      expect(refused.map((e) => e.target_id)).toEqual(
        expect.arrayContaining([outside.id, '00000000-0000-4000-8000-000000000000']),
      );
      expect(await auditOf(outside.id, 'session.tenant_switched')).toEqual([]);
      // Without the CSRF token the switch is refused before it is looked at.
      const forged = await page.evaluate(async (tenant) => {
        const res = await fetch('/app/organisation/switch', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `tenant_id=${tenant}`,
        });
        return res.status;
      }, clientA.id);
      expect(forged).toBe(403);
      await page.goto(`${base}/app/exports`);
      expect(await switcher().inputValue()).toBe(clientB.id);
    });

    it('shows the organisation page and runs the export across the tenants to a download', async () => {
      await page.goto(`${base}/app/organisation`);
      expect(await page.locator('h1').textContent()).toBe(organisation.name);
      const rows = await page.locator('section[aria-labelledby=tenants] tbody tr').allTextContents();
      expect(rows).toHaveLength(3);
      expect(rows.find((r) => r.includes(clientB.slug))).toContain('admin');
      // Usage: the tenants the member reads usage in (home as manager, B as admin), and their sum.
      const usageRows = await page.locator('section[aria-labelledby=usage] tbody th').allTextContents();
      expect(usageRows.sort()).toEqual([tenantName(home), tenantName(clientB)].sort());
      const api = await h.app.inject({
        url: '/api/v1/usage',
        headers: { authorization: `Bearer ${h.otherKeys.admin}` },
      });
      const homeExports = api
        .json()
        .quotas.find((q: { quota: string }) => q.quota === 'exports_per_month').used;
      expect(Number(await page.locator('#total-exports_per_month').textContent())).toBeGreaterThanOrEqual(
        homeExports,
      );
      expect(await page.locator('section[aria-labelledby=members] tbody').textContent()).toContain(
        `${clientB.slug}: admin`,
      );
      const axe = await new AxeBuilder({ page }).analyze();
      expect(
        axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id),
      ).toEqual([]);

      for (const box of await page.locator('input[name=datasets]').all()) await box.uncheck();
      await page.locator('input[name=datasets][value=team_members]').check();
      await page.locator('select[name=pii]').selectOption('full');
      await page.getByRole('button', { name: 'Export from all tenants' }).click();
      await page.locator('#flash .notice').waitFor();
      // Home (manager) and B (admin) export team members with full personal data; A (analyst) may not.
      expect(await page.locator('#flash .notice').textContent()).toContain('from 2 tenants');
      const row = await h.database.db
        .selectFrom('export_requests' as never)
        .select(['id' as never])
        .where('tenant_id' as never, '=', home.id as never)
        .where('team_member_id' as never, '=', home.members.manager as never)
        .executeTakeFirstOrThrow();
      const id = (row as { id: string }).id;
      await waitForExport(h.database, id, ['completed']);
      await page.goto(`${base}/app/organisation`);
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.getByRole('link', { name: 'Download' }).first().click(),
      ]);
      const bytes = readFileSync((await download.path())!);
      expect(bytes.subarray(0, 2).toString()).toBe('PK');
      const file = await h.database.db
        .selectFrom('export_files' as never)
        .select('sha256' as never)
        .where('export_id' as never, '=', id as never)
        .executeTakeFirstOrThrow();
      expect(createHash('sha256').update(bytes).digest('hex')).toBe((file as { sha256: string }).sha256);
      expect(cspViolations).toEqual([]);
    });

    it('drops a tenant that leaves the organisation from the session at once', async () => {
      await page.goto(`${base}/app/exports`);
      expect(await switcher().inputValue()).toBe(clientB.id);
      await removeOrganisationTenant(h.database, organisation, clientB.id, OPERATOR, new Date());
      await page.goto(`${base}/app/exports`);
      expect(await switcher().inputValue()).toBe(home.id);
      const offered = await switcher()
        .locator('option')
        .evaluateAll((els) => els.map((el) => (el as HTMLOptionElement).value));
      expect(offered).not.toContain(clientB.id);
      // Asking for it again is refused like any tenant outside the organisation.
      await switcher().evaluate((select, value) => {
        const option = document.createElement('option');
        option.value = value;
        (select as HTMLSelectElement).append(option);
        (select as HTMLSelectElement).value = value;
      }, clientB.id);
      const [answer] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/app/organisation/switch')),
        page.getByRole('button', { name: 'Switch' }).click(),
      ]);
      expect(answer.status()).toBe(403);
    });
  });
}
