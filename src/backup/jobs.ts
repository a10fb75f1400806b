import { sql } from 'kysely';
import { DateTime } from 'luxon';
import type { JobContext, JobDefinition } from '../jobs/types.ts';
import { latestCompleted } from './catalog.ts';
import { backupContext } from './context.ts';
import { forget, prune, restoreBackup, runBackup, runDrill, verifyBackup } from './service.ts';

/** Hourly: the scheduled backups, verifications and drills that are due. */
export const BACKUP_DUE_JOB = 'backup.due';
/** A backup registered by the API (payload: the backup id). */
export const BACKUP_RUN_JOB = 'backup.run';
/** A restore or drill registered by the API (payload: the restore id). */
export const BACKUP_RESTORE_JOB = 'backup.restore';

interface DueRow {
  tenant_id: string;
  timezone: string;
  frequency: 'daily' | 'weekly';
  time_of_day: string;
  weekday: number;
  verify_weekday: number;
  drill_day: number;
  last_scheduled_on: string | null;
  last_verified_on: string | null;
  last_drilled_on: string | null;
}

/**
 * One pass of the backup schedule at `now`. For each tenant with backups enabled, in its own
 * time zone: the backup when its time of day has passed and none ran for this local date
 * (weekly: on its weekday), followed by forget and prune under the keep policy; a full
 * verification of the latest backup on the verification weekday; a restore drill on the
 * drill day of each month (the documented protocol: monthly integrity and restore practice).
 * One tenant's failure is logged and does not stop the others.
 */
export async function runDueBackups(ctx: JobContext): Promise<void> {
  const now = ctx.now();
  const backups = backupContext({
    database: ctx.database,
    config: ctx.config,
    store: ctx.store,
    secrets: ctx.secrets,
    now: ctx.now,
  });
  const rows = await sql<DueRow>`
    SELECT s.tenant_id, t.timezone, s.frequency, s.time_of_day, s.weekday, s.verify_weekday, s.drill_day,
      s.last_scheduled_on::text AS last_scheduled_on, s.last_verified_on::text AS last_verified_on,
      s.last_drilled_on::text AS last_drilled_on
    FROM backup_settings s JOIN tenants t ON t.id = s.tenant_id
    WHERE s.enabled AND t.status = 'active' ORDER BY s.tenant_id`.execute(ctx.database.db);
  for (const row of rows.rows) {
    const local = DateTime.fromJSDate(now).setZone(row.timezone);
    if (!local.isValid) continue;
    const today = local.toISODate()!;
    const [hour, minute] = row.time_of_day.split(':').map(Number) as [number, number];
    const past = local.hour > hour || (local.hour === hour && local.minute >= minute);
    const tenantId = row.tenant_id;
    try {
      if (
        past &&
        row.last_scheduled_on !== today &&
        (row.frequency === 'daily' || local.weekday === row.weekday)
      ) {
        await sql`UPDATE backup_settings SET last_scheduled_on = ${today} WHERE tenant_id = ${tenantId}`.execute(
          ctx.database.db,
        );
        await runBackup(backups, { tenantId, trigger: 'schedule', actor: 'system' });
        await forget(backups, { tenantId, dryRun: false, actor: 'system' });
        await prune(backups, { tenantId, actor: 'system' });
      }
      if (past && local.weekday === row.verify_weekday && row.last_verified_on !== today) {
        const latest = await latestCompleted(ctx.database.db, tenantId);
        await sql`UPDATE backup_settings SET last_verified_on = ${today} WHERE tenant_id = ${tenantId}`.execute(
          ctx.database.db,
        );
        if (latest)
          await verifyBackup(backups, { tenantId, backupId: latest.id, level: 'full', actor: 'system' });
      }
      const month = today.slice(0, 7);
      if (past && local.day >= row.drill_day && row.last_drilled_on?.slice(0, 7) !== month) {
        await sql`UPDATE backup_settings SET last_drilled_on = ${today} WHERE tenant_id = ${tenantId}`.execute(
          ctx.database.db,
        );
        if (await latestCompleted(ctx.database.db, tenantId))
          await runDrill(backups, { tenantId, actor: 'system' });
      }
    } catch (err) {
      ctx.logger.error({ err, tenantId }, 'scheduled backup work failed');
    }
  }
}

/** Backups, verifications, drills and restores (docs/backup.md). */
export const BACKUP_JOBS: readonly JobDefinition[] = [
  {
    name: BACKUP_DUE_JOB,
    schedule: { cron: '15 * * * *' },
    queue: () => ({ retryLimit: 1, retryDelay: 300, expireInSeconds: 12 * 3600 }),
    work: () => ({ localConcurrency: 1 }),
    handle: (_job, ctx) => runDueBackups(ctx),
  },
  {
    name: BACKUP_RUN_JOB,
    // A backup that failed is recorded as failed; the next one starts afresh (no retry).
    queue: () => ({ retryLimit: 0, expireInSeconds: 12 * 3600 }),
    async handle(job, ctx) {
      if (!job.data.id) return;
      const row = await sql<{ tenant_id: string; trigger: string; actor: string; status: string }>`
        SELECT tenant_id, trigger, actor, status FROM backups WHERE id = ${job.data.id}`.execute(
        ctx.database.db,
      );
      const backup = row.rows[0];
      if (backup?.status !== 'running') return;
      const backups = backupContext({
        database: ctx.database,
        config: ctx.config,
        store: ctx.store,
        secrets: ctx.secrets,
        now: ctx.now,
      });
      await runBackup(backups, {
        id: job.data.id,
        tenantId: backup.tenant_id,
        trigger: backup.trigger as 'api',
        actor: backup.actor,
      });
    },
  },
  {
    name: BACKUP_RESTORE_JOB,
    queue: () => ({ retryLimit: 0, expireInSeconds: 12 * 3600 }),
    async handle(job, ctx) {
      if (!job.data.id) return;
      const row = await sql<{
        tenant_id: string;
        backup_id: string;
        mode: string;
        actor: string;
        status: string;
        destination: string | null;
      }>`SELECT tenant_id, backup_id, mode, actor, status, destination FROM backup_restores WHERE id = ${job.data.id}`.execute(
        ctx.database.db,
      );
      const restore = row.rows[0];
      if (restore?.status !== 'running') return;
      const backups = backupContext({
        database: ctx.database,
        config: ctx.config,
        store: ctx.store,
        secrets: ctx.secrets,
        now: ctx.now,
      });
      if (restore.mode === 'drill')
        await runDrill(backups, {
          tenantId: restore.tenant_id,
          actor: restore.actor,
          backupId: restore.backup_id,
          restoreId: job.data.id,
        });
      else
        await restoreBackup(backups, {
          restoreId: job.data.id,
          tenantId: restore.tenant_id,
          backupId: restore.backup_id,
          mode: restore.mode as 'sandbox' | 'replace',
          confirm: true,
          destination: restore.destination ?? undefined,
          actor: restore.actor,
        });
    },
  },
];
