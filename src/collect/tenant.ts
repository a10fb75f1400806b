import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { ExportRequest } from './request.ts';

/** Version of the export file layout, written into every file's metadata. */
export const FERRY_EXPORT_VERSION = '1.0';

export interface TenantInfo {
  id: string;
  slug: string;
  name: string;
  plan: string;
  timezone: string;
  home_country: string;
}

/** Finds a tenant by id or slug; a missing tenant is a clear error. */
export async function loadTenant(database: Database, idOrSlug: string): Promise<TenantInfo> {
  const isUuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(idOrSlug);
  const row = await database.db
    .selectFrom('tenants')
    .select(['id', 'slug', 'name', 'plan', 'timezone', 'home_country'])
    .where(isUuid ? 'id' : 'slug', '=', idOrSlug)
    .executeTakeFirst();
  if (!row) throw new FerryError('not_found', `tenant "${idOrSlug}" does not exist (see \`ferry tenants\`)`);
  return row;
}

/** Timestamps are written in the requested zone, else UTC; days (filters, periods) follow the requested zone, else the tenant's. */
export interface Zones {
  timezone: string;
  dayZone: string;
}

export function zonesFor(request: ExportRequest, tenant: TenantInfo): Zones {
  return { timezone: request.timezone ?? 'UTC', dayZone: request.timezone ?? tenant.timezone };
}

/** The `export_metadata` block every export file starts with. */
export function exportMetadata(
  request: ExportRequest,
  tenant: TenantInfo,
  exportId: string,
  timezone: string,
  /** The export time (now by default). */
  at: Date = new Date(),
) {
  return {
    export_id: exportId,
    export_date: at.toISOString(),
    export_version: FERRY_EXPORT_VERSION,
    tenant_id: tenant.id,
    tenant_name: tenant.name,
    dataset: request.dataset,
    format: request.format,
    timezone,
    anonymization_level: request.pii,
    filters: request.filters,
    ...(Object.keys(request.options).length ? { options: request.options } : {}),
  };
}

/** Site URLs a request names, with the parameter that named them (for the error). */
export interface NamedSites {
  readonly param: string;
  readonly urls: readonly string[];
}

/** The sites named by a request's `site_url` filter and analytics' `site_urls` parameter. */
export function requestedSites(
  filters: Readonly<Record<string, unknown>>,
  options: Readonly<Record<string, string>>,
  names: { readonly filter: string; readonly option: string } = { filter: 'site_url', option: 'site_urls' },
): NamedSites[] {
  const named: NamedSites[] = [];
  const filter = filters.site_url;
  if (typeof filter === 'string') named.push({ param: names.filter, urls: [filter] });
  else if (Array.isArray(filter)) named.push({ param: names.filter, urls: filter as string[] });
  const list = options.site_urls;
  if (list)
    named.push({
      param: names.option,
      urls: list
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    });
  return named;
}

/**
 * Refuses a site the tenant does not have: a filter on it would match nothing and
 * export an empty file that looks like a quiet day. `invalid_parameter` names the value
 * and lists the tenant's sites.
 */
export async function checkSiteUrls(
  database: Database,
  tenantId: string,
  named: readonly NamedSites[],
): Promise<void> {
  if (!named.some((n) => n.urls.length)) return;
  const rows = await database.db
    .selectFrom('sites')
    .select('url')
    .where('tenant_id', '=', tenantId)
    .orderBy('url')
    .execute();
  const known = rows.map((r) => r.url as string);
  for (const { param, urls } of named) {
    const unknown = urls.find((url) => !known.includes(url));
    if (unknown !== undefined)
      throw invalid(
        param,
        `"${unknown.slice(0, 200)}" is not a site of this tenant`,
        known.length ? known : ['(none)'],
      );
  }
}
