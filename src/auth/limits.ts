import type { Plan } from './context.ts';

/** A plan's limits; `null` means unlimited. See docs/auth.md. */
export interface PlanLimits {
  /** Manual exports per calendar month (UTC). */
  readonly exportsPerMonth: number | null;
  /** Largest file one export may produce, in bytes. */
  readonly maxFileBytes: number | null;
  /** How far back an export's `from` may reach, in days. */
  readonly historyDays: number | null;
  /** Export jobs of the tenant running at the same time. */
  readonly concurrentJobs: number;
  /** Days an export file is kept. */
  readonly retentionDays: number;
  /** Enabled schedules of the tenant. */
  readonly activeSchedules: number | null;
  /** API requests per key per hour. */
  readonly rateLimitPerHour: number;
}

const MIB = 1024 * 1024;

/** The default hourly request budget of an enterprise key (FERRY_ENTERPRISE_RATE_LIMIT overrides it). */
export const DEFAULT_ENTERPRISE_RATE_LIMIT = 20_000;

const PLAN_LIMITS: Readonly<Record<Plan, PlanLimits>> = {
  starter: {
    exportsPerMonth: 10,
    maxFileBytes: 100 * MIB,
    historyDays: 183,
    concurrentJobs: 1,
    retentionDays: 30,
    activeSchedules: 2,
    rateLimitPerHour: 1_000,
  },
  pro: {
    exportsPerMonth: 50,
    maxFileBytes: 500 * MIB,
    historyDays: 730,
    concurrentJobs: 2,
    retentionDays: 90,
    activeSchedules: 10,
    rateLimitPerHour: 5_000,
  },
  agency: {
    exportsPerMonth: null,
    maxFileBytes: 2048 * MIB,
    historyDays: null,
    concurrentJobs: 5,
    retentionDays: 365,
    activeSchedules: 25,
    rateLimitPerHour: 10_000,
  },
  enterprise: {
    exportsPerMonth: null,
    maxFileBytes: null,
    historyDays: null,
    concurrentJobs: 10,
    retentionDays: 365,
    activeSchedules: null,
    rateLimitPerHour: DEFAULT_ENTERPRISE_RATE_LIMIT,
  },
};

/** The built-in limits of a plan (enterprise tenants may override them, see `effectiveLimits`). */
export function planLimits(plan: Plan): PlanLimits {
  return PLAN_LIMITS[plan];
}

/** Setting names in a tenant's `ferry.limits` object, per limit. */
export const OVERRIDE_NAMES = {
  exportsPerMonth: 'exports_per_month',
  maxFileBytes: 'max_file_bytes',
  historyDays: 'history_days',
  concurrentJobs: 'concurrent_jobs',
  retentionDays: 'retention_days',
  activeSchedules: 'active_schedules',
  rateLimitPerHour: 'rate_limit_per_hour',
} as const satisfies Record<keyof PlanLimits, string>;

const NULLABLE: ReadonlySet<keyof PlanLimits> = new Set([
  'exportsPerMonth',
  'maxFileBytes',
  'historyDays',
  'activeSchedules',
]);

/**
 * The limits that apply to a tenant: its plan's, and for enterprise the configured
 * default rate limit and the tenant's own `ferry.limits` setting on top. A value in the
 * setting that is not a positive integer (or null, for limits that may be unlimited)
 * is ignored.
 */
export function effectiveLimits(
  plan: Plan,
  overrides: Record<string, unknown> | null,
  options: { enterpriseRateLimit?: number | undefined } = {},
): PlanLimits {
  const base = planLimits(plan);
  if (plan !== 'enterprise') return base;
  const limits: Record<string, number | null> = {
    ...base,
    rateLimitPerHour: options.enterpriseRateLimit ?? base.rateLimitPerHour,
  };
  for (const [field, name] of Object.entries(OVERRIDE_NAMES) as [keyof PlanLimits, string][]) {
    if (!overrides || !Object.hasOwn(overrides, name)) continue;
    const value = overrides[name];
    if (value === null && NULLABLE.has(field)) limits[field] = null;
    else if (typeof value === 'number' && Number.isSafeInteger(value) && value > 0) limits[field] = value;
  }
  return limits as unknown as PlanLimits;
}
