import { AUDIT_ACTIONS, recordAudit } from '../auth/audit.ts';
import {
  type ApiKeyInfo,
  type ApiKeyView,
  type CreatedApiKey,
  createApiKey,
  getApiKey,
  presentApiKey,
  revokeApiKey,
} from '../auth/keys.ts';
import { ORGANISATION_ROLES, organisationDb, type TenantRole } from '../auth/organisations.ts';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { type ChangedBy, checkTenantRoles } from './admin.ts';
import type { Organisation } from './model.ts';

/**
 * Organisation keys: API keys of the home tenant marked with the organisation
 * (`api_keys.organisation_id`). The key's role is its role at home and its default in every
 * client tenant; `tenant_roles` override it per tenant (`none`: no access there). A key is made
 * by the keys module, so hashing, scopes, expiry and allow-lists are those of every key.
 */

/** An organisation key as listed: the key's own view plus its roles in client tenants. */
export interface OrganisationKeyView extends ApiKeyView {
  tenant_roles: Record<string, TenantRole>;
}

export interface OrganisationKeyInput {
  role: string;
  name?: string | undefined;
  scopes?: readonly string[] | undefined;
  expiresAt?: Date | undefined;
  allowedIps?: readonly unknown[] | undefined;
  tenantRoles?: Readonly<Record<string, unknown>> | undefined;
}

function checkKeyRole(role: string) {
  if (!(ORGANISATION_ROLES as readonly string[]).includes(role))
    throw invalid(
      'role',
      `"${role}" is not a role of an organisation key${role === 'agent' ? ' (an agent key sees only its own conversations)' : ''}`,
      ORGANISATION_ROLES,
    );
  return role as (typeof ORGANISATION_ROLES)[number];
}

async function rolesOf(database: Database, keyIds: readonly string[]) {
  if (keyIds.length === 0) return new Map<string, Record<string, TenantRole>>();
  const rows = await organisationDb(database)
    .selectFrom('organisation_key_roles')
    .select(['api_key_id', 'tenant_id', 'role'])
    .where('api_key_id', 'in', keyIds)
    .orderBy('tenant_id')
    .execute();
  const out = new Map<string, Record<string, TenantRole>>();
  for (const r of rows) out.set(r.api_key_id, { ...out.get(r.api_key_id), [r.tenant_id]: r.role });
  return out;
}

/** Creates an organisation key (shown once) with its per-tenant roles; audited in the home tenant. */
export async function createOrganisationKey(
  database: Database,
  organisation: Organisation,
  input: OrganisationKeyInput,
  by: ChangedBy,
  now: Date,
): Promise<CreatedApiKey & { tenant_roles: Record<string, TenantRole> }> {
  const role = checkKeyRole(input.role);
  const tenantRoles = await checkTenantRoles(database, organisation, input.tenantRoles ?? {});
  const created = await createApiKey(
    database,
    {
      tenantId: organisation.homeTenantId,
      role,
      name: input.name,
      scopes: input.scopes,
      expiresAt: input.expiresAt,
      allowedIps: input.allowedIps,
      createdBy: by.actor,
    },
    now,
  );
  try {
    await organisationDb(database)
      .transaction()
      .execute(async (trx) => {
        await trx
          .updateTable('api_keys')
          .set({ organisation_id: organisation.id })
          .where('id', '=', created.id)
          .execute();
        const values = Object.entries(tenantRoles).map(([tenant_id, r]) => ({
          api_key_id: created.id,
          tenant_id,
          role: r,
        }));
        if (values.length) await trx.insertInto('organisation_key_roles').values(values).execute();
      });
  } catch (err) {
    // A key that is not yet the organisation's must not stay usable as a plain home key.
    await revokeApiKey(database, organisation.homeTenantId, created.id, now).catch(() => {});
    throw err;
  }
  await recordAudit(database, {
    ...by,
    tenantId: organisation.homeTenantId,
    action: AUDIT_ACTIONS.keyCreated,
    targetId: created.id,
    dataType: `organisation_key:${role}`,
    success: true,
    occurredAt: now,
  });
  return { ...created, tenant_roles: tenantRoles };
}

/** The organisation's keys, newest first, revoked and expired ones included. */
export async function listOrganisationKeys(
  database: Database,
  organisation: Organisation,
  now: Date,
): Promise<OrganisationKeyView[]> {
  const ids = await organisationDb(database)
    .selectFrom('api_keys')
    .select('id')
    .where('organisation_id', '=', organisation.id)
    .where('tenant_id', '=', organisation.homeTenantId)
    .execute();
  const keys: ApiKeyInfo[] = [];
  for (const { id } of ids) keys.push(await getApiKey(database, organisation.homeTenantId, id));
  keys.sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : -1));
  const roles = await rolesOf(
    database,
    keys.map((k) => k.id),
  );
  return keys.map((k) => ({ ...presentApiKey(k, now), tenant_roles: roles.get(k.id) ?? {} }));
}

async function organisationKey(database: Database, organisation: Organisation, id: string) {
  const key = await getApiKey(database, organisation.homeTenantId, id).catch(() => null);
  const marked = key
    ? await organisationDb(database)
        .selectFrom('api_keys')
        .select('organisation_id')
        .where('id', '=', key.id)
        .executeTakeFirst()
    : undefined;
  if (!key || marked?.organisation_id !== organisation.id)
    throw new FerryError('not_found', `no organisation key "${id}" in this organisation`);
  return key;
}

/** Replaces an organisation key's per-tenant roles; audited in the home tenant. */
export async function setKeyTenantRoles(
  database: Database,
  organisation: Organisation,
  id: string,
  given: Readonly<Record<string, unknown>>,
  by: ChangedBy,
  now: Date,
): Promise<OrganisationKeyView> {
  const key = await organisationKey(database, organisation, id);
  const tenantRoles = await checkTenantRoles(database, organisation, given);
  await organisationDb(database)
    .transaction()
    .execute(async (trx) => {
      await trx.deleteFrom('organisation_key_roles').where('api_key_id', '=', key.id).execute();
      const values = Object.entries(tenantRoles).map(([tenant_id, role]) => ({
        api_key_id: key.id,
        tenant_id,
        role,
      }));
      if (values.length) await trx.insertInto('organisation_key_roles').values(values).execute();
    });
  await recordAudit(database, {
    ...by,
    tenantId: organisation.homeTenantId,
    action: 'organisation.key_roles_changed',
    targetId: key.id,
    dataType: `${Object.keys(tenantRoles).length} tenant roles`,
    success: true,
    occurredAt: now,
  });
  return { ...presentApiKey(key, now), tenant_roles: tenantRoles };
}

/** Revokes an organisation key: it stops working in every tenant with the next request. */
export async function revokeOrganisationKey(
  database: Database,
  organisation: Organisation,
  id: string,
  by: ChangedBy,
  now: Date,
): Promise<OrganisationKeyView> {
  const before = await organisationKey(database, organisation, id);
  const revoked = await revokeApiKey(database, organisation.homeTenantId, id, now);
  if (!before.revokedAt)
    await recordAudit(database, {
      ...by,
      tenantId: organisation.homeTenantId,
      action: AUDIT_ACTIONS.keyRevoked,
      targetId: id,
      dataType: `organisation_key:${revoked.role}`,
      success: true,
      occurredAt: now,
    });
  return { ...presentApiKey(revoked, now), tenant_roles: (await rolesOf(database, [id])).get(id) ?? {} };
}
