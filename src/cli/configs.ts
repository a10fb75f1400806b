import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { AuthContext, Plan } from '../auth/context.ts';
import { loadTenant } from '../collect/tenant.ts';
import { invalid } from '../domain/ferry-error.ts';
import {
  createExportConfig,
  deleteExportConfig,
  type ExportConfigServiceDeps,
  type ExportConfigView,
  getExportConfig,
  listExportConfigs,
  runExportConfig,
  updateExportConfig,
} from '../export-configs/service.ts';
import { createLogger } from '../lib/logger.ts';
import { withCommand } from './context.ts';
import { printTable } from './tenants.ts';

/** The actor recorded in the audit log for configurations saved and run on the command line. */
const CLI_ACTOR = 'cli';

interface TenantOption {
  tenant: string;
  json?: boolean;
}

interface DefinitionOptions {
  tenant: string;
  file?: string;
  /** The definition as JSON text (create and update print text; `show --json` prints JSON). */
  json?: string;
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
  fn: (ctx: { deps: ExportConfigServiceDeps; auth: AuthContext }) => Promise<T>,
  { sendsJobs = false }: { sendsJobs?: boolean } = {},
): Promise<T> {
  return withCommand(async ({ database, config, queue, keys }) => {
    const tenant = await loadTenant(database, options.tenant);
    const deps: ExportConfigServiceDeps = {
      database,
      config,
      queue: sendsJobs ? await queue() : undefined,
      store: undefined,
      signer: undefined,
      secrets: (await keys()).secrets,
      now: () => new Date(),
      logger: createLogger({ logLevel: 'silent' }),
    };
    return await fn({ deps, auth: cliAuth(tenant) });
  });
}

function print(options: { json?: boolean | undefined }, value: unknown, text: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

/** The definition from `--file <path>` ("-" reads stdin) or `--json '<definition>'`. */
function readDefinition(options: DefinitionOptions): unknown {
  if ((options.file === undefined) === (options.json === undefined))
    throw invalid('definition', "give the definition with either --file <path> or --json '<definition>'");
  const [source, text] =
    options.file !== undefined
      ? [`--file ${options.file}`, readFileSync(options.file === '-' ? 0 : options.file, 'utf8')]
      : ['--json', options.json!];
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw invalid('definition', `${source} is not JSON: ${(err as Error).message}`);
  }
}

function when(value: string | null | undefined): string {
  return value ? value.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}

function configText(c: ExportConfigView): string {
  const compiled = c.compiles_to;
  return [
    `export configuration ${c.id}: ${c.export_name}`,
    `  writes    ${compiled ? (compiled.package === 'none' ? compiled.files[0] : `${compiled.package} of ${compiled.files.join(', ')}`) : `nothing: ${c.error}`}`,
    `  schedule  ${c.schedule ? `${c.schedule} (schedule ${c.schedule_id ?? 'none'})` : '-'}`,
    `  last run  ${c.last_run ? `${when(c.last_run.at)} (export ${c.last_run.export_id})` : '-'}`,
  ].join('\n');
}

export function registerConfigs(program: Command): void {
  const configs = program
    .command('configs')
    .description('saved export configurations: list, show, create, update, delete, run');

  configs
    .command('list')
    .description("list a tenant's saved export configurations")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (options: TenantOption) => {
      await withTenant(options, async ({ deps, auth }) => {
        const items: ExportConfigView[] = [];
        let cursor: string | undefined;
        do {
          const page = await listExportConfigs(deps, auth, { limit: 100, cursor });
          items.push(...page.items);
          cursor = page.next_cursor ?? undefined;
        } while (cursor);
        if (options.json || items.length === 0) {
          print(
            options,
            items,
            () => 'no saved export configurations yet: save one with `ferry configs create`',
          );
          return;
        }
        printTable(
          ['ID', 'NAME', 'WRITES', 'SCHEDULE', 'LAST RUN'],
          items.map((c) => [
            c.id,
            c.export_name,
            c.compiles_to
              ? c.compiles_to.package === 'none'
                ? c.compiles_to.files[0]!
                : c.compiles_to.package
              : '-',
            c.schedule ?? '-',
            when(c.last_run?.at),
          ]),
        );
      });
    });

  configs
    .command('show')
    .description('show a saved export configuration, its definition and what it compiles to')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<id-or-name>', 'id or name of the configuration')
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption) => {
      await withTenant(options, async ({ deps, auth }) => {
        const shown = await getExportConfig(deps, auth, id);
        print(options, shown, () => `${configText(shown)}\n${JSON.stringify(shown.definition, null, 2)}`);
      });
    });

  configs
    .command('create')
    .description('save an export configuration, the definition as the product documentation writes it')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--file <path>', 'the definition as JSON ("-" reads stdin)')
    .option('--json <definition>', 'the definition as JSON text')
    .action(async (options: DefinitionOptions) => {
      const definition = readDefinition(options);
      await withTenant({ tenant: options.tenant }, async ({ deps, auth }) => {
        const created = await createExportConfig(deps, auth, definition);
        print({}, created, () => `saved ${configText(created)}`);
      });
    });

  configs
    .command('update')
    .description(
      'change a saved export configuration: the top-level fields given replace its own (null removes one)',
    )
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<id-or-name>', 'id or name of the configuration')
    .option('--file <path>', 'the fields to change as JSON ("-" reads stdin)')
    .option('--json <fields>', 'the fields to change as JSON text')
    .action(async (id: string, options: DefinitionOptions) => {
      const patch = readDefinition(options);
      await withTenant({ tenant: options.tenant }, async ({ deps, auth }) => {
        const updated = await updateExportConfig(deps, auth, id, patch);
        print({}, updated, () => `updated ${configText(updated)}`);
      });
    });

  configs
    .command('delete')
    .description('delete a saved export configuration and the schedule Ferry made for it')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<id-or-name>', 'id or name of the configuration')
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption) => {
      await withTenant(options, async ({ deps, auth }) => {
        const deleted = await deleteExportConfig(deps, auth, id);
        print(options, deleted, () => `deleted ${configText(deleted)}`);
      });
    });

  configs
    .command('run')
    .description(
      'run a saved export configuration now: queues an export that a worker (`ferry worker` or `ferry serve`) writes',
    )
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<id-or-name>', 'id or name of the configuration')
    .option('--json', 'print JSON')
    .action(async (id: string, options: TenantOption) => {
      await withTenant(
        options,
        async ({ deps, auth }) => {
          const { body } = await runExportConfig(deps, auth, id);
          print(
            options,
            body,
            () => `queued export ${body.id} (${body.status}); follow it at GET /api/v1/exports/${body.id}`,
          );
        },
        { sendsJobs: true },
      );
    });
}
