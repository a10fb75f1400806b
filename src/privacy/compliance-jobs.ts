import { sql } from 'kysely';
import { DateTime } from 'luxon';
import type { JobContext, JobDefinition } from '../jobs/types.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { anchorAuditChains } from './audit-chain.ts';
import { accountsDueForPurge, purgeAccount } from './closure.ts';
import { runRetentionSweep } from './retention.ts';

export const RETENTION_DUE_JOB = 'retention.due';
/** A sweep of one tenant now (payload: the tenant id), asked for from the dashboard. */
export const RETENTION_SWEEP_JOB = 'retention.sweep';
export const ACCOUNT_PURGE_JOB = 'account.purge-due';
export const AUDIT_ANCHOR_JOB = 'audit.anchor';

/** The local hour from which a tenant's daily sweep runs. */
export const SWEEP_HOUR = 3;

/**
 * Tenants whose daily sweep is due: past SWEEP_HOUR in their own time zone, with no
 * scheduled sweep that finished for their local date yet.
 */
async function tenantsDue(ctx: JobContext): Promise<string[]> {
  const now = ctx.now();
  const tenants = await sql<{ id: string; timezone: string }>`
    SELECT id, timezone FROM tenants WHERE status <> 'purged' ORDER BY id`.execute(ctx.database.db);
  const due: string[] = [];
  for (const t of tenants.rows) {
    const local = DateTime.fromJSDate(now).setZone(t.timezone);
    if (!local.isValid || local.hour < SWEEP_HOUR) continue;
    const done = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM retention_sweeps
      WHERE tenant_id = ${t.id} AND trigger = 'schedule' AND sweep_date = ${local.toISODate()} AND status = 'completed'`.execute(
      ctx.database.db,
    );
    if (!Number(done.rows[0]?.n)) due.push(t.id);
  }
  return due;
}

/** Retention sweeps, account purges and audit anchors (docs/retention.md, docs/compliance.md). */
export const COMPLIANCE_JOBS: readonly JobDefinition[] = [
  {
    name: RETENTION_DUE_JOB,
    // Hourly: each tenant's sweep runs once a day, after SWEEP_HOUR in its own time zone.
    schedule: { cron: '5 * * * *' },
    queue: () => ({ retryLimit: 2, retryDelay: 300, expireInSeconds: 6 * 3600 }),
    work: () => ({ localConcurrency: 1 }),
    async handle(_job, ctx) {
      for (const tenantId of await tenantsDue(ctx)) {
        try {
          await runRetentionSweep({ database: ctx.database, store: ctx.store, now: ctx.now }, tenantId, {
            trigger: 'schedule',
            actor: 'system',
          });
        } catch (err) {
          // One tenant's failure (recorded on its sweep) does not stop the others; the next hour resumes it.
          ctx.logger.error({ err, tenantId }, 'retention sweep failed');
        }
      }
    },
  },
  {
    name: RETENTION_SWEEP_JOB,
    queue: () => ({ retryLimit: 3, retryDelay: 60, retryBackoff: true, expireInSeconds: 6 * 3600 }),
    async handle(job, ctx) {
      if (!job.data.id) return;
      // A retry resumes the unfinished manual sweep instead of starting another.
      await runRetentionSweep({ database: ctx.database, store: ctx.store, now: ctx.now }, job.data.id, {
        trigger: 'manual',
        actor: 'system',
      });
    },
  },
  {
    name: ACCOUNT_PURGE_JOB,
    schedule: { cron: '20 * * * *' },
    queue: () => ({ retryLimit: 2, retryDelay: 300, expireInSeconds: 6 * 3600 }),
    work: () => ({ localConcurrency: 1 }),
    async handle(_job, ctx) {
      const secretKey = loadOrCreateSecretKey(ctx.config);
      for (const tenantId of await accountsDueForPurge(ctx.database, ctx.now())) {
        try {
          await purgeAccount(
            {
              database: ctx.database,
              store: ctx.store,
              secretKey,
              secrets: ctx.secrets,
              now: ctx.now,
              destroyBackups: ctx.destroyBackups,
            },
            tenantId,
            {
              actor: 'system',
            },
          );
        } catch (err) {
          ctx.logger.error({ err, tenantId }, 'account purge failed');
        }
      }
    },
  },
  {
    name: AUDIT_ANCHOR_JOB,
    schedule: { cron: '40 2 * * *' },
    queue: () => ({ retryLimit: 3, retryDelay: 600 }),
    work: () => ({ localConcurrency: 1 }),
    async handle(_job, ctx) {
      await anchorAuditChains(ctx.database, ctx.secrets, ctx.now());
    },
  },
];
