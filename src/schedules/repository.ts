import { randomUUID } from 'node:crypto';
import type { Selectable } from 'kysely';
import type { Database } from '../db/database.ts';
import { afterPosition, instantText } from '../db/keyset.ts';
import type { ScheduleStatus } from '../domain/schedule-state.ts';
import type { Timing } from './frequency.ts';
import type { ScheduleConfig } from './model.ts';
import {
  type ScheduleDB,
  type ScheduleRunDeliveriesTable,
  type ScheduleRunsTable,
  type SchedulesTable,
  scheduleDb,
} from './tables.ts';

export type ScheduleRow = Selectable<SchedulesTable>;
export type RunRow = Selectable<ScheduleRunsTable>;
export type DeliveryRow = Selectable<ScheduleRunDeliveriesTable>;

export interface NewSchedule {
  id: string;
  name: string;
  status: ScheduleStatus;
  timing: Timing;
  config: ScheduleConfig;
  nextRunAt: Date | null;
  actor: string;
  apiKeyId: string | null;
  teamMemberId: string | null;
  now: Date;
}

export interface SchedulePatch {
  name?: string;
  status?: ScheduleStatus;
  timing?: Timing;
  config?: ScheduleConfig;
  nextRunAt?: Date | null;
}

/**
 * The schedule tables of one tenant: every query is scoped to `tenantId`, so a route
 * cannot reach another tenant's schedule by forgetting a `where`.
 */
export function tenantSchedules(database: Database, tenantId: string) {
  const db = scheduleDb(database);
  return {
    /**
     * Inserts the schedule; an active one only while the tenant has fewer than `maxActive`
     * active schedules (the tenant row is locked, so concurrent creates cannot both pass).
     * False when the limit refused it.
     */
    async insert(row: NewSchedule, maxActive: number | null): Promise<boolean> {
      return db.transaction().execute(async (trx) => {
        if (row.status === 'active' && maxActive !== null) {
          const active = await lockAndCountActive(trx, tenantId);
          if (active >= maxActive) return false;
        }
        await trx
          .insertInto('schedules')
          .values({
            id: row.id,
            tenant_id: tenantId,
            name: row.name,
            status: row.status,
            frequency: JSON.stringify(row.timing.frequency),
            time_of_day: row.timing.time,
            timezone: row.timing.timezone,
            cron: row.timing.cron,
            config: JSON.stringify(row.config),
            next_run_at: row.nextRunAt,
            actor: row.actor,
            api_key_id: row.apiKeyId,
            team_member_id: row.teamMemberId,
            created_at: row.now,
            updated_at: row.now,
          })
          .execute();
        return true;
      });
    },

    async find(id: string): Promise<ScheduleRow | undefined> {
      return db
        .selectFrom('schedules')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .executeTakeFirst();
    },

    /** One page, oldest first; each row carries `cursor_at`, its position for the next page. */
    async list(options: {
      limit: number;
      after?: { at: string; id: string } | undefined;
    }): Promise<(ScheduleRow & { cursor_at: string })[]> {
      let query = db
        .selectFrom('schedules')
        .selectAll()
        .select(instantText('created_at').as('cursor_at'))
        .where('tenant_id', '=', tenantId);
      if (options.after) query = query.where(afterPosition('created_at', options.after, 'asc'));
      return query.orderBy('created_at').orderBy('id').limit(options.limit).execute();
    },

    async countActive(): Promise<number> {
      const row = await db
        .selectFrom('schedules')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('tenant_id', '=', tenantId)
        .where('status', '=', 'active')
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },

    /**
     * Applies a change; turning a schedule active checks the limit like `insert`.
     * Returns the row, `undefined` when it does not exist, or `'limit'` when refused.
     */
    async update(id: string, patch: SchedulePatch, now: Date, maxActive: number | null) {
      return db.transaction().execute(async (trx): Promise<ScheduleRow | undefined | 'limit'> => {
        const current = await trx
          .selectFrom('schedules')
          .select('status')
          .where('tenant_id', '=', tenantId)
          .where('id', '=', id)
          .forUpdate()
          .executeTakeFirst();
        if (!current) return undefined;
        if (patch.status === 'active' && current.status !== 'active' && maxActive !== null) {
          const active = await lockAndCountActive(trx, tenantId);
          if (active >= maxActive) return 'limit';
        }
        return trx
          .updateTable('schedules')
          .set({
            ...(patch.name !== undefined ? { name: patch.name } : {}),
            ...(patch.status !== undefined ? { status: patch.status } : {}),
            ...(patch.timing
              ? {
                  frequency: JSON.stringify(patch.timing.frequency),
                  time_of_day: patch.timing.time,
                  timezone: patch.timing.timezone,
                  cron: patch.timing.cron,
                }
              : {}),
            ...(patch.config ? { config: JSON.stringify(patch.config) } : {}),
            ...(patch.nextRunAt !== undefined ? { next_run_at: patch.nextRunAt } : {}),
            updated_at: now,
          })
          .where('tenant_id', '=', tenantId)
          .where('id', '=', id)
          .returningAll()
          .executeTakeFirst();
      });
    },

    async remove(id: string): Promise<boolean> {
      const row = await db
        .deleteFrom('schedules')
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .returning('id')
        .executeTakeFirst();
      return row !== undefined;
    },

    /** Drops the checkpoints of datasets that are no longer incremental in the schedule. */
    async keepCheckpoints(scheduleId: string, datasets: readonly string[]): Promise<void> {
      let query = db.deleteFrom('schedule_checkpoints').where('schedule_id', '=', scheduleId);
      if (datasets.length) query = query.where('dataset', 'not in', [...datasets]);
      await query.execute();
    },

    async checkpoints(scheduleId: string) {
      return db
        .selectFrom('schedule_checkpoints')
        .innerJoin('schedules', 'schedules.id', 'schedule_checkpoints.schedule_id')
        .select([
          'schedule_checkpoints.dataset',
          'schedule_checkpoints.run_id',
          'schedule_checkpoints.updated_at',
        ])
        .where('schedules.tenant_id', '=', tenantId)
        .where('schedule_checkpoints.schedule_id', '=', scheduleId)
        .orderBy('schedule_checkpoints.dataset')
        .execute();
    },

    /** Runs newest first; `before` is the run number to continue below. */
    async runs(
      scheduleId: string,
      options: { limit: number; before?: number | undefined },
    ): Promise<RunRow[]> {
      let query = db
        .selectFrom('schedule_runs')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('schedule_id', '=', scheduleId);
      if (options.before !== undefined) query = query.where('run_number', '<', options.before);
      return query.orderBy('run_number', 'desc').limit(options.limit).execute();
    },

    async lastRuns(scheduleIds: readonly string[]): Promise<RunRow[]> {
      if (scheduleIds.length === 0) return [];
      return db
        .selectFrom('schedule_runs')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('schedule_id', 'in', [...scheduleIds])
        .where('run_number', '=', (eb) =>
          eb
            .selectFrom('schedule_runs as l')
            .select((e) => e.fn.max('l.run_number').as('m'))
            .whereRef('l.schedule_id', '=', 'schedule_runs.schedule_id'),
        )
        .execute();
    },

    async deliveries(runIds: readonly string[]): Promise<DeliveryRow[]> {
      if (runIds.length === 0) return [];
      return db
        .selectFrom('schedule_run_deliveries')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('run_id', 'in', [...runIds])
        .orderBy('created_at')
        .orderBy('target_index')
        .execute();
    },

    /** A "run now": the next run number and a run due now, queued. */
    async insertManualRun(scheduleId: string, actor: string, now: Date): Promise<RunRow | undefined> {
      return db.transaction().execute(async (trx) => {
        const schedule = await trx
          .updateTable('schedules')
          .set((eb) => ({ run_count: eb('run_count', '+', 1) }))
          .where('tenant_id', '=', tenantId)
          .where('id', '=', scheduleId)
          .returning(['id', 'run_count', 'config', 'name', 'timezone'])
          .executeTakeFirst();
        if (!schedule) return undefined;
        return trx
          .insertInto('schedule_runs')
          .values({
            id: randomUUID(),
            schedule_id: scheduleId,
            tenant_id: tenantId,
            run_number: schedule.run_count,
            due_at: now,
            trigger: 'manual',
            actor,
            config: JSON.stringify({ ...schedule.config, name: schedule.name, timezone: schedule.timezone }),
            created_at: now,
            updated_at: now,
          })
          .returningAll()
          .executeTakeFirstOrThrow();
      });
    },
  };
}

async function lockAndCountActive(trx: ScheduleDB, tenantId: string): Promise<number> {
  await trx.selectFrom('tenants').select('id').where('id', '=', tenantId).forUpdate().execute();
  const row = await trx
    .selectFrom('schedules')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('tenant_id', '=', tenantId)
    .where('status', '=', 'active')
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export type TenantSchedules = ReturnType<typeof tenantSchedules>;
