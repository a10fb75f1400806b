import type { Command } from 'commander';
import { loadTenant } from '../collect/tenant.ts';
import { withDatabase } from './context.ts';
import { printTable } from './tenants.ts';

/** `ferry team-members --tenant <slug>`: the ids an agent key is bound to (`keys create --team-member`). */
export function registerTeamMembers(program: Command): void {
  program
    .command('team-members')
    .description("list a tenant's team members (id, name, email, role), e.g. for `keys create --team-member`")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON instead of a table')
    .action(async (options: { tenant: string; json?: boolean }) => {
      await withDatabase(async (database) => {
        const tenant = await loadTenant(database, options.tenant);
        // Never the password hash: only what identifies a member.
        const rows = await database.db
          .selectFrom('team_members')
          .select(['id', 'name', 'email', 'role'])
          .where('tenant_id', '=', tenant.id)
          .orderBy('role')
          .orderBy('name')
          .orderBy('id')
          .execute();
        if (options.json) {
          process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        if (rows.length === 0) {
          process.stdout.write(`tenant ${tenant.slug} has no team members\n`);
          return;
        }
        printTable(
          ['ID', 'NAME', 'EMAIL', 'ROLE'],
          rows.map((m) => [m.id, m.name, m.email, m.role]),
        );
      });
    });
}
