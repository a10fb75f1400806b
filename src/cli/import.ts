import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { loadTenant } from '../collect/tenant.ts';
import type { FerryCommand } from '../compose.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { EntityReport } from '../imports/engine.ts';
import { importContext } from '../imports/context.ts';
import {
  cancelImport,
  checkSource,
  createImport,
  getImport,
  type ImportContext,
  type ImportRow,
  listImports,
  parseConflict,
  rejectedFile,
  runImportById,
} from '../imports/service.ts';
import { IMPORT_ENTITIES, IMPORT_SOURCES } from '../imports/types.ts';
import { withCommand } from './context.ts';
import { createProgress, formatBytes } from './progress.ts';
import { printTable } from './tenants.ts';

/** The CLI acts as the operator: actor `cli` in the audit trail. */
const ACTOR = 'cli';

interface RunOptions {
  tenant: string;
  source: string;
  dataset?: string;
  conflict?: string;
  allOrNothing?: boolean;
  notify?: boolean;
  json?: boolean;
}

async function withImports<T>(
  tenant: string,
  fn: (ctx: ImportContext, tenantId: string, command: FerryCommand) => Promise<T>,
): Promise<T> {
  return withCommand(async (command) => {
    const t = await loadTenant(command.database, tenant);
    const store = await command.store();
    return fn(importContext({ database: command.database, config: command.config, store }), t.id, command);
  });
}

const when = (iso: string | null) => (iso ? iso.slice(0, 19).replace('T', ' ') : '-');

/** The report as a table: one line per entity, then conflicts, rejections and warnings. */
export function describeImport(row: ImportRow): string {
  const lines = [
    `import ${row.id}: ${row.status}${row.dry_run ? ' (plan: nothing was written)' : ''}`,
    `  source    ${row.source}${row.dataset ? ` (${row.dataset})` : ''}, ${row.input_name}, ${formatBytes(row.input_bytes)}`,
    `  options   conflict ${Object.entries(row.conflict)
      .map(([k, v]) => (k === 'default' ? v : `${k}=${v}`))
      .join(',')}${row.all_or_nothing ? ', all or nothing' : ''}${row.notify ? ', notify' : ', silent'}`,
    `  progress  ${row.items_done} items, ${formatBytes(row.bytes_done)} read${row.phase ? ` (at ${row.phase})` : ''}`,
  ];
  const entities = IMPORT_ENTITIES.filter((e) => row.report.entities?.[e]);
  if (entities.length > 0) {
    lines.push(
      `  ${'entity'.padEnd(16)} ${['create', 'update', 'unchanged', 'conflicts', 'rejected'].map((h) => h.padStart(9)).join(' ')}`,
    );
    for (const e of entities) {
      const r = row.report.entities[e] as EntityReport;
      lines.push(
        `  ${e.padEnd(16)} ${[r.created, r.updated, r.unchanged, r.conflicts, r.rejected].map((n) => String(n).padStart(9)).join(' ')}`,
      );
    }
    for (const e of entities) {
      const r = row.report.entities[e] as EntityReport;
      for (const c of r.conflict_samples)
        lines.push(`  conflict  ${e} ${c.source_id} → ${c.id}: ${c.fields.join(', ')} (${c.resolution})`);
      for (const x of r.rejected_samples) lines.push(`  rejected  ${x.location}: ${x.errors.join('; ')}`);
    }
  }
  for (const w of row.report.warnings ?? []) lines.push(`  note      ${w}`);
  if (row.rejected_count > 0)
    lines.push(
      `  ${row.rejected_count} rejected item(s): ferry import rejected ${row.id} --tenant <tenant> --out rejected.${row.source === 'csv' ? 'csv' : 'ndjson'}`,
    );
  if (row.error) lines.push(`  error     ${row.error_code}: ${row.error}`);
  return lines.join('\n');
}

function print(json: boolean | undefined, row: ImportRow): void {
  process.stdout.write(json ? `${JSON.stringify(row, null, 2)}\n` : `${describeImport(row)}\n`);
}

async function runHere(ctx: ImportContext, id: string): Promise<ImportRow> {
  const progress = createProgress('import', 'items');
  try {
    return await runImportById(ctx, id, {
      onProgress: (p) =>
        progress.update(p.items, null, {
          bytes: `${p.phase}, ${formatBytes(p.bytes)} of ${formatBytes(p.total)}`,
        }),
    });
  } finally {
    progress.stop();
  }
}

function addRunOptions(command: Command): Command {
  return command
    .argument('<path>', 'the file, folder or archive (ZIP, tar.gz) to import')
    .requiredOption('--tenant <id-or-slug>', 'the tenant to import into')
    .requiredOption('--source <source>', `what the files are: ${IMPORT_SOURCES.join(', ')}`)
    .option('--dataset <name>', 'csv, json, ndjson: the dataset the file holds, when its columns do not say')
    .option(
      '--conflict <policy>',
      'when an item differs from a row the tenant has: skip, overwrite, newest_wins or fail; per entity as customers=overwrite (comma-separated)',
      'skip',
    )
    .option('--all-or-nothing', 'write nothing when any item is rejected (default: import the valid items)')
    .option('--notify', 'let imported rows fire live-stream events (default: silent)')
    .option('--json', 'print the import as JSON');
}

async function start(file: string, options: RunOptions, dryRun: boolean): Promise<void> {
  await withImports(options.tenant, async (ctx, tenantId) => {
    const row = await createImport(ctx, {
      tenantId,
      source: checkSource(options.source),
      dataset: options.dataset,
      input: { kind: 'path', path: file },
      dryRun,
      conflict: parseConflict(options.conflict),
      allOrNothing: options.allOrNothing ?? false,
      notify: options.notify ?? false,
      actor: ACTOR,
    });
    const done = await runHere(ctx, row.id);
    print(options.json, done);
    if (done.status !== 'completed') process.exitCode = 1;
  });
}

export function registerImport(program: Command): void {
  const command = program
    .command('import')
    .description(
      'import Ferry packages, CSV/JSON/NDJSON files and Zendesk, Intercom, Chatwoot, Freshdesk or Help Scout data (docs/import.md)',
    );

  addRunOptions(
    command.command('plan').description('what an import would do, without writing anything (a dry run)'),
  ).action((file: string, options: RunOptions) => start(file, options, true));
  addRunOptions(
    command.command('apply').description('import: create, update and link, as the plan shows'),
  ).action((file: string, options: RunOptions) => start(file, options, false));

  command
    .command('resume')
    .description('continue an import whose process stopped, after its last committed batch')
    .argument('<import-id>')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print the import as JSON')
    .action(async (id: string, options: { tenant: string; json?: boolean }) => {
      await withImports(options.tenant, async (ctx, tenantId) => {
        const row = await getImport(ctx.database.db, tenantId, id);
        if (!row) throw new FerryError('not_found', `no import ${id} in this tenant`);
        if (row.status !== 'running' && row.status !== 'queued')
          throw new FerryError(
            'conflict',
            `import ${id} is ${row.status}; only a queued or running import resumes`,
          );
        const done = await runHere(ctx, id);
        print(options.json, done);
        if (done.status !== 'completed') process.exitCode = 1;
      });
    });

  command
    .command('status')
    .description("an import's state and progress; without an id, the tenant's imports")
    .argument('[import-id]')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (id: string | undefined, options: { tenant: string; json?: boolean }) => {
      await withImports(options.tenant, async (ctx, tenantId) => {
        if (id) {
          const row = await getImport(ctx.database.db, tenantId, id);
          if (!row) throw new FerryError('not_found', `no import ${id} in this tenant`);
          print(options.json, row);
          return;
        }
        const rows = await listImports(ctx.database.db, tenantId);
        if (options.json) {
          process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        if (rows.length === 0) {
          process.stdout.write('no imports\n');
          return;
        }
        printTable(
          ['ID', 'CREATED (UTC)', 'SOURCE', 'KIND', 'STATUS', 'ITEMS', 'REJECTED'],
          rows.map((r) => [
            r.id,
            when(r.created_at),
            r.source,
            r.dry_run ? 'plan' : 'apply',
            r.status,
            String(r.items_done),
            String(r.rejected_count),
          ]),
        );
      });
    });

  command
    .command('report')
    .description("an import's report: counts per entity, conflicts, rejections, notes")
    .argument('<import-id>')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (id: string, options: { tenant: string; json?: boolean }) => {
      await withImports(options.tenant, async (ctx, tenantId) => {
        const row = await getImport(ctx.database.db, tenantId, id);
        if (!row) throw new FerryError('not_found', `no import ${id} in this tenant`);
        process.stdout.write(
          options.json ? `${JSON.stringify(row.report, null, 2)}\n` : `${describeImport(row)}\n`,
        );
      });
    });

  command
    .command('rejected')
    .description('the rejected items, to fix and import again (CSV for a CSV import, else NDJSON)')
    .argument('<import-id>')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--out <file>', 'write to this file (default: standard output)')
    .action(async (id: string, options: { tenant: string; out?: string }) => {
      await withImports(options.tenant, async (ctx, tenantId) => {
        const row = await getImport(ctx.database.db, tenantId, id);
        if (!row) throw new FerryError('not_found', `no import ${id} in this tenant`);
        const file = await rejectedFile(ctx.database.db, row);
        await pipeline(file.body, options.out ? createWriteStream(options.out) : process.stdout);
      });
    });

  command
    .command('cancel')
    .description('cancel a queued or running import (a partial one keeps the batches it committed)')
    .argument('<import-id>')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .action(async (id: string, options: { tenant: string }) => {
      await withImports(options.tenant, async (ctx, tenantId) => {
        const row = await cancelImport(ctx, tenantId, id, ACTOR);
        process.stdout.write(`import ${row.id}: ${row.status}\n`);
      });
    });
}
