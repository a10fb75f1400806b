import { type Command, InvalidArgumentError, Option } from 'commander';
import { bindApiKeyPepper } from '../auth/keys.ts';
import { splitAllowList } from '../auth/ip-allowlist.ts';
import { ORGANISATION_ROLES, TENANT_ROLES } from '../auth/organisations.ts';
import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { listMembers, type MemberView, removeMember, setMember } from '../organisations/admin.ts';
import {
  createOrganisationKey,
  listOrganisationKeys,
  type OrganisationKeyView,
  revokeOrganisationKey,
  setKeyTenantRoles,
} from '../organisations/keys.ts';
import { findOrganisation, type Organisation, organisationTenants } from '../organisations/model.ts';
import { withDatabase } from './context.ts';
import { printTable } from './tenants.ts';

/** `ferry orgs members` and `ferry orgs keys`: who works across the organisation's tenants, with which roles. */

/** Changes made on the command line are audited as `cli`. */
export const OPERATOR = { actor: 'cli', ip: null, userAgent: null } as const;
const DAY_MS = 86_400_000;

const collect = (value: string, previous: string[]) => [...previous, value];

/** `--tenant-role acme=analyst` (repeatable) as `{ acme: 'analyst' }`. */
function tenantRoles(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.lastIndexOf('=');
    if (eq < 1 || eq === pair.length - 1)
      throw new FerryError(
        'invalid_parameter',
        `--tenant-role: "${pair}" is not <tenant>=<role> (roles: ${TENANT_ROLES.join(', ')})`,
      );
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

function parseDays(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 3650)
    throw new InvalidArgumentError(`--expires-in-days must be an integer from 1 to 3650, got "${value}"`);
  return n;
}

/** Opens the database with this installation's key pepper, as the server binds it. */
export function withKeys<T>(fn: (database: Database, config: Config) => Promise<T>): Promise<T> {
  return withDatabase((database, config) => {
    bindApiKeyPepper(database, () => loadOrCreateSecretKey(config));
    return fn(database, config);
  });
}

export const print = (value: unknown) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);

export function printMembers(members: readonly MemberView[], slugs: ReadonlyMap<string, string>) {
  if (members.length === 0) {
    process.stdout.write(
      'no members yet: add one with `ferry orgs members set <org> <email> --default-role …`\n',
    );
    return;
  }
  printTable(
    ['ID', 'EMAIL', 'HOME ROLE', 'ADMIN', 'DEFAULT', 'TENANT ROLES'],
    members.map((m) => [
      m.id,
      m.email,
      m.home_role,
      m.admin ? 'yes' : '',
      m.default_role ?? 'none',
      Object.entries(m.tenant_roles)
        .map(([t, r]) => `${slugs.get(t) ?? t}=${r}`)
        .join(' '),
    ]),
  );
}

export function printKeys(keys: readonly OrganisationKeyView[], slugs: ReadonlyMap<string, string>) {
  if (keys.length === 0) {
    process.stdout.write(
      'no organisation keys yet: create one with `ferry orgs keys create --org <org> --role …`\n',
    );
    return;
  }
  printTable(
    ['ID', 'PREFIX', 'ROLE', 'NAME', 'STATUS', 'TENANT ROLES'],
    keys.map((k) => [
      k.id,
      k.prefix,
      k.role,
      k.name ?? '',
      k.status,
      Object.entries(k.tenant_roles)
        .map(([t, r]) => `${slugs.get(t) ?? t}=${r}`)
        .join(' '),
    ]),
  );
}

export async function slugsOf(database: Database, organisation: Organisation): Promise<Map<string, string>> {
  return new Map((await organisationTenants(database, organisation)).map((t) => [t.id, t.slug]));
}

/** `ferry orgs members …`. */
export function registerMembers(orgs: Command): void {
  const members = orgs
    .command('members')
    .description('organisation members: team members of the home tenant with roles in the client tenants');
  members
    .command('list')
    .description('list the members and their roles')
    .argument('<org>', 'organisation id, home tenant slug or name')
    .option('--json', 'print JSON')
    .action(async (ref: string, options: { json?: boolean }) => {
      await withDatabase(async (database) => {
        const organisation = await findOrganisation(database, ref);
        const list = await listMembers(database, organisation);
        if (options.json) return print(list);
        printMembers(list, await slugsOf(database, organisation));
      });
    });
  members
    .command('set')
    .description('add a team member of the home tenant to the organisation, or change their roles')
    .argument('<org>', 'organisation id, home tenant slug or name')
    .argument('<member>', 'the team member (email or id)')
    .option('--admin', 'an organisation admin: manages members, roles and keys')
    .option('--no-admin', 'no longer an organisation admin')
    .addOption(
      new Option(
        '--default-role <role>',
        'role in every client tenant without its own (none: no access)',
      ).choices([...ORGANISATION_ROLES, 'none']),
    )
    .option(
      '--tenant-role <tenant=role>',
      `a role in one client tenant (${TENANT_ROLES.join(', ')}), repeatable; replaces the ones given before`,
      collect,
      [],
    )
    .option('--json', 'print JSON')
    .action(
      async (
        ref: string,
        memberRef: string,
        options: { admin?: boolean; defaultRole?: string; tenantRole: string[]; json?: boolean },
      ) => {
        await withDatabase(async (database) => {
          const organisation = await findOrganisation(database, ref);
          const member = await setMember(
            database,
            organisation,
            memberRef,
            {
              admin: options.admin,
              defaultRole: options.defaultRole === 'none' ? null : options.defaultRole,
              tenantRoles: options.tenantRole.length ? tenantRoles(options.tenantRole) : undefined,
            },
            OPERATOR,
            new Date(),
          );
          if (options.json) return print(member);
          printMembers([member], await slugsOf(database, organisation));
        });
      },
    );
  members
    .command('remove')
    .description('remove a member from the organisation (they stay a team member of the home tenant)')
    .argument('<org>', 'organisation id, home tenant slug or name')
    .argument('<member>', 'the member (email or id, see `ferry orgs members list`)')
    .action(async (ref: string, memberRef: string) => {
      await withDatabase(async (database) => {
        const organisation = await findOrganisation(database, ref);
        const named = (await listMembers(database, organisation)).find(
          (m) => m.id === memberRef || m.email === memberRef.trim().toLowerCase(),
        );
        const member = await removeMember(
          database,
          organisation,
          named?.id ?? memberRef,
          OPERATOR,
          new Date(),
        );
        process.stdout.write(`${member.email} is no longer a member of "${organisation.name}"\n`);
      });
    });
}

/** `ferry orgs keys …`. */
export function registerOrgKeys(orgs: Command): void {
  const keys = orgs.command('keys').description('organisation keys: API keys that act in the client tenants');
  keys
    .command('create')
    .description('create an organisation key; it is printed once and cannot be shown again')
    .requiredOption('--org <org>', 'organisation id, home tenant slug or name')
    .addOption(
      new Option('--role <role>', 'its role at home and, by default, in every client tenant')
        .choices(ORGANISATION_ROLES)
        .makeOptionMandatory(),
    )
    .option(
      '--tenant-role <tenant=role>',
      `its role in one client tenant (${TENANT_ROLES.join(', ')}), repeatable`,
      collect,
      [],
    )
    .option('--name <name>', 'a name to recognise the key by')
    .option('--expires-in-days <n>', 'the key stops working after n days', parseDays)
    .option('--scopes <list>', 'comma-separated actions the key is limited to')
    .option('--allowed-ips <list>', 'comma-separated CIDR ranges the key may be used from')
    .option('--json', 'print JSON')
    .action(
      async (options: {
        org: string;
        role: string;
        tenantRole: string[];
        name?: string;
        expiresInDays?: number;
        scopes?: string;
        allowedIps?: string;
        json?: boolean;
      }) => {
        await withKeys(async (database) => {
          const organisation = await findOrganisation(database, options.org);
          const now = new Date();
          const created = await createOrganisationKey(
            database,
            organisation,
            {
              role: options.role,
              name: options.name,
              scopes: options.scopes
                ?.split(',')
                .map((s) => s.trim())
                .filter(Boolean),
              expiresAt: options.expiresInDays
                ? new Date(now.getTime() + options.expiresInDays * DAY_MS)
                : undefined,
              allowedIps: options.allowedIps === undefined ? undefined : splitAllowList(options.allowedIps),
              tenantRoles: tenantRoles(options.tenantRole),
            },
            OPERATOR,
            now,
          );
          if (options.json) return print(created);
          const slugs = await slugsOf(database, organisation);
          process.stdout.write(
            [
              `organisation key created for "${organisation.name}"`,
              '',
              `  key     ${created.key}`,
              '',
              '  This is the only time the key is shown: store it now. Ferry keeps only a hash.',
              '',
              `  id      ${created.id}`,
              `  role    ${created.role} (at home and by default)`,
              ...Object.entries(created.tenant_roles).map(([t, r]) => `  tenant  ${slugs.get(t) ?? t}: ${r}`),
              '',
              'Act in a client tenant with the header Ferry-Tenant: <tenant id>.',
              '',
            ].join('\n'),
          );
        });
      },
    );
  keys
    .command('list')
    .description("list an organisation's keys (prefix, roles and status only)")
    .requiredOption('--org <org>', 'organisation id, home tenant slug or name')
    .option('--json', 'print JSON')
    .action(async (options: { org: string; json?: boolean }) => {
      await withKeys(async (database) => {
        const organisation = await findOrganisation(database, options.org);
        const list = await listOrganisationKeys(database, organisation, new Date());
        if (options.json) return print(list);
        printKeys(list, await slugsOf(database, organisation));
      });
    });
  keys
    .command('roles')
    .description("replace an organisation key's roles in client tenants")
    .requiredOption('--org <org>', 'organisation id, home tenant slug or name')
    .argument('<key-id>', 'the key (see `ferry orgs keys list`)')
    .option(
      '--tenant-role <tenant=role>',
      `its role in one client tenant (${TENANT_ROLES.join(', ')}), repeatable`,
      collect,
      [],
    )
    .action(async (keyId: string, options: { org: string; tenantRole: string[] }) => {
      await withKeys(async (database) => {
        const organisation = await findOrganisation(database, options.org);
        const key = await setKeyTenantRoles(
          database,
          organisation,
          keyId,
          tenantRoles(options.tenantRole),
          OPERATOR,
          new Date(),
        );
        printKeys([key], await slugsOf(database, organisation));
      });
    });
  keys
    .command('revoke')
    .description('revoke an organisation key; it stops working in every tenant at once')
    .requiredOption('--org <org>', 'organisation id, home tenant slug or name')
    .argument('<key-id>', 'the key (see `ferry orgs keys list`)')
    .action(async (keyId: string, options: { org: string }) => {
      await withKeys(async (database) => {
        const organisation = await findOrganisation(database, options.org);
        const key = await revokeOrganisationKey(database, organisation, keyId, OPERATOR, new Date());
        process.stdout.write(`revoked organisation key ${key.id} (${key.prefix}...)\n`);
      });
    });
}
