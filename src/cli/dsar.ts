import { readFileSync, writeFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import type { AuthContext } from '../auth/context.ts';
import { loadTenant } from '../collect/tenant.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { createAdapters, type FerryCommand } from '../compose.ts';
import type { JobContext } from '../jobs/types.ts';
import { createLogger } from '../lib/logger.ts';
import { runDsar } from '../privacy/dsar-job.ts';
import '../privacy/dsar-steps.ts';
import {
  approveDsar,
  cancelDsar,
  createDsar,
  type DsarCaller,
  type DsarDeps,
  type DsarView,
  denyDsar,
  dsarReceipt,
  dsarSummary,
  extendDsar,
  getDsar,
  listDsars,
  loadDsar,
  planDsar,
  REGISTER_COLUMNS,
  registerRows,
  rerunDsar,
  verifyDsar,
} from '../privacy/dsar-service.ts';
import { cliAuth } from '../export-requests/local-export.ts';
import { withCommand } from './context.ts';
import { printTable } from './tenants.ts';

interface TenantOption {
  tenant: string;
  json?: boolean;
}

interface Scope {
  readonly deps: DsarDeps;
  readonly caller: DsarCaller;
  readonly auth: AuthContext;
  readonly command: FerryCommand;
}

/**
 * The CLI acts as an admin of the tenant (actor `cli` in the audit trail). With `sendsJobs`
 * the steps that hand work to a worker (sending the code, running the request) queue it.
 */
async function withTenant<T>(options: TenantOption, fn: (scope: Scope) => Promise<T>): Promise<T> {
  return withCommand(async (command) => {
    const tenant = await loadTenant(command.database, options.tenant);
    const auth = cliAuth(tenant);
    const deps: DsarDeps = {
      database: command.database,
      config: command.config,
      queue: await command.queue(),
      now: () => new Date(),
    };
    return fn({ deps, caller: { kind: 'team', auth }, auth, command });
  });
}

function print(options: { json?: boolean | undefined }, value: unknown, text: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

function when(value: string | null | undefined): string {
  return value ? value.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}

function requestText(r: DsarView): string {
  const lines = [
    `request ${r.id}: ${r.type} (${r.regulation}) ${r.status}${r.status === 'extended' ? ` (${r.stage})` : ''}`,
    `  received  ${when(r.received_at)} via ${r.source}`,
    `  due       ${when(r.due_at)} (${r.overdue ? `overdue by ${-r.days_left} days` : `${r.days_left} days left`})`,
  ];
  if (r.subject)
    lines.push(
      `  subject   ${Object.entries(r.subject)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')}`,
    );
  if (r.excessive) lines.push(`  excessive ${r.excessive_rule}`);
  if (r.duplicate_of) lines.push(`  duplicate of ${r.duplicate_of}`);
  if (r.verified_at) lines.push(`  verified  ${when(r.verified_at)} (${r.verification_method})`);
  if (r.failed_step) lines.push(`  failed at ${r.failed_step}: ${r.error}`);
  if (r.outcome) lines.push(`  outcome   ${r.outcome}${r.closed_reason ? `: ${r.closed_reason}` : ''}`);
  if (r.receipt_id) lines.push(`  receipt   ${r.receipt_id}`);
  return lines.join('\n');
}

function parseJsonFlag(flag: string) {
  return (value: string): Record<string, unknown> => {
    const text = value.startsWith('@') ? readFileSync(value.slice(1), 'utf8') : value;
    try {
      const parsed = JSON.parse(text) as unknown;
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
      return parsed as Record<string, unknown>;
    } catch (err) {
      throw new InvalidArgumentError(`${flag} must be a JSON object (or @file): ${(err as Error).message}`);
    }
  };
}

/** A job context for running a request in this process (`ferry dsar run`). */
async function localJobContext(command: FerryCommand): Promise<JobContext> {
  const config = command.config;
  const adapters = createAdapters(config);
  const { keyring, secrets } = await command.keys();
  return {
    database: command.database,
    config,
    logger: createLogger({ ...config, logLevel: 'warn' }),
    store: await command.store(),
    queue: await command.queue(),
    now: () => new Date(),
    keyring,
    secrets,
    ...adapters,
  };
}

export function registerDsar(program: Command): void {
  const dsar = program
    .command('dsar')
    .description(
      'data subject requests: create, list, show, verify, approve, deny, extend, cancel, run, receipt',
    );

  dsar
    .command('create')
    .description('record a data subject request (the legal clock starts now)')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .requiredOption('--type <type>', 'access, portability, erasure, rectification, restriction or opt_out')
    .option('--regulation <regulation>', 'gdpr or ccpa', 'gdpr')
    .option('--email <email>', "the subject's email")
    .option('--phone <phone>', "the subject's phone, in international form")
    .option('--customer-id <uuid>', "the subject's customer id")
    .option('--team-member-id <uuid>', "the subject's team member id")
    .option(
      '--changes <json>',
      'rectification: the corrected values as JSON, or @file',
      parseJsonFlag('--changes'),
    )
    .option('--source <source>', 'api, privacy_center, email or manual', 'manual')
    .option('--note <text>', 'a note for the team')
    .option('--json', 'print JSON')
    .action(
      async (
        options: TenantOption & {
          type: string;
          regulation: string;
          email?: string;
          phone?: string;
          customerId?: string;
          teamMemberId?: string;
          changes?: Record<string, unknown>;
          source: string;
          note?: string;
        },
      ) => {
        await withTenant(options, async ({ deps, caller }) => {
          const created = await createDsar(deps, caller, {
            type: options.type,
            regulation: options.regulation,
            subject: {
              email: options.email,
              phone: options.phone,
              customer_id: options.customerId,
              team_member_id: options.teamMemberId,
            },
            changes: options.changes,
            source: options.source,
            note: options.note,
          });
          print(options, created, () => `recorded ${requestText(created)}`);
        });
      },
    );

  dsar
    .command('list')
    .description('the request register, newest first')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--status <status>', 'only requests in this status')
    .option('--type <type>', 'only requests of this type')
    .option('--overdue', 'only open requests past their deadline')
    .option('--due-before <date>', 'only requests due before this date (YYYY-MM-DD)')
    .option('--csv', `the register as CSV (${REGISTER_COLUMNS.join(', ')}), oldest first`)
    .option('--json', 'print JSON')
    .action(
      async (
        options: TenantOption & {
          status?: string;
          type?: string;
          overdue?: boolean;
          dueBefore?: string;
          csv?: boolean;
        },
      ) => {
        const query = {
          status: options.status,
          type: options.type,
          overdue: options.overdue ? true : undefined,
          due_before: options.dueBefore,
        };
        await withTenant(options, async ({ deps, caller }) => {
          if (options.csv) {
            const quote = (v: string) => (/[",\n\r]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v);
            process.stdout.write(`${REGISTER_COLUMNS.join(',')}\n`);
            for await (const row of registerRows(deps, caller, query))
              process.stdout.write(`${row.map(quote).join(',')}\n`);
            return;
          }
          const items: DsarView[] = [];
          let cursor: string | undefined;
          do {
            const page = await listDsars(deps, caller, { ...query, limit: 200, cursor });
            items.push(...page.data);
            cursor = page.next_cursor ?? undefined;
          } while (cursor);
          if (options.json || items.length === 0) {
            print(options, items, () => 'no data subject requests match');
            return;
          }
          printTable(
            ['ID', 'TYPE', 'REG', 'STATUS', 'RECEIVED', 'DUE', 'DAYS LEFT', 'OUTCOME'],
            items.map((r) => [
              r.id,
              r.type,
              r.regulation,
              r.status === 'extended' ? `extended (${r.stage})` : r.status,
              when(r.received_at),
              when(r.due_at),
              r.overdue ? `${r.days_left} (overdue)` : String(r.days_left),
              r.outcome ?? '-',
            ]),
          );
        });
      },
    );

  dsar
    .command('summary')
    .description('open requests by status, due this week, overdue, median days to complete')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (options: TenantOption) => {
      await withTenant(options, async ({ deps, caller }) => {
        const s = await dsarSummary(deps, caller);
        print(options, s, () =>
          [
            `open ${s.open}: ${
              Object.entries(s.open_by_status)
                .map(([k, v]) => `${k} ${v}`)
                .join(', ') || 'none'
            }`,
            `due this week ${s.due_this_week}, overdue ${s.overdue}`,
            `completed in 12 months ${s.completed_last_12_months}, median ${s.median_days_to_complete ?? '-'} days`,
          ].join('\n'),
        );
      });
    });

  dsar
    .command('show')
    .description('one request')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<request-id>', 'id of the request (see `ferry dsar list`)')
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption) => {
      await withTenant(options, async ({ deps, caller }) => {
        const view = await getDsar(deps, caller, id);
        print(options, view, () => requestText(view));
      });
    });

  dsar
    .command('verify')
    .description("confirm the subject's identity: their one-time code, or how you checked it")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<request-id>', 'id of the request')
    .option('--code <code>', "the subject's one-time code")
    .option('--reason <text>', 'as a team member: how the identity was checked')
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption & { code?: string; reason?: string }) => {
      await withTenant(options, async ({ deps, caller }) => {
        const view = await verifyDsar(deps, caller, id, { code: options.code, reason: options.reason });
        print(options, view, () => `verified ${requestText(view)}`);
      });
    });

  for (const [name, done, needsReason, action] of [
    ['approve', 'approved', false, (d: DsarDeps, c: DsarCaller, id: string) => approveDsar(d, c, id)],
    ['deny', 'denied', true, (d: DsarDeps, c: DsarCaller, id: string, r?: string) => denyDsar(d, c, id, r)],
    [
      'extend',
      'extended',
      true,
      (d: DsarDeps, c: DsarCaller, id: string, r?: string) => extendDsar(d, c, id, r),
    ],
    [
      'cancel',
      'cancelled',
      false,
      (d: DsarDeps, c: DsarCaller, id: string, r?: string) => cancelDsar(d, c, id, r),
    ],
  ] as const) {
    const command = dsar
      .command(name)
      .description(
        {
          approve: 'approve an erasure, a rectification or an excessive request: a worker runs it',
          deny: 'deny a request, with the reason the subject is told',
          extend: 'extend the deadline once, with the reason the subject is told',
          cancel: 'cancel a request (withdrawn by the subject)',
        }[name],
      )
      .requiredOption('--tenant <id-or-slug>', 'the tenant')
      .argument('<request-id>', 'id of the request');
    if (needsReason)
      command.requiredOption('--reason <text>', 'the reason (recorded, and sent to the subject)');
    else if (name === 'cancel') command.option('--reason <text>', 'why');
    command
      .option('--json', 'print JSON')
      .action(async (id: string, options: TenantOption & { reason?: string }) => {
        await withTenant(options, async ({ deps, caller }) => {
          const view = await action(deps, caller, id, options.reason);
          print(options, view, () => `${done} ${requestText(view)}`);
        });
      });
  }

  dsar
    .command('plan')
    .description("an erasure's dry run: what it would delete, anonymize, scrub or keep, changing nothing")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<request-id>', 'id of the erasure request')
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption) => {
      await withTenant(options, async ({ deps, caller }) => {
        const plan = await planDsar(deps, caller, id);
        print(options, plan, () =>
          [
            ...plan.stores.map(
              (s) =>
                `${s.store}/${s.dataset}: delete ${s.deleted}, anonymize ${s.anonymized}, scrub ${s.scrubbed}, keep ${s.retained}${s.retain_reason ? ` (${s.retain_reason})` : ''}`,
            ),
            `files to delete: ${plan.files.deleted.length}; copies out of reach: ${plan.files.out_of_reach.length}; holds: ${plan.holds.length}`,
          ].join('\n'),
        );
      });
    });

  dsar
    .command('receipt')
    .description("a completed request's signed receipt (check it with `ferry receipts verify FILE`)")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<request-id>', 'id of the request')
    .option('--out <file>', 'write it to this file instead of stdout')
    .action(async (id: string, options: TenantOption & { out?: string }) => {
      await withTenant(options, async ({ deps, caller }) => {
        const text = `${JSON.stringify(await dsarReceipt(deps, caller, id), null, 2)}\n`;
        if (options.out) writeFileSync(options.out, text, { flag: 'wx' });
        else process.stdout.write(text);
      });
    });

  dsar
    .command('run')
    .description(
      'run a request now in this process: one that waits for a worker, or a failed one from its failed step',
    )
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<request-id>', 'id of the request')
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption) => {
      await withTenant(options, async ({ deps, caller, command }) => {
        const row = await loadDsar(deps.database, caller.kind === 'team' ? caller.auth.tenantId : '', id);
        if (row.stage === 'completed') {
          // A worker got there first: nothing is left to run.
          const view = await getDsar(deps, caller, id);
          print(options, view, () => requestText(view));
          return;
        }
        if (row.stage !== 'failed' && row.stage !== 'in_progress')
          throw new FerryError(
            'conflict',
            `request ${id} is ${row.status}: it runs once it is verified (and approved, for erasure and rectification)`,
          );
        // Resumed here rather than by a worker: no job is queued for it.
        if (row.stage === 'failed') await rerunDsar({ ...deps, queue: undefined }, caller, id);
        const job = await localJobContext(command);
        const ran = await runDsar(deps, job, await loadDsar(deps.database, row.tenant_id, id));
        if (ran === 'busy') {
          // A worker runs it right now: wait for it to finish rather than run it twice.
          process.stderr.write(`request ${id} is being run by a worker; waiting for it to finish\n`);
          for (let i = 0; i < 1200; i++) {
            const current = await loadDsar(deps.database, row.tenant_id, id);
            if (current.stage !== 'in_progress') break;
            await new Promise((resolve) => setTimeout(resolve, 500));
          }
        }
        const view = await getDsar(deps, caller, id);
        print(options, view, () => requestText(view));
        if (view.status === 'failed') process.exitCode = 1;
      });
    });
}
