import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, type ExportJson, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, type WebSession, webGet } from './support/fixtures/web.ts';

interface ChartSpec {
  title: string;
  label: string;
  x: number[];
  y: number[];
}

/** The html template's escaping undone, as the browser does for an attribute value. */
const decodeAttribute = (value: string) =>
  value.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)));

function chartsOf(page: string): ChartSpec[] {
  return [...page.matchAll(/data-chart="([^"]*)"/g)].map(
    (m) => JSON.parse(decodeAttribute(m[1]!)) as ChartSpec,
  );
}

/** The "used" value the quota table shows for `quota` (undefined when it shows none). */
function usedOf(page: string, quota: string): number | undefined {
  const row = new RegExp(`<tr id="quota-${quota}">(.*?)</tr>`, 's').exec(page)?.[1];
  const value = row ? /<td class="used" data-value="(\d+)">/.exec(row)?.[1] : undefined;
  return value === undefined ? undefined : Number(value);
}

/** The usage page: the API's numbers, charts of the last 30 days, recent exports, the next plan; admins and managers. */
for (const dialect of DIALECTS) {
  describe(`the dashboard's usage page on ${dialect}`, () => {
    let h: ExportHarness;
    let admin: WebSession;
    const done: ExportJson[] = [];

    beforeAll(async () => {
      h = await exportHarness(dialect, { web: true, workers: true, conversations: 10 });
      admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      for (const payload of [
        { datasets: ['conversations'], format: 'csv', pii: 'complete' },
        { datasets: ['sites'], format: 'json' },
      ]) {
        const res = await h.app.inject({
          method: 'POST',
          url: '/api/v1/exports',
          headers: bearer(h.keys.admin),
          payload,
        });
        expect(res.statusCode, res.body).toBe(202);
        done.push(await h.waitForExport(res.json().id));
      }
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    it('shows the numbers GET /api/v1/usage shows for the same tenant', async () => {
      const api = await h.app.inject({ url: '/api/v1/usage', headers: bearer(h.keys.admin) });
      expect(api.statusCode).toBe(200);
      const report = api.json() as {
        plan: string;
        quotas: { quota: string; used: number | null; limit: number | null }[];
      };
      const used = Object.fromEntries(report.quotas.map((q) => [q.quota, q.used]));
      expect(used.exports_per_month).toBe(2);

      const page = await webGet(h.app, admin, '/app/usage');
      expect(page.statusCode).toBe(200);
      expect(page.body).toContain('<strong>Agency</strong>');
      for (const quota of ['exports_per_month', 'concurrent_jobs', 'active_schedules'])
        expect(usedOf(page.body, quota), quota).toBe(used[quota]);
      for (const quota of ['max_file_bytes', 'history_window', 'retention_days'])
        expect(usedOf(page.body, quota), quota).toBeUndefined();
      // The rate limit is per key: the admin key's row shows what the API told that key.
      const adminKey = /<tr><td>admin key<\/td>.*?<td class="requests" data-value="(\d+)">/.exec(
        page.body,
      )?.[1];
      expect(Number(adminKey)).toBe(used.rate_limit);
      expect(used.rate_limit).toBeGreaterThan(0);
      // Storage: the files of the two completed exports.
      const stored = done.flatMap((e) => e.files).reduce((n, f) => n + f.bytes, 0);
      expect(stored).toBeGreaterThan(0);
      expect(page.body).toContain(`${done.flatMap((e) => e.files).length} export file(s) kept`);
      // Days until the monthly reset, from the quota's resets_at.
      const resetsAt = report.quotas.find((q) => q.quota === 'exports_per_month') as unknown as {
        resets_at: string;
      };
      const days = Math.ceil((new Date(resetsAt.resets_at).getTime() - h.clock.now().getTime()) / 86_400_000);
      expect(page.body).toContain(days === 1 ? 'in 1 day' : `in ${days} days`);
    });

    it('draws three charts of 30 days, with the same numbers in tables', async () => {
      const page = await webGet(h.app, admin, '/app/usage');
      expect(page.body).toContain('<script src="/assets/uplot/uPlot.iife.min.js" defer></script>');
      expect(page.body).toContain('<link rel="stylesheet" href="/assets/uplot/uPlot.min.css">');
      const charts = chartsOf(page.body);
      expect(charts.map((c) => c.title)).toEqual([
        'Exports per day',
        'Bytes exported per day',
        'API requests per day',
      ]);
      const today = Math.floor(h.clock.now().getTime() / 86_400_000) * 86_400;
      for (const chart of charts) {
        expect(chart.x).toHaveLength(30);
        expect(chart.y).toHaveLength(30);
        expect(chart.x.at(-1)).toBe(today);
        expect(chart.x.slice(1).map((x, i) => x - chart.x[i]!)).toEqual(Array(29).fill(86_400));
      }
      const [exports, written, requests] = charts;
      expect(exports!.y.at(-1)).toBe(2);
      expect(exports!.y.slice(0, -1).every((n) => n === 0)).toBe(true);
      expect(written!.y.at(-1)).toBe(done.flatMap((e) => e.files).reduce((n, f) => n + f.bytes, 0));
      expect(requests!.y.at(-1)).toBeGreaterThan(0);
      // Each chart's numbers as a table, readable without JavaScript.
      expect(page.body.match(/<table class="chart-data">/g)).toHaveLength(3);
      expect(page.body).toContain(`<td>${new Date(today * 1000).toISOString().slice(0, 10)}</td><td>2</td>`);
      expect(page.body).not.toContain('style=');
      expect(page.body).not.toMatch(/<script>/);
    });

    it('lists the recent exports and what the next plan would change', async () => {
      const page = await webGet(h.app, admin, '/app/usage');
      for (const e of done) expect(page.body).toContain(`href="/app/exports/${e.id}"`);
      expect(page.body).toContain('Agency compared with Enterprise');
      // Agency: 25 schedules, Enterprise: unlimited.
      expect(page.body).toMatch(
        /<th scope="row">Active schedules<\/th><td>25<\/td><td><strong>Unlimited<\/strong><\/td>/,
      );
    });

    it('is for admins and managers; analysts and agents do not see it and are refused', async () => {
      const manager = await signInAs(h.app, h.database, h.tenant, 'manager');
      expect((await webGet(h.app, manager, '/app/usage')).statusCode).toBe(200);
      for (const role of ['analyst', 'agent'] as const) {
        const session = await signInAs(h.app, h.database, h.tenant, role);
        const home = await webGet(h.app, session, '/app/exports');
        expect(home.body).not.toContain('href="/app/usage"');
        const forced = await webGet(h.app, session, '/app/usage');
        expect(forced.statusCode, role).toBe(403);
        expect(forced.body).not.toContain('data-chart');
      }
    });

    it("counts only the tenant's own rows", async () => {
      const other = await signInAs(h.app, h.database, h.other, 'admin');
      const page = await webGet(h.app, other, '/app/usage');
      expect(page.statusCode).toBe(200);
      expect(usedOf(page.body, 'exports_per_month')).toBe(0);
      const [exports, written] = chartsOf(page.body);
      expect(exports!.y.every((n) => n === 0)).toBe(true);
      expect(written!.y.every((n) => n === 0)).toBe(true);
      expect(page.body).toContain('No exports yet.');
      expect(page.body).not.toContain('admin key');
    });
  });
}
