import { randomUUID } from 'node:crypto';
import { type Static, Type } from 'typebox';
import { AUDIT_ACTIONS, auditCaller, auditInsert } from '../auth/audit.ts';
import type { AuthContext } from '../auth/context.ts';
import type { Database } from '../db/database.ts';
import { refuseTenant } from '../auth/organisations.ts';
import { isAllowed } from '../auth/policy.ts';
import { checkExportQuota, countAcceptedExport, historyStart, limitsFor } from '../auth/quotas.ts';
import { sameScope } from '../domain/export-scope.ts';
import type { ExportConfig, OrganisationExportTenant } from '../domain/export-config.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { authorizeConfig, checkAgainstDataMap, exportConfigFromBody } from '../export-requests/config.ts';
import { ExportBodySchema } from '../export-requests/export-body.ts';
import { sendExportJob } from '../export-requests/jobs.ts';
import { type ExportView, presentExport } from '../export-requests/presenter.ts';
import {
  type ExportServiceDeps,
  jobConnection,
  queuedRow,
  recordAccepted,
  requireQueue,
} from '../export-requests/service.ts';
import { callerIn, type OrganisationCaller } from './model.ts';

/**
 * The request side of an organisation's export across its tenants
 * (docs/organisations.md#aggregated-exports): the body of `POST /api/v1/exports` plus an
 * optional `tenants` list, checked in every tenant against the caller's role there, counted
 * against each tenant's quota, and stored as one export of the home tenant whose job writes a
 * folder per tenant (export-requests/organisation-export.ts).
 */

export const OrganisationExportBodySchema = Type.Object(
  {
    ...ExportBodySchema.properties,
    tenants: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
        minItems: 1,
        maxItems: 500,
        uniqueItems: true,
        description:
          'Tenant ids or slugs of the organisation to export from (default: every tenant where your role may export the request)',
      }),
    ),
  },
  { additionalProperties: false },
);
export type OrganisationExportBody = Static<typeof OrganisationExportBodySchema>;

/** Where the request is refused or skipped in one tenant: null when the caller may export it there. */
function refusalIn(auth: AuthContext | null, config: ExportConfig, tenantId: string): string | null {
  if (!auth) return 'your organisation gives you no role in this tenant';
  if (!isAllowed(auth, 'exports:create')) return `the ${auth.role} role may not create exports`;
  try {
    const authorized = authorizeConfig(auth, checkAgainstDataMap(tenantId, config));
    if (!sameScope(authorized.scope, config.scope))
      return `the ${auth.role} role would narrow this export to its own conversations`;
    return null;
  } catch (err) {
    if (err instanceof FerryError && (err.code === 'forbidden' || err.code === 'invalid_parameter'))
      return err.message;
    throw err;
  }
}

/** An organisation export checked in every tenant, ready to be stored in the home tenant. */
export interface PlannedExport {
  /** The request as stored: the tenants it runs in, each with its history window. */
  readonly config: ExportConfig;
  /** The caller in each client tenant the export runs in (their trails and monthly counts). */
  readonly clients: readonly AuthContext[];
}

/**
 * Checks an organisation export: the request against the data map, the tenants asked for (all
 * the organisation's, else a refusal audited at home), the caller's role in each (a tenant asked
 * for by name must allow it; otherwise tenants that do not are left out), and each tenant's quota
 * under its own plan. Nothing is stored.
 */
export async function planOrganisationExport(
  database: Database,
  caller: OrganisationCaller,
  body: OrganisationExportBody,
  now: Date,
): Promise<PlannedExport> {
  const home = caller.home;
  const { tenants: asked, ...exportBody } = body;
  if (exportBody.split_size !== undefined)
    throw invalid('split_size', "an organisation's export is one archive; leave split_size out");
  const config = exportConfigFromBody(home.tenantId, exportBody);

  // The tenants asked for must all be the organisation's; a refused one is named and audited.
  const chosen = asked
    ? await Promise.all(
        asked.map(async (ref) => {
          const tenant = caller.tenants.find((t) => t.id === ref.toLowerCase() || t.slug === ref);
          if (!tenant)
            throw await refuseTenant(database, ref, {
              homeTenantId: home.tenantId,
              actor: home.actor,
              ip: home.ip,
              userAgent: home.userAgent,
              route: 'POST /api/v1/organisation/exports',
              occurredAt: now,
            });
          return tenant;
        }),
      )
    : caller.tenants.filter((t) => t.status !== 'purged');

  const included: { tenant: (typeof chosen)[number]; auth: AuthContext }[] = [];
  for (const tenant of chosen) {
    const auth = callerIn(caller, tenant.id);
    const refused = refusalIn(auth, config, tenant.id);
    if (refused && asked) throw new FerryError('forbidden', `tenant ${tenant.slug}: ${refused}`);
    if (!refused && auth) included.push({ tenant, auth });
  }
  if (included.length === 0)
    throw new FerryError(
      'forbidden',
      "none of the organisation's tenants lets your role export this request; see your roles with GET /api/v1/organisation",
    );

  // Each tenant's quota counts its share, under its own plan; the archive's job runs at home.
  const tenants: OrganisationExportTenant[] = [];
  for (const { tenant, auth } of included) {
    const limits = await limitsFor(database, auth);
    await checkExportQuota(database, auth, { manual: true, from: config.from ?? undefined, now, limits });
    const floor = config.from ? null : historyStart(limits, now);
    tenants.push({
      id: tenant.id,
      slug: tenant.slug,
      name: tenant.name,
      folder: tenant.slug,
      history_from: floor ? floor.toISOString().slice(0, 10) : null,
    });
  }
  const homeLimits = await limitsFor(database, home);
  if (!included.some((i) => i.tenant.home))
    await checkExportQuota(database, home, { manual: false, now, limits: homeLimits });
  const homeFloor = config.from ? null : historyStart(homeLimits, now);
  return {
    config: {
      ...config,
      ...(homeFloor ? { history_from: homeFloor.toISOString().slice(0, 10) } : {}),
      organisation: {
        id: caller.organisation.id,
        name: caller.organisation.name,
        actor: actorOf(caller),
        tenants,
      },
    },
    clients: included.filter((i) => !i.tenant.home).map((i) => i.auth),
  };
}

/** Who acts in the client tenants, as their trails name it. */
function actorOf(caller: OrganisationCaller): string {
  if (caller.principal === 'operator') return 'cli';
  return `${caller.principal === 'key' ? 'org_key' : 'org_member'}:${caller.principalId}`;
}

/** The export's `export.requested` entry and monthly count in each client tenant. */
export async function recordClientShares(
  database: Database,
  planned: PlannedExport,
  exportId: string,
  now: Date,
): Promise<void> {
  const { config } = planned;
  for (const auth of planned.clients) {
    const audit = auditInsert(database, {
      ...auditCaller(auth),
      action: AUDIT_ACTIONS.exportRequested,
      dataType: config.datasets.join(','),
      dateRange:
        config.from || config.to ? { from: config.from ?? undefined, to: config.to ?? undefined } : null,
      success: true,
      targetId: exportId,
      occurredAt: now,
    });
    await countAcceptedExport(database, auth.tenantId, now, audit, undefined);
  }
}

/** `POST /api/v1/organisation/exports`: stores the export in the home tenant and queues its job. */
export async function createOrganisationExport(
  deps: ExportServiceDeps,
  caller: OrganisationCaller,
  body: OrganisationExportBody,
): Promise<ExportView> {
  const queue = requireQueue(deps);
  const now = deps.now();
  const home = caller.home;
  const planned = await planOrganisationExport(deps.database, caller, body, now);
  const stored = planned.config;
  const homeLimits = await limitsFor(deps.database, home);
  const id = randomUUID();
  const inserted = await recordAccepted(
    deps.database,
    home,
    { id, config: stored, limits: homeLimits, repeatOf: null, now },
    {
      // The job, and each client tenant's trail and count, in the same transaction.
      send: async (tx) => {
        await sendExportJob(queue, id, { id: home.tenantId, plan: home.plan }, jobConnection(tx.db));
        await recordClientShares(tx, planned, id, now);
      },
    },
  );
  if (!inserted) throw new FerryError('conflict', 'the export could not be stored; retry');
  const row = queuedRow(home, id, stored, homeLimits, null, now);
  return presentExport(row, [], now);
}
