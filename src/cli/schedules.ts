import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import type { AuthContext, Plan } from '../auth/context.ts';
import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { loadTenant } from '../collect/tenant.ts';
import type { ScheduleInput } from '../schedules/automated-export-config.ts';
import type { RunView, ScheduleView } from '../schedules/presenter.ts';
import {
  createSchedule,
  deleteSchedule,
  listRuns,
  listSchedules,
  pauseSchedule,
  resumeSchedule,
  runScheduleNow,
  type ScheduleServiceDeps,
} from '../schedules/service.ts';
import { withCommand } from './context.ts';
import { printTable } from './tenants.ts';

/** The actor recorded in the audit log for schedule changes made on the command line. */
const CLI_ACTOR = 'cli';

interface TenantOption {
  tenant: string;
  json?: boolean;
}

interface CreateOptions extends TenantOption {
  file?: string;
  name?: string;
  frequency?: string;
  time?: string;
  timezone?: string;
  datasets?: string;
  format?: string;
  compression?: string;
  layout?: string;
  folder?: string;
  paused?: boolean;
}

/** The CLI acts as an admin of the tenant. */
function cliAuth(tenant: { id: string; plan: string }): AuthContext {
  return {
    tenantId: tenant.id,
    plan: tenant.plan as Plan,
    role: 'admin',
    apiKeyId: null,
    teamMemberId: null,
    scopes: [],
    actor: CLI_ACTOR,
    ip: null,
    userAgent: null,
  };
}

async function withTenant<T>(
  options: TenantOption,
  fn: (ctx: {
    deps: ScheduleServiceDeps;
    auth: AuthContext;
    database: Database;
    config: Config;
  }) => Promise<T>,
  /** `sendsJobs`: the command queues jobs (`ferry schedules run`); the queue stops with the command. */
  { sendsJobs = false }: { sendsJobs?: boolean } = {},
): Promise<T> {
  return withCommand(async ({ database, config, queue, keys }) => {
    const tenant = await loadTenant(database, options.tenant);
    const jobs = sendsJobs ? await queue() : undefined;
    // The command line is the operator's: it may set folder targets (a folder of this server).
    const deps: ScheduleServiceDeps = {
      database,
      config,
      secrets: (await keys()).secrets,
      queue: jobs,
      now: () => new Date(),
      operator: true,
    };
    return await fn({ deps, auth: cliAuth(tenant), database, config });
  });
}

function print(options: { json?: boolean | undefined }, value: unknown, text: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

/** `daily`, `weekly:mon,thu`, `monthly:1` (or `monthly:last`), `cron:0 2 * * *`. */
function parseFrequencyFlag(value: string): ScheduleInput['frequency'] {
  const [type, rest] = [value.split(':')[0]!, value.slice(value.indexOf(':') + 1)];
  switch (type) {
    case 'daily':
      return { type: 'daily' };
    case 'weekly':
      return { type: 'weekly', days: rest.split(',').map((d) => d.trim()) };
    case 'monthly':
      return { type: 'monthly', day_of_month: rest === 'last' ? 'last' : Number(rest) };
    case 'cron':
      return { type: 'cron', expression: rest };
    default:
      throw new InvalidArgumentError(
        `--frequency must be daily, weekly:<days>, monthly:<date|last> or cron:<expression>, got "${value}"`,
      );
  }
}

/** `conversations,messages:incremental,analytics:window:previous_day,customers:window:7`. */
function parseDatasetsFlag(value: string): ScheduleInput['datasets'] {
  return value.split(',').map((item) => {
    const [dataset, mode, arg] = item.trim().split(':');
    if (!mode) return { dataset };
    if (mode !== 'window') return { dataset, mode };
    if (arg && /^\d+$/.test(arg)) return { dataset, mode, days: Number(arg) };
    return { dataset, mode, ...(arg ? { period: arg } : {}) };
  });
}

function readBody(file: string): Record<string, unknown> {
  const text = readFileSync(file === '-' ? 0 : file, 'utf8');
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`--file: ${file} is not JSON: ${(err as Error).message}`);
  }
}

function when(value: string | null | undefined): string {
  return value ? value.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}

function describeFrequency(s: ScheduleView): string {
  const f = s.frequency;
  const at = s.time ? ` ${s.time}` : '';
  switch (f.type) {
    case 'weekly':
      return `weekly ${f.days?.join(',')}${at} ${s.timezone}`;
    case 'monthly':
      return `monthly ${f.day_of_month}${at} ${s.timezone}`;
    case 'cron':
      return `cron "${f.expression}" ${s.timezone}`;
    default:
      return `daily${at} ${s.timezone}`;
  }
}

function scheduleText(s: ScheduleView): string {
  return [
    `schedule ${s.id}: ${s.name} (${s.status})`,
    `  when      ${describeFrequency(s)} (cron ${s.cron})`,
    `  next run  ${when(s.next_run_at)}`,
    `  datasets  ${s.datasets.map((d) => `${d.dataset}:${d.mode}${d.days ? `:${d.days}d` : d.period ? `:${d.period}` : ''}`).join(', ')}`,
    `  layout    ${s.layout}`,
    `  targets   ${s.targets.length ? s.targets.map((t) => String(t.type)).join(', ') : '(download links only)'}`,
  ].join('\n');
}

function runText(r: RunView): string {
  return `run ${r.run_number} (${r.id}) ${r.status}, due ${when(r.due_at)}`;
}

export function registerSchedules(program: Command): void {
  const schedules = program
    .command('schedules')
    .description('scheduled exports: list, create, pause, resume, run now, delete, history');

  schedules
    .command('list')
    .description("list a tenant's schedules with their next and last runs")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (options: TenantOption) => {
      await withTenant(options, async ({ deps, auth }) => {
        const items: ScheduleView[] = [];
        let cursor: string | undefined;
        do {
          const page = await listSchedules(deps, auth, { limit: 100, cursor });
          items.push(...page.items);
          cursor = page.next_cursor ?? undefined;
        } while (cursor);
        if (options.json || items.length === 0) {
          print(options, items, () => 'no schedules yet: create one with `ferry schedules create`');
          return;
        }
        printTable(
          ['ID', 'NAME', 'STATUS', 'WHEN', 'NEXT RUN', 'LAST RUN'],
          items.map((s) => [
            s.id,
            s.name,
            s.status,
            describeFrequency(s),
            when(s.next_run_at),
            s.last_run ? `${s.last_run.status} (run ${s.last_run.run_number})` : '-',
          ]),
        );
      });
    });

  schedules
    .command('create')
    .description('create a schedule from a JSON file (native fields or {"export_config": ...}) and/or flags')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--file <path>', 'JSON body as for POST /api/v1/schedules ("-" reads stdin)')
    .option('--name <name>', 'the schedule name')
    .option(
      '--frequency <spec>',
      'daily | weekly:mon,thu | monthly:1 | monthly:last | cron:"0 2 * * *"',
      parseFrequencyFlag,
    )
    .option('--time <HH:MM>', 'time of day in the schedule time zone')
    .option('--timezone <zone>', "IANA time zone (default: the tenant's)")
    .option(
      '--datasets <list>',
      'dataset[:mode[:days|period]],... e.g. conversations:incremental,analytics:window:previous_day',
      parseDatasetsFlag,
    )
    .option('--format <format>', 'file format')
    .option('--compression <compression>', 'none, gzip or zstd')
    .option('--layout <layout>', 'files (one file per dataset per run) or lake (Parquet partitioned by day)')
    .option(
      '--folder <path>',
      'deliver to this folder of the server (an absolute path), besides --file targets',
    )
    .option('--paused', 'create it paused')
    .option('--json', 'print JSON')
    .action(async (options: CreateOptions & { frequency?: unknown; datasets?: unknown }) => {
      const body: Record<string, unknown> = options.file ? readBody(options.file) : {};
      for (const key of [
        'name',
        'frequency',
        'time',
        'timezone',
        'datasets',
        'format',
        'compression',
        'layout',
      ] as const)
        if (options[key] !== undefined) body[key] = options[key];
      if (options.folder !== undefined)
        body.targets = [
          ...(Array.isArray(body.targets) ? body.targets : []),
          { type: 'folder', path: options.folder },
        ];
      if (options.paused) body.status = 'paused';
      await withTenant(options, async ({ deps, auth }) => {
        const created = await createSchedule(deps, auth, body as ScheduleInput);
        print(options, created, () => `created ${scheduleText(created)}`);
      });
    });

  for (const [name, description, action] of [
    ['pause', 'pause a schedule (no runs until resumed)', pauseSchedule],
    ['resume', 'resume a paused schedule from its next slot', resumeSchedule],
    ['delete', 'delete a schedule with its history and checkpoints', deleteSchedule],
  ] as const) {
    schedules
      .command(name)
      .description(description)
      .requiredOption('--tenant <id-or-slug>', 'the tenant')
      .argument('<schedule-id>', 'id of the schedule (see `ferry schedules list`)')
      .option('--json', 'print JSON')
      .action(async (id: string, options: TenantOption) => {
        await withTenant(options, async ({ deps, auth }) => {
          const result = await action(deps, auth, id);
          print(
            options,
            result,
            () => `${name === 'delete' ? 'deleted' : `${name}d`} ${scheduleText(result)}`,
          );
        });
      });
  }

  schedules
    .command('run')
    .description('run a schedule now: queues a run that a worker (`ferry worker` or `ferry serve`) picks up')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<schedule-id>', 'id of the schedule')
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption) => {
      await withTenant(
        options,
        async ({ deps, auth }) => {
          const run = await runScheduleNow(deps, auth, id);
          print(
            options,
            run,
            () =>
              `queued ${runText(run)}; follow it with \`ferry schedules history --tenant ${options.tenant} ${id}\``,
          );
        },
        { sendsJobs: true },
      );
    });

  schedules
    .command('history')
    .description("a schedule's runs, newest first: status, counts, size, checksum and deliveries per target")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<schedule-id>', 'id of the schedule')
    .option('--limit <n>', 'runs to show (1-100)', (v: string) => {
      const n = Number(v);
      if (!/^\d+$/.test(v) || n < 1 || n > 100)
        throw new InvalidArgumentError(`--limit must be an integer from 1 to 100, got "${v}"`);
      return n;
    })
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption & { limit?: number }) => {
      await withTenant(options, async ({ deps, auth }) => {
        const { items } = await listRuns(deps, auth, id, { limit: options.limit ?? 20 });
        if (options.json || items.length === 0) {
          print(options, items, () => `schedule ${id} has not run yet`);
          return;
        }
        printTable(
          ['RUN', 'STATUS', 'DUE', 'FINISHED', 'RECORDS', 'DELETIONS', 'BYTES', 'SHA-256', 'DELIVERIES'],
          items.map((r) => [
            String(r.run_number),
            r.status,
            when(r.due_at),
            when(r.finished_at),
            String(r.records),
            String(r.tombstones),
            String(r.bytes),
            r.checksum ? r.checksum.value.slice(0, 16) : r.files.length > 1 ? `${r.files.length} files` : '-',
            r.deliveries.map((d) => `${d.target.type}:${d.status}`).join(' ') || '-',
          ]),
        );
      });
    });
}
