import { type AuditEntry, recordAudit } from '../auth/audit.ts';
import { selectedFields } from '../collect/query.ts';
import { acceptedExportRequest, type ExportRequest, parseExportRequest } from '../collect/request.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { Database } from '../db/database.ts';
import type { ExportConfig, OrganisationExport } from '../domain/export-config.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { stamp } from '../lib/stamp.ts';
import { organisationPackageProducer, type TenantFolder } from '../pipeline/organisation-package.ts';
import type { FileSpec } from '../pipeline/run.ts';
import { toPackageRequest } from './config.ts';
import type { ExportRow } from './repository.ts';

/**
 * The job side of an organisation's export (docs/organisations.md#aggregated-exports): the
 * request stored with the tenants it was accepted for runs in each of them, through the one
 * pipeline run, as the organisation package producer. See organisations/exports.ts for the
 * request side.
 */

/** The archive's name without extension (its root folder). */
export function organisationRoot(createdAt: Date): string {
  return `organisation-export-${stamp(createdAt)}`;
}

/** The request as one tenant's own export of it: its history window, no organisation, no recipients. */
export function tenantConfig(
  config: ExportConfig,
  tenant: OrganisationExport['tenants'][number],
): ExportConfig {
  return { ...config, history_from: tenant.history_from, organisation: null, recipients: [] };
}

/** What a tenant's own export of the request would be called: the name inside its folder of a one-file export. */
export type FileNamer = (config: ExportConfig, createdAt: Date) => { name: string };

/** The analytics report the totals add up, for one tenant. */
function analyticsRequest(
  tenantId: string,
  config: ExportConfig,
  tenantOwn: ExportRequest | null,
): ExportRequest {
  // An analytics export sums its own rows; any other export the daily report over its dates.
  if (tenantOwn?.dataset === 'analytics')
    return { ...tenantOwn, format: 'ndjson', compression: 'none', columns: undefined, shaping: undefined };
  return parseExportRequest({
    tenantId,
    dataset: 'analytics',
    format: 'ndjson',
    pii: config.pii,
    from: config.from ?? config.history_from ?? undefined,
    to: config.to ?? undefined,
    options: { granularity: 'daily' },
  });
}

/** The organisation package of an export row, held to the plan's limits like every export file. */
export function organisationFileSpec(
  database: Database,
  row: ExportRow,
  limits: Pick<FileSpec, 'recipients' | 'maxBytes' | 'tooLarge'>,
  nameOf: FileNamer,
): FileSpec {
  const config = row.config;
  const organisation = config.organisation!;
  const folders: TenantFolder[] = [];
  const analytics: ExportRequest[] = [];
  for (const tenant of organisation.tenants) {
    const own = tenantConfig(config, tenant);
    const single = config.package === 'none' ? acceptedExportRequest(tenant.id, own) : null;
    folders.push({
      tenant: { id: tenant.id, slug: tenant.slug, name: tenant.name },
      folder: `tenants/${tenant.folder}`,
      content: single
        ? { dataset: single, file: nameOf(own, row.created_at).name }
        : { package: toPackageRequest(tenant.id, own) },
    });
    analytics.push(analyticsRequest(tenant.id, own, single));
  }
  if (!analytics[0]) throw new FerryError('internal', 'an organisation export without tenants');
  const columns = selectedFields(REFERENCE_DATAMAP.datasets.analytics!, analytics[0]).map((f) => f.name);
  const { recipients: _recipients, history_from: _from, organisation: _org, ...request } = config;
  return {
    ...limits,
    produce: organisationPackageProducer(database, {
      kind: config.package === 'tar.gz' ? 'tar.gz' : 'zip',
      root: organisationRoot(row.created_at),
      exportId: row.id,
      organisation: { id: organisation.id, name: organisation.name },
      tenants: folders,
      analytics,
      analyticsColumns: columns,
      request,
    }),
  };
}

/**
 * Writes an audit entry of an organisation export in each client tenant it ran in, naming the
 * organisation key or member (the home tenant's entry is the export's own).
 */
export async function auditOrganisationTenants(
  database: Database,
  row: ExportRow,
  entry: Omit<AuditEntry, 'tenantId' | 'actor'>,
): Promise<void> {
  const organisation = row.config.organisation;
  if (!organisation) return;
  for (const tenant of organisation.tenants) {
    if (tenant.id === row.tenant_id) continue;
    await recordAudit(database, { ...entry, tenantId: tenant.id, actor: organisation.actor });
  }
}
