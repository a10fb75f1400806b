import { createHash, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import type { DataMap, TableDeclaration } from '../src/datamap/types.ts';
import { WRITERS } from '../src/format/registry.ts';
import { effectiveRetention } from '../src/privacy/retention-policies.ts';
import {
  isPersonal,
  SELF_AUDIT_CSP,
  type SelfAudit,
  selfAudit,
  selfAuditHtml,
  selfAuditMarkdown,
} from '../src/privacy/self-audit.ts';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';

/**
 * The portability self-audit is computed from the data map, the format registry, the
 * retention policies, the processors registry and the configuration: changing any of them
 * changes the audit, and nothing in it is written per result.
 */

const TENANT_TABLES = Object.entries(REFERENCE_DATAMAP.tables)
  .filter(([, t]) => t.tenantKey)
  .map(([name]) => name);

/** The reference map with one table's erasure rule replaced (undefined: removed). */
function withErasure(table: string, erasure: TableDeclaration['erasure'] | undefined): DataMap {
  const declared = REFERENCE_DATAMAP.tables[table]!;
  return {
    ...REFERENCE_DATAMAP,
    tables: { ...REFERENCE_DATAMAP.tables, [table]: { ...declared, erasure: erasure as never } },
  };
}

const critical = (a: SelfAudit) => a.critical_gaps.filter((g) => g.priority === 'Critical');

for (const dialect of DIALECTS) {
  describe(`the portability self-audit (${dialect})`, () => {
    let h: ExportHarness;

    beforeAll(async () => {
      h = await exportHarness(dialect, { conversations: 3 });
    }, 240_000);
    afterAll(async () => h?.close());

    const get = (url: string, key = h.keys.admin, headers: Record<string, string> = {}) =>
      h.app.inject({ method: 'GET', url, headers: { ...bearer(key), ...headers } });

    it('finds no critical gap in the reference map, and covers every table and dataset', async () => {
      const res = await get('/api/v1/compliance/self-audit');
      expect(res.statusCode, res.body).toBe(200);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      const audit = res.json() as SelfAudit;
      expect(critical(audit)).toEqual([]);
      expect(audit.critical_gaps.filter((g) => /erasure rule|no dataset exports/.test(g.gap))).toEqual([]);

      expect(audit.export_coverage.map((e) => e.category)).toEqual(TENANT_TABLES);
      expect(audit.deletion_coverage.map((d) => d.category)).toEqual(TENANT_TABLES);
      for (const e of audit.export_coverage) {
        expect(e.personal, e.category).toBe(isPersonal(REFERENCE_DATAMAP.tables[e.category]!));
        expect(e.exportable, e.category).toBe(true);
        for (const name of e.datasets) expect(REFERENCE_DATAMAP.datasets[name], name).toBeDefined();
      }
      // Formats come from the datasets, as the format registry can write them.
      const conversations = audit.export_coverage.find((e) => e.category === 'conversations')!;
      expect(conversations).toMatchObject({ exportable: true, self_service: true, api: true });
      expect(conversations.formats).toEqual(
        REFERENCE_DATAMAP.datasets.conversations!.formats.filter((f) => Object.hasOwn(WRITERS, f)),
      );
      const documents = audit.export_coverage.find((e) => e.category === 'documents')!;
      expect(documents.formats).toEqual(expect.arrayContaining(['json', 'markdown']));
      expect(audit.datasets.map((d) => [d.name, d.kind])).toEqual(
        Object.values(REFERENCE_DATAMAP.datasets).map((d) => [d.name, d.kind]),
      );
      for (const d of audit.datasets.filter((x) => x.kind !== 'document'))
        for (const f of d.formats) expect(Object.keys(WRITERS), `${d.name} ${f}`).toContain(f);

      // Every table of personal data is deletable, or kept for a stated reason.
      for (const d of audit.deletion_coverage.filter((x) => x.personal))
        expect(d.deletable || /^retain: \S/.test(d.erasure), d.category).toBe(true);
      expect(audit.deletion_coverage.find((d) => d.category === 'customers')).toMatchObject({
        deletable: true,
        erasure: 'delete',
        cascade: true,
      });
      // Retention per category: the policies in force.
      const policies = await effectiveRetention(h.database, h.tenant.id);
      const customers = policies.find((p) => p.dataset === 'customers')!;
      expect(audit.deletion_coverage.find((d) => d.category === 'customers')!.retention).toBe(
        customers.statement,
      );

      // The tenant takes no backups: that is a gap with its remedy.
      expect(new Set(audit.deletion_coverage.map((d) => d.backup_purge))).toEqual(
        new Set(['no tenant backups']),
      );
      const backup = audit.critical_gaps.find((g) => g.gap.startsWith('no tenant backups'));
      expect(backup).toMatchObject({ priority: 'Medium' });
      expect(backup!.remediation).toMatch(/erasure ledger/);
      expect(audit.capabilities).toMatchObject({
        privacy_center: true,
        dsar_intake: true,
        signed_receipts: true,
        tamper_evident_audit_trail: true,
        backups: false,
        schedules: 0,
        processors: 0,
        overdue_requests: 0,
      });
    });

    it('computes each score by its stated rule from its inputs', async () => {
      const audit = await selfAudit({ database: h.database, tenantId: h.tenant.id });
      const count = (p: string) => audit.critical_gaps.filter((g) => g.priority === p).length;
      const d = audit.data_portability_score;
      expect(d.inputs).toEqual({
        critical_gaps: count('Critical'),
        high_gaps: count('High'),
        medium_gaps: count('Medium'),
      });
      expect(d.rule).toContain('per critical gap');
      expect(d.score).toBe(
        Math.max(
          1,
          Math.min(10, Math.floor(10 - 3 * count('Critical') - count('High') - count('Medium') / 2)),
        ),
      );
      const personal = audit.export_coverage.filter((e) => e.personal);
      const portable = personal.filter(
        (e) =>
          e.exportable &&
          e.self_service &&
          e.api &&
          (e.formats.includes('json') || e.formats.includes('csv')),
      );
      expect(audit.gdpr_article_20_compliance.inputs).toEqual({
        personal_tables: personal.length,
        portable_tables: portable.length,
      });
      expect(audit.gdpr_article_20_compliance.score).toBe(
        Math.floor(1 + (9 * portable.length) / personal.length),
      );
      expect(audit.export_completeness).toMatchObject({
        score: 10,
        inputs: { tables: TENANT_TABLES.length, exportable_tables: TENANT_TABLES.length },
      });
      for (const s of [d, audit.gdpr_article_20_compliance, audit.export_completeness]) {
        expect(Number.isInteger(s.score)).toBe(true);
        expect(s.score).toBeGreaterThanOrEqual(1);
        expect(s.score).toBeLessThanOrEqual(10);
      }
    });

    it('shows a critical gap naming a table of personal data whose erasure rule is removed, and scores lower', async () => {
      const before = await selfAudit({ database: h.database, tenantId: h.tenant.id });
      for (const [table, map] of [
        ['consent_records', withErasure('consent_records', undefined)],
        ['messages', withErasure('messages', undefined)],
        ['audit_events', withErasure('audit_events', { action: 'retain', basis: '  ' })],
      ] as const) {
        const after = await selfAudit({ database: h.database, tenantId: h.tenant.id, map });
        const gap = after.critical_gaps.find(
          (g) => g.gap === `${table} holds personal data and has no erasure rule`,
        );
        expect(gap, table).toMatchObject({ priority: 'Critical', regulation: 'GDPR Art. 17' });
        expect(gap!.remediation, table).toContain(table);
        expect(
          after.deletion_coverage.find((d) => d.category === table),
          table,
        ).toMatchObject({
          deletable: false,
          erasure: 'none',
        });
        expect(after.data_portability_score.score, table).toBeLessThan(before.data_portability_score.score);
        expect(after.data_portability_score.inputs.critical_gaps, table).toBeGreaterThan(0);
        const md = selfAuditMarkdown(after);
        expect(md, table).toContain(
          `| ${table} holds personal data and has no erasure rule | GDPR Art. 17 |`,
        );
        expect(md, table).toMatch(new RegExp(`\\| ${table} \\| ❌ no erasure rule \\|`));
      }
      // Messages belong to conversations: erasing a conversation's subject would leave them behind.
      const messages = await selfAudit({
        database: h.database,
        tenantId: h.tenant.id,
        map: withErasure('messages', undefined),
      });
      expect(messages.critical_gaps.map((g) => g.gap)).toContain(
        'rows that refer to conversations (messages) have no erasure rule',
      );
      expect(messages.deletion_coverage.find((d) => d.category === 'conversations')!.cascade).toBe(false);
      // The reference map itself is untouched.
      expect(REFERENCE_DATAMAP.tables.messages!.erasure.action).toBe('anonymize');
      expect(critical(await selfAudit({ database: h.database, tenantId: h.tenant.id }))).toEqual([]);
    });

    it('shows a table of personal data no dataset exports as a critical gap', async () => {
      const { consent_records: _, ...datasets } = REFERENCE_DATAMAP.datasets;
      const unexported = Object.values(datasets).filter((d) =>
        d.fields.some((f) => f.reads.some((r) => r.startsWith('consent_records.'))),
      );
      const map: DataMap = {
        ...REFERENCE_DATAMAP,
        datasets: Object.fromEntries(Object.entries(datasets).filter(([, d]) => !unexported.includes(d))),
      };
      const audit = await selfAudit({ database: h.database, tenantId: h.tenant.id, map });
      expect(audit.critical_gaps).toContainEqual(
        expect.objectContaining({
          gap: 'consent_records holds personal data but no dataset exports it',
          priority: 'Critical',
        }),
      );
      expect(audit.export_coverage.find((e) => e.category === 'consent_records')).toMatchObject({
        exportable: false,
        formats: [],
        self_service: false,
        api: false,
      });
      expect(audit.export_completeness.score).toBeLessThan(10);
    });

    it('writes the checklist layout as Markdown and as a standalone HTML page', async () => {
      const json = (await get('/api/v1/compliance/self-audit')).json() as SelfAudit;
      const res = await get('/api/v1/compliance/self-audit?format=md');
      expect(res.statusCode, res.body).toBe(200);
      expect(res.headers['content-type']).toBe('text/markdown; charset=utf-8');
      const md = res.body;
      expect(md).toContain(`### Data Portability Score: ${json.data_portability_score.score}\n`);
      expect(md).toContain(`### GDPR Article 20 Compliance: ${json.gdpr_article_20_compliance.score}\n`);
      expect(md).toContain(`### Export Completeness: ${json.export_completeness.score}\n`);
      expect(md).toContain(json.data_portability_score.rule);
      expect(md).toContain('| Data Category | Exportable | Format | Self-Service | API |');
      expect(md).toContain('| Data Category | Deletable | Cascade | Backup Purge | Third-Party |');
      expect(md).toContain('| Gap | Regulation | Risk | Remediation | Priority |');
      expect(md).toContain('| conversations | ✅ | CSV/JSON/NDJSON/XML/PARQUET | ✅ | ✅ |');
      expect(md).toMatch(
        /\| customers \| ✅ delete \| ✅ \| ❌ no tenant backups \| no processors registered \|/,
      );
      for (const table of TENANT_TABLES)
        expect(md.match(new RegExp(`^\\| ${table} \\|`, 'gm'))?.length, table).toBe(3);
      expect(md).toContain('### Recommendations');
      const negotiated = await get('/api/v1/compliance/self-audit', h.keys.admin, {
        accept: 'text/markdown',
      });
      expect(negotiated.headers['content-type']).toBe('text/markdown; charset=utf-8');

      const html = await get('/api/v1/compliance/self-audit?format=html');
      expect(html.statusCode).toBe(200);
      expect(html.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(html.body.startsWith('<!doctype html>')).toBe(true);
      expect(html.body.trimEnd().endsWith('</html>')).toBe(true);
      expect(html.body).toContain('<style>');
      expect(html.body).not.toMatch(/<script|<link|src=/i);
      expect(html.body).toContain(`<h2>Data Portability Score: ${json.data_portability_score.score}</h2>`);
      expect(html.body).toContain('<th scope="col">Backup Purge</th>');
      const style = html.body.match(/<style>([^<]*)<\/style>/)![1]!;
      expect(SELF_AUDIT_CSP).toContain(
        `style-src 'sha256-${createHash('sha256').update(style).digest('base64')}'`,
      );
    });

    it('counts the configured webhooks in its capabilities', async () => {
      await sql`INSERT INTO webhook_endpoints (id, tenant_id, url, events, secret_sealed)
        VALUES (${randomUUID()}, ${h.tenant.id}, 'https://hooks.example/ferry', '["*"]'::jsonb, 'sealed')`.execute(
        h.database.db,
      );
      const audit = await selfAudit({ database: h.database, tenantId: h.tenant.id });
      expect(audit.capabilities.webhooks).toBe(1);
    });

    it('is for admins and managers only', async () => {
      expect((await get('/api/v1/compliance/self-audit', h.keys.manager)).statusCode).toBe(200);
      for (const role of ['analyst', 'agent'] as const) {
        const res = await get('/api/v1/compliance/self-audit?format=md', h.keys[role]);
        expect(res.statusCode, role).toBe(403);
        expect(res.headers['content-type'], role).toMatch(/^application\/problem\+json/);
      }
      expect((await get('/api/v1/compliance/self-audit?format=pdf')).statusCode).toBe(400);
    });

    it('fills the third-party column from the processors registry', async () => {
      const before = await selfAudit({ database: h.database, tenantId: h.tenant.id });
      expect(before.capabilities.processors).toBe(0);
      expect(new Set(before.deletion_coverage.map((d) => d.third_party))).toEqual(
        new Set(['none registered']),
      );
      expect(selfAuditMarkdown(before)).toContain('no processors registered');

      const post = (body: object) =>
        h.app.inject({
          method: 'POST',
          url: '/api/v1/processors',
          headers: bearer(h.keys.admin),
          payload: body,
        });
      const mailer = await post({
        name: 'Mailer',
        purpose: 'Sends the newsletters',
        data_categories: ['contact'],
        location: 'DE',
        retention: '30 days after unsubscribing',
        deletion_channel: 'email',
        deletion_contact: 'privacy@mailer.example',
        included_in_exports: true,
      });
      expect(mailer.statusCode, mailer.body).toBe(201);
      const withContact = (a: SelfAudit) =>
        a.deletion_coverage.filter((d) =>
          Object.values(REFERENCE_DATAMAP.tables[d.category]!.columns).some((c) => c.class === 'contact'),
        );
      const automatic = await selfAudit({ database: h.database, tenantId: h.tenant.id });
      expect(automatic.capabilities.processors).toBe(1);
      const contact = withContact(automatic).filter((d) => d.personal);
      expect(contact.map((d) => d.category)).toContain('customers');
      for (const d of contact) expect(d.third_party, d.category).toBe('automatic');
      for (const d of automatic.deletion_coverage.filter((x) => !contact.includes(x)))
        expect(d.third_party, d.category).toBe('none registered');
      expect(selfAuditMarkdown(automatic)).toMatch(
        /\| customers \| ✅ delete \| ✅ \| ❌ no tenant backups \| automatic \|/,
      );

      const printer = await post({
        name: 'Print <b>shop</b>',
        purpose: 'Letters',
        data_categories: ['contact', 'location'],
        location: 'DE',
        retention: '30 days',
        deletion_channel: 'manual',
        deletion_instructions: 'Call them',
      });
      expect(printer.statusCode, printer.body).toBe(201);
      const manual = await selfAudit({ database: h.database, tenantId: h.tenant.id });
      expect(manual.deletion_coverage.find((d) => d.category === 'customers')!.third_party).toBe(
        'manual: Print <b>shop</b>',
      );
      expect(manual.critical_gaps).toContainEqual(
        expect.objectContaining({
          gap: 'Print <b>shop</b> is told of erasures by hand only',
          priority: 'High',
        }),
      );
      expect(manual.data_portability_score.score).toBeLessThan(automatic.data_portability_score.score);
      // The tenant's text is escaped in both documents.
      const md = selfAuditMarkdown(manual);
      expect(md).toContain('manual: Print &lt;b&gt;shop&lt;/b&gt;');
      expect(md).not.toContain('<b>');
      const html = selfAuditHtml(manual);
      expect(html).toContain('manual: Print &#60;b&#62;shop&#60;/b&#62;');
      expect(html).not.toContain('<b>');
    });
  });
}
