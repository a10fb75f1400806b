import { type Command, InvalidArgumentError, Option } from 'commander';
import { bindApiKeyPepper } from '../auth/keys.ts';
import { splitAllowList } from '../auth/ip-allowlist.ts';
import { ORGANISATION_ROLES, TENANT_ROLES } from '../auth/organisations.ts';
import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { REQUEST_PACKAGE_KINDS } from '../domain/package-kind.ts';
import { PII_LEVELS } from '../domain/pii-level.ts';
import { EXPORT_FORMATS } from '../format/types.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import {
  addOrganisationTenant,
  createOrganisation,
  listMembers,
  listOrganisations,
  type MemberView,
  removeMember,
  removeOrganisationTenant,
  setMember,
} from '../organisations/admin.ts';
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

/** Changes made on the command line are audited as `cli`. */
const OPERATOR = { actor: 'cli', ip: null, userAgent: null } as const;
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
function withKeys<T>(fn: (database: Database, config: Config) => Promise<T>): Promise<T> {
  return withDatabase((database, config) => {
    bindApiKeyPepper(database, () => loadOrCreateSecretKey(config));
    return fn(database, config);
  });
}

const print = (value: unknown) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);

async function organisationView(database: Database, organisation: Organisation) {
  const tenants = await organisationTenants(database, organisation);
  return {
    id: organisation.id,
    name: organisation.name,
    home_tenant_id: organisation.homeTenantId,
    created_at: organisation.createdAt.toISOString(),
    tenants: tenants.map((t) => ({
      id: t.id,
      slug: t.slug,
      name: t.name,
      plan: t.plan,
      home: t.home,
      added_at: t.addedAt?.toISOString() ?? null,
    })),
  };
}

function printMembers(members: readonly MemberView[], slugs: ReadonlyMap<string, string>) {
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

function printKeys(keys: readonly OrganisationKeyView[], slugs: ReadonlyMap<string, string>) {
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

async function slugsOf(database: Database, organisation: Organisation): Promise<Map<string, string>> {
  return new Map((await organisationTenants(database, organisation)).map((t) => [t.id, t.slug]));
}

export function registerOrgs(program: Command): void {
  const orgs = program
    .command('orgs')
    .description('agency organisations: client tenants, members, organisation keys, aggregated exports');

  orgs
    .command('list')
    .description('list organisations')
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean }) => {
      await withDatabase(async (database) => {
        const rows = await listOrganisations(database);
        if (options.json) return print(rows);
        if (rows.length === 0) {
          process.stdout.write(
            'no organisations yet: create one with `ferry orgs create --name … --home-tenant …`\n',
          );
          return;
        }
        printTable(
          ['ID', 'NAME', 'HOME TENANT', 'CLIENTS', 'CREATED'],
          rows.map((r) => [r.id, r.name, r.home_tenant.slug, String(r.client_tenants), r.created_at]),
        );
      });
    });

  orgs
    .command('create')
    .description("create an organisation whose home is the agency's own tenant (on the agency plan)")
    .requiredOption('--name <name>', 'the organisation name')
    .requiredOption('--home-tenant <tenant>', 'the home tenant (id or slug)')
    .option('--json', 'print JSON')
    .action(async (options: { name: string; homeTenant: string; json?: boolean }) => {
      await withDatabase(async (database) => {
        const organisation = await createOrganisation(
          database,
          { name: options.name, homeTenant: options.homeTenant },
          OPERATOR,
          new Date(),
        );
        if (options.json) return print(await organisationView(database, organisation));
        process.stdout.write(
          `created organisation "${organisation.name}" (${organisation.id}); link client tenants with ` +
            `\`ferry orgs add-tenant ${organisation.id} <tenant>\`\n`,
        );
      });
    });

  orgs
    .command('show')
    .description('show an organisation: its tenants, members and keys')
    .argument('<org>', 'organisation id, home tenant slug or name')
    .option('--json', 'print JSON')
    .action(async (ref: string, options: { json?: boolean }) => {
      await withKeys(async (database) => {
        const organisation = await findOrganisation(database, ref);
        const view = await organisationView(database, organisation);
        const members = await listMembers(database, organisation);
        const keys = await listOrganisationKeys(database, organisation, new Date());
        if (options.json) return print({ ...view, members, keys });
        process.stdout.write(`${view.name} (${view.id})\n\n`);
        printTable(
          ['TENANT', 'SLUG', 'NAME', 'PLAN', 'ADDED'],
          view.tenants.map((t) => [t.id, t.slug, t.name, t.plan, t.home ? 'home' : (t.added_at ?? '')]),
        );
        const slugs = await slugsOf(database, organisation);
        process.stdout.write('\n');
        printMembers(members, slugs);
        process.stdout.write('\n');
        printKeys(keys, slugs);
      });
    });

  for (const [name, description] of [
    [
      'add-tenant',
      'link a client tenant: the organisation manages it from now on (the client agreed outside Ferry)',
    ],
    ['remove-tenant', "unlink a client tenant: the organisation's keys and members lose access at once"],
  ] as const)
    orgs
      .command(name)
      .description(description)
      .argument('<org>', 'organisation id, home tenant slug or name')
      .argument('<tenant>', 'the client tenant (id or slug)')
      .action(async (ref: string, tenantRef: string) => {
        await withDatabase(async (database) => {
          const organisation = await findOrganisation(database, ref);
          const now = new Date();
          if (name === 'add-tenant') {
            const { tenant, added } = await addOrganisationTenant(
              database,
              organisation,
              tenantRef,
              OPERATOR,
              now,
            );
            process.stdout.write(
              added
                ? `tenant ${tenant.slug} is now a client tenant of "${organisation.name}"\n`
                : `tenant ${tenant.slug} already is a client tenant of "${organisation.name}"\n`,
            );
          } else {
            const { tenant } = await removeOrganisationTenant(
              database,
              organisation,
              tenantRef,
              OPERATOR,
              now,
            );
            process.stdout.write(
              `tenant ${tenant.slug} is no longer a client tenant of "${organisation.name}"\n`,
            );
          }
        });
      });

  registerMembers(orgs);
  registerOrgKeys(orgs);

  orgs
    .command('export')
    .description(
      'export from every tenant of an organisation into one archive: a folder per tenant, the summed analytics, checksums',
    )
    .argument('<org>', 'organisation id, home tenant slug or name')
    .option('--datasets <a,b>', 'datasets (default: every dataset of the company package)')
    .addOption(
      new Option(
        '--package <kind>',
        'what each tenant folder holds: its company package, or one dataset file (none)',
      )
        .choices(REQUEST_PACKAGE_KINDS)
        .default('zip'),
    )
    .addOption(
      new Option('--format <format>', 'format of the tabular files (default csv)').choices(EXPORT_FORMATS),
    )
    .addOption(
      new Option('--pii <level>', 'personal data: full, or an anonymization level').choices(PII_LEVELS),
    )
    .option('--from <date>', 'start date (YYYY-MM-DD) or ISO 8601 timestamp')
    .option('--to <date>', 'end date, inclusive')
    .option('--tenants <a,b>', 'only these tenants of the organisation (ids or slugs)')
    .option('--out <file>', 'the archive to write, or - for stdout')
    .option('--overwrite', 'replace the file already at --out')
    .action(async (ref: string, flags: Record<string, string | boolean | undefined>) => {
      const { runOrganisationExport } = await import('./orgs-export.ts');
      await runOrganisationExport(ref, flags);
    });
}

function registerMembers(orgs: Command): void {
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

function registerOrgKeys(orgs: Command): void {
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
