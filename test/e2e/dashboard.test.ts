import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AxeBuilder } from '@axe-core/playwright';
import pg from 'pg';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_DATABASE_URL, testsDialect } from '../support/databases.ts';
import { type ReceivedMail, startSmtpServer, type TestSmtpServer } from '../support/smtp-server.ts';
import { until } from '../support/wait.ts';

/**
 * The dashboard and the privacy center end to end, in Debian's Chromium driven by
 * Playwright, against `ferry serve` on an empty PostgreSQL schema (so the server seeds its
 * demo tenant and prints the first-run sign-in link, as for a newcomer) with a real SMTP
 * listener. Every page visited is checked with axe-core (no serious or critical
 * violations) and for Content-Security-Policy violations. A failing step leaves a
 * screenshot in test-results/; with FERRY_SCREENSHOTS=1 (`npm run screenshots`) the main
 * pages are saved to docs/images/ for docs/dashboard.md.
 */

const REPO = path.resolve(import.meta.dirname, '../..');
const CHROMIUM = '/usr/bin/chromium';
const SHOTS = process.env.FERRY_SCREENSHOTS === '1' ? path.join(REPO, 'docs/images') : null;
const FAILURES = path.join(REPO, 'test-results');

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

describe.skipIf(!testsDialect('postgres'))('the dashboard and the privacy center in a browser', () => {
  let server: ChildProcess | undefined;
  let output = '';
  let base = '';
  let signInLink = '';
  let slug = '';
  let smtp: TestSmtpServer;
  let browser: Browser;
  let team: BrowserContext;
  let page: Page;
  let db: pg.Client;
  const schema = `ferry_serve_e2e_${process.pid}_${Date.now()}`;
  const cspViolations: string[] = [];

  /** Runs a step; on failure saves a screenshot of the page named after the step. */
  async function step<T>(name: string, on: Page, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      mkdirSync(FAILURES, { recursive: true });
      await on.screenshot({ path: path.join(FAILURES, `e2e-${name}.png`), fullPage: true }).catch(() => {});
      throw err;
    }
  }

  /** axe-core on the current page: no serious or critical violation. */
  async function accessible(on: Page) {
    const result = await new AxeBuilder({ page: on }).analyze();
    const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    expect(
      bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join('; ')})`),
      `axe on ${on.url()}`,
    ).toEqual([]);
  }

  async function shot(on: Page, name: string) {
    if (!SHOTS) return;
    mkdirSync(SHOTS, { recursive: true });
    await on.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  }

  async function newPage(context: BrowserContext): Promise<Page> {
    const p = await context.newPage();
    p.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text()))
        cspViolations.push(`${p.url()}: ${message.text()}`);
    });
    return p;
  }

  const mailTo = (address: string, after: number) =>
    until(`an email to ${address}`, async () =>
      smtp.messages.slice(after).find((m: ReceivedMail) => m.to.includes(address)),
    );

  beforeAll(async () => {
    smtp = await startSmtpServer();
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    const work = mkdtempSync(path.join(tmpdir(), 'ferry-e2e-'));
    server = spawn(process.execPath, [path.join(REPO, 'bin/ferry.js'), 'serve', '--port', String(port)], {
      env: {
        ...process.env,
        DATABASE_URL: TEST_DATABASE_URL,
        DATABASE_SCHEMA: schema,
        FERRY_DATA_DIR: path.join(work, 'data'),
        FERRY_SECRET_KEY: 'dashboard-e2e-test-secret-0123456789abcdef',
        FERRY_SMTP_URL: smtp.url,
        FERRY_MAIL_FROM: 'ferry@example.test',
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server.stdout!.on('data', (chunk) => {
      output += String(chunk);
    });
    server.stderr!.on('data', (chunk) => {
      output += String(chunk);
    });
    signInLink = await until(
      'the first-run sign-in link',
      async () => new RegExp(`${base}/signin/link/[A-Za-z0-9_-]{43}`).exec(output)?.[0],
      { timeoutMs: 120_000 },
    );
    slug = /slug ([a-z0-9-]+)/.exec(output)![1]!;
    db = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await db.connect();
    await db.query(`SET search_path TO "${schema}"`);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    team = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
    page = await newPage(team);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    server?.kill('SIGTERM');
    await new Promise((resolve) =>
      server && server.exitCode === null ? server.once('exit', resolve) : resolve(undefined),
    );
    await db?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await db?.end();
    await smtp?.stop();
  }, 60_000);

  it('signs the newcomer in with the first-run link', async () => {
    await step('sign-in', page, async () => {
      await page.goto(signInLink);
      await page.waitForURL(`${base}/app/exports`);
      expect(await page.locator('h1').textContent()).toBe('Exports');
      await accessible(page);
      // The link works once.
      const again = await (await browser.newContext()).newPage();
      await again.goto(signInLink);
      expect(await again.locator('.error').textContent()).toContain('used already');
      await again.context().close();
    });
  });

  it('requests an anonymized conversations CSV, watches it complete and downloads it with the checksum shown', async () => {
    await step('export', page, async () => {
      await page.goto(`${base}/app/export`);
      await accessible(page);
      await shot(page, 'export');
      const panel = page.locator('#panel-conversations');
      await panel.getByLabel('Anonymized (enhanced)', { exact: false }).check();
      await panel.getByRole('button', { name: 'Estimate' }).click();
      await expect
        .poll(async () => panel.locator('output.estimate').textContent())
        .toMatch(/About [\d,]+ rows/);
      await panel.getByRole('button', { name: 'Export conversations' }).click();
      await page.waitForURL(/\/app\/exports\/[0-9a-f-]{36}$/);
      // Live progress over Server-Sent Events turns into the completed state without a reload.
      await page.locator('#export-status mark.status-completed').waitFor({ timeout: 60_000 });
      await accessible(page);
      await shot(page, 'export-completed');
      const shown = (await page.locator('code.sha256').first().textContent())!.trim();
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.getByRole('button', { name: 'Download' }).first().click(),
      ]);
      const file = readFileSync((await download.path())!);
      expect(createHash('sha256').update(file).digest('hex')).toBe(shown);
      const text = file.toString('utf8');
      expect(text.split('\n')[0]).toContain('conversation_id');
      // Anonymized: no customer email of the tenant appears in the file.
      const { rows } = await db.query<{ email: string }>(
        "SELECT customer_email AS email FROM conversations WHERE customer_email LIKE '%@%' LIMIT 20",
      );
      for (const r of rows) expect(text).not.toContain(r.email);
      await page.goto(`${base}/app/exports`);
      await accessible(page);
      await shot(page, 'exports');
    });
  });

  it('saves an export on the export page, runs it, and deletes it once the confirmation is accepted', async () => {
    await step('saved-export', page, async () => {
      await page.goto(`${base}/app/export`);
      const section = page.locator('#saved-exports');
      await section.getByText('Save an export').click();
      await section.getByLabel('Name', { exact: true }).fill('Technical Escalation Analysis');
      await section.getByLabel('Definition', { exact: false }).fill(
        JSON.stringify({
          filters: { escalated: true, topics: ['technical_support', 'bug_report', 'integration'] },
          include_messages: true,
          annotations: { resolution_notes: true, follow_up_required: true },
        }),
      );
      await section.getByRole('button', { name: 'Save export' }).click();
      const row = page.locator('#saved-exports tr', { hasText: 'Technical Escalation Analysis' });
      await row.waitFor();
      await expect.poll(async () => row.textContent()).toContain('ZIP of conversations.csv, messages.csv');
      await accessible(page);
      await shot(page, 'saved-exports');
      await row.getByRole('button', { name: 'Run' }).click();
      await page.waitForURL(/\/app\/exports\/[0-9a-f-]{36}$/);
      await page.locator('#export-status mark.status-completed').waitFor({ timeout: 60_000 });
      await page.goto(`${base}/app/export`);
      let asked = '';
      page.once('dialog', (dialog) => {
        asked = dialog.message();
        void dialog.accept();
      });
      await page
        .locator('#saved-exports tr', { hasText: 'Technical Escalation Analysis' })
        .getByRole('button', { name: 'Delete' })
        .click();
      await expect
        .poll(async () => page.locator('#saved-exports').textContent())
        .toContain('No saved exports yet.');
      expect(asked).toContain('Delete the saved export Technical Escalation Analysis?');
    });
  });

  it('creates a schedule in America/New_York and shows its next five runs at 09:00 local time', async () => {
    await step('schedule', page, async () => {
      await page.goto(`${base}/app/schedules/new`);
      await accessible(page);
      await page.getByLabel('Name', { exact: true }).fill('Morning conversations');
      await page.getByLabel('Time zone').fill('America/New_York');
      await page.getByLabel('Time', { exact: true }).fill('09:00');
      await page.getByRole('button', { name: 'Preview next runs' }).click();
      await page.locator('#schedule-preview ol.next-runs li').first().waitFor();
      await page.locator('input[name=datasets][value=conversations]').check();
      await page.locator('select[name=destination]').selectOption('email');
      await page.getByLabel('Recipients').fill('data-team@example.com');
      await page.getByRole('button', { name: 'Create schedule' }).click();
      await page.waitForURL(/\/app\/schedules\/[0-9a-f-]{36}$/);
      await accessible(page);
      await shot(page, 'schedule');
      const times = await page
        .locator('ol.next-runs time')
        .evaluateAll((els) =>
          els.map((el) => ({ iso: el.getAttribute('datetime')!, text: el.textContent ?? '' })),
        );
      expect(times).toHaveLength(5);
      for (const t of times) {
        expect(t.text).toMatch(/ 09:00 E[SD]T \(UTC-0[45]:00\)/);
        // The instant is 09:00 in New York, whatever the offset that day.
        const local = new Intl.DateTimeFormat('en-US', {
          timeZone: 'America/New_York',
          hour: '2-digit',
          minute: '2-digit',
          hourCycle: 'h23',
        }).format(new Date(t.iso));
        expect(local).toBe('09:00');
      }
    });
  });

  it('creates an API key shown once, and revokes it', async () => {
    await step('keys', page, async () => {
      await page.goto(`${base}/app/keys`);
      await accessible(page);
      await page.getByText('Create a key').click();
      await page.getByLabel('Name').fill('browser test key');
      await page.getByRole('button', { name: 'Create key' }).click();
      const key = await page.locator('#new-key-value').inputValue();
      expect(key).toMatch(/^fy_live_[A-Za-z0-9]{43}$/);
      await accessible(page);
      const ok = await fetch(`${base}/api/v1/exports`, { headers: { authorization: `Bearer ${key}` } });
      expect(ok.status).toBe(200);
      await page.goto(`${base}/app/keys`);
      expect(await page.content()).not.toContain(key);
      await page.getByRole('button', { name: 'Revoke browser test key' }).click();
      await page.locator('#flash .notice').waitFor();
      const revoked = await fetch(`${base}/api/v1/exports`, { headers: { authorization: `Bearer ${key}` } });
      expect(revoked.status).toBe(401);
    });
  });

  it('shows the OData feed on the BI tools page, which a BI tool reads with a key as Basic password', async () => {
    await step('bi', page, async () => {
      await page.goto(`${base}/app/keys`);
      await page.getByText('Create a key').click();
      await page.getByLabel('Name').fill('Power BI');
      await page.getByRole('button', { name: 'Create key' }).click();
      const key = await page.locator('#new-key-value').inputValue();
      await page.getByRole('link', { name: 'BI tools' }).click();
      await page.getByRole('heading', { name: 'Entity sets' }).waitFor();
      await accessible(page);
      await shot(page, 'bi');
      const feed = await page.locator('#feed-address').inputValue();
      expect(feed).toBe(`${base}/odata/v4/`);
      expect(await page.locator('main table').textContent()).toContain('conversations');
      const basic = `Basic ${Buffer.from(`powerbi:${key}`).toString('base64')}`;
      const res = await fetch(`${feed}conversations?$top=2&$count=true`, {
        headers: { authorization: basic },
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { value: unknown[]; '@odata.count': number };
      expect(body.value).toHaveLength(2);
      expect(body['@odata.count']).toBeGreaterThan(2);
    });
  });

  it('backs the account up, drills the backup and shows both on the Backups page', async () => {
    await step('backups', page, async () => {
      await page.goto(`${base}/app/backups`);
      await accessible(page);
      await page.getByRole('button', { name: 'Back up now' }).click();
      await page.locator('#flash .notice').waitFor();
      const reloadUntil = async (text: RegExp) => {
        for (let i = 0; i < 120; i++) {
          await page.goto(`${base}/app/backups`);
          if (text.test((await page.locator('main').textContent()) ?? '')) return;
          await new Promise((r) => setTimeout(r, 500));
        }
        throw new Error(`the Backups page never showed ${text}`);
      };
      await reloadUntil(/full\s*completed/);
      await page.getByRole('button', { name: 'Run a drill now' }).click();
      await reloadUntil(/minor disruption \(2 h\): met/);
      await accessible(page);
      await shot(page, 'backups');
    });
  });

  it('plans an import of a customers file, applies the plan and shows the report on the Imports page', async () => {
    await step('imports', page, async () => {
      const file = path.join(mkdtempSync(path.join(tmpdir(), 'ferry-e2e-import-')), 'customers.csv');
      writeFileSync(
        file,
        [
          'customer_id,tenant_id,email,name,phone,country,customer_segment,created_at',
          'e2e00000-0000-4000-8000-000000000001,,a.import+one@example.com,"Zoë ""Import"" 😀",,DE,enterprise,2026-03-01T10:00:00.123456Z',
          'e2e00000-0000-4000-8000-000000000002,,a.import+two@example.com,Second,,FR,unknown_segment,2026-03-02T10:00:00Z',
          '',
        ].join('\n'),
      );
      await page.goto(`${base}/app/imports`);
      await accessible(page);
      await page.getByLabel('Source').selectOption('csv');
      await page.setInputFiles('input[name=file]', file);
      await page.getByRole('button', { name: 'Upload and start' }).click();
      await page.locator('#flash .notice').waitFor();
      const reloadUntil = async (text: RegExp) => {
        for (let i = 0; i < 120; i++) {
          await page.goto(`${base}/app/imports`);
          if (text.test((await page.locator('main').textContent()) ?? '')) return;
          await new Promise((r) => setTimeout(r, 500));
        }
        throw new Error(`the Imports page never showed ${text}`);
      };
      await reloadUntil(/plan\s*completed/);
      expect(await page.locator('main').textContent()).toMatch(
        /1 new, 0 updated, 0 unchanged, 0 conflicts, 1 rejected/,
      );
      await page.getByRole('button', { name: /^Apply the plan/ }).click();
      await reloadUntil(/import\s*completed/);
      const customers = await db.query(`SELECT name FROM customers WHERE email = 'a.import+one@example.com'`);
      expect(customers.rows).toEqual([{ name: 'Zoë "Import" 😀' }]);
      await page.getByText('Report').first().click();
      await accessible(page);
      await shot(page, 'imports');
    });
  });

  it('works with the keyboard alone: skip link, then a key created without the mouse', async () => {
    await step('keyboard', page, async () => {
      await page.goto(`${base}/app/keys`);
      await page.keyboard.press('Tab');
      expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Skip to content');
      await page.keyboard.press('Enter');
      expect(page.url()).toMatch(/#main$/);
      /** Tabs forward until the focused element matches, at most 80 times. */
      const tabTo = async (match: (el: { tag: string; text: string; name: string }) => boolean) => {
        for (let i = 0; i < 80; i++) {
          await page.keyboard.press('Tab');
          const el = await page.evaluate(() => {
            const a = document.activeElement as HTMLInputElement | null;
            return { tag: a?.tagName ?? '', text: a?.textContent?.trim() ?? '', name: a?.name ?? '' };
          });
          if (match(el)) return;
        }
        throw new Error('the element was never focused with Tab');
      };
      await tabTo((el) => el.tag === 'SUMMARY' && el.text === 'Create a key');
      await page.keyboard.press('Enter');
      await tabTo((el) => el.name === 'name');
      await page.keyboard.type('keyboard key');
      await tabTo((el) => el.tag === 'BUTTON' && el.text === 'Create key');
      await page.keyboard.press('Enter');
      await page.locator('#new-key-value').waitFor();
      expect(await page.locator('#new-key-value').inputValue()).toMatch(/^fy_live_/);
    });
  });

  it('lets a data subject export their data from the privacy center with the emailed code', async () => {
    const visitor = await browser.newContext({ acceptDownloads: true });
    const p = await newPage(visitor);
    await step('privacy-export', p, async () => {
      const { rows } = await db.query<{ email: string }>(
        "SELECT email FROM customers WHERE email LIKE '%@%' ORDER BY email LIMIT 1",
      );
      const email = rows[0]!.email;
      await p.goto(`${base}/privacy/${slug}`);
      await accessible(p);
      await shot(p, 'privacy-center');
      await p.getByRole('button', { name: 'Export my data' }).click();
      await accessible(p);
      const before = smtp.messages.length;
      await p.getByLabel('Your email address').fill(email);
      await p.getByRole('button', { name: 'Send me the code' }).click();
      await p.waitForURL(/\/privacy\/.+\/requests\/[0-9a-f-]{36}\/[A-Za-z0-9_-]+$/);
      const mail = await mailTo(email, before);
      const code = /\n {4}(\d{6})\n/.exec(mail.mail.text ?? '')![1]!;
      // The email links to the same status page.
      expect(mail.mail.text).toContain(p.url());
      await p.getByLabel('The 6-digit code from our email').fill(code);
      await p.getByRole('button', { name: 'Confirm' }).click();
      await accessible(p);
      await until(
        'the package',
        async () => {
          await p.waitForTimeout(500);
          await p.reload();
          return (await p.getByRole('button', { name: 'Download your data' }).count()) > 0 ? true : undefined;
        },
        { timeoutMs: 120_000 },
      );
      await shot(p, 'privacy-status');
      const [download] = await Promise.all([
        p.waitForEvent('download'),
        p.getByRole('button', { name: 'Download your data' }).click(),
      ]);
      const zipPath = (await download.path())!;
      expect(readFileSync(zipPath).subarray(0, 2).toString('latin1')).toBe('PK');
      // The package holds the subject's own records, under their own email.
      const content = execFileSync('unzip', ['-p', zipPath], { maxBuffer: 256 << 20 }).toString('utf8');
      expect(content).toContain(email);
    });
    await visitor.close();
  });

  it('lets a data subject delete their account, and the admin sees and approves it in the DSAR dashboard', async () => {
    const visitor = await browser.newContext();
    const p = await newPage(visitor);
    const { rows } = await db.query<{ email: string; id: string }>(
      "SELECT id, email FROM customers WHERE email LIKE '%@%' ORDER BY email DESC LIMIT 1",
    );
    const { email, id } = rows[0]!;
    await step('privacy-delete', p, async () => {
      await p.goto(`${base}/privacy/${slug}/delete`);
      await accessible(p);
      expect(await p.getByRole('heading', { name: 'What is deleted' }).count()).toBe(1);
      const before = smtp.messages.length;
      await p.getByLabel('Your email address').fill(email);
      await p.getByLabel('I understand that this cannot be undone.').check();
      await p.getByRole('button', { name: 'Delete my account' }).click();
      const mail = await mailTo(email, before);
      const code = /\n {4}(\d{6})\n/.exec(mail.mail.text ?? '')![1]!;
      await p.getByLabel('The 6-digit code from our email').fill(code);
      await p.getByRole('button', { name: 'Confirm' }).click();
      await p.getByText('Our team reviews it').waitFor();
    });
    await visitor.close();
    await step('dsar-dashboard', page, async () => {
      await page.goto(`${base}/app/privacy`);
      await accessible(page);
      await shot(page, 'privacy-operations');
      const row = page.locator('table.dsar tr', { hasText: email });
      expect(await row.count()).toBeGreaterThan(0);
      await row.filter({ hasText: 'Erasure' }).getByRole('link').first().click();
      await accessible(page);
      await page.getByRole('button', { name: 'Approve and run' }).click();
      await until(
        'the erasure',
        async () => {
          const { rowCount } = await db.query('SELECT 1 FROM customers WHERE id = $1', [id]);
          return rowCount === 0 ? true : undefined;
        },
        { timeoutMs: 60_000 },
      );
    });
  });

  it('deletes a conversation after a confirmation that states the counts of its dry run', async () => {
    await step('delete', page, async () => {
      const { rows } = await db.query<{ id: string; n: number }>(
        `SELECT c.id, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)::int AS n FROM conversations c
         WHERE (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) > 1 ORDER BY c.id LIMIT 1`,
      );
      const { id, n } = rows[0]!;
      await page.goto(`${base}/app/deletions`);
      await accessible(page);
      await page.getByLabel('What').selectOption('conversation');
      await page.getByLabel('Id (a conversation', { exact: false }).fill(id);
      await page.getByRole('button', { name: 'Review what would be deleted' }).click();
      const counts = page.locator('#deletion-counts');
      await counts.waitFor();
      expect(await counts.textContent()).toContain(`1 conversation, ${n} messages`);
      await accessible(page);
      await shot(page, 'delete-confirm');
      // The dry run changed nothing.
      expect((await db.query('SELECT 1 FROM conversations WHERE id = $1', [id])).rowCount).toBe(1);
      await page.getByRole('button', { name: `Delete 1 conversation, ${n} messages` }).click();
      await page.getByText(/Receipt [0-9a-f-]{36}/).waitFor();
      expect((await db.query('SELECT 1 FROM conversations WHERE id = $1', [id])).rowCount).toBe(0);
      expect((await db.query('SELECT 1 FROM messages WHERE conversation_id = $1', [id])).rowCount).toBe(0);
    });
  });

  it('lets an admin limit the workspace to addresses and set its session timeouts on the account page', async () => {
    await step('workspace-access', page, async () => {
      const stored = async () =>
        (
          await db.query<{ ip_allowlist: string[]; session_idle_minutes: number | null }>(
            'SELECT ip_allowlist, session_idle_minutes FROM tenant_access',
          )
        ).rows[0];
      /** Submits one of the section's forms and waits for the page it redirects to, with its notice. */
      const save = async (button: string, notice: string) => {
        await Promise.all([
          page.waitForResponse(
            (r) => r.request().method() === 'POST' && r.url().startsWith(`${base}/app/account/`),
          ),
          page.getByRole('button', { name: button }).click(),
        ]);
        await page.getByText(notice).waitFor();
      };
      await page.goto(`${base}/app/account`);
      // A list without this browser's address would lock the admin out: refused, nothing saved.
      await page.getByLabel('IP allow-list').fill('192.0.2.0/24');
      await page.getByRole('button', { name: 'Save allow-list' }).click();
      await page.getByText('lock you out', { exact: false }).waitFor();
      await accessible(page);
      expect((await stored())?.ip_allowlist ?? []).toEqual([]);
      await page.getByLabel('IP allow-list').fill('127.0.0.1\n2001:DB8::/32');
      await save('Save allow-list', 'The IP allow-list is saved.');
      expect(await page.getByLabel('IP allow-list').inputValue()).toBe('127.0.0.1/32\n2001:db8::/32');
      expect((await stored())?.ip_allowlist).toEqual(['127.0.0.1/32', '2001:db8::/32']);
      await page.getByLabel('Sign out after this many idle minutes').fill('30');
      await save('Save session timeouts', 'The session timeouts are saved.');
      expect(await page.getByLabel('Sign out after this many idle minutes').inputValue()).toBe('30');
      expect((await stored())?.session_idle_minutes).toBe(30);
      await shot(page, 'workspace-access');
      // Back to no restriction and the default timeout, for the steps after this one.
      await page.getByLabel('IP allow-list').fill('');
      await save('Save allow-list', 'The IP allow-list is saved.');
      await page.getByLabel('Sign out after this many idle minutes').fill('');
      await save('Save session timeouts', 'The session timeouts are saved.');
      expect(await stored()).toMatchObject({ ip_allowlist: [], session_idle_minutes: null });
    });
  });

  it('passes axe on every other page, signed in and not', async () => {
    await step('other-pages', page, async () => {
      for (const [path, name] of [
        ['/app/usage', 'usage'],
        ['/app/webhooks', 'webhooks'],
        ['/app/audit', 'audit'],
        ['/app/account', 'account'],
        ['/app/retention', 'retention'],
        ['/app/compliance', 'compliance'],
        ['/app/schedules', null],
        ['/app/privacy/center', null],
      ] as const) {
        await page.goto(`${base}${path}`);
        expect(page.url()).toBe(`${base}${path}`);
        await accessible(page);
        if (name) await shot(page, name);
      }
      // The usage charts are drawn by uPlot from the page's data.
      await page.goto(`${base}/app/usage`);
      await page.locator('.uplot').first().waitFor();
    });
    const visitor = await browser.newContext();
    const p = await newPage(visitor);
    await step('public-pages', p, async () => {
      for (const path of [
        '/signin',
        '/signin/forgot',
        `/privacy/${slug}/correct`,
        `/privacy/${slug}/consents`,
      ]) {
        await p.goto(`${base}${path}`);
        await accessible(p);
      }
      await shot(p, 'signin');
    });
    await visitor.close();
  }, 180_000);

  it('has no Content-Security-Policy violation on any page visited', () => {
    expect(cspViolations).toEqual([]);
  });
});
