import type { ColumnType, Kysely } from 'kysely';
import { Duration } from 'luxon';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import {
  type DataMap,
  RETENTION_ACTIONS,
  RETENTION_AFTER,
  type RetentionAction,
  type RetentionAfter,
} from '../datamap/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';

/**
 * Retention policies (docs/retention.md): the data map's default per table, plus what
 * Ferry keeps itself (stored export files per plan, archives, backups), overridden per
 * tenant in `retention_policies`. Everything that reads a retention period (the sweep, the
 * preview, the record of processing, the self-audit, the published policy) reads
 * `effectiveRetention`.
 */

type Timestamp = ColumnType<Date, Date | string, Date | string>;

export interface RetentionPoliciesTable {
  tenant_id: string;
  dataset: string;
  keep: string;
  after: RetentionAfter;
  action: RetentionAction;
  archive_keep: string | null;
  updated_at: Timestamp;
  updated_by: string;
}

export type RetentionTables = { retention_policies: RetentionPoliciesTable };

export function retentionDb(database: Database): Kysely<DB & RetentionTables> {
  return database.db.withTables<RetentionTables>();
}

/** Export files kept for download, by plan (the product documentation's schedule). */
export const EXPORT_FILE_KEEP: Readonly<Record<string, string>> = {
  starter: 'P30D',
  pro: 'P90D',
  agency: 'P1Y',
  enterprise: 'P1Y',
};

/** Datasets a policy may name besides the data map's tables. */
export const STORED_DATASETS = {
  export_files: 'Stored export files kept for download (the files; the export records stay).',
  backups: 'Tenant backups.',
} as const;

export interface RetentionPolicy {
  readonly dataset: string;
  /** ISO 8601 duration. */
  readonly keep: string;
  readonly after: RetentionAfter;
  readonly action: RetentionAction;
  readonly archive_keep: string | null;
  /** `default` (the data map or the plan) or `tenant` (an override). */
  readonly source: 'default' | 'tenant';
  /** The sentence a privacy policy can quote. */
  readonly statement: string;
  readonly note: string;
}

export interface PolicyInput {
  readonly dataset: string;
  readonly keep: string;
  readonly after: string;
  readonly action: string;
  readonly archive_keep?: string | null;
}

/** A duration as words: `P2Y` → "2 years", `P0D` → "no time". */
export function durationWords(iso: string): string {
  const d = Duration.fromISO(iso);
  const parts: string[] = [];
  for (const unit of ['years', 'months', 'weeks', 'days', 'hours'] as const) {
    const n = d.get(unit);
    if (n) parts.push(`${n} ${n === 1 ? unit.slice(0, -1) : unit}`);
  }
  return parts.length ? parts.join(' ') : 'no time';
}

function statementOf(dataset: string, p: Omit<RetentionPolicy, 'statement' | 'note' | 'source' | 'dataset'>) {
  const name = dataset.replaceAll('_', ' ');
  const period = durationWords(p.keep);
  const start =
    p.after === 'account_closed'
      ? p.keep === 'P0D'
        ? `${name} are kept for the lifetime of the account and removed when the closed account is purged`
        : `${name} are kept for the lifetime of the account and ${period} after it is closed`
      : `${name} are kept for ${period} after ${p.after === 'created' ? 'they are created' : 'their last activity'}`;
  const end =
    p.after === 'account_closed' && p.keep === 'P0D'
      ? ''
      : p.action === 'delete'
        ? ', then deleted'
        : p.action === 'anonymize'
          ? ', then anonymized'
          : `, then archived${p.archive_keep ? ` for ${durationWords(p.archive_keep)}` : ''} and deleted from the account`;
  return `${start[0]!.toUpperCase()}${start.slice(1)}${end}, unless a legal hold applies.`;
}

/** The defaults: the data map's tables, export files by plan, backups. */
export function defaultPolicies(map: DataMap, plan: string): RetentionPolicy[] {
  const out: RetentionPolicy[] = [];
  for (const [name, t] of Object.entries(map.tables)) {
    if (!t.tenantKey || name === 'tenants') continue;
    const p = {
      keep: t.retention.keep,
      after: t.retention.after,
      action: t.retention.action,
      archive_keep: t.retention.archiveKeep ?? null,
    };
    out.push({
      dataset: name,
      ...p,
      source: 'default',
      statement: statementOf(name, p),
      note: t.retention.note,
    });
  }
  const files = {
    keep: EXPORT_FILE_KEEP[plan] ?? 'P30D',
    after: 'created' as const,
    action: 'delete' as const,
    archive_keep: null,
  };
  out.push({
    dataset: 'export_files',
    ...files,
    source: 'default',
    statement: statementOf('export_files', files),
    note: `Export files of the ${plan} plan.`,
  });
  // The longest period of the product's backup table (audit logs, revenue: 7 years); the backups' own keep rules choose within it.
  const backups = { keep: 'P7Y', after: 'created' as const, action: 'delete' as const, archive_keep: null };
  out.push({
    dataset: 'backups',
    ...backups,
    source: 'default',
    statement: statementOf('backups', backups),
    note: 'Tenant backups: none is kept longer; the keep rules of the backup settings choose which younger ones stay.',
  });
  return out;
}

function checkDuration(field: string, value: unknown): string {
  if (typeof value !== 'string' || !/^P/.test(value) || !Duration.fromISO(value).isValid)
    throw invalid(field, `"${String(value)}" is not an ISO 8601 duration such as P30D or P2Y`);
  const d = Duration.fromISO(value);
  if (d.toMillis() < 0) throw invalid(field, 'must not be negative');
  return value;
}

/** Checks one policy against the map: a known dataset, a duration, an `after` and an `action` it supports. */
export function checkPolicy(
  input: PolicyInput,
  map: DataMap = REFERENCE_DATAMAP,
  path = 'policy',
): Omit<RetentionPolicy, 'source' | 'statement' | 'note'> {
  const datasets = [
    ...Object.keys(map.tables).filter((n) => n !== 'tenants' && map.tables[n]?.tenantKey),
    ...Object.keys(STORED_DATASETS),
  ];
  if (!datasets.includes(input.dataset))
    throw invalid(`${path}.dataset`, `"${input.dataset}" is not a dataset retention applies to`, datasets);
  const keep = checkDuration(`${path}.keep`, input.keep);
  if (!(RETENTION_AFTER as readonly string[]).includes(input.after))
    throw invalid(`${path}.after`, `"${input.after}" is not a start of the period`, [...RETENTION_AFTER]);
  if (!(RETENTION_ACTIONS as readonly string[]).includes(input.action))
    throw invalid(`${path}.action`, `"${input.action}" is not a retention action`, [...RETENTION_ACTIONS]);
  const table = map.tables[input.dataset];
  if (input.after === 'last_activity' && table && !table.updatedColumn && !table.timeColumn)
    throw invalid(`${path}.after`, `${input.dataset} has no time column to measure activity by`);
  if (input.after !== 'account_closed' && table && !table.timeColumn && !table.updatedColumn)
    throw invalid(`${path}.after`, `${input.dataset} has no time column: only account_closed applies`, [
      'account_closed',
    ]);
  if (input.action !== 'delete' && !table)
    throw invalid(`${path}.action`, `${input.dataset} can only be deleted`, ['delete']);
  if (input.action === 'archive') {
    if (input.after !== 'created')
      throw invalid(`${path}.after`, "an archive counts from the rows' creation", ['created']);
    if (!Object.values(map.datasets).some((d) => d.kind === 'table' && d.source === input.dataset))
      throw invalid(`${path}.action`, `${input.dataset} has no dataset to archive it as`, [
        'delete',
        'anonymize',
      ]);
  }
  const archiveKeep =
    input.archive_keep == null ? null : checkDuration(`${path}.archive_keep`, input.archive_keep);
  if (archiveKeep && input.action !== 'archive')
    throw invalid(`${path}.archive_keep`, 'applies only to the archive action');
  return {
    dataset: input.dataset,
    keep,
    after: input.after as RetentionAfter,
    action: input.action as RetentionAction,
    archive_keep: archiveKeep,
  };
}

/** The tenant's policies in force: its overrides over the defaults, in the defaults' order. */
export async function effectiveRetention(
  database: Database,
  tenantId: string,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<RetentionPolicy[]> {
  const tenant = await database.db
    .selectFrom('tenants')
    .select('plan')
    .where('id', '=', tenantId)
    .executeTakeFirst();
  if (!tenant) throw new FerryError('not_found', `no tenant ${tenantId}`);
  const overrides = await retentionDb(database)
    .selectFrom('retention_policies')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .execute();
  const byDataset = new Map(overrides.map((o) => [o.dataset, o]));
  return defaultPolicies(map, tenant.plan).map((d) => {
    const o = byDataset.get(d.dataset);
    if (!o) return d;
    const p = { keep: o.keep, after: o.after, action: o.action, archive_keep: o.archive_keep };
    return { dataset: d.dataset, ...p, source: 'tenant', statement: statementOf(d.dataset, p), note: d.note };
  });
}

/**
 * Replaces the tenant's overrides with `policies` (datasets left out return to their
 * default). A policy equal to its default is stored as no override.
 */
export async function putRetention(
  database: Database,
  tenantId: string,
  policies: readonly PolicyInput[],
  actor: string,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<RetentionPolicy[]> {
  const checked = policies.map((p, i) => checkPolicy(p, map, `policies[${i}]`));
  const seen = new Set<string>();
  for (const [i, p] of checked.entries()) {
    if (seen.has(p.dataset)) throw invalid(`policies[${i}].dataset`, `${p.dataset} is named twice`);
    seen.add(p.dataset);
  }
  const plan = await database.db
    .selectFrom('tenants')
    .select('plan')
    .where('id', '=', tenantId)
    .executeTakeFirst();
  if (!plan) throw new FerryError('not_found', `no tenant ${tenantId}`);
  const planDefaults = new Map(defaultPolicies(map, plan.plan).map((d) => [d.dataset, d]));
  const now = new Date();
  await database.db.transaction().execute(async (trx) => {
    const db = trx.withTables<RetentionTables>();
    await db.deleteFrom('retention_policies').where('tenant_id', '=', tenantId).execute();
    const rows = checked
      .filter((p) => {
        const d = planDefaults.get(p.dataset);
        return !(
          d &&
          d.keep === p.keep &&
          d.after === p.after &&
          d.action === p.action &&
          d.archive_keep === p.archive_keep
        );
      })
      .map((p) => ({ tenant_id: tenantId, ...p, updated_at: now, updated_by: actor }));
    if (rows.length) await db.insertInto('retention_policies').values(rows).execute();
  });
  return effectiveRetention(database, tenantId, map);
}
