import { randomUUID } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import { recordAudit } from '../auth/audit.ts';
import type { DataMap } from '../datamap/types.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { utcInstantSql } from '../db/keyset.ts';
import type { DB } from '../db/schema.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { OutboundPolicy } from '../lib/ssrf.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { activeHolds } from '../privacy/holds.ts';
import { emitEvent } from '../webhooks/emit.ts';
import { type BackupRow, backupById, latestCompleted } from './catalog.ts';
import { type BackupProgress, createBackup, registerBackup } from './create.ts';
import type { CdcSizes } from './fastcdc.ts';
import { parseKeepPolicy } from './forget.ts';
import { destroyTenantKeys } from './keys.ts';
import { type ForgetResult, forgetBackups, type PruneResult, pruneBackups } from './prune.ts';
import { keyObjectKey, repositoryPrefix } from './repository.ts';
import { type LedgerEntry, type RestoreMode, type RestoreReport, restoreInto } from './restore.ts';
import {
  type BackupSettings,
  getBackupSettings,
  type OpenedDestination,
  openDestination,
} from './settings.ts';
import { type DestinationCheck, type VerifyLevel, verifyAt } from './verify.ts';

/** What the backup operations need; `compose.ts` builds it. */
export interface BackupContext {
  readonly database: Database;
  /** Keys the erasure ledger's subject hashes (HMAC). */
  readonly secretKey: string;
  /** Opens destination credentials and backup keys, seals new backup keys. */
  readonly secrets: SecretBox;
  /** The operator's storage without encryption at rest (backup chunks are encrypted already). */
  readonly defaultStore: ObjectStore;
  /** The file store of exports (stored files backed up by content are read from and restored to it). */
  readonly files: ObjectStore;
  readonly outbound: OutboundPolicy;
  readonly now?: () => Date;
  readonly map?: DataMap;
  readonly sizes?: CdcSizes;
}

const clock = (ctx: BackupContext) => (ctx.now ?? (() => new Date()))();

/** Opens every destination of the settings (closing the ones opened when one fails). */
export async function openDestinations(
  ctx: BackupContext,
  settings: BackupSettings,
): Promise<OpenedDestination[]> {
  const out: OpenedDestination[] = [];
  try {
    for (const d of settings.destinations)
      out.push(
        await openDestination(d, {
          defaultStore: ctx.defaultStore,
          secrets: ctx.secrets,
          outbound: ctx.outbound,
        }),
      );
    return out;
  } catch (err) {
    for (const d of out) await d.close().catch(() => {});
    throw err;
  }
}

async function withDestinations<T>(
  ctx: BackupContext,
  tenantId: string,
  work: (destinations: OpenedDestination[], settings: BackupSettings) => Promise<T>,
): Promise<T> {
  const settings = await getBackupSettings(ctx.database.db, tenantId);
  const destinations = await openDestinations(ctx, settings);
  try {
    return await work(destinations, settings);
  } finally {
    for (const d of destinations) await d.close().catch(() => {});
  }
}

/** Takes a backup (createBackup), with its audit event and webhook. */
export async function runBackup(
  ctx: BackupContext,
  input: {
    id?: string;
    tenantId: string;
    trigger: 'manual' | 'schedule' | 'pre_restore' | 'api';
    actor: string;
    onProgress?: (p: BackupProgress) => void;
  },
): Promise<BackupRow> {
  // Registered first, so a failure below is reported with the backup it failed.
  const id = input.id ?? (await registerBackup(ctx.database.db, input, clock(ctx)));
  try {
    const row = await createBackup(
      {
        database: ctx.database,
        secrets: ctx.secrets,
        destinations: (settings) => openDestinations(ctx, settings),
        files: ctx.files,
        ...(ctx.map ? { map: ctx.map } : {}),
        ...(ctx.sizes ? { sizes: ctx.sizes } : {}),
        ...(ctx.now ? { now: ctx.now } : {}),
        ...(input.onProgress ? { onProgress: input.onProgress } : {}),
      },
      { ...input, id },
    );
    await recordAudit(ctx.database, {
      tenantId: input.tenantId,
      actor: input.actor,
      action: 'backup.completed',
      targetId: row.id,
      dataType: 'backup',
      recordCount: row.rows,
      fileBytes: row.written_bytes,
      success: true,
    });
    await emitEvent(ctx.database, input.tenantId, 'backup.completed', {
      data: {
        backup_id: row.id,
        kind: row.kind,
        trigger: row.trigger,
        snapshot_at: row.snapshot_at,
        rows: row.rows,
        plain_bytes: row.plain_bytes,
        written_bytes: row.written_bytes,
        destinations: row.destinations.map((d) => d.name),
      },
    });
    return row;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    await recordAudit(ctx.database, {
      tenantId: input.tenantId,
      actor: input.actor,
      action: 'backup.failed',
      targetId: id,
      dataType: 'backup',
      success: false,
      error: message,
    }).catch(() => {});
    await emitEvent(ctx.database, input.tenantId, 'backup.failed', {
      data: { backup_id: id, trigger: input.trigger, error: message },
    }).catch(() => {});
    throw err;
  }
}

export interface VerifyResult {
  readonly backup_id: string;
  readonly level: VerifyLevel;
  readonly ok: boolean;
  readonly destinations: readonly DestinationCheck[];
}

/** Verifies a backup at each of its destinations, records the result and sends `backup.verified`. */
export async function verifyBackup(
  ctx: BackupContext,
  input: { tenantId: string; backupId: string; level: VerifyLevel; actor: string },
): Promise<VerifyResult> {
  const backup = await requireBackup(ctx.database.db, input.tenantId, input.backupId);
  const checks = await withDestinations(ctx, input.tenantId, async (destinations) => {
    const written = destinations.filter((d) => backup.destinations.some((b) => b.name === d.name));
    const out: DestinationCheck[] = [];
    for (const d of written.length ? written : destinations)
      out.push(
        await verifyAt(d.store, d.name, {
          tenantId: input.tenantId,
          backupId: input.backupId,
          level: input.level,
          secrets: { secrets: ctx.secrets },
          verifier: ctx.database,
        }),
      );
    return out;
  });
  const ok = checks.every((c) => c.ok);
  const now = clock(ctx);
  const firstError = checks.find((c) => !c.ok)?.error ?? null;
  await sql`UPDATE backups SET verified_at = ${now}, verify_status = ${ok ? `ok (${input.level})` : `failed (${input.level})`},
      verify_error = ${firstError},
      destinations = ${JSON.stringify(
        backup.destinations.map((d) => {
          const c = checks.find((x) => x.destination === d.name);
          return c
            ? {
                ...d,
                verified_at: now.toISOString(),
                status: c.ok ? 'verified' : 'corrupt',
                error: c.error ?? undefined,
              }
            : d;
        }),
      )}::jsonb
    WHERE id = ${input.backupId}`.execute(ctx.database.db);
  await recordAudit(ctx.database, {
    tenantId: input.tenantId,
    actor: input.actor,
    action: 'backup.verified',
    targetId: input.backupId,
    dataType: 'backup',
    success: ok,
    error: firstError,
  });
  await emitEvent(ctx.database, input.tenantId, 'backup.verified', {
    data: {
      backup_id: input.backupId,
      level: input.level,
      ok,
      destinations: checks.map((c) => ({ destination: c.destination, ok: c.ok, error: c.error })),
    },
  });
  return { backup_id: input.backupId, level: input.level, ok, destinations: checks };
}

async function requireBackup(db: Kysely<DB>, tenantId: string, backupId: string): Promise<BackupRow> {
  const backup = await backupById(db, tenantId, backupId);
  if (backup?.status !== 'completed')
    throw new FerryError('not_found', `no completed backup ${backupId} of this tenant`);
  return backup;
}

/** The tenant's erasure ledger, as a restore replays it. */
export async function erasureLedger(db: Kysely<DB>, tenantId: string): Promise<LedgerEntry[]> {
  const r = await sql<LedgerEntry>`SELECT request_id::text AS request_id, subject_key,
      ${sql.raw(utcInstantSql('erased_at'))} AS erased_at
    FROM erasure_ledger WHERE tenant_id = ${tenantId} ORDER BY erased_at`.execute(db);
  return r.rows;
}

export interface RestoreRecord {
  readonly id: string;
  readonly tenant_id: string;
  readonly backup_id: string;
  readonly mode: RestoreMode;
  readonly target_tenant_id: string | null;
  readonly status: 'running' | 'completed' | 'failed';
  readonly actor: string;
  readonly report: (RestoreReport & Record<string, unknown>) | Record<string, unknown> | null;
  readonly error: string | null;
  readonly started_at: string;
  readonly finished_at: string | null;
}

export interface RestoreRequest {
  /** A restore registered already (queued by the API); a new one otherwise. */
  readonly restoreId?: string | undefined;
  readonly tenantId: string;
  readonly backupId: string;
  readonly mode: Exclude<RestoreMode, 'drill'>;
  /** `replace` overwrites the live tenant: it must be confirmed. */
  readonly confirm?: boolean;
  /** The destination to read from (default: the first that has the backup). */
  readonly destination?: string | undefined;
  /** `database`: the other database (opened and migrated by the caller). */
  readonly target?: Database | undefined;
  readonly actor: string;
  readonly onProgress?: (p: { table: string; rows: number; tableIndex: number; tables: number }) => void;
}

/**
 * A restore over the live tenant deletes its current rows, among them what a legal hold keeps
 * (rows written since the backup): refused while a hold is active (`conflict`).
 */
export async function refuseReplaceUnderHold(database: Database, tenantId: string): Promise<void> {
  const holds = await activeHolds(database, tenantId);
  if (holds.length)
    throw new FerryError(
      'conflict',
      `a legal hold (${holds.map((h) => h.matter).join(', ')}) keeps this account's data: restore into a sandbox instead, or release the hold`,
      { holds: holds.map((h) => h.id) },
    );
}

/**
 * Restores a backup (restoreInto) and records it. `replace` first takes a backup of the
 * current state (trigger `pre_restore`), so a restore can itself be undone.
 */
export async function restoreBackup(ctx: BackupContext, request: RestoreRequest): Promise<RestoreRecord> {
  const backup = await requireBackup(ctx.database.db, request.tenantId, request.backupId);
  if (request.mode === 'replace' && request.confirm !== true)
    throw invalid(
      'confirm',
      'restoring over the live tenant replaces its data with the backup: confirm it (a backup of the current state is taken first)',
    );
  if (request.mode === 'database' && !request.target)
    throw invalid('target', 'mode database needs the target database');
  if (request.mode === 'replace') await refuseReplaceUnderHold(ctx.database, request.tenantId);
  let preRestore: BackupRow | null = null;
  if (request.mode === 'replace')
    preRestore = await runBackup(ctx, {
      tenantId: request.tenantId,
      trigger: 'pre_restore',
      actor: request.actor,
    });
  return runRestore(ctx, backup, request.mode, request, async (store, name) => {
    const target = request.mode === 'database' ? request.target! : ctx.database;
    const ledger = await erasureLedger(ctx.database.db, request.tenantId);
    if (target !== ctx.database) {
      const theirs = await erasureLedger(target.db, request.tenantId).catch(() => []);
      for (const e of theirs) if (!ledger.some((l) => l.request_id === e.request_id)) ledger.push(e);
    }
    const report = await restoreInto({
      store,
      destinationName: name,
      tenantId: request.tenantId,
      backupId: request.backupId,
      mode: request.mode,
      target,
      verifier: ctx.database,
      secrets: { secrets: ctx.secrets },
      keyring: ctx.secrets.keyring,
      ledger,
      ledgerKey: ctx.secretKey,
      files: ctx.files,
      ...(ctx.map ? { map: ctx.map } : {}),
      ...(ctx.now ? { now: ctx.now } : {}),
      ...(request.onProgress ? { onProgress: request.onProgress } : {}),
    });
    return { ...report, pre_restore_backup_id: preRestore?.id ?? null };
  });
}

/** Records a restore or drill as running (before it is queued, or as it starts). */
export async function registerRestore(
  db: Kysely<DB>,
  input: {
    tenantId: string;
    backupId: string;
    mode: RestoreMode;
    actor: string;
    at: Date;
    destination?: string | undefined;
  },
): Promise<string> {
  const id = randomUUID();
  await sql`INSERT INTO backup_restores (id, tenant_id, backup_id, mode, destination, status, actor, started_at)
    VALUES (${id}, ${input.tenantId}, ${input.backupId}, ${input.mode}, ${input.destination ?? null}, 'running',
      ${input.actor}, ${input.at})`.execute(db);
  return id;
}

async function runRestore(
  ctx: BackupContext,
  backup: BackupRow,
  mode: RestoreMode,
  request: {
    tenantId: string;
    actor: string;
    destination?: string | undefined;
    restoreId?: string | undefined;
  },
  work: (store: ObjectStore, destination: string) => Promise<RestoreReport & Record<string, unknown>>,
): Promise<RestoreRecord> {
  const db = ctx.database.db;
  const id =
    request.restoreId ??
    (await registerRestore(db, {
      tenantId: request.tenantId,
      backupId: backup.id,
      mode,
      actor: request.actor,
      at: clock(ctx),
    }));
  try {
    const report = await withDestinations(ctx, request.tenantId, async (destinations) => {
      const written = destinations.filter((d) => backup.destinations.some((b) => b.name === d.name));
      const pick = request.destination
        ? destinations.find((d) => d.name === request.destination)
        : (written[0] ?? destinations[0]);
      if (!pick)
        throw invalid(
          'destination',
          `is not a destination of this tenant`,
          destinations.map((d) => d.name),
        );
      return work(pick.store, pick.name);
    });
    await sql`UPDATE backup_restores SET status = 'completed', target_tenant_id = ${report.target_tenant_id},
        report = ${JSON.stringify(report)}::jsonb, finished_at = ${clock(ctx)} WHERE id = ${id}`.execute(db);
    if (mode !== 'drill') {
      await recordAudit(ctx.database, {
        tenantId: request.tenantId,
        actor: request.actor,
        action: 'backup.restored',
        targetId: backup.id,
        dataType: 'backup',
        recordCount: report.tables.reduce((n, t) => n + (t.restored ? t.rows : 0), 0),
        success: true,
        error: report.re_erased.length ? `${report.re_erased.length} erased subject(s) erased again` : null,
      });
      await emitEvent(ctx.database, request.tenantId, 'restore.completed', {
        data: {
          restore_id: id,
          backup_id: backup.id,
          mode,
          target_tenant_id: report.target_tenant_id,
          tables: report.tables.filter((t) => t.restored).length,
          re_erased: report.re_erased.length,
        },
      });
    }
    return (await restoreById(db, request.tenantId, id))!;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    await sql`UPDATE backup_restores SET status = 'failed', error = ${message.slice(0, 2000)}, finished_at = ${clock(ctx)}
      WHERE id = ${id}`.execute(db);
    if (mode !== 'drill')
      await recordAudit(ctx.database, {
        tenantId: request.tenantId,
        actor: request.actor,
        action: 'backup.restored',
        targetId: backup.id,
        dataType: 'backup',
        success: false,
        error: message,
      }).catch(() => {});
    throw err;
  }
}

const RESTORE_SELECT =
  sql.raw(`SELECT id, tenant_id, backup_id, mode, target_tenant_id, status, actor, report, error,
  ${utcInstantSql('started_at')} AS started_at,
  CASE WHEN finished_at IS NULL THEN NULL ELSE ${utcInstantSql('finished_at')} END AS finished_at FROM backup_restores`);

const parseRestore = (r: RestoreRecord): RestoreRecord => ({
  ...r,
  report: typeof r.report === 'string' ? JSON.parse(r.report) : r.report,
});

export async function restoreById(
  db: Kysely<DB>,
  tenantId: string,
  id: string,
): Promise<RestoreRecord | null> {
  if (!/^[0-9a-f-]{36}$/i.test(id)) return null;
  const r = await sql<RestoreRecord>`${RESTORE_SELECT} WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(
    db,
  );
  return r.rows[0] ? parseRestore(r.rows[0]) : null;
}

/** Restores (or drills, with `drills`) of a tenant, newest first. */
export async function listRestores(
  db: Kysely<DB>,
  tenantId: string,
  options: { drills?: boolean; limit?: number } = {},
): Promise<RestoreRecord[]> {
  const r = await sql<RestoreRecord>`${RESTORE_SELECT} WHERE tenant_id = ${tenantId}
    AND ${options.drills ? sql`mode = 'drill'` : sql`mode <> 'drill'`}
    ORDER BY started_at DESC, id DESC LIMIT ${options.limit ?? 100}`.execute(db);
  return r.rows.map(parseRestore);
}

/**
 * The documented recovery scenarios and their time objectives (the product documentation's
 * disaster recovery plan); a drill reports its measured RTO against each.
 */
export const RECOVERY_TARGETS = [
  { scenario: 'minor_disruption', rto_hours: 2 },
  { scenario: 'major_outage', rto_hours: 24 },
  { scenario: 'data_corruption', rto_hours: 4 },
  { scenario: 'complete_loss', rto_hours: 48 },
] as const;

/** The recovery point objective of daily backups: at most a day of changes is lost. */
export const RPO_TARGET_HOURS = 24;

/**
 * A restore drill: the latest backup restored into a throwaway sandbox tenant (every chunk
 * and table stream checked against the manifest, every table's row count compared), timed
 * (RTO) and aged (RPO), then the sandbox is deleted. The result is kept, sent as
 * `drill.completed` and shown on the dashboard.
 */
export async function runDrill(
  ctx: BackupContext,
  input: { tenantId: string; actor: string; backupId?: string | undefined; restoreId?: string | undefined },
): Promise<RestoreRecord> {
  const backup = input.backupId
    ? await requireBackup(ctx.database.db, input.tenantId, input.backupId)
    : await latestCompleted(ctx.database.db, input.tenantId);
  if (!backup) throw new FerryError('not_found', 'this tenant has no completed backup to drill');
  const started = clock(ctx);
  let record: RestoreRecord;
  try {
    record = await runRestore(ctx, backup, 'drill', input, async (store, name) => {
      const report = await restoreInto({
        store,
        destinationName: name,
        tenantId: input.tenantId,
        backupId: backup.id,
        mode: 'drill',
        target: ctx.database,
        verifier: ctx.database,
        secrets: { secrets: ctx.secrets },
        keyring: ctx.secrets.keyring,
        ledger: await erasureLedger(ctx.database.db, input.tenantId),
        ledgerKey: ctx.secretKey,
        ...(ctx.map ? { map: ctx.map } : {}),
        ...(ctx.now ? { now: ctx.now } : {}),
      });
      await deleteSandbox(ctx.database, report.target_tenant_id);
      const rtoSeconds = report.duration_ms / 1000;
      const rpoSeconds = Math.max(0, (started.getTime() - new Date(report.snapshot_at).getTime()) / 1000);
      return {
        ...report,
        ok: true,
        rto_seconds: rtoSeconds,
        rpo_seconds: rpoSeconds,
        sandbox_deleted: true,
        targets: RECOVERY_TARGETS.map((t) => ({ ...t, met: rtoSeconds <= t.rto_hours * 3600 })),
        rpo_target_hours: RPO_TARGET_HOURS,
        rpo_met: rpoSeconds <= RPO_TARGET_HOURS * 3600,
      };
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    await emitEvent(ctx.database, input.tenantId, 'drill.completed', {
      data: { backup_id: backup.id, ok: false, error: message },
    }).catch(() => {});
    throw err;
  }
  const report = record.report as Record<string, unknown>;
  await recordAudit(ctx.database, {
    tenantId: input.tenantId,
    actor: input.actor,
    action: 'backup.drilled',
    targetId: backup.id,
    dataType: 'backup',
    success: true,
  });
  await emitEvent(ctx.database, input.tenantId, 'drill.completed', {
    data: {
      drill_id: record.id,
      backup_id: backup.id,
      ok: true,
      rto_seconds: report.rto_seconds,
      rpo_seconds: report.rpo_seconds,
      targets: report.targets,
      rpo_target_hours: RPO_TARGET_HOURS,
    },
  });
  return record;
}

/** Deletes a sandbox tenant a drill made, and the traces its deletion left. */
export async function deleteSandbox(database: Database, tenantId: string): Promise<void> {
  await database.db.transaction().execute(async (trx) => {
    await sql`DELETE FROM tenants WHERE id = ${tenantId}`.execute(trx);
    for (const table of ['deleted_records', 'audit_chains', 'audit_anchors', 'stream_events'])
      await sql`${sql.raw(`DELETE FROM ${table} WHERE tenant_id = '${tenantId}'`)}`
        .execute(trx)
        .catch(() => {});
  });
}

/** Applies the keep policy (the tenant's, or one given) and records what was forgotten. */
export async function forget(
  ctx: BackupContext,
  input: { tenantId: string; dryRun: boolean; policy?: Record<string, unknown>; actor: string },
): Promise<ForgetResult> {
  const tz = await sql<{
    timezone: string;
  }>`SELECT timezone FROM tenants WHERE id = ${input.tenantId}`.execute(ctx.database.db);
  return withDestinations(ctx, input.tenantId, async (destinations, settings) => {
    const result = await forgetBackups(ctx.database, destinations, {
      tenantId: input.tenantId,
      policy: input.policy ? parseKeepPolicy(input.policy) : settings.keep,
      timeZone: tz.rows[0]?.timezone ?? 'UTC',
      dryRun: input.dryRun,
      now: clock(ctx),
    });
    if (!input.dryRun && result.forgotten.length)
      await recordAudit(ctx.database, {
        tenantId: input.tenantId,
        actor: input.actor,
        action: 'backup.forgotten',
        dataType: 'backup',
        recordCount: result.forgotten.length,
        success: true,
      });
    return result;
  });
}

export async function prune(
  ctx: BackupContext,
  input: { tenantId: string; actor: string },
): Promise<PruneResult> {
  return withDestinations(ctx, input.tenantId, async (destinations) => {
    const result = await pruneBackups(ctx.database.db, destinations, {
      tenantId: input.tenantId,
      now: clock(ctx),
    });
    await recordAudit(ctx.database, {
      tenantId: input.tenantId,
      actor: input.actor,
      action: 'backup.pruned',
      dataType: 'backup',
      recordCount: result.destinations.reduce((n, d) => n + d.chunks_deleted, 0),
      fileBytes: result.destinations.reduce((n, d) => n + d.bytes_freed, 0),
      success: true,
    });
    return result;
  });
}

/**
 * Account purge: the tenant's backup keys are destroyed (every backup becomes unreadable at
 * once, wherever copies are), then the key files, manifests and chunks Ferry wrote at each
 * destination are deleted. Returns how many keys were destroyed.
 */
export async function destroyTenantBackups(ctx: BackupContext, tenantId: string): Promise<number> {
  const keys = await destroyTenantKeys(ctx.database.db, tenantId, clock(ctx));
  await sql`UPDATE backups SET status = 'forgotten', forgotten_at = ${clock(ctx)}
    WHERE tenant_id = ${tenantId} AND status IN ('completed', 'running', 'failed')`.execute(ctx.database.db);
  await withDestinations(ctx, tenantId, async (destinations) => {
    for (const d of destinations) {
      for (const k of keys) await d.store.delete(keyObjectKey(tenantId, k)).catch(() => {});
      for await (const object of d.store.list(`${repositoryPrefix(tenantId)}/`))
        await d.store.delete(object.key);
    }
  }).catch(() => {
    // The keys are destroyed: what a destination still holds can no longer be read.
  });
  return keys.length;
}
