import type { Command } from 'commander';
import { backupContext } from '../backup/context.ts';
import { destroyTenantBackups } from '../backup/service.ts';
import { loadTenant } from '../collect/tenant.ts';
import type { FerryCommand } from '../compose.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { anchorAuditChains, chainTenants, verifyAuditChain } from '../privacy/audit-chain.ts';
import { closeAccount, purgeAccount, reopenAccount } from '../privacy/closure.ts';
import { createHold, holdReport, listHolds, releaseHold } from '../privacy/holds.ts';
import { previewRetention, runRetentionSweep } from '../privacy/retention.ts';
import { effectiveRetention, putRetention } from '../privacy/retention-policies.ts';
import { withCommand } from './context.ts';
import { printTable } from './tenants.ts';

/** The CLI acts as the operator: actor `cli` in the audit trail. */
const CLI = { actor: 'cli' };

interface TenantOption {
  tenant: string;
  json?: boolean;
}

async function withTenant<T>(
  tenant: string,
  fn: (command: FerryCommand, tenantId: string, slug: string) => Promise<T>,
): Promise<T> {
  return withCommand(async (command) => {
    const t = await loadTenant(command.database, tenant);
    return fn(command, t.id, t.slug);
  });
}

function print(json: boolean | undefined, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

const day = (iso: string | null) => (iso ? iso.slice(0, 19).replace('T', ' ') : '-');

function collect(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(',')
      .map((v) => v.trim())
      .filter(Boolean),
  ];
}

function registerRetentionCommands(program: Command): void {
  const retention = program
    .command('retention')
    .description('retention policies: show, set, preview and run the sweep (docs/retention.md)');

  retention
    .command('show')
    .description('the policies in force, each with the sentence a privacy policy can quote')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .option('--markdown', 'print the policies as a Markdown section for a privacy policy')
    .action(async (options: TenantOption & { markdown?: boolean }) => {
      await withTenant(options.tenant, async (command, tenantId) => {
        const policies = await effectiveRetention(command.database, tenantId);
        if (options.markdown) {
          process.stdout.write(
            `## How long we keep your data\n\n${policies.map((p) => `- **${p.dataset.replaceAll('_', ' ')}**: ${p.statement}`).join('\n')}\n`,
          );
          return;
        }
        print(options.json, policies, () => {
          printTable(
            ['DATASET', 'KEEP', 'AFTER', 'ACTION', 'SOURCE'],
            policies.map((p) => [
              p.dataset,
              p.keep,
              p.after,
              p.action + (p.archive_keep ? ` (${p.archive_keep})` : ''),
              p.source,
            ]),
          );
          return '';
        });
      });
    });

  retention
    .command('set')
    .description("override one dataset's policy (the other overrides stay)")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .requiredOption('--dataset <name>', 'the dataset, e.g. conversations')
    .requiredOption('--keep <duration>', 'ISO 8601 duration, e.g. P2Y')
    .requiredOption('--after <start>', 'last_activity, created or account_closed')
    .requiredOption('--action <action>', 'delete, anonymize or archive')
    .option('--archive-keep <duration>', 'archive: how long the archive is kept')
    .option('--json', 'print JSON')
    .action(
      async (
        options: TenantOption & {
          dataset: string;
          keep: string;
          after: string;
          action: string;
          archiveKeep?: string;
        },
      ) => {
        await withTenant(options.tenant, async (command, tenantId) => {
          const current = (await effectiveRetention(command.database, tenantId)).filter(
            (p) => p.source === 'tenant' && p.dataset !== options.dataset,
          );
          const policies = await putRetention(
            command.database,
            tenantId,
            [
              ...current,
              {
                dataset: options.dataset,
                keep: options.keep,
                after: options.after,
                action: options.action,
                archive_keep: options.archiveKeep ?? null,
              },
            ],
            CLI.actor,
          );
          const set = policies.find((p) => p.dataset === options.dataset)!;
          print(options.json, set, () => `${set.dataset}: ${set.statement}`);
        });
      },
    );

  retention
    .command('preview')
    .description('what the next sweep would do per dataset, without doing it')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (options: TenantOption) => {
      await withTenant(options.tenant, async (command, tenantId) => {
        const store = await command.store();
        const preview = await previewRetention({ database: command.database, store }, tenantId);
        print(options.json, preview, () => {
          printTable(
            ['DATASET', 'ACTION', 'CUTOFF', 'ROWS', 'HELD', 'OLDEST', 'NOTE'],
            preview.datasets.map((d) => [
              d.dataset,
              d.action,
              day(d.cutoff),
              String(d.rows),
              d.held ? `${d.held} (${d.holds.map((h) => h.matter).join(', ')})` : '0',
              day(d.oldest),
              d.note ?? '',
            ]),
          );
          return `as of ${preview.as_of} (${preview.time_zone})`;
        });
      });
    });

  retention
    .command('run')
    .description('run the sweep now (resumes an unfinished one)')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (options: TenantOption) => {
      await withTenant(options.tenant, async (command, tenantId) => {
        const store = await command.store();
        const sweep = await runRetentionSweep({ database: command.database, store }, tenantId, {
          trigger: 'manual',
          actor: CLI.actor,
        });
        print(options.json, sweep, () => {
          const rows = Object.entries(sweep.datasets).filter(
            ([, c]) => c.deleted || c.anonymized || c.archived,
          );
          return [
            `sweep ${sweep.id} ${sweep.status} (as of ${sweep.as_of})`,
            ...(rows.length
              ? rows.map(
                  ([d, c]) =>
                    `  ${d}: ${c.deleted} deleted, ${c.anonymized} anonymized, ${c.archived} archived${c.archive ? ` → ${c.archive.key}` : ''}`,
                )
              : ['  nothing was past its period']),
          ].join('\n');
        });
      });
    });
}

function registerHoldCommands(program: Command): void {
  const holds = program
    .command('holds')
    .description('legal holds: data no deletion touches (docs/legal-holds.md)');

  holds
    .command('create')
    .description('place a legal hold')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .requiredOption('--scope <scope>', 'tenant, subject, dataset, conversation_ids or date_range')
    .requiredOption('--reason <text>', 'why the data must be kept')
    .requiredOption('--matter <reference>', 'the matter or case reference')
    .option('--email <email>', "subject scope: the subject's email")
    .option('--customer-id <id>', 'subject scope: the customer id')
    .option('--dataset <name>', 'dataset scope: a dataset (repeat or comma-separate)', collect)
    .option(
      '--conversation <id>',
      'conversation_ids scope: a conversation id (repeat or comma-separate)',
      collect,
    )
    .option('--from <date>', 'from this date (YYYY-MM-DD or ISO 8601, inclusive)')
    .option('--to <date>', 'until this date (exclusive)')
    .option('--json', 'print JSON')
    .action(
      async (
        options: TenantOption & {
          scope: string;
          reason: string;
          matter: string;
          email?: string;
          customerId?: string;
          dataset?: string[];
          conversation?: string[];
          from?: string;
          to?: string;
        },
      ) => {
        await withTenant(options.tenant, async (command, tenantId) => {
          const subject =
            options.email || options.customerId
              ? {
                  ...(options.email ? { email: options.email } : {}),
                  ...(options.customerId ? { customer_id: options.customerId } : {}),
                }
              : undefined;
          const hold = await createHold(
            command.database,
            tenantId,
            {
              scope: options.scope,
              subject,
              datasets: options.dataset,
              conversation_ids: options.conversation,
              from: options.from,
              to: options.to,
              reason: options.reason,
              matter: options.matter,
            },
            CLI,
          );
          print(options.json, hold, () => `hold ${hold.id} placed (${hold.scope}, matter ${hold.matter})`);
        });
      },
    );

  holds
    .command('list')
    .description('the holds and what each keeps, per dataset')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--all', 'include released holds')
    .option('--json', 'print JSON')
    .action(async (options: TenantOption & { all?: boolean }) => {
      await withTenant(options.tenant, async (command, tenantId) => {
        const report = new Map(
          (await holdReport(command.database, tenantId)).map((r) => [r.hold.id, r.datasets]),
        );
        const list = (await listHolds(command.database, tenantId, { includeReleased: options.all })).map(
          (h) => ({
            ...h,
            keeps: report.get(h.id) ?? [],
          }),
        );
        print(options.json, list, () => {
          if (!list.length) return 'no legal holds';
          printTable(
            ['ID', 'SCOPE', 'MATTER', 'CREATED', 'RELEASED', 'KEEPS'],
            list.map((h) => [
              h.id,
              h.scope,
              h.matter,
              day(h.created_at),
              day(h.released_at),
              h.keeps.map((k) => `${k.dataset} ${k.rows}`).join(', ') || '-',
            ]),
          );
          return '';
        });
      });
    });

  holds
    .command('release')
    .description('release a hold, with a reason (the hold stays on record)')
    .argument('<hold-id>', 'the hold')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .requiredOption('--reason <text>', 'why the hold ends')
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption & { reason: string }) => {
      await withTenant(options.tenant, async (command, tenantId) => {
        const hold = await releaseHold(command.database, tenantId, id, options.reason, CLI);
        print(options.json, hold, () => `hold ${hold.id} released at ${hold.released_at}`);
      });
    });
}

function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('the tamper-evident audit trail (docs/compliance.md)');

  audit
    .command('verify')
    .description('walk the hash chain and the signed anchors; exits 1 at the first broken link')
    .option('--tenant <id-or-slug>', 'one tenant (default: every tenant)')
    .option('--json', 'print JSON')
    .action(async (options: { tenant?: string; json?: boolean }) => {
      const results = await withCommand(async (command) => {
        const ids = options.tenant
          ? [(await loadTenant(command.database, options.tenant)).id]
          : await chainTenants(command.database);
        const out = [];
        for (const id of ids) out.push(await verifyAuditChain(command.database, id));
        return out;
      });
      print(
        options.json,
        results,
        () =>
          results
            .map((r) =>
              r.valid
                ? `valid: tenant ${r.tenant_id}, events ${r.first_seq}–${r.last_seq} (${r.events} checked, ${r.redacted} redacted by erasure, ${r.anchors_checked} anchors)`
                : `broken: tenant ${r.tenant_id} at event ${r.broken!.seq}${r.broken!.event_id ? ` (${r.broken!.event_id})` : ''}: ${r.broken!.reason}`,
            )
            .join('\n') || 'no audit chains yet',
      );
      if (results.some((r) => !r.valid)) process.exitCode = 1;
    });

  audit
    .command('anchor')
    .description('sign every chain head that moved since its last anchor (the worker does this daily)')
    .action(async () => {
      const n = await withCommand((command) =>
        command.keys().then(({ secrets }) => anchorAuditChains(command.database, secrets)),
      );
      process.stdout.write(`anchored ${n} chain${n === 1 ? '' : 's'}\n`);
    });
}

function registerClosureCommands(program: Command): void {
  const tenants = program.commands.find((c) => c.name() === 'tenants');
  if (!tenants) throw new Error('the tenants command is registered first');

  tenants
    .command('close')
    .description('close a tenant account: suspended for the grace period, then purged')
    .argument('<tenant>', 'id or slug')
    .option('--grace-days <n>', 'days before the purge', '30')
    .option('--reason <text>', 'why (kept in the audit trail)')
    .option('--json', 'print JSON')
    .action(async (tenant: string, options: { graceDays: string; reason?: string; json?: boolean }) => {
      await withTenant(tenant, async (command, tenantId, slug) => {
        const state = await closeAccount(command.database, tenantId, CLI, {
          graceDays: Number(options.graceDays),
          ...(options.reason ? { reason: options.reason } : {}),
        });
        print(
          options.json,
          state,
          () =>
            `tenant ${slug} closed; purged after ${state.purge_after} unless reopened (ferry tenants reopen ${slug}).\n` +
            `Export its data first: ferry export --tenant ${slug} --package zip --out ${slug}.zip`,
        );
      });
    });

  tenants
    .command('reopen')
    .description('cancel a closure during its grace period')
    .argument('<tenant>', 'id or slug')
    .option('--json', 'print JSON')
    .action(async (tenant: string, options: { json?: boolean }) => {
      await withTenant(tenant, async (command, tenantId, slug) => {
        const state = await reopenAccount(command.database, tenantId, CLI);
        print(options.json, state, () => `tenant ${slug} reopened`);
      });
    });

  tenants
    .command('purge')
    .description('purge a closed tenant: every row, file and key except held data, with a signed receipt')
    .argument('<tenant>', 'id or slug')
    .option('--now', 'purge before the grace period ends')
    .option('--json', 'print JSON')
    .action(async (tenant: string, options: { now?: boolean; json?: boolean }) => {
      await withTenant(tenant, async (command, tenantId) => {
        const store = await command.store();
        const { secrets } = await command.keys();
        const outcome = await purgeAccount(
          {
            database: command.database,
            store,
            secretKey: loadOrCreateSecretKey(command.config),
            secrets,
            destroyBackups: (id) =>
              destroyTenantBackups(
                backupContext({ database: command.database, config: command.config, store, secrets }),
                id,
              ),
          },
          tenantId,
          CLI,
          { force: Boolean(options.now) },
        );
        print(options.json, outcome, () =>
          [
            `tenant ${tenantId} purged: ${outcome.deleted.reduce((n, d) => n + d.rows, 0)} rows and ${outcome.files_deleted} files deleted`,
            ...outcome.kept.map((k) => `  kept ${k.rows} ${k.dataset} (${k.reason})`),
            `receipt ${outcome.receipt.id}`,
          ].join('\n'),
        );
      });
    });
}

/** `ferry retention`, `ferry holds`, `ferry audit` and `ferry tenants close|reopen|purge`. */
export function registerRetention(program: Command): void {
  registerRetentionCommands(program);
  registerHoldCommands(program);
  registerAuditCommands(program);
  registerClosureCommands(program);
}
