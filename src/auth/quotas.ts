import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import type { ExportScope } from '../domain/export-scope.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { auditInsert } from './audit.ts';
import type { AuthContext } from './context.ts';
import { LIMITS_SETTING } from './keys.ts';
import { effectiveLimits, type PlanLimits } from './limits.ts';
import { authDb } from './tables.ts';

export { planLimits, type PlanLimits } from './limits.ts';

/**
 * Plan quotas on exports. The monthly count is kept per tenant and calendar month (UTC)
 * in `usage_counters`; a data subject's own access requests are free twice per rolling
 * 12 months and are kept in `subject_requests`. Checks are made when an export is asked
 * for and the count is taken once it is accepted, so two requests racing for the last
 * export of the month may both pass (the count then shows one over the limit).
 */
export const QUOTAS = [
  'exports_per_month',
  'max_file_bytes',
  'history_window',
  'concurrent_jobs',
  'retention_days',
  'active_schedules',
  'rate_limit',
] as const;
export type Quota = (typeof QUOTAS)[number];

export const MANUAL_EXPORTS_METRIC = 'manual_exports';
/** Free data-subject access requests per subject in any 12 months. */
export const FREE_SUBJECT_REQUESTS = 2;
const YEAR_MS = 365 * 86_400_000;
const DAY_MS = 86_400_000;

/** A quota refusal: `quota_exceeded` naming the quota, with the time it frees (or null). */
export function quotaExceeded(quota: Quota, message: string, resetsAt: Date | null): FerryError {
  return new FerryError('quota_exceeded', message, {
    quota,
    resets_at: resetsAt ? resetsAt.toISOString() : null,
  });
}

/** Start of the calendar month (UTC) holding `now`, and of the next one. */
export function monthWindow(now: Date): { start: Date; end: Date } {
  const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
  return { start, end };
}

/** The earliest day an export may start from under the plan, or null when history is unlimited. */
export function historyStart(limits: PlanLimits, now: Date): Date | null {
  if (limits.historyDays === null) return null;
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return new Date(today - limits.historyDays * DAY_MS);
}

/** When an export file finished at `at` is removed under the plan's retention. */
export function retentionUntil(limits: PlanLimits, at: Date): Date {
  return new Date(at.getTime() + limits.retentionDays * DAY_MS);
}

/** The limits of the caller's tenant (an enterprise tenant's `ferry.limits` setting applied). */
export async function limitsFor(
  database: Database,
  auth: Pick<AuthContext, 'tenantId' | 'plan'>,
): Promise<PlanLimits> {
  if (auth.plan !== 'enterprise') return effectiveLimits(auth.plan, null);
  const row = await database.db
    .selectFrom('settings')
    .select('value')
    .where('tenant_id', '=', auth.tenantId)
    .where('key', '=', LIMITS_SETTING)
    .executeTakeFirst();
  const value = row?.value;
  return effectiveLimits(
    auth.plan,
    value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null,
  );
}

// ---- usage sources owned by other modules ---------------------------------------------

/** Counts something another module owns (running export jobs, enabled schedules) for a tenant. */
export type UsageSource = (database: Database, tenantId: string) => Promise<number>;
const usageSources = new Map<'concurrent_jobs' | 'active_schedules', UsageSource>();

/**
 * Registers how to count running export jobs or enabled schedules, so the usage endpoint
 * and `checkExportQuota` can show and check them. The module owning the table registers it.
 */
export function registerUsageSource(
  quota: 'concurrent_jobs' | 'active_schedules',
  source: UsageSource,
): void {
  usageSources.set(quota, source);
}

export async function countUsage(
  database: Database,
  quota: 'concurrent_jobs' | 'active_schedules',
  tenantId: string,
): Promise<number | null> {
  const source = usageSources.get(quota);
  return source ? source(database, tenantId) : null;
}

// ---- counts ----------------------------------------------------------------------------

/** Manual exports of the tenant counted in the month holding `now` (the sum of the month's shards). */
export async function monthlyExports(database: Database, tenantId: string, now: Date): Promise<number> {
  const row = await authDb(database)
    .selectFrom('usage_counters')
    .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('count'), eb.lit(0)).as('count'))
    .where('tenant_id', '=', tenantId)
    .where('metric', '=', MANUAL_EXPORTS_METRIC)
    .where('period_start', '=', monthWindow(now).start)
    .executeTakeFirst();
  return Number(row?.count ?? 0);
}

/** The subject's free requests in the 12 months before `now`, oldest first. */
async function subjectRequestsInYear(database: Database, tenantId: string, subjectId: string, now: Date) {
  return authDb(database)
    .selectFrom('subject_requests')
    .select('occurred_at')
    .where('tenant_id', '=', tenantId)
    .where('subject_id', '=', subjectId)
    .where('occurred_at', '>', new Date(now.getTime() - YEAR_MS))
    .where('occurred_at', '<=', now)
    .orderBy('occurred_at')
    .execute();
}

export interface ExportQuotaInput {
  /** Asked for by a person (API, CLI, dashboard); scheduled runs do not count. */
  manual: boolean;
  /** The export's `from` (YYYY-MM-DD or ISO 8601), checked against the history window. */
  from?: string | undefined;
  /**
   * A data subject's own access request: free (not counted against the month) up to
   * twice per subject in any 12 months; beyond that it counts like any manual export.
   */
  subjectRequest?: { subjectId: string } | undefined;
  /** Running export jobs of the tenant; the registered source is asked when absent. */
  activeJobs?: number | undefined;
  /** The tenant's limits when the caller already has them (the auth plugin does). */
  limits?: PlanLimits | null | undefined;
  now?: Date | undefined;
}

function parseFrom(from: string): Date {
  const day = /^\d{4}-\d{2}-\d{2}$/.test(from);
  const parsed = new Date(day ? `${from}T00:00:00Z` : from);
  if (Number.isNaN(parsed.getTime()))
    throw invalid('from', `"${from}" is not a date (YYYY-MM-DD) or ISO 8601 timestamp`);
  return parsed;
}

const day = (d: Date) => d.toISOString().slice(0, 10);

/**
 * Refuses an export the tenant's plan does not allow, with `quota_exceeded` naming the
 * quota and when it frees: the history window, concurrent jobs, the monthly count.
 */
export async function checkExportQuota(
  database: Database,
  auth: AuthContext,
  input: ExportQuotaInput,
): Promise<void> {
  const now = input.now ?? new Date();
  const limits = input.limits ?? (await limitsFor(database, auth));

  const earliest = historyStart(limits, now);
  if (earliest && input.from !== undefined && parseFrom(input.from).getTime() < earliest.getTime()) {
    throw quotaExceeded(
      'history_window',
      `the ${auth.plan} plan exports the last ${limits.historyDays} days of history: from ${input.from} is ` +
        `before ${day(earliest)}; ask for from ${day(earliest)} or later, or upgrade the plan`,
      null,
    );
  }

  const running = input.activeJobs ?? (await countUsage(database, 'concurrent_jobs', auth.tenantId));
  if (running !== null && running >= limits.concurrentJobs) {
    throw quotaExceeded(
      'concurrent_jobs',
      `the ${auth.plan} plan runs ${limits.concurrentJobs} export job(s) at a time and ${running} are running; ` +
        'retry when one finishes',
      null,
    );
  }

  if (!input.manual || limits.exportsPerMonth === null) return;
  if (input.subjectRequest) {
    const used = await subjectRequestsInYear(database, auth.tenantId, input.subjectRequest.subjectId, now);
    if (used.length < FREE_SUBJECT_REQUESTS) return;
  }
  const used = await monthlyExports(database, auth.tenantId, now);
  if (used >= limits.exportsPerMonth) {
    const { end } = monthWindow(now);
    throw quotaExceeded(
      'exports_per_month',
      `the ${auth.plan} plan allows ${limits.exportsPerMonth} manual exports per month and all ${used} are used; ` +
        `the count resets at ${end.toISOString()}`,
      end,
    );
  }
}

/**
 * Counts an accepted export: a manual export against the month, or a free data-subject
 * request against that subject's yearly allowance while it lasts. Scheduled runs are not counted.
 */
export async function countExport(
  database: Database,
  auth: AuthContext,
  input: { manual?: boolean; subjectRequest?: { subjectId: string } | undefined; now?: Date } = {},
): Promise<void> {
  if (input.manual === false) return;
  const now = input.now ?? new Date();
  const db = authDb(database);
  if (input.subjectRequest) {
    const used = await subjectRequestsInYear(database, auth.tenantId, input.subjectRequest.subjectId, now);
    if (used.length < FREE_SUBJECT_REQUESTS) {
      await db
        .insertInto('subject_requests')
        .values({
          id: randomUUID(),
          tenant_id: auth.tenantId,
          subject_id: input.subjectRequest.subjectId,
          occurred_at: now,
        })
        .execute();
      return;
    }
  }
  await monthlyCount(database, auth.tenantId, now).execute();
}

/**
 * The data subject whose own access request an export is: an export scoped to one
 * customer. It is free up to FREE_SUBJECT_REQUESTS times per customer in any 12 months.
 */
export function subjectRequestOf(scope: ExportScope | undefined): { subjectId: string } | undefined {
  return scope?.kind === 'customer' ? { subjectId: scope.customer_id } : undefined;
}

/**
 * Counts an accepted manual export inside the caller's transaction, as `countExport` does:
 * against the subject's yearly free requests while they last, else against the month.
 * `alongside` (the audit entry) runs in the same statement.
 */
export async function countAcceptedExport(
  database: Database,
  tenantId: string,
  now: Date,
  alongside: ReturnType<typeof auditInsert>,
  subjectRequest: { subjectId: string } | undefined,
): Promise<void> {
  if (subjectRequest) {
    const used = await subjectRequestsInYear(database, tenantId, subjectRequest.subjectId, now);
    if (used.length < FREE_SUBJECT_REQUESTS) {
      await authDb(database)
        .with('alongside', () => alongside)
        .insertInto('subject_requests')
        .values({
          id: randomUUID(),
          tenant_id: tenantId,
          subject_id: subjectRequest.subjectId,
          occurred_at: now,
        })
        .execute();
      return;
    }
  }
  await monthlyCount(database, tenantId, now, alongside).execute();
}

/** Rows per tenant, metric and month in `usage_counters`; writers pick one at random. */
export const USAGE_SHARDS = 8;

/**
 * The statement that counts one manual export against the month, not yet run. `alongside`
 * (another insert, such as the audit entry) runs in the same statement, as a CTE, so the
 * two writes cost one round trip.
 */
export function monthlyCount(
  database: Database,
  tenantId: string,
  now: Date,
  alongside?: ReturnType<typeof auditInsert>,
) {
  const db = authDb(database);
  return (alongside ? db.with('alongside', () => alongside) : db)
    .insertInto('usage_counters')
    .values({
      tenant_id: tenantId,
      metric: MANUAL_EXPORTS_METRIC,
      period_start: monthWindow(now).start,
      shard: Math.floor(Math.random() * USAGE_SHARDS),
      count: 1,
    })
    .onConflict((oc) =>
      oc
        .columns(['tenant_id', 'metric', 'period_start', 'shard'])
        .doUpdateSet({ count: sql<number>`usage_counters.count + 1` }),
    );
}

/** Refuses a file over the plan's size limit (`quota_exceeded`, quota `max_file_bytes`). */
export function checkFileSize(limits: PlanLimits, plan: string, bytes: number): void {
  if (limits.maxFileBytes !== null && bytes > limits.maxFileBytes) {
    throw quotaExceeded(
      'max_file_bytes',
      `the export is larger than the ${plan} plan's file size limit of ${limits.maxFileBytes} bytes; ` +
        'narrow it with from/to or filters, or upgrade the plan',
      null,
    );
  }
}

/** Refuses enabling one more schedule over the plan's limit (`quota_exceeded`, quota `active_schedules`). */
export async function checkScheduleQuota(
  database: Database,
  auth: AuthContext,
  input: { activeSchedules?: number | undefined } = {},
): Promise<void> {
  const limits = await limitsFor(database, auth);
  if (limits.activeSchedules === null) return;
  const active = input.activeSchedules ?? (await countUsage(database, 'active_schedules', auth.tenantId));
  if (active !== null && active >= limits.activeSchedules) {
    throw quotaExceeded(
      'active_schedules',
      `the ${auth.plan} plan allows ${limits.activeSchedules} active schedules and ${active} are active; ` +
        'pause or delete one first, or upgrade the plan',
      null,
    );
  }
}
