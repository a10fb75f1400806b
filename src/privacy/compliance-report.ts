import { createHash } from 'node:crypto';
import { stringify } from 'csv-stringify/sync';
import { sql } from 'kysely';
import { DateTime } from 'luxon';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { escapeHtml } from '../lib/escape-html.ts';

/**
 * The monthly compliance report (docs/compliance.md#compliance-reports): what Ferry recorded
 * in one calendar month of the tenant's time zone: exports and downloads (the audit trail),
 * data subject requests by type with their completion times and the overdue ones, erasures
 * (requests and the erasure ledger), retention sweeps (their per-dataset counts) and legal
 * holds. Every number is counted from the tables when the report is asked for.
 */

export interface ComplianceReport {
  readonly tenant_id: string;
  readonly tenant_name: string;
  readonly period: string;
  readonly time_zone: string;
  /** The month's first instant, and the first instant after it (exclusive), in UTC. */
  readonly from: string;
  readonly to: string;
  readonly exports: { requested: number; completed: number; failed: number; downloads: number };
  readonly dsar: {
    /** Requests received in the month, by type. */
    received: Record<string, number>;
    /** Requests completed in the month, by type. */
    completed: Record<string, number>;
    /** Hours from receipt to completion (one decimal), for requests completed in the month. */
    median_hours_to_complete: number | null;
    worst_hours_to_complete: number | null;
    /** Completed in the month after their deadline, or still open past it at the month's end (or now). */
    overdue: number;
  };
  readonly erasures: { requests_completed: number; ledger_entries: number };
  /**
   * Sweeps started in the month, the failed ones, and the sum of every count their progress
   * recorded per dataset (`deleted`, `anonymized`, `archived`, and `cascaded`: child rows
   * that went with deleted rows; any other numeric count a sweep records is summed too).
   */
  readonly retention: {
    sweeps: number;
    failed: number;
    deleted: number;
    anonymized: number;
    archived: number;
    [count: string]: number;
  };
  readonly legal_holds: { placed: number; released: number; active_at_end: number };
}

const PERIOD = /^(\d{4})-(0[1-9]|1[0-2])$/;

/** The month's start and end in the tenant's zone; a period that is not YYYY-MM, or has not begun, is a 400. */
export function periodRange(period: string, zone: string, now = new Date()): { from: Date; to: Date } {
  if (!PERIOD.test(period)) throw invalid('period', `"${period}" is not a month (YYYY-MM, e.g. 2026-11)`);
  const start = DateTime.fromISO(`${period}-01`, { zone }).startOf('month');
  if (!start.isValid) throw invalid('period', `"${period}" is not a month (YYYY-MM, e.g. 2026-11)`);
  if (start.toMillis() > now.getTime()) throw invalid('period', `${period} has not begun`);
  return { from: start.toJSDate(), to: start.plus({ months: 1 }).toJSDate() };
}

/** Milliseconds as hours with one decimal. */
const hours = (ms: number) => Math.round(ms / 360_000) / 10;
const count = (rows: { n: number | string | bigint }[]) => Number(rows[0]?.n ?? 0);

function median(sorted: readonly number[]): number | null {
  if (!sorted.length) return null;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * Adds every numeric member of one dataset's sweep counts, and every count map in it (an
 * object of numbers only, such as `cascaded` per table); other members (`done`, the
 * `archive` object) are not counts.
 */
function addCounts(into: Record<string, number>, counts: unknown): void {
  if (!counts || typeof counts !== 'object') return;
  for (const [key, value] of Object.entries(counts)) {
    if (isCount(value)) into[key] = (into[key] ?? 0) + value;
    else if (value && typeof value === 'object' && !Array.isArray(value)) {
      const nested = Object.values(value);
      if (nested.length && nested.every(isCount))
        into[key] = (into[key] ?? 0) + nested.reduce((a, b) => a + b, 0);
    }
  }
}

export async function complianceReport(
  database: Database,
  tenantId: string,
  period: string,
  now = new Date(),
): Promise<ComplianceReport> {
  const tenant = await database.db
    .selectFrom('tenants')
    .select(['name', 'timezone'])
    .where('id', '=', tenantId)
    .executeTakeFirst();
  if (!tenant) throw new FerryError('not_found', `no tenant ${tenantId}`);
  const { from, to } = periodRange(period, tenant.timezone, now);
  // What is "open at the end" of the month so far, for the current month.
  const end = to.getTime() < now.getTime() ? to : now;
  const db = database.db;

  const actions = await sql<{ action: string; n: number | string }>`
    SELECT action, count(*) AS n FROM audit_events
    WHERE tenant_id = ${tenantId} AND occurred_at >= ${from} AND occurred_at < ${to}
      AND action IN ('export.requested', 'export.completed', 'export.failed', 'export.downloaded')
    GROUP BY action`.execute(db);
  const action = (name: string) => Number(actions.rows.find((r) => r.action === name)?.n ?? 0);

  const received = await sql<{ type: string; n: number | string }>`
    SELECT type, count(*) AS n FROM dsar_requests
    WHERE tenant_id = ${tenantId} AND received_at >= ${from} AND received_at < ${to}
    GROUP BY type ORDER BY type`.execute(db);
  const completed = await sql<{ type: string; received_at: Date; completed_at: Date; due_at: Date }>`
    SELECT type, received_at, completed_at, due_at FROM dsar_requests
    WHERE tenant_id = ${tenantId} AND status = 'completed' AND completed_at >= ${from} AND completed_at < ${to}
    ORDER BY type, completed_at`.execute(db);
  // Open at the month's end (whatever became of them since) and past their deadline then.
  const openLate = await sql<{ n: number | string }>`
    SELECT count(*) AS n FROM dsar_requests
    WHERE tenant_id = ${tenantId} AND received_at < ${end} AND due_at < ${end}
      AND (completed_at IS NULL OR completed_at >= ${end})`.execute(db);
  const durations = completed.rows
    .map((r) => new Date(r.completed_at).getTime() - new Date(r.received_at).getTime())
    .sort((a, b) => a - b);
  const completedByType: Record<string, number> = {};
  for (const r of completed.rows) completedByType[r.type] = (completedByType[r.type] ?? 0) + 1;
  const lateCompleted = completed.rows.filter(
    (r) => new Date(r.completed_at).getTime() > new Date(r.due_at).getTime(),
  ).length;
  const middle = median(durations);

  const ledger = await sql<{ n: number | string }>`
    SELECT count(*) AS n FROM erasure_ledger
    WHERE tenant_id = ${tenantId} AND erased_at >= ${from} AND erased_at < ${to}`.execute(db);

  const sweeps = await sql<{ status: string; progress: unknown }>`
    SELECT status, progress FROM retention_sweeps
    WHERE tenant_id = ${tenantId} AND started_at >= ${from} AND started_at < ${to}`.execute(db);
  const sums: Record<string, number> = { deleted: 0, anonymized: 0, archived: 0 };
  let failed = 0;
  for (const s of sweeps.rows) {
    if (s.status === 'failed') failed += 1;
    const progress = typeof s.progress === 'string' ? (JSON.parse(s.progress) as unknown) : s.progress;
    if (progress && typeof progress === 'object')
      for (const counts of Object.values(progress)) addCounts(sums, counts);
  }

  const retention: ComplianceReport['retention'] = {
    sweeps: sweeps.rows.length,
    failed,
    deleted: sums.deleted!,
    anonymized: sums.anonymized!,
    archived: sums.archived!,
  };
  for (const [key, n] of Object.entries(sums)) if (!(key in retention)) retention[key] = n;

  const holds = await sql<{ placed: number | string; released: number | string; active: number | string }>`
    SELECT
      count(*) FILTER (WHERE created_at >= ${from} AND created_at < ${to}) AS placed,
      count(*) FILTER (WHERE released_at >= ${from} AND released_at < ${to}) AS released,
      count(*) FILTER (WHERE created_at < ${to} AND (released_at IS NULL OR released_at >= ${to})) AS active
    FROM legal_holds WHERE tenant_id = ${tenantId}`.execute(db);
  const h = holds.rows[0];

  return {
    tenant_id: tenantId,
    tenant_name: tenant.name,
    period,
    time_zone: tenant.timezone,
    from: from.toISOString(),
    to: to.toISOString(),
    exports: {
      requested: action('export.requested'),
      completed: action('export.completed'),
      failed: action('export.failed'),
      downloads: action('export.downloaded'),
    },
    dsar: {
      received: Object.fromEntries(received.rows.map((r) => [r.type, Number(r.n)])),
      completed: completedByType,
      median_hours_to_complete: middle === null ? null : hours(middle),
      worst_hours_to_complete: durations.length ? hours(durations.at(-1)!) : null,
      overdue: lateCompleted + count(openLate.rows),
    },
    erasures: {
      requests_completed: completedByType.erasure ?? 0,
      ledger_entries: count(ledger.rows),
    },
    retention,
    legal_holds: {
      placed: Number(h?.placed ?? 0),
      released: Number(h?.released ?? 0),
      active_at_end: Number(h?.active ?? 0),
    },
  };
}

/** Every number of the report as `[metric, value]`, in the report's order (the CSV rows, the HTML table). */
export function reportMetrics(r: ComplianceReport): [string, number | null][] {
  return [
    ['exports.requested', r.exports.requested],
    ['exports.completed', r.exports.completed],
    ['exports.failed', r.exports.failed],
    ['exports.downloads', r.exports.downloads],
    ['dsar.received', Object.values(r.dsar.received).reduce((a, b) => a + b, 0)],
    ...Object.entries(r.dsar.received).map(([t, n]): [string, number] => [`dsar.received.${t}`, n]),
    ['dsar.completed', Object.values(r.dsar.completed).reduce((a, b) => a + b, 0)],
    ...Object.entries(r.dsar.completed).map(([t, n]): [string, number] => [`dsar.completed.${t}`, n]),
    ['dsar.median_hours_to_complete', r.dsar.median_hours_to_complete],
    ['dsar.worst_hours_to_complete', r.dsar.worst_hours_to_complete],
    ['dsar.overdue', r.dsar.overdue],
    ['erasures.requests_completed', r.erasures.requests_completed],
    ['erasures.ledger_entries', r.erasures.ledger_entries],
    ...Object.entries(r.retention).map(([k, n]): [string, number] => [`retention.${k}`, n]),
    ['legal_holds.placed', r.legal_holds.placed],
    ['legal_holds.released', r.legal_holds.released],
    ['legal_holds.active_at_end', r.legal_holds.active_at_end],
  ];
}

/**
 * The report as `metric,value` rows: the period and time zone first, then one row per
 * number (an empty value: no request was completed, so there is no median).
 */
export function complianceReportCsv(r: ComplianceReport): string {
  const rows: [string, string | number][] = [
    ['period', r.period],
    ['time_zone', r.time_zone],
    ...reportMetrics(r).map(([k, v]): [string, string | number] => [k, v ?? '']),
  ];
  return stringify(rows, { header: true, columns: ['metric', 'value'] });
}

const SECTIONS: Record<string, string> = {
  exports: 'Exports',
  dsar: 'Data subject requests',
  erasures: 'Erasures',
  retention: 'Retention sweeps',
  legal_holds: 'Legal holds',
};

/** The page's only style, inline (the document is one standalone file). */
const REPORT_STYLE =
  'body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#111;max-width:48rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}table{border-collapse:collapse;width:100%}th,td{border:1px solid #bbb;padding:.3rem .6rem;text-align:left}th{font-weight:normal;background:#f4f4f4;width:60%}td{font-variant-numeric:tabular-nums}section{break-inside:avoid}@media print{body{margin:0}}';

/**
 * A Content-Security-Policy under which the page renders as it is: nothing loads, nothing
 * runs, only its own inline style applies (by hash). A server that shows the page sets it.
 */
export const COMPLIANCE_REPORT_CSP = `default-src 'none'; style-src 'sha256-${createHash('sha256').update(REPORT_STYLE).digest('base64')}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;

/** The report as a standalone, printable HTML page: inline style, no scripts, every value escaped. */
export function complianceReportHtml(r: ComplianceReport): string {
  const e = escapeHtml;
  const groups = new Map<string, [string, number | null][]>();
  for (const [metric, value] of reportMetrics(r)) {
    const section = metric.slice(0, metric.indexOf('.'));
    groups.set(section, [...(groups.get(section) ?? []), [metric.slice(section.length + 1), value]]);
  }
  const sections = [...groups]
    .map(
      ([section, rows]) =>
        `<section><h2>${e(SECTIONS[section] ?? section)}</h2><table><tbody>${rows
          .map(
            ([metric, value]) =>
              `<tr><th scope="row">${e(metric.replaceAll('_', ' ').replaceAll('.', ': '))}</th><td>${e(value ?? '–')}</td></tr>`,
          )
          .join('')}</tbody></table></section>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compliance report ${e(r.period)}</title>
<style>${REPORT_STYLE}</style>
</head><body><h1>Compliance report ${e(r.period)}</h1>
<p>${e(r.tenant_name)} (${e(r.tenant_id)}): from ${e(r.from)} to ${e(r.to)}, the calendar month in ${e(r.time_zone)}.</p>
${sections}
<p><small>Counted by Ferry from its audit trail, data subject requests, erasure ledger, retention sweeps and legal holds.</small></p>
</body></html>
`;
}
