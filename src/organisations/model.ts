import type { AuthContext, Plan, Role } from '../auth/context.ts';
import {
  isTenantId,
  type OrganisationRole,
  organisationDb,
  type TenantRole,
  tenantRoleOf,
} from '../auth/organisations.ts';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';

/**
 * An organisation and the tenants it manages, and who is asking (an organisation key or
 * member) with their role in each tenant: what every organisation operation starts from.
 * See docs/organisations.md.
 */

export interface Organisation {
  readonly id: string;
  readonly name: string;
  readonly homeTenantId: string;
  readonly createdAt: Date;
}

/** A tenant of an organisation: its home tenant, or a client tenant it manages. */
export interface OrganisationTenant {
  readonly id: string;
  readonly slug: string;
  readonly name: string;
  readonly plan: Plan;
  readonly status: 'active' | 'closing' | 'purged';
  readonly home: boolean;
  /** When the tenant joined the organisation (null for the home tenant). */
  readonly addedAt: Date | null;
}

function organisationOf(row: { id: string; name: string; home_tenant_id: string; created_at: Date }) {
  return {
    id: row.id,
    name: row.name,
    homeTenantId: row.home_tenant_id,
    createdAt: new Date(row.created_at),
  };
}

/**
 * The organisation a reference names: its id, its home tenant's id or slug, or its name (when
 * only one organisation has it). A missing one is `not_found`.
 */
export async function findOrganisation(database: Database, ref: string): Promise<Organisation> {
  const db = organisationDb(database);
  const base = db
    .selectFrom('organisations as o')
    .innerJoin('tenants as t', 't.id', 'o.home_tenant_id')
    .select(['o.id', 'o.name', 'o.home_tenant_id', 'o.created_at']);
  const rows = isTenantId(ref)
    ? await base.where((eb) => eb.or([eb('o.id', '=', ref), eb('o.home_tenant_id', '=', ref)])).execute()
    : await base.where((eb) => eb.or([eb('t.slug', '=', ref), eb('o.name', '=', ref)])).execute();
  const bySlugOrId = rows.length > 1 ? rows.filter((r) => r.id === ref || r.home_tenant_id === ref) : rows;
  if (bySlugOrId.length > 1)
    throw new FerryError(
      'invalid_parameter',
      `organisation: "${ref}" names ${rows.length} organisations; use its id (see \`ferry orgs list\`)`,
    );
  const row = bySlugOrId[0];
  if (!row)
    throw new FerryError('not_found', `organisation "${ref}" does not exist (see \`ferry orgs list\`)`);
  return organisationOf(row);
}

/** The organisation by id, or null. */
export async function organisationById(database: Database, id: string): Promise<Organisation | null> {
  if (!isTenantId(id)) return null;
  const row = await organisationDb(database)
    .selectFrom('organisations')
    .select(['id', 'name', 'home_tenant_id', 'created_at'])
    .where('id', '=', id)
    .executeTakeFirst();
  return row ? organisationOf(row) : null;
}

/** The organisation's tenants: the home tenant first, then its client tenants by name. */
/** A tenant of an organisation as the API and the CLI print it. */
export function presentOrganisationTenant(t: OrganisationTenant) {
  return {
    id: t.id,
    slug: t.slug,
    name: t.name,
    plan: t.plan,
    home: t.home,
    added_at: t.addedAt?.toISOString() ?? null,
  };
}

export async function organisationTenants(database: Database, organisation: Organisation) {
  const rows = await organisationDb(database)
    .selectFrom('tenants as t')
    .leftJoin('organisation_tenants as ot', (join) =>
      join.onRef('ot.tenant_id', '=', 't.id').on('ot.organisation_id', '=', organisation.id),
    )
    .select(['t.id', 't.slug', 't.name', 't.plan', 't.status', 'ot.added_at'])
    .where((eb) => eb.or([eb('t.id', '=', organisation.homeTenantId), eb('ot.tenant_id', 'is not', null)]))
    .orderBy('t.name')
    .orderBy('t.id')
    .execute();
  const tenants: OrganisationTenant[] = rows.map((r) => ({
    id: r.id,
    slug: r.slug,
    name: r.name,
    plan: r.plan as Plan,
    status: r.status,
    home: r.id === organisation.homeTenantId,
    addedAt: r.added_at ? new Date(r.added_at) : null,
  }));
  return tenants.sort((a, b) => Number(b.home) - Number(a.home));
}

/** An organisation key or member, with what it may do in each of the organisation's tenants. */
export interface OrganisationCaller {
  readonly organisation: Organisation;
  /** An organisation key, a member (the dashboard), or the operator on the command line. */
  readonly principal: 'key' | 'member' | 'operator';
  /** The API key's or team member's id (both the home tenant's); `cli` for the operator. */
  readonly principalId: string;
  /** An organisation admin: manages members, their roles and organisation keys. */
  readonly manages: boolean;
  /** The caller in the home tenant, as audit entries of organisation changes name it. */
  readonly home: AuthContext;
  readonly tenants: readonly OrganisationTenant[];
  /** The caller's role per tenant id; null where it has none. */
  readonly roles: ReadonlyMap<string, Role | null>;
}

function notOrganisationCaller(): FerryError {
  return new FerryError(
    'forbidden',
    'the caller is not an organisation key or member: organisation routes are for agencies that ' +
      'manage client tenants (see docs/organisations.md)',
  );
}

/**
 * The organisation of whoever made the request: an organisation key (its tenant acted in does
 * not matter), or a dashboard member of an organisation. Anyone else is refused (`forbidden`).
 */
export async function organisationCaller(database: Database, auth: AuthContext): Promise<OrganisationCaller> {
  const principal = auth.organisation
    ? { kind: auth.organisation.principal, id: auth.organisation.principalId }
    : auth.apiKeyId
      ? { kind: 'key' as const, id: auth.apiKeyId }
      : auth.teamMemberId
        ? { kind: 'member' as const, id: auth.teamMemberId }
        : null;
  if (!principal) throw notOrganisationCaller();
  return principal.kind === 'key'
    ? keyCaller(database, principal.id, auth)
    : memberCaller(database, principal.id, auth);
}

async function keyCaller(database: Database, keyId: string, auth: AuthContext): Promise<OrganisationCaller> {
  const db = organisationDb(database);
  const key = await db
    .selectFrom('api_keys as k')
    .innerJoin('organisations as o', (join) =>
      join.onRef('o.id', '=', 'k.organisation_id').onRef('o.home_tenant_id', '=', 'k.tenant_id'),
    )
    .innerJoin('tenants as t', 't.id', 'o.home_tenant_id')
    .select([
      'o.id',
      'o.name',
      'o.home_tenant_id',
      'o.created_at',
      'k.role',
      'k.scopes',
      'k.team_member_id',
      't.plan',
    ])
    .where('k.id', '=', keyId)
    .executeTakeFirst();
  if (!key) throw notOrganisationCaller();
  const organisation = organisationOf(key);
  const [tenants, overrides] = await Promise.all([
    organisationTenants(database, organisation),
    db
      .selectFrom('organisation_key_roles')
      .select(['tenant_id', 'role'])
      .where('api_key_id', '=', keyId)
      .execute(),
  ]);
  const role = key.role as Role;
  const scopes = Object.freeze([...key.scopes]);
  return {
    organisation,
    principal: 'key',
    principalId: keyId,
    manages: role === 'admin' && (scopes.length === 0 || scopes.includes('keys:manage')),
    home: Object.freeze({
      tenantId: organisation.homeTenantId,
      plan: key.plan as Plan,
      role,
      apiKeyId: keyId,
      teamMemberId: key.team_member_id,
      scopes,
      actor: `api_key:${keyId}`,
      ip: auth.ip,
      userAgent: auth.userAgent,
    }),
    tenants,
    roles: rolesOf(tenants, role, new Map(overrides.map((o) => [o.tenant_id, o.role])), role),
  };
}

async function memberCaller(
  database: Database,
  memberId: string,
  auth: AuthContext,
): Promise<OrganisationCaller> {
  const db = organisationDb(database);
  const member = await db
    .selectFrom('organisation_members as om')
    .innerJoin('organisations as o', 'o.id', 'om.organisation_id')
    .innerJoin('team_members as m', (join) =>
      join.onRef('m.id', '=', 'om.team_member_id').onRef('m.tenant_id', '=', 'o.home_tenant_id'),
    )
    .innerJoin('tenants as t', 't.id', 'o.home_tenant_id')
    .select([
      'o.id',
      'o.name',
      'o.home_tenant_id',
      'o.created_at',
      'om.manages',
      'om.default_role',
      'm.role',
      't.plan',
    ])
    .where('om.team_member_id', '=', memberId)
    .executeTakeFirst();
  if (!member) throw notOrganisationCaller();
  const organisation = organisationOf(member);
  const [tenants, overrides] = await Promise.all([
    organisationTenants(database, organisation),
    db
      .selectFrom('organisation_member_roles')
      .select(['tenant_id', 'role'])
      .where('team_member_id', '=', memberId)
      .execute(),
  ]);
  const homeRole = member.role as Role;
  return {
    organisation,
    principal: 'member',
    principalId: memberId,
    manages: member.manages,
    home: Object.freeze({
      tenantId: organisation.homeTenantId,
      plan: member.plan as Plan,
      role: homeRole,
      apiKeyId: null,
      teamMemberId: memberId,
      scopes: [],
      actor: `team_member:${memberId}`,
      ip: auth.ip,
      userAgent: auth.userAgent,
    }),
    tenants,
    roles: rolesOf(
      tenants,
      homeRole,
      new Map(overrides.map((o) => [o.tenant_id, o.role])),
      member.default_role,
    ),
  };
}

function rolesOf(
  tenants: readonly OrganisationTenant[],
  homeRole: Role,
  overrides: ReadonlyMap<string, TenantRole>,
  defaultRole: OrganisationRole | Role | null,
): Map<string, Role | null> {
  return new Map(
    tenants.map((t) => [
      t.id,
      t.status === 'purged' ? null : t.home ? homeRole : tenantRoleOf(overrides.get(t.id), defaultRole),
    ]),
  );
}

/**
 * The operator on the command line (`ferry orgs export`): an admin in every tenant of the
 * organisation, audited as `cli`, as `ferry export` acts in one tenant.
 */
export async function operatorCaller(
  database: Database,
  organisation: Organisation,
): Promise<OrganisationCaller> {
  const tenants = await organisationTenants(database, organisation);
  const home = tenants.find((t) => t.home)!;
  return {
    organisation,
    principal: 'operator',
    principalId: 'cli',
    manages: true,
    home: Object.freeze({
      tenantId: home.id,
      plan: home.plan,
      role: 'admin',
      apiKeyId: null,
      teamMemberId: null,
      scopes: [],
      actor: 'cli',
      ip: null,
      userAgent: null,
    }),
    tenants,
    roles: new Map(tenants.map((t) => [t.id, t.status === 'purged' ? null : ('admin' as Role)])),
  };
}

/**
 * The caller acting in one tenant of the organisation: at home as itself, in a client tenant
 * with its role there and the actor `org_key:<id>` or `org_member:<id>`. Null when the tenant
 * is not the organisation's or the caller has no role in it.
 */
export function callerIn(caller: OrganisationCaller, tenantId: string): AuthContext | null {
  const tenant = caller.tenants.find((t) => t.id === tenantId);
  const role = caller.roles.get(tenantId) ?? null;
  if (!tenant || !role) return null;
  if (tenant.home) return caller.home;
  if (caller.principal === 'operator')
    return Object.freeze({ ...caller.home, tenantId: tenant.id, plan: tenant.plan, role });
  const principal = caller.principal;
  return Object.freeze({
    ...caller.home,
    tenantId: tenant.id,
    plan: tenant.plan,
    role,
    teamMemberId: null,
    actor: `${principal === 'key' ? 'org_key' : 'org_member'}:${caller.principalId}`,
    organisation: {
      id: caller.organisation.id,
      homeTenantId: caller.organisation.homeTenantId,
      principal,
      principalId: caller.principalId,
    },
  });
}

/** Refuses a caller that is not an organisation admin. */
export function requireOrganisationAdmin(caller: OrganisationCaller): void {
  if (!caller.manages)
    throw new FerryError(
      'forbidden',
      caller.principal === 'key'
        ? 'only an organisation key with the admin role (and keys:manage in its scopes) manages the organisation'
        : 'only an organisation admin manages the organisation (members, roles and keys)',
    );
}
