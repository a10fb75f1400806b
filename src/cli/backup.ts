import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { type BackupRow, backupById, listBackups } from '../backup/catalog.ts';
import { backupContext } from '../backup/context.ts';
import { parseKeepPolicy } from '../backup/forget.ts';
import { type LedgerEntry, restoreInto } from '../backup/restore.ts';
import type { KeySecrets } from '../backup/keys.ts';
import { parseManifest } from '../backup/manifest.ts';
import { readObject } from '../backup/repository.ts';
import { loadConfig } from '../config/config.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import {
  type BackupContext,
  forget,
  listRestores,
  prune,
  type RestoreRecord,
  restoreBackup,
  runBackup,
  runDrill,
  verifyBackup,
} from '../backup/service.ts';
import {
  getBackupSettings,
  presentSettings,
  putBackupSettings,
  type SettingsInput,
} from '../backup/settings.ts';
import type { VerifyLevel } from '../backup/verify.ts';
import { loadTenant } from '../collect/tenant.ts';
import type { FerryCommand } from '../compose.ts';
import type { Database } from '../db/database.ts';
import { openDatabase } from '../db/open.ts';
import { postgresDatabase } from '../db/postgres-database.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { LocalObjectStore } from '../store/local-object-store.ts';
import { openKeyring } from '../crypto/open-keyring.ts';
import { withCommand } from './context.ts';
import { createProgress, formatBytes } from './progress.ts';
import { printTable } from './tenants.ts';

/** The CLI acts as the operator: actor `cli` in the audit trail. */
const ACTOR = 'cli';

function print(json: boolean | undefined, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

const when = (iso: string | null) => (iso ? iso.slice(0, 19).replace('T', ' ') : '-');

async function withBackups<T>(
  tenant: string,
  fn: (ctx: BackupContext, tenantId: string, command: FerryCommand) => Promise<T>,
): Promise<T> {
  return withCommand(async (command) => {
    const t = await loadTenant(command.database, tenant);
    const store = await command.store();
    const { secrets } = await command.keys();
    return fn(
      backupContext({ database: command.database, config: command.config, store, secrets }),
      t.id,
      command,
    );
  });
}

function describe(b: BackupRow): string {
  return [
    `backup ${b.id} (${b.kind}, ${b.status})`,
    `  snapshot   ${when(b.snapshot_at)} UTC, schema ${b.schema_version ?? '-'}, Ferry ${b.ferry_version ?? '-'}`,
    `  contents   ${b.tables} tables, ${b.rows} rows, ${formatBytes(b.plain_bytes)}`,
    `  written    ${formatBytes(b.written_bytes)} in ${b.new_chunks} new of ${b.chunks} chunks${b.parent_id ? ` (parent ${b.parent_id})` : ''}`,
    `  where      ${b.destinations.map((d) => `${d.name} (${d.label}, ${d.status})`).join('; ') || '-'}`,
    `  verified   ${b.verify_status ? `${b.verify_status} at ${when(b.verified_at)}` : 'never'}${b.verify_error ? `: ${b.verify_error}` : ''}`,
  ].join('\n');
}

function describeRestore(r: RestoreRecord): string {
  const report = (r.report ?? {}) as Record<string, unknown>;
  const tables =
    (report.tables as { name: string; rows: number; restored: boolean; note?: string }[] | undefined) ?? [];
  const reErased =
    (report.re_erased as { request_id: string; tables: Record<string, number> }[] | undefined) ?? [];
  const lines = [
    `${r.mode === 'drill' ? 'drill' : 'restore'} ${r.id}: ${r.status} (backup ${r.backup_id}, mode ${r.mode})`,
    `  target tenant ${r.target_tenant_id ?? '-'}${report.target_slug ? ` (${report.target_slug})` : ''}`,
    `  tables ${tables.filter((t) => t.restored).length} restored, ${tables.reduce((n, t) => n + (t.restored ? t.rows : 0), 0)} rows`,
    ...tables.filter((t) => !t.restored).map((t) => `    ${t.name}: ${t.note}`),
    `  re-erased ${reErased.length} erased subject(s)${reErased.length ? `: ${reErased.map((e) => `request ${e.request_id}`).join(', ')}` : ''}`,
  ];
  if (report.withheld) lines.push(`  withheld ${(report.withheld as string[]).join(', ') || '-'}`);
  if (r.mode === 'drill' && report.rto_seconds !== undefined)
    lines.push(
      `  RTO ${Number(report.rto_seconds).toFixed(1)} s, RPO ${Math.round(Number(report.rpo_seconds))} s`,
      ...((report.targets as { scenario: string; rto_hours: number; met: boolean }[]) ?? []).map(
        (t) => `    ${t.scenario.padEnd(17)} target ${t.rto_hours} h: ${t.met ? 'met' : 'MISSED'}`,
      ),
    );
  if (r.error) lines.push(`  error ${r.error}`);
  return lines.join('\n');
}

/** Opens another database for `restore --into`: a PostgreSQL URL or an embedded data folder. */
async function openTarget(into: string, schema: string | undefined): Promise<Database> {
  if (/^postgres(ql)?:\/\//.test(into)) {
    const database = postgresDatabase({ connectionString: into, schema });
    if (schema) await database.exec(`CREATE SCHEMA IF NOT EXISTS "${schema.replaceAll('"', '""')}"`);
    await migrateToLatest(database.db);
    return database;
  }
  return openDatabase({ databaseUrl: undefined, databaseSchema: undefined, dataDir: path.resolve(into) });
}

export function registerBackup(program: Command): void {
  const backup = program
    .command('backup')
    .description(
      'tenant backups: create, list, show, verify, restore, drill, forget, prune (docs/backup.md)',
    );

  backup
    .command('create')
    .description('take a backup of a tenant now (incremental: unchanged chunks are reused)')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; json?: boolean }) => {
      await withBackups(options.tenant, async (ctx, tenantId) => {
        const progress = createProgress('backup', 'tables');
        try {
          const row = await runBackup(ctx, {
            tenantId,
            trigger: 'manual',
            actor: ACTOR,
            onProgress: (p) =>
              progress.update(p.tableIndex, p.tables, {
                bytes: `${p.table}: ${p.rows} rows, ${formatBytes(p.bytes)}`,
              }),
          });
          progress.stop();
          print(options.json, row, () => describe(row));
        } finally {
          progress.stop();
        }
      });
    });

  backup
    .command('list')
    .description("a tenant's backups, newest first")
    .option('--tenant <id-or-slug>', 'the tenant')
    .option('--all', 'include running, failed and forgotten backups')
    .option('--from <dir>', 'list the backups in a copy of a destination instead (no database needed)')
    .option('--tenant-id <uuid>', 'with --from: the tenant id (the folder name under backups/)')
    .option('--json', 'print JSON')
    .action(
      async (options: {
        tenant?: string;
        all?: boolean;
        from?: string;
        tenantId?: string;
        json?: boolean;
      }) => {
        if (options.from) {
          await listFolder(options.from, options.tenantId, options.json);
          return;
        }
        if (!options.tenant)
          throw new FerryError('invalid_parameter', '--tenant is required (or --from for a copy)');
        await withBackups(options.tenant, async (ctx, tenantId) => {
          const rows = await listBackups(ctx.database.db, tenantId, { all: options.all ?? false });
          print(options.json, rows, () => {
            if (!rows.length) return 'no backups';
            printTable(
              ['ID', 'SNAPSHOT (UTC)', 'KIND', 'STATUS', 'ROWS', 'SIZE', 'WRITTEN', 'VERIFIED'],
              rows.map((b) => [
                b.id,
                when(b.snapshot_at ?? b.started_at),
                b.kind,
                b.status,
                String(b.rows),
                formatBytes(b.plain_bytes),
                formatBytes(b.written_bytes),
                b.verify_status ?? '-',
              ]),
            );
            return '';
          });
        });
      },
    );

  backup
    .command('show')
    .description('one backup: snapshot, contents, destinations, verification')
    .argument('<backup-id>')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (id: string, options: { tenant: string; json?: boolean }) => {
      await withBackups(options.tenant, async (ctx, tenantId) => {
        const row = await backupById(ctx.database.db, tenantId, id);
        if (!row) throw new FerryError('not_found', `no backup ${id} of this tenant`);
        print(options.json, row, () => describe(row));
      });
    });

  backup
    .command('verify')
    .description(
      'check a backup at each destination (--quick: structure and presence; --full: read every byte)',
    )
    .argument('[backup-id]', 'default: the latest backup')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--quick', 'manifests, signatures, key files, every chunk present (the default)')
    .option('--full', 'also read, decrypt and hash every chunk and table stream')
    .option('--json', 'print JSON')
    .action(
      async (
        id: string | undefined,
        options: { tenant: string; quick?: boolean; full?: boolean; json?: boolean },
      ) => {
        await withBackups(options.tenant, async (ctx, tenantId) => {
          const backupId = id ?? (await listBackups(ctx.database.db, tenantId, { limit: 1 }))[0]?.id;
          if (!backupId) throw new FerryError('not_found', 'this tenant has no completed backup');
          const level: VerifyLevel = options.full ? 'full' : 'quick';
          const result = await verifyBackup(ctx, { tenantId, backupId, level, actor: ACTOR });
          print(options.json, result, () =>
            [
              `backup ${backupId}: ${result.ok ? 'ok' : 'FAILED'} (${level})`,
              ...result.destinations.map(
                (d) =>
                  `  ${d.destination}: ${d.ok ? `ok, ${d.chunks_checked} chunks${level === 'full' ? `, ${formatBytes(d.bytes_read)} read` : ''}, signature ${d.signature}` : d.error}`,
              ),
            ].join('\n'),
          );
          if (!result.ok) process.exitCode = 1;
        });
      },
    );

  backup
    .command('restore')
    .description('restore a backup: into a sandbox tenant, over the live tenant, or into another database')
    .argument('<backup-id>')
    .option('--tenant <id-or-slug>', 'the tenant (not with --from)')
    .option('--sandbox', 'restore into a new tenant beside the live one (the default)')
    .option('--replace', 'restore over the live tenant (after a backup of its current state); needs --yes')
    .option('--into <url-or-dir>', 'restore into another database: a PostgreSQL URL or a Ferry data folder')
    .option('--into-schema <schema>', 'with a PostgreSQL --into: the schema that holds Ferry there')
    .option('--destination <name>', 'the destination to read from (default: the first that has the backup)')
    .option(
      '--from <dir>',
      'restore from a copy of a destination (a folder holding backups/<tenant>/…), without this Ferry',
    )
    .option('--tenant-id <uuid>', 'with --from: the tenant id (the folder name under backups/)')
    .option(
      '--identity <file>',
      "with --from: the tenant's age identity file, which opens the backup key (default: the operator's secret key)",
    )
    .option('--yes', 'confirm --replace')
    .option('--json', 'print JSON')
    .action(
      async (
        id: string,
        options: {
          tenant?: string;
          sandbox?: boolean;
          replace?: boolean;
          into?: string;
          intoSchema?: string;
          destination?: string;
          from?: string;
          tenantId?: string;
          identity?: string;
          yes?: boolean;
          json?: boolean;
        },
      ) => {
        if (options.from) {
          await restoreFromFolder(id, options);
          return;
        }
        if (!options.tenant)
          throw new FerryError('invalid_parameter', '--tenant is required (or --from for a copy)');
        if ([options.sandbox, options.replace, options.into].filter(Boolean).length > 1)
          throw new FerryError('invalid_parameter', 'choose one of --sandbox, --replace and --into');
        await withBackups(options.tenant, async (ctx, tenantId) => {
          const progress = createProgress('restore', 'tables');
          const target = options.into ? await openTarget(options.into, options.intoSchema) : undefined;
          try {
            const record = await restoreBackup(ctx, {
              tenantId,
              backupId: id,
              mode: options.into ? 'database' : options.replace ? 'replace' : 'sandbox',
              confirm: options.yes ?? false,
              destination: options.destination,
              target,
              actor: ACTOR,
              onProgress: (p) =>
                progress.update(p.tableIndex, p.tables, { bytes: `${p.table}: ${p.rows} rows` }),
            });
            progress.stop();
            print(options.json, record, () => describeRestore(record));
          } finally {
            progress.stop();
            await target?.close();
          }
        });
      },
    );

  backup
    .command('drill')
    .description('restore the latest backup into a throwaway sandbox, compare, time it (RTO, RPO), delete it')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--backup <id>', 'drill this backup instead of the latest')
    .option('--history', 'list earlier drills instead of running one')
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; backup?: string; history?: boolean; json?: boolean }) => {
      await withBackups(options.tenant, async (ctx, tenantId) => {
        if (options.history) {
          const drills = await listRestores(ctx.database.db, tenantId, { drills: true });
          print(options.json, drills, () => drills.map(describeRestore).join('\n\n') || 'no drills');
          return;
        }
        const record = await runDrill(ctx, { tenantId, actor: ACTOR, backupId: options.backup });
        print(options.json, record, () => describeRestore(record));
      });
    });

  backup
    .command('forget')
    .description("drop the backups the keep policy does not keep (restic's forget); chunks go with prune")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--keep-last <n>')
    .option('--keep-hourly <n>')
    .option('--keep-daily <n>')
    .option('--keep-weekly <n>')
    .option('--keep-monthly <n>')
    .option('--keep-yearly <n>')
    .option('--keep-within <duration>', 'ISO 8601 duration, e.g. P30D')
    .option('--dry-run', 'show what would be forgotten')
    .option('--prune', 'prune afterwards')
    .option('--json', 'print JSON')
    .action(async (options: Record<string, string | boolean | undefined> & { tenant: string }) => {
      const rules: Record<string, unknown> = {};
      for (const k of ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const) {
        const flag = options[`keep${k[0]!.toUpperCase()}${k.slice(1)}`];
        if (flag !== undefined) rules[`keep_${k}`] = Number(flag);
      }
      if (options.keepWithin) rules.keep_within = options.keepWithin;
      await withBackups(options.tenant, async (ctx, tenantId) => {
        const result = await forget(ctx, {
          tenantId,
          dryRun: Boolean(options.dryRun),
          ...(Object.keys(rules).length ? { policy: parseKeepPolicy(rules) as Record<string, unknown> } : {}),
          actor: ACTOR,
        });
        const pruned = options.prune && !options.dryRun ? await prune(ctx, { tenantId, actor: ACTOR }) : null;
        print(options.json as boolean | undefined, { ...result, prune: pruned }, () =>
          [
            ...result.decisions.map(
              (d) =>
                `${d.keep ? 'keep  ' : options.dryRun ? 'would forget' : 'forget'} ${d.id} ${when(d.snapshot_at)} ${d.reasons.join(', ')}`,
            ),
            result.held_by.length
              ? `nothing forgotten: legal hold(s) ${result.held_by.join(', ')} active`
              : '',
            ...(pruned?.destinations.map(
              (d) =>
                `pruned ${d.destination}: ${d.chunks_deleted} chunks, ${formatBytes(d.bytes_freed)} freed`,
            ) ?? []),
          ]
            .filter(Boolean)
            .join('\n'),
        );
      });
    });

  backup
    .command('prune')
    .description('delete chunks no kept backup uses (never while a backup of the tenant runs)')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; json?: boolean }) => {
      await withBackups(options.tenant, async (ctx, tenantId) => {
        const result = await prune(ctx, { tenantId, actor: ACTOR });
        print(options.json, result, () =>
          result.destinations
            .map(
              (d) =>
                `${d.destination}: ${d.chunks_deleted} chunks deleted (${formatBytes(d.bytes_freed)}), ${d.chunks_kept} kept, ${d.manifests_deleted} stray manifests deleted`,
            )
            .join('\n'),
        );
      });
    });

  backup
    .command('settings')
    .description("show or change a tenant's backup schedule, destinations and keep policy")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--enable', 'take scheduled backups')
    .option('--disable', 'stop scheduled backups')
    .option('--frequency <daily|weekly>')
    .option('--time <HH:MM>', 'time of day in the tenant time zone')
    .option('--destinations <json>', 'JSON array of destinations (local folders allowed here)')
    .option('--keep <json>', 'JSON keep policy, e.g. {"keep_daily":7,"keep_weekly":4}')
    .option('--stored-files <reference|content>')
    .option(
      '--recipient <age1…>',
      "the tenant's age recipient (repeat for several)",
      (v: string, p: string[] = []) => [...p, v],
    )
    .option('--json', 'print JSON')
    .action(
      async (options: {
        tenant: string;
        enable?: boolean;
        disable?: boolean;
        frequency?: string;
        time?: string;
        destinations?: string;
        keep?: string;
        storedFiles?: string;
        recipient?: string[];
        json?: boolean;
      }) => {
        const parse = (flag: string, text: string | undefined) => {
          if (text === undefined) return undefined;
          try {
            return JSON.parse(text) as unknown;
          } catch {
            throw new FerryError('invalid_parameter', `${flag} must be JSON`);
          }
        };
        const input: SettingsInput = {
          ...(options.enable ? { enabled: true } : {}),
          ...(options.disable ? { enabled: false } : {}),
          ...(options.frequency ? { frequency: options.frequency } : {}),
          ...(options.time ? { time_of_day: options.time } : {}),
          ...(options.destinations ? { destinations: parse('--destinations', options.destinations) } : {}),
          ...(options.keep ? { keep: parse('--keep', options.keep) as Record<string, unknown> } : {}),
          ...(options.storedFiles ? { stored_files: options.storedFiles } : {}),
          ...(options.recipient ? { recipients: options.recipient } : {}),
        };
        await withBackups(options.tenant, async (ctx, tenantId) => {
          const settings = Object.keys(input).length
            ? await putBackupSettings(ctx.database.db, tenantId, input, {
                secrets: ctx.secrets,
                actor: ACTOR,
                allowLocal: true,
              })
            : await getBackupSettings(ctx.database.db, tenantId);
          const shown = await presentSettings(settings, ctx.secrets);
          print(options.json, shown, () => JSON.stringify(shown, null, 2));
        });
      },
    );
}

/**
 * A restore from a copy of a destination, without Ferry's catalog: a tenant alone with its age
 * identity, or the operator with the master key after losing the database. Into a database of
 * their own (nothing to replay: that database has no erasure ledger of the tenant).
 */
async function restoreFromFolder(
  backupId: string,
  options: {
    from?: string;
    tenantId?: string;
    identity?: string;
    into?: string;
    intoSchema?: string;
    json?: boolean;
  },
): Promise<void> {
  if (!options.tenantId || !options.into)
    throw new FerryError('invalid_parameter', '--from needs --tenant-id and --into');
  const target = await openTarget(options.into, options.intoSchema);
  try {
    await restoreFolderInto(target, backupId, { ...options, tenantId: options.tenantId });
  } finally {
    await target.close();
  }
}

async function restoreFolderInto(
  target: Database,
  backupId: string,
  options: { from?: string; tenantId: string; identity?: string; into?: string; json?: boolean },
): Promise<void> {
  // The target's keyring under the configured master key: the data keys the backup carries join it.
  const config = loadConfig();
  const keys = await openKeyring(target, config);
  let secrets: KeySecrets;
  let ledgerKey: string | undefined;
  if (options.identity) {
    const identities = (await readFile(options.identity, 'utf8'))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith('AGE-SECRET-KEY-'));
    if (!identities.length)
      throw new FerryError('invalid_parameter', `${options.identity} holds no AGE-SECRET-KEY line`);
    secrets = { identities };
  } else {
    // The operator restoring after losing the database: the master key of the environment or
    // data folder opens the key file.
    secrets = { secrets: keys.secrets };
    ledgerKey = loadOrCreateSecretKey(config);
  }
  // The erasure ledgers every backup in the copy recorded: the newest ones name the latest erasures.
  const store = new LocalObjectStore({ root: path.resolve(options.from ?? '.') });
  const ledger: LedgerEntry[] = [];
  for await (const o of store.list(`backups/${options.tenantId}/manifests/`)) {
    const bytes = await readObject(store, o.key);
    if (!bytes) continue;
    for (const e of parseManifest(bytes, o.key).manifest.erasure_ledger ?? [])
      if (!ledger.some((l) => l.request_id === e.request_id)) ledger.push(e);
  }
  const report = await restoreInto({
    store,
    destinationName: 'folder',
    tenantId: options.tenantId,
    backupId,
    mode: 'database',
    target,
    verifier: null,
    secrets,
    keyring: keys.keyring,
    ledger,
    // Erased people are named by a hash keyed with the operator's secret: only it can replay them.
    ledgerKey,
  });
  print(options.json, report, () =>
    [
      `restored backup ${backupId} (snapshot ${when(report.snapshot_at)} UTC) into ${options.into}`,
      `  ${report.tables.filter((t) => t.restored).length} tables, ${report.tables.reduce((n, t) => n + t.rows, 0)} rows; manifest MAC checked, signature ${report.signature}`,
    ].join('\n'),
  );
}

/** The backups of a tenant in a copy of a destination, from their manifests, newest first. */
async function listFolder(
  from: string,
  tenantId: string | undefined,
  json: boolean | undefined,
): Promise<void> {
  const store = new LocalObjectStore({ root: path.resolve(from) });
  const tenants: string[] = [];
  if (tenantId) tenants.push(tenantId);
  else
    for await (const o of store.list('backups/'))
      if (o.key.includes('/manifests/')) {
        const t = o.key.split('/')[1]!;
        if (!tenants.includes(t)) tenants.push(t);
      }
  const rows: {
    tenant_id: string;
    tenant_slug: string;
    id: string;
    snapshot_at: string;
    kind: string;
    rows: number;
  }[] = [];
  for (const t of tenants)
    for await (const o of store.list(`backups/${t}/manifests/`)) {
      const bytes = await readObject(store, o.key);
      if (!bytes) continue;
      const { manifest } = parseManifest(bytes, o.key);
      rows.push({
        tenant_id: manifest.tenant_id,
        tenant_slug: manifest.tenant_slug,
        id: manifest.backup_id,
        snapshot_at: manifest.snapshot_at,
        kind: manifest.kind,
        rows: manifest.tables.reduce((n, x) => n + x.rows, 0),
      });
    }
  rows.sort((a, b) => b.snapshot_at.localeCompare(a.snapshot_at));
  print(json, rows, () => {
    if (!rows.length) return 'no backups';
    printTable(
      ['TENANT', 'SLUG', 'ID', 'SNAPSHOT (UTC)', 'KIND', 'ROWS'],
      rows.map((r) => [r.tenant_id, r.tenant_slug, r.id, when(r.snapshot_at), r.kind, String(r.rows)]),
    );
    return '';
  });
}
