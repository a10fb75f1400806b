import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, TableDeclaration } from '../datamap/types.ts';
import { verifyAuditChain } from './audit-chain.ts';
import { tenantProcessors } from './processors.ts';
import { durationWords, effectiveRetention } from './retention-policies.ts';

/**
 * The data portability self-audit (docs/compliance.md#the-portability-self-audit), in the
 * output format of the portability audit checklist. Every line is computed from what Ferry
 * has: the data map (datasets, column classes, erasure rules, relations), the retention
 * policies in force, the processors registry, the audit chain and the open requests. A
 * table of personal data without an export path or an erasure rule shows up as a gap; the
 * scores are numbers produced by stated rules from those findings.
 */

const PERSONAL_CLASSES = new Set(['contact', 'network', 'location', 'free_text']);

export type Priority = 'Critical' | 'High' | 'Medium' | 'Low';

export interface ExportCoverage {
  readonly category: string;
  readonly tables: string[];
  readonly personal: boolean;
  readonly exportable: boolean;
  readonly formats: string[];
  readonly self_service: boolean;
  readonly api: boolean;
  /** The datasets that export it. */
  readonly datasets: string[];
}

export interface DeletionCoverage {
  readonly category: string;
  readonly deletable: boolean;
  /** What erasure does: delete, anonymize, retain (with its basis), or none. */
  readonly erasure: string;
  readonly cascade: boolean;
  readonly backup_purge: boolean;
  /** `automatic` (every processor is notified by email or webhook), `manual`, `none registered`. */
  readonly third_party: string;
  readonly retention: string;
}

export interface Gap {
  readonly gap: string;
  readonly regulation: string;
  readonly risk: string;
  readonly remediation: string;
  readonly priority: Priority;
}

export interface Score {
  readonly score: number;
  readonly rule: string;
  readonly inputs: Record<string, number>;
}

export interface SelfAudit {
  readonly tenant_id: string;
  readonly generated_at: string;
  readonly data_portability_score: Score;
  readonly gdpr_article_20_compliance: Score;
  readonly export_completeness: Score;
  readonly export_coverage: ExportCoverage[];
  readonly deletion_coverage: DeletionCoverage[];
  readonly critical_gaps: Gap[];
  readonly capabilities: Record<string, boolean | number>;
}

/** Whether a table holds personal data: a personal column class, or a column naming a person. */
export function isPersonal(table: TableDeclaration): boolean {
  return Object.values(table.columns).some((c) => PERSONAL_CLASSES.has(c.class) || c.pii === 'person_id');
}

/** The datasets that export some column of the table. */
function exportingDatasets(map: DataMap, table: string): string[] {
  return Object.values(map.datasets)
    .filter((d) => d.source === table || d.fields.some((f) => f.reads.some((r) => r.startsWith(`${table}.`))))
    .map((d) => d.name);
}

/** A rule is usable when it acts, or when it keeps the rows for a stated reason. */
function erasureOf(table: TableDeclaration): string | null {
  const rule = (table as { erasure?: TableDeclaration['erasure'] }).erasure;
  if (!rule?.action) return null;
  if (rule.action === 'retain') return rule.basis?.trim() ? `retain: ${rule.basis.trim()}` : null;
  return rule.action;
}

const clamp = (n: number) => Math.max(1, Math.min(10, Math.floor(n)));

export async function selfAudit(deps: {
  database: Database;
  tenantId: string;
  map?: DataMap;
  now?: () => Date;
}): Promise<SelfAudit> {
  const { database, tenantId } = deps;
  const map = deps.map ?? REFERENCE_DATAMAP;
  const tables = Object.entries(map.tables).filter(([, t]) => t.tenantKey);
  const policies = new Map((await effectiveRetention(database, tenantId, map)).map((p) => [p.dataset, p]));
  const processors = await tenantProcessors(database, tenantId);
  const chain = await verifyAuditChain(database, tenantId);
  const count = async (statement: string) =>
    Number((await sql<{ n: number | string }>`${sql.raw(statement)}`.execute(database.db)).rows[0]?.n ?? 0);
  const t = `'${tenantId.replaceAll("'", "''")}'`;
  const capabilities = {
    privacy_center: true,
    signed_receipts: true,
    tamper_evident_audit_trail: chain.valid,
    schedules: await count(`SELECT count(*) AS n FROM schedules WHERE tenant_id = ${t}`),
    webhooks: await count(
      `SELECT count(*) AS n FROM webhook_endpoints WHERE tenant_id = ${t} AND status = 'active'`,
    ),
    processors: processors.length,
    legal_holds: await count(
      `SELECT count(*) AS n FROM legal_holds WHERE tenant_id = ${t} AND released_at IS NULL`,
    ),
    overdue_requests: await count(
      `SELECT count(*) AS n FROM dsar_requests WHERE tenant_id = ${t} AND completed_at IS NULL AND status NOT IN ('completed', 'denied', 'cancelled') AND due_at < now()`,
    ),
    tenant_backups: false,
  };

  const exportCoverage: ExportCoverage[] = [];
  const deletionCoverage: DeletionCoverage[] = [];
  const gaps: Gap[] = [];
  for (const [name, table] of tables) {
    const personal = isPersonal(table);
    const datasets = exportingDatasets(map, name);
    const formats = [...new Set(datasets.flatMap((d) => [...(map.datasets[d]?.formats ?? [])]))];
    const inPackage = datasets.some((d) => map.datasets[d]?.package);
    const selfService = inPackage || table.subjectLinks.length > 0;
    exportCoverage.push({
      category: name,
      tables: [name],
      personal,
      exportable: datasets.length > 0,
      formats,
      self_service: datasets.length > 0 && selfService,
      api: datasets.length > 0,
      datasets,
    });
    if (personal && !datasets.length)
      gaps.push({
        gap: `${name} holds personal data but no dataset exports it`,
        regulation: 'GDPR Art. 15, Art. 20',
        risk: 'Access and portability requests cannot be answered in full',
        remediation: `Declare a dataset in the data map that reads ${name}`,
        priority: 'Critical',
      });
    else if (personal && !selfService)
      gaps.push({
        gap: `${name} is exported only through the API, not in the company package or the privacy center`,
        regulation: 'GDPR Art. 20',
        risk: 'No self-service export of this data',
        remediation: `Place a dataset of ${name} in the company package`,
        priority: 'High',
      });

    const erasure = erasureOf(table);
    const children = tables.filter(([, c]) =>
      c.relations.some((r) => r.references === `${name}.${table.primaryKey[0] ?? 'id'}`),
    );
    const cascade = children.every(([, c]) => erasureOf(c) !== null);
    const categories = new Set(Object.values(table.columns).map((c) => c.class));
    const receiving = processors.filter((p) => p.data_categories.some((c) => categories.has(c as never)));
    const thirdParty = !receiving.length
      ? 'none registered'
      : receiving.every((p) => p.channel !== 'manual')
        ? 'automatic'
        : `manual: ${receiving
            .filter((p) => p.channel === 'manual')
            .map((p) => p.name)
            .join(', ')}`;
    const policy = policies.get(name);
    deletionCoverage.push({
      category: name,
      deletable: erasure === 'delete' || erasure === 'anonymize',
      erasure: erasure ?? 'none',
      cascade,
      backup_purge: false,
      third_party: thirdParty,
      retention: policy?.statement ?? '',
    });
    if (personal && erasure === null)
      gaps.push({
        gap: `${name} holds personal data and has no erasure rule`,
        regulation: 'GDPR Art. 17',
        risk: 'Erasure requests leave this data in place; fines up to 4% of turnover',
        remediation: `Give ${name} an erasure rule in the data map (delete, anonymize, or retain with its legal basis)`,
        priority: 'Critical',
      });
    if (personal && !cascade)
      gaps.push({
        gap: `rows that refer to ${name} (${children
          .filter(([, c]) => erasureOf(c) === null)
          .map(([n]) => n)
          .join(', ')}) have no erasure rule`,
        regulation: 'GDPR Art. 17',
        risk: 'Erasure leaves dependent records behind',
        remediation: 'Give the dependent tables erasure rules',
        priority: 'Critical',
      });
    if (personal && policy && policy.after !== 'account_closed' && policy.action !== 'anonymize') {
      const years = Number(policy.keep.match(/P(\d+)Y/)?.[1] ?? 0);
      if (years > 10)
        gaps.push({
          gap: `${name} keeps personal data for ${durationWords(policy.keep)}`,
          regulation: 'GDPR Art. 5(1)(e)',
          risk: 'Storage limitation: data kept longer than most purposes justify',
          remediation: `Shorten the retention of ${name} or anonymize it after its purpose ends`,
          priority: 'Medium',
        });
    }
  }
  for (const p of processors) {
    if (p.channel === 'manual')
      gaps.push({
        gap: `${p.name} is told of erasures by hand only`,
        regulation: 'GDPR Art. 17(2), Art. 19',
        risk: 'Erasure may not reach the processor in time',
        remediation: `Give ${p.name} an email address or webhook for deletion notices`,
        priority: 'High',
      });
    if (!p.included_in_exports && !p.export_instructions_url)
      gaps.push({
        gap: `${p.name} holds data that is not in Ferry's exports, and no way to get it out is documented`,
        regulation: 'GDPR Art. 15(1)(c), Art. 20',
        risk: 'Portability stops at this processor',
        remediation: `Add export instructions for ${p.name} to the registry`,
        priority: 'Medium',
      });
  }
  if (!chain.valid)
    gaps.push({
      gap: `the audit trail is broken at event ${chain.broken?.seq}: ${chain.broken?.reason}`,
      regulation: 'GDPR Art. 5(2), Art. 30',
      risk: 'The record of what was done to personal data cannot be trusted',
      remediation: 'Investigate the change (ferry audit verify) and restore the events from a trusted copy',
      priority: 'Critical',
    });
  if (capabilities.overdue_requests > 0)
    gaps.push({
      gap: `${capabilities.overdue_requests} data subject request(s) past their deadline`,
      regulation: 'GDPR Art. 12(3)',
      risk: 'Answers later than one month (three with an extension)',
      remediation: 'Answer or extend the overdue requests (Privacy page, GET /api/v1/dsar?overdue=true)',
      priority: 'High',
    });
  gaps.push({
    gap: 'no per-tenant backups that replay erasures on restore',
    regulation: 'GDPR Art. 17, Art. 32(1)(c)',
    risk: 'A restore from a whole-database backup brings erased people back unless the erasure ledger is replayed',
    remediation: 'Replay the erasure ledger after any restore; use tenant backups once available',
    priority: 'Medium',
  });

  const order: Record<Priority, number> = { Critical: 0, High: 1, Medium: 2, Low: 3 };
  gaps.sort((a, b) => order[a.priority] - order[b.priority]);
  const critical = gaps.filter((g) => g.priority === 'Critical').length;
  const high = gaps.filter((g) => g.priority === 'High').length;
  const medium = gaps.filter((g) => g.priority === 'Medium').length;
  const personalRows = exportCoverage.filter((e) => e.personal);
  const portable = personalRows.filter(
    (e) => e.exportable && e.self_service && e.api && e.formats.some((f) => f === 'json' || f === 'csv'),
  ).length;
  const exportable = exportCoverage.filter((e) => e.exportable).length;
  return {
    tenant_id: tenantId,
    generated_at: (deps.now ?? (() => new Date()))().toISOString(),
    data_portability_score: {
      score: clamp(10 - 3 * critical - high - 0.5 * medium),
      rule: '10 − 3 per critical gap − 1 per high gap − ½ per medium gap, rounded down, from 1 to 10',
      inputs: { critical_gaps: critical, high_gaps: high, medium_gaps: medium },
    },
    gdpr_article_20_compliance: {
      score: clamp(1 + (9 * portable) / Math.max(1, personalRows.length)),
      rule: '1 + 9 × (tables of personal data exportable self-service and by API in JSON or CSV) ÷ (tables of personal data), rounded down',
      inputs: { personal_tables: personalRows.length, portable_tables: portable },
    },
    export_completeness: {
      score: clamp(1 + (9 * exportable) / Math.max(1, exportCoverage.length)),
      rule: '1 + 9 × (tables with an export path) ÷ (tables of the tenant), rounded down',
      inputs: { tables: exportCoverage.length, exportable_tables: exportable },
    },
    export_coverage: exportCoverage,
    deletion_coverage: deletionCoverage,
    critical_gaps: gaps,
    capabilities,
  };
}

const yes = (b: boolean) => (b ? '✅' : '❌');
const cell = (s: string) => s.replaceAll('|', '\\|').replaceAll('\n', ' ');

/** The self-audit in the checklist's Markdown layout. */
export function selfAuditMarkdown(a: SelfAudit): string {
  const score = (title: string, s: Score) =>
    `### ${title}: ${s.score}\n\n${s.rule} (${Object.entries(s.inputs)
      .map(([k, v]) => `${k.replaceAll('_', ' ')}: ${v}`)
      .join(', ')}).\n`;
  return [
    `# Data portability self-audit`,
    '',
    `Tenant ${a.tenant_id}, generated ${a.generated_at} by Ferry from its data map, retention policies, processors registry and audit trail.`,
    '',
    score('Data Portability Score', a.data_portability_score),
    score('GDPR Article 20 Compliance', a.gdpr_article_20_compliance),
    score('Export Completeness', a.export_completeness),
    '### Data Export Coverage',
    '',
    '| Data Category | Exportable | Format | Self-Service | API |',
    '|---------------|------------|--------|--------------|-----|',
    ...a.export_coverage.map(
      (e) =>
        `| ${cell(e.category)} | ${yes(e.exportable)} | ${e.formats.map((f) => f.toUpperCase()).join('/') || '-'} | ${yes(e.self_service)} | ${yes(e.api)} |`,
    ),
    '',
    '### Deletion Coverage',
    '',
    '| Data Category | Deletable | Cascade | Backup Purge | Third-Party |',
    '|---------------|-----------|---------|--------------|-------------|',
    ...a.deletion_coverage.map(
      (d) =>
        `| ${cell(d.category)} | ${d.deletable ? '✅' : d.erasure.startsWith('retain') ? '❌ (retained by law or purpose)' : '❌'} | ${yes(d.cascade)} | ${yes(d.backup_purge)} | ${cell(d.third_party)} |`,
    ),
    '',
    '### Critical Gaps',
    '',
    '| Gap | Regulation | Risk | Remediation | Priority |',
    '|-----|------------|------|-------------|----------|',
    ...a.critical_gaps.map(
      (g) =>
        `| ${cell(g.gap)} | ${cell(g.regulation)} | ${cell(g.risk)} | ${cell(g.remediation)} | ${g.priority} |`,
    ),
    '',
  ].join('\n');
}

const esc = (s: unknown) =>
  String(s)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');

/** The self-audit as a standalone, printable HTML page (no scripts, every value escaped). */
export function selfAuditHtml(a: SelfAudit): string {
  const table = (head: string[], rows: unknown[][]) =>
    `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
      .map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`)
      .join('')}</tbody></table>`;
  const score = (title: string, s: Score) =>
    `<section><h2>${esc(title)}: ${s.score}</h2><p>${esc(s.rule)}</p></section>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Data portability self-audit</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#111}table{border-collapse:collapse;margin:1rem 0;width:100%}th,td{border:1px solid #bbb;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#eee}@media print{body{margin:0}}</style>
</head><body><h1>Data portability self-audit</h1><p>Tenant ${esc(a.tenant_id)}, generated ${esc(a.generated_at)}.</p>
${score('Data Portability Score', a.data_portability_score)}
${score('GDPR Article 20 Compliance', a.gdpr_article_20_compliance)}
${score('Export Completeness', a.export_completeness)}
<h2>Data Export Coverage</h2>${table(
    ['Data Category', 'Exportable', 'Format', 'Self-Service', 'API'],
    a.export_coverage.map((e) => [
      e.category,
      yes(e.exportable),
      e.formats.join('/'),
      yes(e.self_service),
      yes(e.api),
    ]),
  )}
<h2>Deletion Coverage</h2>${table(
    ['Data Category', 'Deletable', 'Cascade', 'Backup Purge', 'Third-Party'],
    a.deletion_coverage.map((d) => [
      d.category,
      yes(d.deletable),
      yes(d.cascade),
      yes(d.backup_purge),
      d.third_party,
    ]),
  )}
<h2>Critical Gaps</h2>${table(
    ['Gap', 'Regulation', 'Risk', 'Remediation', 'Priority'],
    a.critical_gaps.map((g) => [g.gap, g.regulation, g.risk, g.remediation, g.priority]),
  )}
</body></html>
`;
}
