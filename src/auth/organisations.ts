import type { ColumnType, Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { recordAudit } from './audit.ts';
import type { AuthContext, OrganisationActor, Plan, Role } from './context.ts';
import type { ResolvedKey } from './keys.ts';
import { LIMITS_SETTING } from './keys.ts';
import type { TenantAccessTable } from './tables.ts';

/**
 * Agency organisations, as authentication sees them (docs/organisations.md): an organisation
 * key or member addresses one of its organisation's tenants with the `Ferry-Tenant` header (or
 * the dashboard's tenant switcher) and acts there with its role in that tenant. Every other
 * tenant id, whether it exists or not, is refused the same way (403
 * `tenant_not_in_organisation`), and the refusal is audited in the caller's own tenant.
 */

/** The request header naming the tenant an organisation key acts in. */
export const TENANT_HEADER = 'ferry-tenant';

/** The audit action of a refused `Ferry-Tenant` (or tenant switch). */
export const TENANT_REFUSED_ACTION = 'organisation.tenant_refused';

/** The roles an organisation may hold in a client tenant (an agent sees only its own conversations, which an organisation member has none of there). */
export const ORGANISATION_ROLES = ['admin', 'manager', 'analyst'] as const;
export type OrganisationRole = (typeof ORGANISATION_ROLES)[number];

/** A per-tenant role: one of the roles, or `none` to take the tenant away from a member or key. */
export type TenantRole = OrganisationRole | 'none';
export const TENANT_ROLES: readonly TenantRole[] = [...ORGANISATION_ROLES, 'none'];

type Timestamp = ColumnType<Date, Date | string, Date | string>;

export interface OrganisationsTable {
  id: string;
  name: string;
  home_tenant_id: string;
  created_at: Timestamp;
  created_by: string | null;
}

export interface OrganisationTenantsTable {
  tenant_id: string;
  organisation_id: string;
  added_at: Timestamp;
  added_by: string | null;
}

export interface OrganisationMembersTable {
  team_member_id: string;
  organisation_id: string;
  manages: ColumnType<boolean, boolean | undefined, boolean>;
  default_role: OrganisationRole | null;
  added_at: Timestamp;
  added_by: string | null;
}

export interface OrganisationMemberRolesTable {
  team_member_id: string;
  tenant_id: string;
  role: TenantRole;
}

export interface OrganisationKeyRolesTable {
  api_key_id: string;
  tenant_id: string;
  role: TenantRole;
}

/** The column migration 0029 adds to `api_keys`; the rest of the table is the keys module's. */
interface ApiKeyOrganisationTable {
  id: string;
  tenant_id: string;
  role: Role;
  team_member_id: string | null;
  scopes: ColumnType<string[], string[] | undefined, string[]>;
  revoked_at: Timestamp | null;
  expires_at: Timestamp | null;
  organisation_id: string | null;
}

export type OrganisationTables = {
  organisations: OrganisationsTable;
  organisation_tenants: OrganisationTenantsTable;
  organisation_members: OrganisationMembersTable;
  organisation_member_roles: OrganisationMemberRolesTable;
  organisation_key_roles: OrganisationKeyRolesTable;
  tenant_access: TenantAccessTable;
};

export type OrganisationDB = Kysely<
  Omit<DB, 'api_keys'> & OrganisationTables & { api_keys: ApiKeyOrganisationTable }
>;

/** The database's Kysely instance, typed with the organisation tables. */
export function organisationDb(database: Database): OrganisationDB {
  return database.db as unknown as OrganisationDB;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `value` has the shape of a tenant id (checked before any query). */
export const isTenantId = (value: string): boolean => UUID.test(value);

/** The role in a client tenant: its own override, else the default; null when neither grants one. */
export function tenantRoleOf(
  override: TenantRole | null | undefined,
  defaultRole: OrganisationRole | Role | null,
): Role | null {
  if (override === 'none') return null;
  return override ?? defaultRole ?? null;
}

/** Who is asking, for the refusal's audit entry (in the caller's own tenant). */
export interface RefusalContext {
  readonly homeTenantId: string;
  readonly actor: string;
  readonly ip: string | null;
  readonly userAgent: string | null;
  /** `METHOD /route`, or the dashboard form that asked. */
  readonly route: string;
  readonly occurredAt?: Date | undefined;
}

/**
 * Records the refusal (`organisation.tenant_refused`, the tenant id as asked for) in the
 * caller's own tenant and answers the 403 to throw. The answer is the same whether the
 * tenant exists or not.
 */
export async function refuseTenant(
  database: Database,
  requested: string,
  context: RefusalContext,
): Promise<FerryError> {
  const shown = requested.replace(/[^\x20-\x7e]/g, '?').slice(0, 64);
  await recordAudit(database, {
    tenantId: context.homeTenantId,
    actor: context.actor,
    action: TENANT_REFUSED_ACTION,
    targetId: shown,
    dataType: context.route.slice(0, 100),
    ip: context.ip,
    userAgent: context.userAgent,
    success: false,
    error: `tenant ${shown || '(empty)'} is not a tenant of this organisation`,
    ...(context.occurredAt ? { occurredAt: context.occurredAt } : {}),
  });
  return tenantNotInOrganisation(shown);
}

/** The 403 of a tenant the caller's organisation does not manage. */
export function tenantNotInOrganisation(shown: string): FerryError {
  return new FerryError(
    'tenant_not_in_organisation',
    `tenant "${shown}" is not a tenant of your organisation; send Ferry-Tenant only with a tenant ` +
      'that GET /api/v1/organisation lists, or leave it out to act in your own tenant',
  );
}

function noRole(principal: 'key' | 'member', tenantId: string): FerryError {
  return new FerryError(
    'forbidden',
    `this organisation ${principal === 'key' ? 'key' : 'member'} has no role in tenant ${tenantId}; ` +
      'an organisation admin gives it one (see docs/organisations.md)',
  );
}

/** What authenticating a request needs of the tenant an organisation key acts in. */
export type ActingKey = Pick<ResolvedKey, 'auth' | 'limitOverrides' | 'tenantStatus' | 'allowLists'>;

/**
 * The tenant a request with this key acts in. Without `Ferry-Tenant` (or with it empty, or
 * naming the key's own tenant) it is the key's own, unchanged. An organisation key naming one of its organisation's
 * client tenants acts there with its role in that tenant (its override, else the key's role);
 * its scopes still narrow what it may do, and the tenant's plan, status and IP allow-list
 * apply (`allowLists.tenant` is the client tenant's; the caller checks the key's own tenant's
 * list beforehand). Any other value is refused with 403 `tenant_not_in_organisation`.
 */
export async function keyInRequestedTenant(
  database: Database,
  resolved: ActingKey,
  header: string | string[] | undefined,
  context: Omit<RefusalContext, 'homeTenantId' | 'actor'>,
): Promise<ActingKey> {
  const home = resolved.auth;
  const requested = Array.isArray(header) ? header.join(',') : (header ?? '').trim();
  // No tenant named (an empty header too) is the key's own tenant.
  if (requested === '') return resolved;
  if (requested.toLowerCase() === home.tenantId.toLowerCase()) return resolved;
  const refuse = () =>
    refuseTenant(database, requested, { ...context, homeTenantId: home.tenantId, actor: home.actor });
  if (!isTenantId(requested) || !home.apiKeyId) throw await refuse();
  const row = await organisationDb(database)
    .selectFrom('api_keys as k')
    .innerJoin('organisations as o', (join) =>
      join.onRef('o.id', '=', 'k.organisation_id').onRef('o.home_tenant_id', '=', 'k.tenant_id'),
    )
    .innerJoin('organisation_tenants as ot', (join) =>
      join.onRef('ot.organisation_id', '=', 'o.id').on('ot.tenant_id', '=', requested),
    )
    .innerJoin('tenants as t', 't.id', 'ot.tenant_id')
    .leftJoin('tenant_access as a', 'a.tenant_id', 't.id')
    .leftJoin('settings as s', (join) =>
      join.onRef('s.tenant_id', '=', 't.id').on('s.key', '=', LIMITS_SETTING),
    )
    .leftJoin('organisation_key_roles as r', (join) =>
      join.onRef('r.api_key_id', '=', 'k.id').onRef('r.tenant_id', '=', 't.id'),
    )
    .select([
      'o.id as organisation_id',
      't.id as tenant_id',
      't.plan',
      't.status',
      'a.ip_allowlist',
      's.value as limits',
      'r.role as override',
      'k.role',
    ])
    .where('k.id', '=', home.apiKeyId)
    .executeTakeFirst();
  if (!row || row.status === 'purged') throw await refuse();
  const role = tenantRoleOf(row.override, row.role);
  if (!role) throw noRole('key', row.tenant_id);
  const organisation: OrganisationActor = {
    id: row.organisation_id,
    homeTenantId: home.tenantId,
    principal: 'key',
    principalId: home.apiKeyId,
  };
  const limits = row.limits;
  return {
    auth: Object.freeze({
      ...home,
      tenantId: row.tenant_id,
      plan: row.plan as Plan,
      role,
      teamMemberId: null,
      actor: `org_key:${home.apiKeyId}`,
      organisation,
    }),
    limitOverrides:
      limits && typeof limits === 'object' && !Array.isArray(limits)
        ? (limits as Record<string, unknown>)
        : null,
    tenantStatus: row.status,
    allowLists: { tenant: row.ip_allowlist ?? [] },
  };
}

/** A tenant an organisation member may switch the dashboard to, with the member's role there. */
export interface MemberTenant {
  readonly id: string;
  readonly slug: string;
  readonly name: string;
  readonly plan: Plan;
  readonly timezone: string;
  /** The member's role in the tenant; null when the organisation gives them none there. */
  readonly role: Role | null;
  /** The organisation's home tenant (where the member's role is their team role). */
  readonly home: boolean;
  readonly ipAllowlist: readonly string[];
}

/** An organisation member's organisation and every tenant of it, home first. */
export interface MemberOrganisation {
  readonly id: string;
  readonly name: string;
  readonly homeTenantId: string;
  readonly manages: boolean;
  readonly tenants: readonly MemberTenant[];
}

/**
 * The organisation of a team member of its home tenant, with the member's role in each tenant
 * (home: their team role); null when the member is not an organisation member.
 */
export async function memberOrganisation(
  database: Database,
  memberId: string,
): Promise<MemberOrganisation | null> {
  if (!isTenantId(memberId)) return null;
  const db = organisationDb(database);
  const membership = await db
    .selectFrom('organisation_members as om')
    .innerJoin('organisations as o', 'o.id', 'om.organisation_id')
    .innerJoin('team_members as m', (join) =>
      join.onRef('m.id', '=', 'om.team_member_id').onRef('m.tenant_id', '=', 'o.home_tenant_id'),
    )
    .select(['o.id', 'o.name', 'o.home_tenant_id', 'om.manages', 'om.default_role', 'm.role as home_role'])
    .where('om.team_member_id', '=', memberId)
    .executeTakeFirst();
  if (!membership) return null;
  const rows = await db
    .selectFrom('tenants as t')
    .leftJoin('organisation_tenants as ot', (join) =>
      join.onRef('ot.tenant_id', '=', 't.id').on('ot.organisation_id', '=', membership.id),
    )
    .leftJoin('organisation_member_roles as r', (join) =>
      join.onRef('r.tenant_id', '=', 't.id').on('r.team_member_id', '=', memberId),
    )
    .leftJoin('tenant_access as a', 'a.tenant_id', 't.id')
    .select([
      't.id',
      't.slug',
      't.name',
      't.plan',
      't.timezone',
      't.status',
      'r.role as override',
      'a.ip_allowlist',
    ])
    .where((eb) => eb.or([eb('t.id', '=', membership.home_tenant_id), eb('ot.tenant_id', 'is not', null)]))
    .orderBy('t.name')
    .orderBy('t.id')
    .execute();
  const tenants = rows
    .filter((r) => r.status !== 'purged')
    .map((r) => {
      const home = r.id === membership.home_tenant_id;
      return {
        id: r.id,
        slug: r.slug,
        name: r.name,
        plan: r.plan as Plan,
        timezone: r.timezone,
        role: home ? (membership.home_role as Role) : tenantRoleOf(r.override, membership.default_role),
        home,
        ipAllowlist: r.ip_allowlist ?? [],
      };
    })
    .sort((a, b) => Number(b.home) - Number(a.home));
  return {
    id: membership.id,
    name: membership.name,
    homeTenantId: membership.home_tenant_id,
    manages: membership.manages,
    tenants,
  };
}

/**
 * The caller acting as an organisation member in one tenant of the organisation: the member's
 * role there, the actor `org_member:<id>` outside the home tenant. Null when the tenant is not
 * the organisation's or the member has no role in it.
 */
export function memberAuthIn(
  organisation: MemberOrganisation,
  member: { readonly id: string },
  tenantId: string,
  client: { readonly ip: string | null; readonly userAgent: string | null },
): AuthContext | null {
  const tenant = organisation.tenants.find((t) => t.id === tenantId);
  if (!tenant?.role) return null;
  return Object.freeze({
    tenantId: tenant.id,
    plan: tenant.plan,
    role: tenant.role,
    apiKeyId: null,
    teamMemberId: tenant.home ? member.id : null,
    scopes: [],
    actor: tenant.home ? `team_member:${member.id}` : `org_member:${member.id}`,
    ip: client.ip,
    userAgent: client.userAgent?.slice(0, 512) ?? null,
    ...(tenant.home
      ? {}
      : {
          organisation: {
            id: organisation.id,
            homeTenantId: organisation.homeTenantId,
            principal: 'member' as const,
            principalId: member.id,
          },
        }),
  });
}
