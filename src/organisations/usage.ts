import { isAllowed } from '../auth/policy.ts';
import { limitsFor, type Quota } from '../auth/quotas.ts';
import { type UsageReport, usageReport } from '../auth/usage.ts';
import type { Database } from '../db/database.ts';
import { callerIn, type OrganisationCaller } from './model.ts';

/**
 * Organisation-wide usage: each tenant's usage report (the same counters `GET /api/v1/usage`
 * reads, under the tenant's own plan) and their sum. A tenant appears when the caller may read
 * its usage there (`usage:read`).
 */

/** The quotas counted per tenant, and so summed for the organisation. The rate limit is the calling key's own, so it is not. */
export const SUMMED_QUOTAS = [
  'exports_per_month',
  'concurrent_jobs',
  'active_schedules',
] as const satisfies readonly Quota[];

export interface OrganisationUsage {
  organisation_id: string;
  tenants: { tenant: { id: string; slug: string; name: string; home: boolean }; usage: UsageReport }[];
  /** Per summed quota, what the listed tenants use together (null when no tenant counts it). */
  total: { quota: (typeof SUMMED_QUOTAS)[number]; used: number | null }[];
}

export async function organisationUsage(
  database: Database,
  caller: OrganisationCaller,
  now: Date,
): Promise<OrganisationUsage> {
  const tenants: OrganisationUsage['tenants'] = [];
  for (const tenant of caller.tenants) {
    const auth = callerIn(caller, tenant.id);
    if (!auth || !isAllowed(auth, 'usage:read')) continue;
    const usage = await usageReport(database, auth, await limitsFor(database, auth), now);
    tenants.push({
      tenant: { id: tenant.id, slug: tenant.slug, name: tenant.name, home: tenant.home },
      usage,
    });
  }
  const total = SUMMED_QUOTAS.map((quota) => {
    const used = tenants
      .map((t) => t.usage.quotas.find((q) => q.quota === quota)?.used)
      .filter((n): n is number => typeof n === 'number');
    return { quota, used: used.length ? used.reduce((a, b) => a + b, 0) : null };
  });
  return { organisation_id: caller.organisation.id, tenants, total };
}
