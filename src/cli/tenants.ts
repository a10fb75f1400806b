import type { Command } from 'commander';
import { withDatabase } from './context.ts';

export function registerTenants(program: Command): void {
  program
    .command('tenants')
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
