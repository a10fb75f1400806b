import { randomUUID } from 'node:crypto';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordAudit } from '../src/auth/audit.ts';
import type { Database } from '../src/db/database.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import type { DataMap } from '../src/datamap/types.ts';
import { createProcessor } from '../src/privacy/processors.ts';
import { selfAudit, selfAuditMarkdown } from '../src/privacy/self-audit.ts';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';

const ZONE = 'America/New_York';

async function insertRequest(
  database: Database,
  tenantId: string,
  r: { type: string; status: string; received: string; due: string; completed?: string },
) {
  await sql`INSERT INTO dsar_requests (id, tenant_id, type, regulation, source, status, stage, subject, subject_key,
      received_at, due_at, original_due_at, completed_at, actor)
    VALUES (${randomUUID()}, ${tenantId}, ${r.type}, 'gdpr', 'api', ${r.status}, ${r.status}, NULL, ${'ab'.repeat(32)},
      ${r.received}::timestamptz, ${r.due}::timestamptz, ${r.due}::timestamptz, ${r.completed ?? null}::timestamptz, 'cli')`.execute(
    database.db,
  );
}

for (const dialect of DIALECTS) {
  describe(`compliance reports and the self-audit (${dialect})`, () => {
    let h: ExportHarness;

    beforeAll(async () => {
      h = await exportHarness(dialect, { conversations: 5 });
      await sql`UPDATE tenants SET timezone = ${ZONE} WHERE id = ${h.tenant.id}`.execute(h.database.db);
      const tenantId = h.tenant.id;
      // 2026-11-01 00:30 in New York is still October in UTC terms plus four hours: November locally.
      const at = (iso: string) => new Date(iso);
      for (const [action, when] of [
        ['export.requested', '2026-11-01T04:30:00Z'],
        ['export.requested', '2026-11-15T12:00:00Z'],
        ['export.completed', '2026-11-15T12:01:00Z'],
        ['export.failed', '2026-11-16T12:00:00Z'],
        ['export.downloaded', '2026-11-20T12:00:00Z'],
        ['export.downloaded', '2026-11-21T12:00:00Z'],
        ['export.requested', '2026-11-01T03:30:00Z'], // 23:30 on 31 October in New York
        ['export.requested', '2026-12-01T05:30:00Z'], // 00:30 on 1 December in New York
      ] as const)
        await recordAudit(h.database, {
          tenantId,
          actor: 'cli',
          action,
          success: true,
          occurredAt: at(when),
        });
      await insertRequest(h.database, tenantId, {
        type: 'access',
        status: 'completed',
        received: '2026-11-02T10:00:00Z',
        due: '2026-12-02T10:00:00Z',
        completed: '2026-11-03T10:00:00Z',
      });
      await insertRequest(h.database, tenantId, {
        type: 'erasure',
        status: 'completed',
        received: '2026-11-01T10:00:00Z',
        due: '2026-11-05T10:00:00Z',
        completed: '2026-11-11T10:00:00Z',
      });
      await insertRequest(h.database, tenantId, {
        type: 'access',
        status: 'completed',
        received: '2026-11-10T00:00:00Z',
        due: '2026-12-10T00:00:00Z',
        completed: '2026-11-10T12:00:00Z',
      });
      await insertRequest(h.database, tenantId, {
        type: 'rectification',
        status: 'verified',
        received: '2026-10-01T00:00:00Z',
        due: '2026-11-01T00:00:00Z',
      });
    }, 240_000);
    afterAll(async () => h?.close());

    const get = (url: string, key = h.keys.admin) =>
      h.app.inject({ method: 'GET', url, headers: bearer(key) });

    it("reports one month of the tenant's time zone", async () => {
      const res = await get('/api/v1/compliance/report?period=2026-11');
      expect(res.statusCode, res.body).toBe(200);
      const r = res.json();
      expect(r.exports).toEqual({ requested: 2, completed: 1, failed: 1, downloads: 2 });
      expect(r.dsar.received).toEqual({ access: 2, erasure: 1 });
      expect(r.dsar.completed).toEqual({ access: 2, erasure: 1 });
      // 24 h, 12 h and 240 h: the median is 24, the worst 240.
      expect(r.dsar.median_hours_to_complete).toBe(24);
      expect(r.dsar.worst_hours_to_complete).toBe(240);
      // The erasure answered after its deadline, and the rectification still open past it.
      expect(r.dsar.overdue).toBe(2);
      expect(r.erasures.requests_completed).toBe(1);
      const october = (await get('/api/v1/compliance/report?period=2026-10')).json();
      expect(october.exports.requested).toBe(1);

      const csv = await get('/api/v1/compliance/report?period=2026-11&format=csv');
      expect(csv.headers['content-type']).toContain('text/csv');
      const rows = Object.fromEntries(
        (parse(csv.body, { columns: true }) as { metric: string; value: string }[]).map((x) => [
          x.metric,
          x.value,
        ]),
      );
      expect(rows['dsar.completed.access']).toBe('2');
      expect(rows['exports.downloads']).toBe('2');
      const html = await get('/api/v1/compliance/report?period=2026-11&format=html');
      expect(html.headers['content-type']).toContain('text/html');
      expect(html.body).toContain('<h1>Compliance report 2026-11</h1>');
      expect(html.body).not.toContain('<script');
    });

    it('refuses a bad or future period and roles without compliance:read', async () => {
      for (const period of ['2026-13', 'November', '2099-01'])
        expect((await get(`/api/v1/compliance/report?period=${period}`)).statusCode).toBe(400);
      expect((await get('/api/v1/compliance/report?period=2026-11', h.keys.analyst)).statusCode).toBe(403);
      expect((await get('/api/v1/compliance/report?period=2026-11', h.keys.manager)).statusCode).toBe(200);
    });

    it('finds no erasure or export gap in the reference map; scores say how they were computed', async () => {
      const res = await get('/api/v1/compliance/self-audit');
      expect(res.statusCode, res.body).toBe(200);
      const audit = res.json();
      const critical = audit.critical_gaps.filter((g: { priority: string }) => g.priority === 'Critical');
      expect(critical).toEqual([]);
      expect(audit.export_completeness.score).toBe(10);
      expect(audit.gdpr_article_20_compliance.rule).toContain('tables of personal data');
      const conversations = audit.export_coverage.find(
        (e: { category: string }) => e.category === 'conversations',
      );
      expect(conversations).toMatchObject({ exportable: true, self_service: true, api: true });
      expect(conversations.formats).toEqual(expect.arrayContaining(['csv', 'json', 'parquet']));
      const md = await get('/api/v1/compliance/self-audit?format=md');
      expect(md.body).toContain('### Data Portability Score: ');
      expect(md.body).toContain('| Data Category | Exportable | Format | Self-Service | API |');
      expect(md.body).toContain('| Data Category | Deletable | Cascade | Backup Purge | Third-Party |');
    });

    it('shows a critical gap when a table of personal data loses its erasure rule, and registered processors in the deletion table', async () => {
      const before = await selfAudit({ database: h.database, tenantId: h.tenant.id });
      const broken: DataMap = {
        ...REFERENCE_DATAMAP,
        tables: {
          ...REFERENCE_DATAMAP.tables,
          messages: { ...REFERENCE_DATAMAP.tables.messages!, erasure: undefined as never },
        },
      };
      const after = await selfAudit({ database: h.database, tenantId: h.tenant.id, map: broken });
      const gap = after.critical_gaps.find((g) =>
        g.gap.startsWith('messages holds personal data and has no erasure rule'),
      );
      expect(gap).toMatchObject({ priority: 'Critical', regulation: 'GDPR Art. 17' });
      // Messages belong to conversations: the dependent rows lack a rule too.
      expect(after.critical_gaps.some((g) => g.gap.includes('(messages) have no erasure rule'))).toBe(true);
      expect(after.data_portability_score.score).toBeLessThan(before.data_portability_score.score);
      expect(selfAuditMarkdown(after)).toContain('messages holds personal data and has no erasure rule');
      // A dataset that no longer exports a table of personal data is a gap as well.
      const { consent_records: _, audit_trail: __, ...datasets } = REFERENCE_DATAMAP.datasets;
      const unexported = await selfAudit({
        database: h.database,
        tenantId: h.tenant.id,
        map: { ...REFERENCE_DATAMAP, datasets },
      });
      expect(unexported.critical_gaps.map((g) => g.gap)).toContain(
        'consent_records holds personal data but no dataset exports it',
      );
      expect(unexported.export_completeness.score).toBeLessThan(10);

      expect(before.deletion_coverage.find((d) => d.category === 'customers')!.third_party).toBe(
        'none registered',
      );
      await createProcessor(
        h.database,
        h.tenant.id,
        {
          name: 'Print shop',
          purpose: 'Letters',
          data_categories: ['contact', 'location'],
          location: 'DE',
          retention: '30 days',
          deletion_channel: 'manual',
          deletion_instructions: 'Call them',
        },
        { actor: 'cli' },
      );
      const withProcessor = await selfAudit({ database: h.database, tenantId: h.tenant.id });
      expect(withProcessor.deletion_coverage.find((d) => d.category === 'customers')!.third_party).toBe(
        'manual: Print shop',
      );
      expect(
        withProcessor.critical_gaps.some((g) => g.gap === 'Print shop is told of erasures by hand only'),
      ).toBe(true);
    });
  });
}
