import { type Command, Option } from 'commander';
import type { Database } from '../db/database.ts';
import { REQUEST_PACKAGE_KINDS } from '../domain/package-kind.ts';
import { PII_LEVELS } from '../domain/pii-level.ts';
import { EXPORT_FORMATS } from '../format/types.ts';
import {
  addOrganisationTenant,
  createOrganisation,
  listMembers,
  listOrganisations,
  removeOrganisationTenant,
} from '../organisations/admin.ts';
import { listOrganisationKeys } from '../organisations/keys.ts';
import {
  findOrganisation,
  type Organisation,
  organisationTenants,
  presentOrganisationTenant,
} from '../organisations/model.ts';
import { withDatabase } from './context.ts';
import {
  OPERATOR,
  print,
  printKeys,
  printMembers,
  registerMembers,
  registerOrgKeys,
  slugsOf,
  withKeys,
} from './orgs-access.ts';
import { printTable } from './tenants.ts';

async function organisationView(database: Database, organisation: Organisation) {
  const tenants = await organisationTenants(database, organisation);
  return {
    id: organisation.id,
    name: organisation.name,
    home_tenant_id: organisation.homeTenantId,
    created_at: organisation.createdAt.toISOString(),
    tenants: tenants.map(presentOrganisationTenant),
  };
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
