import { stringify } from 'csv-stringify/sync';
import { sql } from 'kysely';
import { DateTime } from 'luxon';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';

/**
 * The monthly compliance report (docs/compliance.md#compliance-reports): what Ferry recorded
 * in one calendar month of the tenant's time zone: exports and downloads, data subject
 * requests by type with their completion times, erasures, retention sweeps and legal holds.
 */

export interface ComplianceReport {
  readonly tenant_id: string;
  readonly period: string;
  readonly time_zone: string;
  readonly from: string;
  readonly to: string;
  readonly exports: { requested: number; completed: number; failed: number; downloads: number };
  readonly dsar: {
    received: Record<string, number>;
    completed: Record<string, number>;
    /** Hours from receipt to completion, for requests completed in the month. */
    median_hours_to_complete: number | null;
    worst_hours_to_complete: number | null;
    /** Completed after their deadline in the month, or open and past it at the month's end. */
    overdue: number;
  };
  readonly erasures: { requests_completed: number; ledger_entries: number };
  readonly retention: {
    sweeps: number;
    failed: number;
    deleted: number;
    anonymized: number;
    archived: number;
  };
  readonly legal_holds: { placed: number; released: number; active_at_end: number };
}

/** The month's start and end in the tenant's zone; a bad or future period is a 400. */
export function periodRange(period: string, zone: string, now = new Date()): { from: Date; to: Date } {
  if (!/^\d{4}-(0[1-9]|1[0-2])$/.test(period))
    throw invalid('period', `"${period}" is not a month (YYYY-MM)`);
  const start = DateTime.fromISO(`${period}-01`, { zone }).startOf('month');
  if (!start.isValid) throw invalid('period', `"${period}" is not a month (YYYY-MM)`);
  if (start.toMillis() > now.getTime()) throw invalid('period', `${period} has not begun`);
  return { from: start.toJSDate(), to: start.plus({ months: 1 }).toJSDate() };
}

const hours = (ms: number) => Math.round(ms / 360_000) / 10;

export async function complianceReport(
  database: Database,
  tenantId: string,
  period: string,
  now = new Date(),
): Promise<ComplianceReport> {
  const tenant = await database.db
    .selectFrom('tenants')
    .select('timezone')
    .where('id', '=', tenantId)
    .executeTakeFirst();
  if (!tenant) throw new FerryError('not_found', `no tenant ${tenantId}`);
  const { from, to } = periodRange(period, tenant.timezone, now);
  const db = database.db;
  const actions = await sql<{ action: string; n: number | string }>`
    SELECT action, count(*) AS n FROM audit_events
    WHERE tenant_id = ${tenantId} AND occurred_at >= ${from} AND occurred_at < ${to}
      AND action IN ('export.requested', 'export.completed', 'export.failed', 'export.downloaded',
        'legal_hold.created', 'legal_hold.released')
    GROUP BY action`.execute(db);
  const action = (name: string) => Number(actions.rows.find((r) => r.action === name)?.n ?? 0);
  const received = await sql<{ type: string; n: number | string }>`
    SELECT type, count(*) AS n FROM dsar_requests
    WHERE tenant_id = ${tenantId} AND received_at >= ${from} AND received_at < ${to} GROUP BY type ORDER BY type`.execute(
    db,
  );
  const completed = await sql<{ type: string; received_at: Date; completed_at: Date; due_at: Date }>`
    SELECT type, received_at, completed_at, due_at FROM dsar_requests
    WHERE tenant_id = ${tenantId} AND status = 'completed' AND completed_at >= ${from} AND completed_at < ${to}`.execute(
    db,
  );
  const openLate = await sql<{ n: number | string }>`
    SELECT count(*) AS n FROM dsar_requests
    WHERE tenant_id = ${tenantId} AND received_at < ${to} AND due_at < ${to}
      AND (completed_at IS NULL OR completed_at >= ${to}) AND status NOT IN ('completed', 'denied', 'cancelled')`.execute(
    db,
  );
  const durations = completed.rows
    .map((r) => new Date(r.completed_at).getTime() - new Date(r.received_at).getTime())
    .sort((a, b) => a - b);
  const median =
    durations.length === 0
      ? null
      : durations.length % 2
        ? durations[(durations.length - 1) / 2]!
        : (durations[durations.length / 2 - 1]! + durations[durations.length / 2]!) / 2;
  const completedByType: Record<string, number> = {};
  for (const r of completed.rows) completedByType[r.type] = (completedByType[r.type] ?? 0) + 1;
  const lateCompleted = completed.rows.filter((r) => new Date(r.completed_at) > new Date(r.due_at)).length;
  const ledger = await sql<{ n: number | string }>`
    SELECT count(*) AS n FROM erasure_ledger WHERE tenant_id = ${tenantId} AND erased_at >= ${from} AND erased_at < ${to}`.execute(
    db,
  );
  const sweeps = await sql<{ status: string; progress: unknown }>`
    SELECT status, progress FROM retention_sweeps WHERE tenant_id = ${tenantId} AND started_at >= ${from} AND started_at < ${to}`.execute(
    db,
  );
  const retention = { sweeps: sweeps.rows.length, failed: 0, deleted: 0, anonymized: 0, archived: 0 };
  for (const s of sweeps.rows) {
    if (s.status === 'failed') retention.failed += 1;
    const progress = (typeof s.progress === 'string' ? JSON.parse(s.progress) : s.progress) as Record<
      string,
      Record<string, unknown>
    >;
    for (const counts of Object.values(progress ?? {}))
      for (const key of ['deleted', 'anonymized', 'archived'] as const) {
        const n = counts[key];
        if (typeof n === 'number') retention[key] += n;
      }
  }
  const activeHolds = await sql<{ n: number | string }>`
    SELECT count(*) AS n FROM legal_holds WHERE tenant_id = ${tenantId} AND created_at < ${to}
      AND (released_at IS NULL OR released_at >= ${to})`.execute(db);
  return {
    tenant_id: tenantId,
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
      median_hours_to_complete: median === null ? null : hours(median),
      worst_hours_to_complete: durations.length ? hours(durations.at(-1)!) : null,
      overdue: lateCompleted + Number(openLate.rows[0]?.n ?? 0),
    },
    erasures: {
      requests_completed: completedByType.erasure ?? 0,
      ledger_entries: Number(ledger.rows[0]?.n ?? 0),
    },
    retention,
    legal_holds: {
      placed: action('legal_hold.created'),
      released: action('legal_hold.released'),
      active_at_end: Number(activeHolds.rows[0]?.n ?? 0),
    },
  };
}

/** The report as `metric,value` rows. */
export function complianceReportCsv(r: ComplianceReport): string {
  const rows: [string, string | number][] = [
    ['period', r.period],
    ['time_zone', r.time_zone],
    ['exports.requested', r.exports.requested],
    ['exports.completed', r.exports.completed],
    ['exports.failed', r.exports.failed],
    ['exports.downloads', r.exports.downloads],
    ...Object.entries(r.dsar.received).map(([t, n]): [string, number] => [`dsar.received.${t}`, n]),
    ...Object.entries(r.dsar.completed).map(([t, n]): [string, number] => [`dsar.completed.${t}`, n]),
    ['dsar.median_hours_to_complete', r.dsar.median_hours_to_complete ?? ''],
    ['dsar.worst_hours_to_complete', r.dsar.worst_hours_to_complete ?? ''],
    ['dsar.overdue', r.dsar.overdue],
    ['erasures.requests_completed', r.erasures.requests_completed],
    ['erasures.ledger_entries', r.erasures.ledger_entries],
    ['retention.sweeps', r.retention.sweeps],
    ['retention.failed', r.retention.failed],
    ['retention.deleted', r.retention.deleted],
    ['retention.anonymized', r.retention.anonymized],
    ['retention.archived', r.retention.archived],
    ['legal_holds.placed', r.legal_holds.placed],
    ['legal_holds.released', r.legal_holds.released],
    ['legal_holds.active_at_end', r.legal_holds.active_at_end],
  ];
  return stringify(rows, { header: true, columns: ['metric', 'value'] });
}

const esc = (s: unknown) =>
  String(s)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');

/** The report as a standalone, printable HTML page (no scripts, every value escaped). */
export function complianceReportHtml(r: ComplianceReport): string {
  const rows = complianceReportCsv(r)
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => {
      const i = line.indexOf(',');
      return `<tr><th scope="row">${esc(line.slice(0, i))}</th><td>${esc(line.slice(i + 1).replace(/^"|"$/g, ''))}</td></tr>`;
    })
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compliance report ${esc(r.period)}</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#111}table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:.3rem .6rem;text-align:left}th{font-weight:normal;background:#f4f4f4}@media print{body{margin:0}}</style>
</head><body><h1>Compliance report ${esc(r.period)}</h1>
<p>Tenant ${esc(r.tenant_id)}, ${esc(r.from)} to ${esc(r.to)} (${esc(r.time_zone)}).</p>
<table><tbody>${rows}</tbody></table></body></html>
`;
}
