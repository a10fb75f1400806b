import type { Command } from 'commander';
import { loadTenant } from '../collect/tenant.ts';
import type { FerryCommand } from '../compose.ts';
import { invalid } from '../domain/ferry-error.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import {
  createDeletion,
  type Deletion,
  type DeletionInput,
  type DeletionPlan,
  planDeletion,
  runDeletion,
} from '../privacy/deletion.ts';
import { withCommand } from './context.ts';
import { parseFilterPairs } from './export.ts';
import { printTable } from './tenants.ts';

interface DeleteOptions {
  tenant: string;
  dryRun?: boolean;
  json?: boolean;
  filter?: string[];
  timezone?: string;
  batchRows?: string;
}

function printPlan(plan: DeletionPlan | Deletion['progress'], label: string): void {
  printTable(
    ['STORE', 'DATASET', 'DELETED', 'REFERENCES REMOVED', 'KEPT', 'WHY KEPT'],
    plan.stores.map((s) => [
      s.store,
      s.dataset,
      String(s.deleted),
      String(s.scrubbed),
      String(s.retained),
      s.retain_reason ?? '',
    ]),
  );
  if ('derived' in plan)
    for (const d of plan.derived)
      process.stdout.write(`${d.dataset}: ${d.effect.replace('_', ' ')} (${d.note})\n`);
  if ('holds' in plan)
    for (const h of plan.holds)
      process.stdout.write(`held by ${h.hold_id} (${h.reason}): ${h.datasets.join(', ')}\n`);
  process.stdout.write(`${label}\n`);
}

/** Plans (`--dry-run`) or runs a deletion to its end, in batches; the CLI acts as the operator (`cli`). */
async function deleteTarget(input: Omit<DeletionInput, 'timezone'>, options: DeleteOptions): Promise<void> {
  const batchRows = options.batchRows === undefined ? undefined : Number(options.batchRows);
  if (batchRows !== undefined && (!Number.isInteger(batchRows) || batchRows < 1 || batchRows > 100_000))
    throw invalid('--batch-rows', `"${options.batchRows}" is not a number of rows from 1 to 100000`);
  await withCommand(async (command: FerryCommand) => {
    const tenant = await loadTenant(command.database, options.tenant);
    const full: DeletionInput = { ...input, ...(options.timezone ? { timezone: options.timezone } : {}) };
    if (options.dryRun) {
      const plan = await planDeletion(command.database, tenant.id, full);
      if (options.json) process.stdout.write(`${JSON.stringify({ dry_run: true, ...plan }, null, 2)}\n`);
      else printPlan(plan, 'dry run: nothing was deleted');
      return;
    }
    const deletion = await createDeletion(command.database, tenant.id, full, 'cli');
    const store = await command.store();
    const done = await runDeletion(
      {
        database: command.database,
        store,
        secretKey: loadOrCreateSecretKey(command.config),
        secrets: (await command.keys()).secrets,
        ...(batchRows ? { batchRows } : {}),
        afterBatch: async (n) => {
          if (!options.json && process.stderr.isTTY)
            process.stderr.write(`\r${n} of ${deletion.plan.stores[0]?.deleted ?? '?'} rows`);
        },
      },
      tenant.id,
      deletion.id,
    );
    if (!options.json && process.stderr.isTTY) process.stderr.write('\n');
    if (options.json) process.stdout.write(`${JSON.stringify(done, null, 2)}\n`);
    else printPlan(done.progress, `deletion ${done.id} completed; receipt ${done.receipt_id ?? '-'}`);
  });
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** `ferry delete …`: selective deletion (docs/deletion.md). */
export function registerDelete(program: Command): void {
  const del = program
    .command('delete')
    .description(
      'delete chosen data: a conversation, conversations by filter, a message, a customer, a document (docs/deletion.md)',
    );
  const common = (c: Command) =>
    c
      .requiredOption('--tenant <id-or-slug>', 'the tenant')
      .option('--dry-run', 'print what would be deleted and kept; change nothing')
      .option('--batch-rows <n>', 'rows per transaction (default 1000)')
      .option('--json', 'print JSON');
  for (const [name, label] of [
    ['conversation', 'one conversation with its messages'],
    ['message', 'one message (its conversation stays, with its counts recomputed)'],
    ['customer', 'a customer with their consent records and conversations'],
    ['document', 'a knowledge-base document with its chunks and embeddings'],
  ] as const)
    common(del.command(`${name} <id>`).description(`delete ${label}`)).action(
      async (id: string, options: DeleteOptions) => deleteTarget({ target: name, id }, options),
    );
  common(
    del
      .command('conversations')
      .description(
        'delete the conversations an export of the conversations dataset with the same filters holds',
      )
      .option(
        '--filter <key=value>',
        'a conversations filter (from, to, site_url, tags, status, …); repeatable',
        collect,
        [],
      )
      .option('--timezone <zone>', "the zone dates are days in (default: the tenant's)"),
  ).action(async (options: DeleteOptions) =>
    deleteTarget({ target: 'conversations', filters: parseFilterPairs(options.filter ?? []) }, options),
  );
}
