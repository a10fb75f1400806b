import { createHash, randomUUID } from 'node:crypto';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordAudit } from '../src/auth/audit.ts';
import type { AuthContext } from '../src/auth/context.ts';
import {
  COMPLIANCE_REPORT_CSP,
  type ComplianceReport,
  complianceReport,
  complianceReportHtml,
  periodRange,
} from '../src/privacy/compliance-report.ts';
import { completeDsar, createDsar, type DsarDeps, denyDsar, loadDsar } from '../src/privacy/dsar-service.ts';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';

/**
 * The monthly compliance report, from what Ferry recorded: audit events, data subject
 * requests made and closed through the DSAR service on a moved clock, erasure ledger
 * entries, retention sweeps and legal holds, in and just outside one month of the tenant's
 * time zone (New York: November 2026 runs from 04:00 UTC on the 1st, still daylight time,
 * to 05:00 UTC on 1 December).
 */

const ZONE = 'America/New_York';
const NOW = new Date('2026-12-10T12:00:00Z');
const NAME = 'Acme <script>alert("owned")</script> & Sons';

for (const dialect of DIALECTS) {
  describe(`the monthly compliance report (${dialect})`, () => {
    let h: ExportHarness;
    const ids: Record<string, string> = {};

    beforeAll(async () => {
      h = await exportHarness(dialect, { conversations: 3 });
      h.clock.advance(NOW.getTime() - h.clock.now().getTime());
      const db = h.database.db;
      const tenantId = h.tenant.id;
      await sql`UPDATE tenants SET timezone = ${ZONE}, name = ${NAME} WHERE id = ${tenantId}`.execute(db);

      // Exports and downloads, as the export service and the download route record them.
      const events: [string, string][] = [
        ['export.requested', '2026-11-01T03:59:59Z'], // 23:59:59 on 31 October in New York
        ['export.requested', '2026-11-01T04:00:00Z'], // midnight, 1 November
        ['export.requested', '2026-11-10T15:00:00Z'],
        ['export.completed', '2026-11-10T15:02:00Z'],
        ['export.failed', '2026-11-12T09:00:00Z'],
        ['export.downloaded', '2026-11-10T16:00:00Z'],
        ['export.downloaded', '2026-11-11T16:00:00Z'],
        ['export.downloaded', '2026-11-20T16:00:00Z'],
        ['export.downloaded', '2026-12-01T04:59:59Z'], // 23:59:59 on 30 November
        ['export.requested', '2026-12-01T05:00:00Z'], // December
        ['export.page', '2026-11-15T10:00:00Z'], // a paged export is not an export request
      ];
      for (const [action, at] of events)
        await recordAudit(h.database, {
          tenantId,
          actor: 'cli',
          action,
          dataType: 'conversations',
          success: action !== 'export.failed',
          occurredAt: new Date(at),
        });
      await recordAudit(h.database, {
        tenantId: h.other.id,
        actor: 'cli',
        action: 'export.requested',
        success: true,
        occurredAt: new Date('2026-11-15T12:00:00Z'),
      });

      // Data subject requests through the service, each on its own clock.
      const admin: AuthContext = {
        tenantId,
        plan: 'agency',
        role: 'admin',
        apiKeyId: null,
        teamMemberId: h.tenant.members.admin,
        scopes: [],
        actor: `team_member:${h.tenant.members.admin}`,
        ip: null,
        userAgent: null,
      };
      const caller = { kind: 'team' as const, auth: admin };
      const at = (iso: string): DsarDeps => ({
        database: h.database,
        config: h.config,
        queue: undefined,
        now: () => new Date(iso),
      });
      const receive = async (name: string, type: string, iso: string) => {
        const view = await createDsar(at(iso), caller, {
          type,
          regulation: 'gdpr',
          source: 'api',
          subject: { email: `${name}@example.com` },
          ...(type === 'rectification' ? { changes: { name: 'Dee Corrected' } } : {}),
        });
        ids[name] = view.id;
      };
      const complete = async (name: string, iso: string) =>
        completeDsar(at(iso), await loadDsar(h.database, tenantId, ids[name]!), {
          outcome: 'fulfilled',
          result: {},
          receiptId: null,
        });
      await receive('ana', 'access', '2026-11-02T15:00:00Z');
      await complete('ana', '2026-11-03T15:00:00Z'); // 24 h
      await receive('ben', 'access', '2026-11-05T12:00:00Z');
      await complete('ben', '2026-11-05T18:20:00Z'); // 6 h 20 min: 6.3
      await receive('cai', 'erasure', '2026-09-20T12:00:00Z'); // due 20 October
      await complete('cai', '2026-11-04T12:00:00Z'); // 45 days: 1080 h, late
      await sql`INSERT INTO erasure_ledger (id, tenant_id, request_id, subject_key, datasets, erased_at)
        VALUES (${randomUUID()}, ${tenantId}, ${ids.cai!}, ${'ab'.repeat(32)}, ${sql`ARRAY['customers','messages']::text[]`},
          ${new Date('2026-11-04T12:00:00Z')})`.execute(db);
      await receive('dee', 'rectification', '2026-10-01T12:00:00Z'); // due 1 November, still open
      await receive('eva', 'portability', '2026-11-20T12:00:00Z');
      await denyDsar(at('2026-11-21T12:00:00Z'), caller, ids.eva!, 'Not the account holder');
      await receive('fay', 'access', '2026-11-28T12:00:00Z'); // open, due 28 December
      await receive('gus', 'access', '2026-12-02T12:00:00Z'); // December

      // Retention sweeps: their per-dataset progress as the sweep writes it.
      const sweep = async (status: string, startedAt: string, progress: object) =>
        sql`INSERT INTO retention_sweeps (id, tenant_id, trigger, sweep_date, as_of, status, progress, actor, started_at)
          VALUES (${randomUUID()}, ${tenantId}, 'manual', ${startedAt.slice(0, 10)}, ${new Date(startedAt)},
            ${status}, ${JSON.stringify(progress)}::jsonb, 'cli', ${new Date(startedAt)})`.execute(db);
      await sweep('completed', '2026-11-15T06:00:00Z', {
        conversations: { deleted: 5, anonymized: 0, archived: 0, cascaded: { messages: 20 }, done: true },
        activity_logs: {
          deleted: 0,
          anonymized: 0,
          archived: 7,
          cascaded: {},
          archive: { key: 'archives/a.zip', sha256: 'ff', bytes: 4096, records: 7 },
          done: true,
        },
        customers: { deleted: 0, anonymized: 3, archived: 0, cascaded: {}, done: true },
      });
      await sweep('failed', '2026-11-16T06:00:00Z', {
        customers: { deleted: 2, anonymized: 0, archived: 0, cascaded: {}, done: false },
      });
      await sweep('completed', '2026-10-15T06:00:00Z', {
        conversations: { deleted: 100, anonymized: 0, archived: 0, cascaded: {}, done: true },
      });

      // Legal holds: released in November, placed and kept, placed and released in December.
      const hold = async (createdAt: string, releasedAt: string | null) =>
        sql`INSERT INTO legal_holds (id, tenant_id, scope, reason, matter, created_at, created_by, released_at, released_by, release_reason)
          VALUES (${randomUUID()}, ${tenantId}, 'tenant', 'Litigation', 'Case 42', ${new Date(createdAt)}, 'cli',
            ${releasedAt ? new Date(releasedAt) : null}, ${releasedAt ? 'cli' : null}, ${releasedAt ? 'settled' : null})`.execute(
          db,
        );
      await hold('2026-10-10T12:00:00Z', '2026-11-15T12:00:00Z');
      await hold('2026-11-03T12:00:00Z', null);
      await hold('2026-11-05T12:00:00Z', '2026-12-02T12:00:00Z');
    }, 240_000);
    afterAll(async () => h?.close());

    const get = (url: string, key = h.keys.admin, headers: Record<string, string> = {}) =>
      h.app.inject({ method: 'GET', url, headers: { ...bearer(key), ...headers } });

    it('counts what was recorded in the calendar month of the tenant’s time zone', async () => {
      const res = await get('/api/v1/compliance/report?period=2026-11');
      expect(res.statusCode, res.body).toBe(200);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      const r = res.json() as ComplianceReport;
      expect(r).toMatchObject({
        tenant_id: h.tenant.id,
        tenant_name: NAME,
        period: '2026-11',
        time_zone: ZONE,
        from: '2026-11-01T04:00:00.000Z',
        to: '2026-12-01T05:00:00.000Z',
      });
      expect(r.exports).toEqual({ requested: 2, completed: 1, failed: 1, downloads: 4 });
      expect(r.dsar.received).toEqual({ access: 3, portability: 1 });
      expect(r.dsar.completed).toEqual({ access: 2, erasure: 1 });
      // 6.3 h, 24 h and 1080 h.
      expect(r.dsar.median_hours_to_complete).toBe(24);
      expect(r.dsar.worst_hours_to_complete).toBe(1080);
      // The erasure answered after its deadline, and the rectification open past its own.
      expect(r.dsar.overdue).toBe(2);
      expect(r.erasures).toEqual({ requests_completed: 1, ledger_entries: 1 });
      expect(r.retention).toEqual({
        sweeps: 2,
        failed: 1,
        deleted: 7,
        anonymized: 3,
        archived: 7,
        cascaded: 20,
      });
      expect(r.legal_holds).toEqual({ placed: 2, released: 1, active_at_end: 2 });
    });

    it('reads each month on its own, and the month so far', async () => {
      const october = await complianceReport(h.database, h.tenant.id, '2026-10', NOW);
      expect(october.exports.requested).toBe(1);
      expect(october.dsar.received).toEqual({ rectification: 1 });
      expect(october.dsar.completed).toEqual({});
      expect(october.dsar.median_hours_to_complete).toBeNull();
      expect(october.dsar.worst_hours_to_complete).toBeNull();
      // The erasure was open past its deadline (20 October) when October ended; the rectification was not due yet.
      expect(october.dsar.overdue).toBe(1);
      expect(october.retention).toMatchObject({ sweeps: 1, deleted: 100 });
      expect(october.legal_holds).toEqual({ placed: 1, released: 0, active_at_end: 1 });

      const december = await complianceReport(h.database, h.tenant.id, '2026-12', NOW);
      expect(december.exports.requested).toBe(1);
      expect(december.dsar.received).toEqual({ access: 1 });
      // Open and past due so far: the rectification (due 1 November); the access request of the 28th is not due yet.
      expect(december.dsar.overdue).toBe(1);
      expect(december.legal_holds).toEqual({ placed: 0, released: 1, active_at_end: 1 });

      const other = await complianceReport(h.database, h.other.id, '2026-11', NOW);
      expect(other.exports.requested).toBe(1);
      expect(other.dsar.received).toEqual({});
    });

    it('writes one metric,value row per number as CSV', async () => {
      const res = await get('/api/v1/compliance/report?period=2026-11&format=csv');
      expect(res.statusCode, res.body).toBe(200);
      expect(res.headers['content-type']).toBe('text/csv; charset=utf-8');
      expect(res.headers['content-disposition']).toBe('attachment; filename="compliance-report-2026-11.csv"');
      const rows = parse(res.body, { columns: true }) as { metric: string; value: string }[];
      expect(Object.keys(rows[0]!)).toEqual(['metric', 'value']);
      const metrics = Object.fromEntries(rows.map((x) => [x.metric, x.value]));
      expect(new Set(rows.map((x) => x.metric)).size).toBe(rows.length);
      expect(metrics).toMatchObject({
        period: '2026-11',
        time_zone: ZONE,
        'exports.requested': '2',
        'exports.downloads': '4',
        'dsar.received.access': '3',
        'dsar.received.portability': '1',
        'dsar.completed.access': '2',
        'dsar.completed.erasure': '1',
        'dsar.median_hours_to_complete': '24',
        'dsar.worst_hours_to_complete': '1080',
        'dsar.overdue': '2',
        'erasures.ledger_entries': '1',
        'retention.deleted': '7',
        'retention.cascaded': '20',
        'legal_holds.active_at_end': '2',
      });
      // Every row after the period and the zone is a number.
      for (const { metric, value } of rows.slice(2))
        expect(Number.isFinite(Number(value)), metric).toBe(true);
      // Content negotiation gives the same document.
      const negotiated = await get('/api/v1/compliance/report?period=2026-11', h.keys.admin, {
        accept: 'text/csv',
      });
      expect(negotiated.headers['content-type']).toBe('text/csv; charset=utf-8');
      expect(negotiated.body).toBe(res.body);
    });

    it('prints a standalone HTML page with every value escaped and no script', async () => {
      const res = await get('/api/v1/compliance/report?period=2026-11&format=html');
      expect(res.statusCode, res.body).toBe(200);
      expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
      const page = res.body;
      expect(page.startsWith('<!doctype html>')).toBe(true);
      expect(page.trimEnd().endsWith('</html>')).toBe(true);
      expect(page).toContain('<style>');
      expect(page).not.toMatch(/<script|<link|src=|javascript:/i);
      expect(page).toContain('Acme &#60;script&#62;alert(&#34;owned&#34;)&#60;/script&#62; &#38; Sons');
      expect(page).toContain('<h1>Compliance report 2026-11</h1>');
      // Its one inline style is the one the page's Content-Security-Policy allows by hash.
      const style = page.match(/<style>([^<]*)<\/style>/)![1]!;
      const hash = createHash('sha256').update(style).digest('base64');
      expect(COMPLIANCE_REPORT_CSP).toContain(`style-src 'sha256-${hash}'`);
      expect(COMPLIANCE_REPORT_CSP).toContain("default-src 'none'");
      expect(page).toMatch(/<th scope="row">completed: access<\/th><td>2<\/td>/);
      // A browser asking for HTML gets the page.
      const browser = await get('/api/v1/compliance/report?period=2026-11', h.keys.admin, {
        accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
      });
      expect(browser.headers['content-type']).toBe('text/html; charset=utf-8');
      // A report whose numbers are missing still prints.
      const empty = await complianceReport(h.database, h.other.id, '2026-11', NOW);
      expect(complianceReportHtml(empty)).toContain('<td>–</td>');
    });

    it('refuses a period that is not a month, or has not begun, as a 400 problem', async () => {
      for (const period of ['2026-13', '2026-1', 'November', '2026-11-01', '2027-01', '2099-12']) {
        const res = await get(`/api/v1/compliance/report?period=${encodeURIComponent(period)}`);
        expect(res.statusCode, period).toBe(400);
        expect(res.headers['content-type'], period).toMatch(/^application\/problem\+json/);
        expect(res.json(), period).toMatchObject({ code: 'invalid_parameter' });
        expect((res.json() as { detail: string }).detail, period).toMatch(/^period: /);
      }
      expect((await get('/api/v1/compliance/report')).statusCode).toBe(400);
      expect((await get('/api/v1/compliance/report?period=2026-11&format=pdf')).statusCode).toBe(400);
      // The current month is a month so far.
      expect((await get('/api/v1/compliance/report?period=2026-12')).statusCode).toBe(200);
      expect(() => periodRange('2026-12', ZONE, new Date('2026-12-01T04:59:59Z'))).toThrow(/has not begun/);
      expect(periodRange('2026-12', ZONE, new Date('2026-12-01T05:00:00Z')).from.toISOString()).toBe(
        '2026-12-01T05:00:00.000Z',
      );
    });

    it('is for admins and managers only', async () => {
      expect((await get('/api/v1/compliance/report?period=2026-11', h.keys.manager)).statusCode).toBe(200);
      for (const role of ['analyst', 'agent'] as const) {
        const res = await get('/api/v1/compliance/report?period=2026-11', h.keys[role]);
        expect(res.statusCode, role).toBe(403);
        expect(res.headers['content-type'], role).toMatch(/^application\/problem\+json/);
        expect(res.json(), role).toMatchObject({ code: 'forbidden' });
      }
      expect((await h.app.inject('/api/v1/compliance/report?period=2026-11')).statusCode).toBe(401);
      // Another tenant's key sees its own tenant only.
      const other = (await get('/api/v1/compliance/report?period=2026-11', h.otherKeys.admin)).json();
      expect(other.tenant_id).toBe(h.other.id);
      expect(other.exports.requested).toBe(1);
    });
  });
}
