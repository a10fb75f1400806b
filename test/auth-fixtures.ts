import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Plan, Role } from '../src/auth/context.ts';
import { createApiKey } from '../src/auth/keys.ts';
import { type Config, loadConfig } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';

/** A config whose data dir (and so the key pepper file) is a fresh temp folder. */
export function authTestConfig(env: Record<string, string> = {}): Config {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-auth-'));
  return loadConfig({ FERRY_DATA_DIR: dir, LOG_LEVEL: 'silent', FERRY_DEMO: 'off', ...env });
}

export interface TestTenant {
  id: string;
  slug: string;
  members: Record<Role, string>;
}

/** A tenant with one team member per role. */
export async function createTenant(database: Database, plan: Plan = 'pro'): Promise<TestTenant> {
  const id = randomUUID();
  const slug = `t-${id.slice(0, 8)}`;
  await database.db
    .insertInto('tenants')
    .values({ id, name: `Tenant ${slug}`, slug, plan, timezone: 'UTC', home_country: 'DE' })
    .execute();
  const members = {} as Record<Role, string>;
  for (const role of ['admin', 'manager', 'analyst', 'agent'] as const) {
    members[role] = randomUUID();
    await database.db
      .insertInto('team_members')
      .values({
        id: members[role],
        tenant_id: id,
        name: `${role} of ${slug}`,
        email: `${role}@${slug}.example`,
        role,
        password_hash: 'x',
      })
      .execute();
  }
  return { id, slug, members };
}

/** A key of each role for the tenant (agents bound to the tenant's agent). */
export async function keysByRole(database: Database, tenant: TestTenant): Promise<Record<Role, string>> {
  const keys = {} as Record<Role, string>;
  for (const role of ['admin', 'manager', 'analyst', 'agent'] as const) {
    const created = await createApiKey(database, {
      tenantId: tenant.id,
      role,
      name: `${role} key`,
      ...(role === 'agent' ? { teamMemberId: tenant.members.agent } : {}),
    });
    keys[role] = created.key;
  }
  return keys;
}

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
