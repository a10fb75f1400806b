import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
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
) {
  return {
    export_id: exportId,
    export_date: new Date().toISOString(),
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
