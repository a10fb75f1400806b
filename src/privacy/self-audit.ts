import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, DatasetDeclaration, TableDeclaration } from '../datamap/types.ts';
import { isExportFormat } from '../format/registry.ts';
import { escapeHtml } from '../lib/escape-html.ts';
import { verifyAuditChain } from './audit-chain.ts';
import { tenantProcessors } from './processors.ts';
import { durationWords, effectiveRetention } from './retention-policies.ts';

/**
 * The data portability self-audit (docs/compliance.md#the-portability-self-audit), in the
 * output format of the portability audit checklist. Every line is computed from what Ferry
 * has: the data map (tables, datasets and their formats, column classes, erasure rules,
 * relations), the format registry, the retention policies in force, the processors
 * registry, the audit chain, the configured schedules and webhooks, and the open requests.
 * A table of personal data without an export path or an erasure rule shows up as a gap; the
 * scores are numbers produced by stated rules from those findings.
 */

const PERSONAL_CLASSES = new Set(['contact', 'network', 'location', 'free_text']);

export type Priority = 'Critical' | 'High' | 'Medium' | 'Low';
const PRIORITIES: readonly Priority[] = ['Critical', 'High', 'Medium', 'Low'];

/**
 * Datasets a team member exports from a dashboard page of their own rather than the company
 * package: the audit log page's "Export as CSV" (src/web/pages/audit.ts).
 */
export const DASHBOARD_EXPORTS: readonly string[] = ['audit_log'];

/** How erased data leaves tenant backups: every restore replays the erasure ledger before it commits. */
export const BACKUP_PURGE_REPLAYED = 'erasure ledger replayed on every restore';
/** The tenant takes no backups (none completed, none scheduled). */
export const BACKUP_PURGE_NO_BACKUPS = 'no tenant backups';

export interface ExportCoverage {
  readonly category: string;
  readonly tables: string[];
  readonly personal: boolean;
  readonly exportable: boolean;
  /** The formats Ferry writes for the datasets that export it. */
  readonly formats: string[];
  readonly self_service: boolean;
  readonly api: boolean;
  /** The datasets that export it. */
  readonly datasets: string[];
}

export interface DeletionCoverage {
  readonly category: string;
  readonly personal: boolean;
  readonly deletable: boolean;
  /** What erasure does: delete, anonymize, retain (with its basis), or none. */
  readonly erasure: string;
  readonly cascade: boolean;
  /** How erased data leaves backups: replayed from the erasure ledger on restore, or no backups. */
  readonly backup_purge: string;
  /**
   * `automatic` (every processor receiving the table's data classes is notified by email or
   * webhook), `manual: <names>`, or `none registered` (no processor receives this data).
   */
  readonly third_party: string;
  /** The retention policy in force, as the privacy policy can quote it. */
  readonly retention: string;
}

/** One dataset of the data map, as the audit sees it. */
export interface DatasetCoverage {
  readonly name: string;
  readonly kind: DatasetDeclaration['kind'];
  readonly source: string;
  readonly formats: string[];
  readonly in_package: boolean;
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

export interface Capabilities {
  readonly privacy_center: boolean;
  readonly dsar_intake: boolean;
  readonly signed_receipts: boolean;
  readonly tamper_evident_audit_trail: boolean;
  readonly backups: boolean;
  /** Active schedules and webhook endpoints of the tenant. */
  readonly schedules: number;
  readonly webhooks: number;
  readonly processors: number;
  /** Legal holds in force. */
  readonly legal_holds: number;
  /** Open data subject requests past their deadline. */
  readonly overdue_requests: number;
}

export interface SelfAudit {
  readonly tenant_id: string;
  readonly generated_at: string;
  readonly data_portability_score: Score;
  readonly gdpr_article_20_compliance: Score;
  readonly export_completeness: Score;
  readonly export_coverage: ExportCoverage[];
  readonly deletion_coverage: DeletionCoverage[];
  readonly datasets: DatasetCoverage[];
  readonly critical_gaps: Gap[];
  readonly capabilities: Capabilities;
}

/** Whether a table holds personal data: a personal column class, or a column naming a person. */
export function isPersonal(table: TableDeclaration): boolean {
  return Object.values(table.columns).some((c) => PERSONAL_CLASSES.has(c.class) || c.pii === 'person_id');
}

/**
 * The formats Ferry writes a dataset in: its declared formats that the format registry has a
 * writer for; a document dataset is written by its own code in the formats it declares.
 */
export function datasetFormats(dataset: DatasetDeclaration): string[] {
  return dataset.kind === 'document' ? [...dataset.formats] : dataset.formats.filter(isExportFormat);
}

/** The datasets that export some column of the table. */
function exportingDatasets(map: DataMap, table: string): DatasetDeclaration[] {
  return Object.values(map.datasets).filter(
    (d) => d.source === table || d.fields.some((f) => f.reads.some((r) => r.startsWith(`${table}.`))),
  );
}

/** A rule is usable when it acts, or when it keeps the rows for a stated reason; null: no usable rule. */
function erasureOf(table: TableDeclaration): string | null {
  const rule = (table as { erasure?: TableDeclaration['erasure'] }).erasure;
  if (!rule?.action) return null;
  if (rule.action === 'retain') return rule.basis?.trim() ? `retain: ${rule.basis.trim()}` : null;
  return rule.action === 'delete' || rule.action === 'anonymize' ? rule.action : null;
}

const clamp = (n: number) => Math.max(1, Math.min(10, Math.floor(n)));
const countOf = (rows: { n: number | string | bigint }[]) => Number(rows[0]?.n ?? 0);

export async function selfAudit(deps: {
  database: Database;
  tenantId: string;
  map?: DataMap;
  now?: () => Date;
}): Promise<SelfAudit> {
  const { database, tenantId } = deps;
  const map = deps.map ?? REFERENCE_DATAMAP;
  const now = (deps.now ?? (() => new Date()))();
  const db = database.db;
  const tables = Object.entries(map.tables).filter(([, t]) => t.tenantKey);
  const policies = new Map((await effectiveRetention(database, tenantId, map)).map((p) => [p.dataset, p]));
  const processors = await tenantProcessors(database, tenantId);
  const chain = await verifyAuditChain(database, tenantId);
  const schedules = await sql<{ n: string }>`
    SELECT count(*) AS n FROM schedules WHERE tenant_id = ${tenantId} AND status = 'active'`.execute(db);
  const webhooks = await sql<{ n: string }>`
    SELECT count(*) AS n FROM webhook_endpoints WHERE tenant_id = ${tenantId} AND status = 'active'`.execute(
    db,
  );
  const backedUp = await sql<{ on: boolean }>`
    SELECT (coalesce((SELECT enabled FROM backup_settings WHERE tenant_id = ${tenantId}), false)
      OR EXISTS (SELECT 1 FROM backups WHERE tenant_id = ${tenantId} AND status = 'completed')) AS on`.execute(
    db,
  );
  const hasBackups = Boolean(backedUp.rows[0]?.on);
  const holds = await sql<{ n: string }>`
    SELECT count(*) AS n FROM legal_holds WHERE tenant_id = ${tenantId} AND released_at IS NULL`.execute(db);
  const overdue = await sql<{ n: string }>`
    SELECT count(*) AS n FROM dsar_requests
    WHERE tenant_id = ${tenantId} AND completed_at IS NULL AND due_at < ${now}
      AND status NOT IN ('completed', 'denied', 'cancelled')`.execute(db);
  const capabilities: Capabilities = {
    // Every tenant has its privacy center and DSAR intake; receipts are signed with a key made on first use.
    privacy_center: true,
    dsar_intake: true,
    signed_receipts: true,
    tamper_evident_audit_trail: chain.valid,
    backups: hasBackups,
    schedules: countOf(schedules.rows),
    webhooks: countOf(webhooks.rows),
    processors: processors.length,
    legal_holds: countOf(holds.rows),
    overdue_requests: countOf(overdue.rows),
  };

  const exportCoverage: ExportCoverage[] = [];
  const deletionCoverage: DeletionCoverage[] = [];
  const gaps: Gap[] = [];
  for (const [name, table] of tables) {
    const personal = isPersonal(table);
    const datasets = exportingDatasets(map, name);
    const formats = [...new Set(datasets.flatMap(datasetFormats))];
    const inPackage = datasets.some((d) => d.package || DASHBOARD_EXPORTS.includes(d.name));
    // Self-service: in the company package or on a page of the dashboard, or in a person's access package (privacy center).
    const selfService = datasets.length > 0 && (inPackage || table.subjectLinks.length > 0);
    exportCoverage.push({
      category: name,
      tables: [name],
      personal,
      exportable: datasets.length > 0,
      formats,
      self_service: selfService,
      api: datasets.length > 0,
      datasets: datasets.map((d) => d.name),
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
        gap: `${name} is exported only through the API, not in the company package, the dashboard or the privacy center`,
        regulation: 'GDPR Art. 20',
        risk: 'No self-service export of this data',
        remediation: `Place a dataset of ${name} in the company package`,
        priority: 'High',
      });

    const erasure = erasureOf(table);
    const key = `${name}.${table.primaryKey[0] ?? 'id'}`;
    const children = tables.filter(([, c]) => c.relations.some((r) => r.references === key));
    const orphaned = children.filter(([, c]) => isPersonal(c) && erasureOf(c) === null).map(([n]) => n);
    const categories = new Set<string>(Object.values(table.columns).map((c) => c.class));
    const receiving = personal
      ? processors.filter((p) => p.data_categories.some((c) => categories.has(c)))
      : [];
    const manual = receiving.filter((p) => p.channel === 'manual').map((p) => p.name);
    const thirdParty = !receiving.length
      ? 'none registered'
      : manual.length
        ? `manual: ${manual.join(', ')}`
        : 'automatic';
    const policy = policies.get(name);
    deletionCoverage.push({
      category: name,
      personal,
      deletable: erasure === 'delete' || erasure === 'anonymize',
      erasure: erasure ?? 'none',
      cascade: orphaned.length === 0,
      backup_purge: hasBackups ? BACKUP_PURGE_REPLAYED : BACKUP_PURGE_NO_BACKUPS,
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
    if (personal && orphaned.length)
      gaps.push({
        gap: `rows that refer to ${name} (${orphaned.join(', ')}) have no erasure rule`,
        regulation: 'GDPR Art. 17',
        risk: 'Erasure leaves dependent records behind',
        remediation: `Give ${orphaned.join(', ')} an erasure rule in the data map`,
        priority: 'Critical',
      });
    // Kept for the account's lifetime is fine; a fixed period of more than ten years is worth a look.
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
  if (!capabilities.backups)
    gaps.push({
      gap: 'no tenant backups: the account has no backup of its own to restore from',
      regulation: 'GDPR Art. 32(1)(c)',
      risk: 'Without a backup the data cannot be restored "in a timely manner" after an incident; a whole-database backup brings erased people back unless the erasure ledger is replayed',
      remediation:
        'Turn on scheduled tenant backups (Backups page or PUT /api/v1/backups/settings); their restores replay the erasure ledger',
      priority: 'Medium',
    });

  gaps.sort((a, b) => PRIORITIES.indexOf(a.priority) - PRIORITIES.indexOf(b.priority));
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
    generated_at: now.toISOString(),
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
    datasets: Object.values(map.datasets).map((d) => ({
      name: d.name,
      kind: d.kind,
      source: d.source,
      formats: datasetFormats(d),
      in_package: d.package !== null,
    })),
    critical_gaps: gaps,
    capabilities,
  };
}

const mark = (b: boolean) => (b ? '✅' : '❌');
const SCORES = [
  ['Data Portability Score', 'data_portability_score'],
  ['GDPR Article 20 Compliance', 'gdpr_article_20_compliance'],
  ['Export Completeness', 'export_completeness'],
] as const;
const inputsText = (s: Score) =>
  Object.entries(s.inputs)
    .map(([k, v]) => `${k.replaceAll('_', ' ')}: ${v}`)
    .join(', ');
const deletableText = (d: DeletionCoverage) =>
  !d.personal
    ? '➖ no personal data'
    : d.deletable
      ? `✅ ${d.erasure}`
      : d.erasure.startsWith('retain')
        ? `❌ ${d.erasure}`
        : '❌ no erasure rule';
const backupText = (d: DeletionCoverage) =>
  d.backup_purge === BACKUP_PURGE_NO_BACKUPS ? `❌ ${d.backup_purge}` : `✅ ${d.backup_purge}`;
const thirdPartyText = (a: SelfAudit, d: DeletionCoverage) =>
  a.capabilities.processors === 0 ? 'no processors registered' : d.third_party;

/** Markdown table cell text: no line breaks or pipes, and no raw HTML (a processor's name is the tenant's text). */
const cell = (s: unknown) =>
  String(s)
    .replaceAll('\n', ' ')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('|', '\\|');

function mdTable(head: readonly string[], rows: readonly (readonly unknown[])[]): string[] {
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map((h) => '-'.repeat(h.length + 2)).join('|')}|`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ];
}

/** The page's only style, inline (the document is one standalone file). */
const SELF_AUDIT_STYLE =
  'body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#111}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}table{border-collapse:collapse;margin:.5rem 0 1rem;width:100%}th,td{border:1px solid #bbb;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#eee}.score p{margin:.2rem 0;color:#444}tr{break-inside:avoid}@media print{body{margin:0}}';

/**
 * A Content-Security-Policy under which the page renders as it is: nothing loads, nothing
 * runs, only its own inline style applies (by hash). A server that shows the page sets it.
 */
export const SELF_AUDIT_CSP = `default-src 'none'; style-src 'sha256-${createHash('sha256').update(SELF_AUDIT_STYLE).digest('base64')}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;

/** The self-audit in the checklist's Markdown layout: scores, the two coverage tables, gaps, recommendations. */
export function selfAuditMarkdown(a: SelfAudit): string {
  const lines = [
    '# Data portability self-audit',
    '',
    `Tenant ${cell(a.tenant_id)}, generated ${a.generated_at} by Ferry from its data map, format registry, ` +
      'retention policies, processors registry, audit trail and configuration.',
    '',
  ];
  for (const [title, key] of SCORES)
    lines.push(`### ${title}: ${a[key].score}`, '', `${a[key].rule} (${inputsText(a[key])}).`, '');
  lines.push(
    '### Data Export Coverage',
    '',
    ...mdTable(
      ['Data Category', 'Exportable', 'Format', 'Self-Service', 'API'],
      a.export_coverage.map((e) => [
        e.category,
        mark(e.exportable),
        e.formats.map((f) => f.toUpperCase()).join('/') || '-',
        mark(e.self_service),
        mark(e.api),
      ]),
    ),
    '',
    '### Deletion Coverage',
    '',
    ...mdTable(
      ['Data Category', 'Deletable', 'Cascade', 'Backup Purge', 'Third-Party'],
      a.deletion_coverage.map((d) => [
        d.category,
        deletableText(d),
        mark(d.cascade),
        backupText(d),
        thirdPartyText(a, d),
      ]),
    ),
    '',
    '### Data Retention',
    '',
    ...mdTable(
      ['Data Category', 'Retention'],
      a.deletion_coverage.map((d) => [d.category, d.retention || '-']),
    ),
    '',
    '### Critical Gaps',
    '',
    ...mdTable(
      ['Gap', 'Regulation', 'Risk', 'Remediation', 'Priority'],
      a.critical_gaps.map((g) => [g.gap, g.regulation, g.risk, g.remediation, g.priority]),
    ),
    '',
    '### Recommendations',
    '',
  );
  PRIORITIES.forEach((priority, i) => {
    const items = a.critical_gaps.filter((g) => g.priority === priority);
    lines.push(`${i + 1}. **${priority}**${items.length ? '' : ': none'}`);
    for (const g of items) lines.push(`   - ${cell(g.remediation)}`);
  });
  lines.push('');
  return lines.join('\n');
}

/** The self-audit as a standalone, printable HTML page: inline style, no scripts, every value escaped. */
export function selfAuditHtml(a: SelfAudit): string {
  const e = escapeHtml;
  const table = (head: readonly string[], rows: readonly (readonly unknown[])[]) =>
    `<table><thead><tr>${head.map((h) => `<th scope="col">${e(h)}</th>`).join('')}</tr></thead><tbody>${rows
      .map((r) => `<tr>${r.map((c) => `<td>${e(c)}</td>`).join('')}</tr>`)
      .join('')}</tbody></table>`;
  const scores = SCORES.map(
    ([title, key]) =>
      `<section class="score"><h2>${e(title)}: ${e(a[key].score)}</h2><p>${e(a[key].rule)} (${e(inputsText(a[key]))}).</p></section>`,
  ).join('\n');
  const recommendations = PRIORITIES.map((priority) => {
    const items = a.critical_gaps.filter((g) => g.priority === priority);
    return `<li><strong>${e(priority)}</strong>${
      items.length ? `<ul>${items.map((g) => `<li>${e(g.remediation)}</li>`).join('')}</ul>` : ': none'
    }</li>`;
  }).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Data portability self-audit</title>
<style>${SELF_AUDIT_STYLE}</style>
</head><body><h1>Data portability self-audit</h1>
<p>Tenant ${e(a.tenant_id)}, generated ${e(a.generated_at)} by Ferry from its data map, format registry, retention policies, processors registry, audit trail and configuration.</p>
${scores}
<h2>Data Export Coverage</h2>${table(
    ['Data Category', 'Exportable', 'Format', 'Self-Service', 'API'],
    a.export_coverage.map((c) => [
      c.category,
      mark(c.exportable),
      c.formats.map((f) => f.toUpperCase()).join('/') || '-',
      mark(c.self_service),
      mark(c.api),
    ]),
  )}
<h2>Deletion Coverage</h2>${table(
    ['Data Category', 'Deletable', 'Cascade', 'Backup Purge', 'Third-Party', 'Retention'],
    a.deletion_coverage.map((d) => [
      d.category,
      deletableText(d),
      mark(d.cascade),
      backupText(d),
      thirdPartyText(a, d),
      d.retention || '-',
    ]),
  )}
<h2>Critical Gaps</h2>${table(
    ['Gap', 'Regulation', 'Risk', 'Remediation', 'Priority'],
    a.critical_gaps.map((g) => [g.gap, g.regulation, g.risk, g.remediation, g.priority]),
  )}
<h2>Recommendations</h2><ol>${recommendations}</ol>
</body></html>
`;
}
