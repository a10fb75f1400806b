import type { Database } from '../db/database.ts';
import type { AuthContext } from './context.ts';
import type { PlanLimits } from './limits.ts';
import { countUsage, historyStart, monthlyExports, monthWindow, type Quota } from './quotas.ts';
import { BURST_SECONDS, burstLimit, HOUR_SECONDS } from './rate-limit.ts';
import { authDb } from './tables.ts';

/** One quota as `GET /api/v1/usage` shows it. */
export interface QuotaUsage {
  quota: Quota;
  unit: 'exports' | 'bytes' | 'days' | 'jobs' | 'schedules' | 'requests_per_hour';
  /** null: unlimited. */
  limit: number | null;
  /** null: not a counted quota, or not countable here. */
  used: number | null;
  /** null when unlimited or not counted. */
  remaining: number | null;
  /** When the count starts again from zero; null when it does not reset with time. */
  resets_at: string | null;
  description: string;
}

export interface UsageReport {
  tenant_id: string;
  plan: AuthContext['plan'];
  quotas: QuotaUsage[];
}

const remaining = (limit: number | null, used: number | null) =>
  limit === null || used === null ? null : Math.max(0, limit - used);

/** Every quota of the caller's tenant with what is used and when it resets. */
export async function usageReport(
  database: Database,
  auth: AuthContext,
  limits: PlanLimits,
  now: Date,
): Promise<UsageReport> {
  const month = monthWindow(now);
  const exportsUsed = await monthlyExports(database, auth.tenantId, now);
  const jobs = await countUsage(database, 'concurrent_jobs', auth.tenantId);
  const schedules = await countUsage(database, 'active_schedules', auth.tenantId);
  const nowSeconds = Math.floor(now.getTime() / 1000);
  const hourStart = Math.floor(nowSeconds / HOUR_SECONDS) * HOUR_SECONDS;
  const hour = auth.apiKeyId
    ? await authDb(database)
        .selectFrom('rate_limit_counters')
        .select('count')
        .where('api_key_id', '=', auth.apiKeyId)
        .where('window_kind', '=', 'hour')
        .where('window_start', '=', new Date(hourStart * 1000))
        .executeTakeFirst()
    : undefined;
  const requests = hour ? Math.min(hour.count, limits.rateLimitPerHour) : 0;
  const earliest = historyStart(limits, now);
  return {
    tenant_id: auth.tenantId,
    plan: auth.plan,
    quotas: [
      {
        quota: 'exports_per_month',
        unit: 'exports',
        limit: limits.exportsPerMonth,
        used: exportsUsed,
        remaining: remaining(limits.exportsPerMonth, exportsUsed),
        resets_at: month.end.toISOString(),
        description:
          'Manual exports this calendar month (UTC). Scheduled runs and the first two access requests ' +
          'of a data subject in 12 months are not counted.',
      },
      {
        quota: 'max_file_bytes',
        unit: 'bytes',
        limit: limits.maxFileBytes,
        used: null,
        remaining: null,
        resets_at: null,
        description: 'Largest file one export may produce.',
      },
      {
        quota: 'history_window',
        unit: 'days',
        limit: limits.historyDays,
        used: null,
        remaining: null,
        resets_at: null,
        description: earliest
          ? `How far back an export may reach: from must be on or after ${earliest.toISOString().slice(0, 10)}.`
          : 'How far back an export may reach: unlimited.',
      },
      {
        quota: 'concurrent_jobs',
        unit: 'jobs',
        limit: limits.concurrentJobs,
        used: jobs,
        remaining: remaining(limits.concurrentJobs, jobs),
        resets_at: null,
        description: 'Export jobs of the tenant running at the same time.',
      },
      {
        quota: 'retention_days',
        unit: 'days',
        limit: limits.retentionDays,
        used: null,
        remaining: null,
        resets_at: null,
        description: 'Days an export file is kept before it is removed.',
      },
      {
        quota: 'active_schedules',
        unit: 'schedules',
        limit: limits.activeSchedules,
        used: schedules,
        remaining: remaining(limits.activeSchedules, schedules),
        resets_at: null,
        description: 'Enabled export schedules of the tenant.',
      },
      {
        quota: 'rate_limit',
        unit: 'requests_per_hour',
        limit: limits.rateLimitPerHour,
        used: requests,
        remaining: remaining(limits.rateLimitPerHour, requests),
        resets_at: new Date((hourStart + HOUR_SECONDS) * 1000).toISOString(),
        description:
          `API requests of this key in the current clock hour (this request included); at most ` +
          `${burstLimit(limits.rateLimitPerHour)} in each clock-aligned ${BURST_SECONDS / 60}-minute window.`,
      },
    ],
  };
}
