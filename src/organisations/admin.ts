import { randomUUID } from 'node:crypto';
import { type AuditEntry, recordAudit } from '../auth/audit.ts';
import type { Role } from '../auth/context.ts';
import {
  isTenantId,
  ORGANISATION_ROLES,
  type OrganisationRole,
  organisationDb,
  TENANT_ROLES,
  type TenantRole,
} from '../auth/organisations.ts';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { type Organisation, organisationTenants } from './model.ts';

/**
 * Changing organisations: creating one and linking client tenants (operators, on the command
 * line: the client's consent is a contract outside Ferry), and its members and their roles
 * (organisation admins too). Organisation keys are in keys.ts. Every change is audited in the
 * home tenant, and a tenant joining or leaving in its own trail as well.
 */

/** Who made a change, as audit entries record it. */
export type ChangedBy = Pick<AuditEntry, 'actor' | 'ip' | 'userAgent'>;

const MAX_NAME = 200;

async function tenantRow(database: Database, ref: string) {
  const row = await organisationDb(database)
    .selectFrom('tenants')
    .select(['id', 'slug', 'name', 'plan', 'status'])
    .where(isTenantId(ref) ? 'id' : 'slug', '=', ref)
    .executeTakeFirst();
  if (!row) throw new FerryError('not_found', `tenant "${ref}" does not exist (see \`ferry tenants\`)`);
  return row;
}

/** Where a tenant already belongs: home of an organisation, or client of one. */
async function belonging(database: Database, tenantId: string) {
  const db = organisationDb(database);
  const [home, client] = await Promise.all([
    db
      .selectFrom('organisations')
      .select(['id', 'name'])
      .where('home_tenant_id', '=', tenantId)
      .executeTakeFirst(),
    db
      .selectFrom('organisation_tenants as ot')
      .innerJoin('organisations as o', 'o.id', 'ot.organisation_id')
      .select(['o.id', 'o.name'])
      .where('ot.tenant_id', '=', tenantId)
      .executeTakeFirst(),
  ]);
  return { home, client };
}

/** `ferry orgs create`: a new organisation whose home is an agency-plan tenant of no other organisation. */
export async function createOrganisation(
  database: Database,
  input: { name: string; homeTenant: string },
  by: ChangedBy,
  now: Date,
): Promise<Organisation> {
  const name = input.name.trim();
  if (!name || name.length > MAX_NAME) throw invalid('name', `must be 1 to ${MAX_NAME} characters`);
  const tenant = await tenantRow(database, input.homeTenant);
  if (tenant.plan !== 'agency')
    throw invalid(
      'home_tenant',
      `tenant ${tenant.slug} is on the ${tenant.plan} plan; an organisation's home tenant is on the agency plan`,
    );
  if (tenant.status !== 'active') throw invalid('home_tenant', `tenant ${tenant.slug} is closed`);
  const { home, client } = await belonging(database, tenant.id);
  if (home)
    throw new FerryError(
      'conflict',
      `tenant ${tenant.slug} is already the home of organisation "${home.name}"`,
    );
  if (client)
    throw new FerryError(
      'conflict',
      `tenant ${tenant.slug} is a client tenant of organisation "${client.name}"`,
    );
  const organisation = { id: randomUUID(), name, homeTenantId: tenant.id, createdAt: now };
  await organisationDb(database)
    .insertInto('organisations')
    .values({ id: organisation.id, name, home_tenant_id: tenant.id, created_at: now, created_by: by.actor })
    .execute();
  await recordAudit(database, {
    ...by,
    tenantId: tenant.id,
    action: 'organisation.created',
    targetId: organisation.id,
    dataType: name.slice(0, 100),
    success: true,
    occurredAt: now,
  });
  return organisation;
}

/** Every organisation with its tenant count, by name. */
export async function listOrganisations(database: Database) {
  const rows = await organisationDb(database)
    .selectFrom('organisations as o')
    .innerJoin('tenants as t', 't.id', 'o.home_tenant_id')
    .select((eb) => [
      'o.id',
      'o.name',
      'o.created_at',
      't.id as home_tenant_id',
      't.slug as home_tenant_slug',
      eb
        .selectFrom('organisation_tenants as ot')
        .select(eb.fn.countAll<number>().as('n'))
        .whereRef('ot.organisation_id', '=', 'o.id')
        .as('clients'),
    ])
    .orderBy('o.name')
    .orderBy('o.id')
    .execute();
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    home_tenant: { id: r.home_tenant_id, slug: r.home_tenant_slug },
    client_tenants: Number(r.clients ?? 0),
    created_at: new Date(r.created_at).toISOString(),
  }));
}

/**
 * `ferry orgs add-tenant`: the organisation manages a client tenant from now on. A tenant is a
 * client of at most one organisation, and an organisation's home is nobody's client.
 */
export async function addOrganisationTenant(
  database: Database,
  organisation: Organisation,
  tenantRef: string,
  by: ChangedBy,
  now: Date,
) {
  const tenant = await tenantRow(database, tenantRef);
  if (tenant.id === organisation.homeTenantId)
    throw invalid('tenant', `tenant ${tenant.slug} is the organisation's home tenant`);
  if (tenant.status === 'purged') throw invalid('tenant', `tenant ${tenant.slug} was purged`);
  const { home, client } = await belonging(database, tenant.id);
  if (client?.id === organisation.id) return { tenant, added: false };
  if (client)
    throw new FerryError(
      'conflict',
      `tenant ${tenant.slug} is already a client tenant of organisation "${client.name}"; remove it there first`,
    );
  if (home)
    throw new FerryError(
      'conflict',
      `tenant ${tenant.slug} is the home tenant of organisation "${home.name}"`,
    );
  await organisationDb(database)
    .insertInto('organisation_tenants')
    .values({ tenant_id: tenant.id, organisation_id: organisation.id, added_at: now, added_by: by.actor })
    .execute();
  await auditBoth(database, organisation, tenant.id, by, 'organisation.tenant_added', now);
  return { tenant, added: true };
}

/**
 * `ferry orgs remove-tenant`: the organisation no longer manages the tenant. Its keys and
 * members lose access with their next request (roles in that tenant go with it).
 */
export async function removeOrganisationTenant(
  database: Database,
  organisation: Organisation,
  tenantRef: string,
  by: ChangedBy,
  now: Date,
) {
  const tenant = await tenantRow(database, tenantRef);
  const removed = await organisationDb(database)
    .deleteFrom('organisation_tenants')
    .where('tenant_id', '=', tenant.id)
    .where('organisation_id', '=', organisation.id)
    .executeTakeFirst();
  if (Number(removed.numDeletedRows) === 0)
    throw new FerryError(
      'not_found',
      `tenant ${tenant.slug} is not a client tenant of "${organisation.name}"`,
    );
  await auditBoth(database, organisation, tenant.id, by, 'organisation.tenant_removed', now);
  return { tenant };
}

async function auditBoth(
  database: Database,
  organisation: Organisation,
  tenantId: string,
  by: ChangedBy,
  action: string,
  now: Date,
) {
  for (const [at, target] of [
    [organisation.homeTenantId, tenantId],
    [tenantId, organisation.id],
  ] as const)
    await recordAudit(database, {
      ...by,
      tenantId: at,
      action,
      targetId: target,
      dataType: organisation.name.slice(0, 100),
      success: true,
      occurredAt: now,
    });
}

// ---- members and roles -------------------------------------------------------------------

/** A member as the API, the CLI and the dashboard list them. */
export interface MemberView {
  id: string;
  name: string;
  email: string;
  /** Their team role in the home tenant. */
  home_role: Role;
  /** An organisation admin. */
  admin: boolean;
  /** Their role in every client tenant without a role of its own; null: none. */
  default_role: OrganisationRole | null;
  /** Per client tenant id, the role over the default (`none`: no access there). */
  tenant_roles: Record<string, TenantRole>;
}

/** The organisation's members, by name. */
export async function listMembers(database: Database, organisation: Organisation): Promise<MemberView[]> {
  const db = organisationDb(database);
  const rows = await db
    .selectFrom('organisation_members as om')
    .innerJoin('team_members as m', 'm.id', 'om.team_member_id')
    .select(['m.id', 'm.name', 'm.email', 'm.role', 'om.manages', 'om.default_role'])
    .where('om.organisation_id', '=', organisation.id)
    .orderBy('m.name')
    .orderBy('m.id')
    .execute();
  const roles = rows.length
    ? await db
        .selectFrom('organisation_member_roles')
        .select(['team_member_id', 'tenant_id', 'role'])
        .where(
          'team_member_id',
          'in',
          rows.map((r) => r.id),
        )
        .orderBy('tenant_id')
        .execute()
    : [];
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    email: r.email,
    home_role: r.role as Role,
    admin: r.manages,
    default_role: r.default_role,
    tenant_roles: Object.fromEntries(
      roles.filter((x) => x.team_member_id === r.id).map((x) => [x.tenant_id, x.role]),
    ),
  }));
}

/** A role named in a request: one an organisation may give (or `none` for a tenant). */
function checkRole(param: string, value: unknown, allowNone: boolean): TenantRole {
  const accepted: readonly string[] = allowNone ? TENANT_ROLES : ORGANISATION_ROLES;
  if (typeof value !== 'string' || !accepted.includes(value)) {
    const hint =
      value === 'agent'
        ? ': an agent sees only its own conversations, which it has none of in a client tenant'
        : '';
    throw invalid(param, `"${String(value)}" is not a role an organisation gives${hint}`, accepted);
  }
  return value as TenantRole;
}

/**
 * Per-tenant roles as given (`{ <tenant id or slug>: <role> }`), checked: each tenant a client
 * tenant of the organisation, each role one it gives. Keys are tenant ids afterwards.
 */
export async function checkTenantRoles(
  database: Database,
  organisation: Organisation,
  given: Readonly<Record<string, unknown>>,
): Promise<Record<string, TenantRole>> {
  const entries = Object.entries(given);
  if (entries.length === 0) return {};
  const tenants = await organisationTenants(database, organisation);
  const out: Record<string, TenantRole> = {};
  for (const [ref, role] of entries) {
    const tenant = tenants.find((t) => t.id === ref.toLowerCase() || t.slug === ref);
    if (!tenant)
      throw invalid(
        `tenant_roles.${ref.slice(0, 64)}`,
        'is not a client tenant of the organisation (see GET /api/v1/organisation)',
      );
    if (tenant.home)
      throw invalid(
        `tenant_roles.${tenant.slug}`,
        "is the home tenant: there a member's role is their team role and a key's role its own",
      );
    out[tenant.id] = checkRole(`tenant_roles.${tenant.slug}`, role, true);
  }
  return out;
}

export interface MemberChange {
  /** Make or unmake an organisation admin (unchanged when absent). */
  admin?: boolean | undefined;
  /** The default role in client tenants; null: none (unchanged when absent). */
  defaultRole?: string | null | undefined;
  /** Per-tenant roles that replace the member's own (unchanged when absent). */
  tenantRoles?: Readonly<Record<string, unknown>> | undefined;
}

/**
 * Makes a team member of the home tenant an organisation member, or changes one: the admin
 * mark, the default role, and (replacing them all) the per-tenant roles.
 */
export async function setMember(
  database: Database,
  organisation: Organisation,
  memberRef: string,
  change: MemberChange,
  by: ChangedBy,
  now: Date,
): Promise<MemberView> {
  const db = organisationDb(database);
  const member = await db
    .selectFrom('team_members')
    .select(['id', 'email'])
    .where('tenant_id', '=', organisation.homeTenantId)
    .where((eb) =>
      isTenantId(memberRef)
        ? eb('id', '=', memberRef)
        : eb(eb.fn('lower', ['email']), '=', memberRef.trim().toLowerCase()),
    )
    .executeTakeFirst();
  if (!member)
    throw new FerryError(
      'not_found',
      `no team member "${memberRef}" in the organisation's home tenant (organisation members are its team members)`,
    );
  const defaultRole =
    change.defaultRole === undefined || change.defaultRole === null
      ? change.defaultRole
      : (checkRole('default_role', change.defaultRole, false) as OrganisationRole);
  const tenantRoles = change.tenantRoles
    ? await checkTenantRoles(database, organisation, change.tenantRoles)
    : null;
  const other = await db
    .selectFrom('organisation_members')
    .select('organisation_id')
    .where('team_member_id', '=', member.id)
    .executeTakeFirst();
  if (other && other.organisation_id !== organisation.id)
    throw new FerryError('conflict', `${member.email} is a member of another organisation`);
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto('organisation_members')
      .values({
        team_member_id: member.id,
        organisation_id: organisation.id,
        manages: change.admin ?? false,
        default_role: defaultRole ?? null,
        added_at: now,
        added_by: by.actor,
      })
      .onConflict((oc) =>
        oc.column('team_member_id').doUpdateSet({
          ...(change.admin === undefined ? {} : { manages: change.admin }),
          ...(defaultRole === undefined ? {} : { default_role: defaultRole }),
        }),
      )
      .execute();
    if (tenantRoles) {
      await trx.deleteFrom('organisation_member_roles').where('team_member_id', '=', member.id).execute();
      const values = Object.entries(tenantRoles).map(([tenant_id, role]) => ({
        team_member_id: member.id,
        tenant_id,
        role,
      }));
      if (values.length) await trx.insertInto('organisation_member_roles').values(values).execute();
    }
  });
  await recordAudit(database, {
    ...by,
    tenantId: organisation.homeTenantId,
    action: 'organisation.member_changed',
    targetId: member.id,
    dataType: describeRoles(change.admin, defaultRole, tenantRoles),
    success: true,
    occurredAt: now,
  });
  const view = (await listMembers(database, organisation)).find((m) => m.id === member.id);
  if (!view) throw new FerryError('internal', 'the member was not stored');
  return view;
}

function describeRoles(
  admin: boolean | undefined,
  defaultRole: string | null | undefined,
  tenantRoles: Record<string, TenantRole> | null,
): string {
  const parts = [
    ...(admin === undefined ? [] : [admin ? 'admin' : 'not admin']),
    ...(defaultRole === undefined ? [] : [`default ${defaultRole ?? 'none'}`]),
    ...(tenantRoles ? [`${Object.keys(tenantRoles).length} tenant roles`] : []),
  ];
  return (parts.join(', ') || 'unchanged').slice(0, 100);
}

/** Removes a member from the organisation (they stay a team member of the home tenant). */
export async function removeMember(
  database: Database,
  organisation: Organisation,
  memberId: string,
  by: ChangedBy,
  now: Date,
): Promise<MemberView> {
  const member = (await listMembers(database, organisation)).find((m) => m.id === memberId);
  const removed = member
    ? await organisationDb(database)
        .deleteFrom('organisation_members')
        .where('team_member_id', '=', memberId)
        .where('organisation_id', '=', organisation.id)
        .executeTakeFirst()
    : { numDeletedRows: 0n };
  if (Number(removed.numDeletedRows) === 0)
    throw new FerryError('not_found', `no member "${memberId}" in this organisation`);
  await recordAudit(database, {
    ...by,
    tenantId: organisation.homeTenantId,
    action: 'organisation.member_removed',
    targetId: memberId,
    success: true,
    occurredAt: now,
  });
  return member!;
}
