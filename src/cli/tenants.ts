import type { Command } from 'commander';
import { setTenantAllowListAsOperator, splitAllowList, tenantAccess } from '../auth/ip-allowlist.ts';
import { loadTenant } from '../collect/tenant.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { withDatabase } from './context.ts';

export function registerTenants(program: Command): void {
  const tenants = program.command('tenants');
  tenants
    .command('ip-allowlist')
    .description(
      "show, replace or clear a tenant's IP allow-list (the operator's way back in after a lock-out)",
    )
    .argument('<tenant>', 'the tenant (id or slug)')
    .argument(
      '[ranges...]',
      'addresses or CIDR ranges that replace the list, e.g. 203.0.113.0/24 2001:db8::/32',
    )
    .option('--clear', 'remove every range: API keys and the dashboard work from anywhere again')
    .action(async (tenantRef: string, ranges: string[], options: { clear?: boolean }) => {
      if (options.clear && ranges.length > 0)
        throw new FerryError('invalid_parameter', '--clear takes no ranges');
      await withDatabase(async (database) => {
        const tenant = await loadTenant(database, tenantRef);
        const list =
          options.clear || ranges.length > 0
            ? await setTenantAllowListAsOperator(
                database,
                tenant.id,
                ranges.flatMap(splitAllowList),
                new Date(),
              )
            : (await tenantAccess(database, tenant.id)).ipAllowlist;
        process.stdout.write(
          list.length
            ? `tenant ${tenant.slug} allows: ${list.join(', ')}\n`
            : `tenant ${tenant.slug} has no IP allow-list: requests are allowed from any address\n`,
        );
      });
    });
  tenants
    .description('list tenants')
    .option('--json', 'print JSON instead of a table')
    .action(async (options: { json?: boolean }) => {
      await withDatabase(async (database) => {
        const rows = await database.db
          .selectFrom('tenants')
          .select(['id', 'name', 'slug', 'plan', 'timezone', 'home_country'])
          .orderBy('created_at')
          .orderBy('id')
          .execute();
        if (options.json) {
          process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        if (rows.length === 0) {
          process.stdout.write('no tenants yet: run `ferry seed` to create demo data\n');
          return;
        }
        const table = rows.map((r) => [r.id, r.slug, r.name, r.plan, r.timezone, r.home_country]);
        printTable(['ID', 'SLUG', 'NAME', 'PLAN', 'TIMEZONE', 'COUNTRY'], table);
      });
    });
}

export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${[line(header), ...rows.map(line)].join('\n')}\n`);
}
