import { randomUUID } from 'node:crypto';
import { type Selectable, sql } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DeliveryResult } from '../deliver/types.ts';
import type { Timing } from './frequency.ts';
import type { RunFile, ScheduleConfig } from './model.ts';
import {
  OPEN_RUN_STATUSES,
  type RunStatus,
  type ScheduleDB,
  type ScheduleRunDeliveriesTable,
  type ScheduleRunsTable,
  type SchedulesTable,
  type ScheduleStatus,
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

    async list(options: {
      limit: number;
      after?: { createdAt: Date; id: string } | undefined;
    }): Promise<ScheduleRow[]> {
      let query = db.selectFrom('schedules').selectAll().where('tenant_id', '=', tenantId);
      const after = options.after;
      if (after)
        query = query.where((eb) =>
          eb.or([
            eb('created_at', '>', after.createdAt),
            eb.and([eb('created_at', '=', after.createdAt), eb('id', '>', after.id)]),
          ]),
        );
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

/** An earlier run of the same schedule that is not finished yet: later runs wait for it. */
function earlierOpenRun() {
  return sql<boolean>`EXISTS (
    SELECT 1 FROM schedule_runs o
    WHERE o.schedule_id = schedule_runs.schedule_id AND o.due_at < schedule_runs.due_at
      AND o.status IN ('queued', 'running', 'retrying'))`;
}

/**
 * The worker's side of the run tables. Every change an attempt makes is conditional on
 * its lease (`attempt_id`), so an attempt that lost the run (its worker was presumed
 * dead and another took over) cannot move it.
 */
export function scheduleRuns(database: Database) {
  const db = scheduleDb(database);
  return {
    async load(id: string): Promise<RunRow | undefined> {
      return db.selectFrom('schedule_runs').selectAll().where('id', '=', id).executeTakeFirst();
    },

    /**
     * Takes the run for a new attempt: queued, retrying, or running under a lease that
     * ran out (its worker died). Never while an earlier run of the schedule is open.
     */
    async claim(id: string, attemptId: string, now: Date, leaseMs: number): Promise<RunRow | undefined> {
      return db
        .updateTable('schedule_runs')
        .set((eb) => ({
          status: 'running',
          attempt_id: attemptId,
          attempts: eb('attempts', '+', 1),
          lease_until: new Date(now.getTime() + leaseMs),
          started_at: eb.fn.coalesce('started_at', eb.val(now)),
          updated_at: now,
        }))
        .where('id', '=', id)
        .where((eb) =>
          eb.or([
            eb('status', 'in', ['queued', 'retrying']),
            eb.and([
              eb('status', '=', 'running'),
              eb.or([eb('lease_until', 'is', null), eb('lease_until', '<=', now)]),
            ]),
          ]),
        )
        .where((eb) => eb.not(earlierOpenRun()))
        .returningAll()
        .executeTakeFirst();
    },

    /** Whether an earlier run of the run's schedule is still open. */
    async blocked(id: string): Promise<boolean> {
      const row = await db
        .selectFrom('schedule_runs')
        .select(earlierOpenRun().as('blocked'))
        .where('id', '=', id)
        .executeTakeFirst();
      return row?.blocked === true;
    },

    /** Extends the lease; false when the attempt no longer owns the run. */
    async renew(id: string, attemptId: string, now: Date, leaseMs: number): Promise<boolean> {
      const row = await db
        .updateTable('schedule_runs')
        .set({ lease_until: new Date(now.getTime() + leaseMs) })
        .where('id', '=', id)
        .where('attempt_id', '=', attemptId)
        .where('status', '=', 'running')
        .returning('id')
        .executeTakeFirst();
      return row !== undefined;
    },

    async saveFiles(id: string, attemptId: string, files: readonly RunFile[], now: Date): Promise<boolean> {
      const row = await db
        .updateTable('schedule_runs')
        .set({ files: JSON.stringify(files), updated_at: now })
        .where('id', '=', id)
        .where('attempt_id', '=', attemptId)
        .where('status', '=', 'running')
        .returning('id')
        .executeTakeFirst();
      return row !== undefined;
    },

    async checkpoint(scheduleId: string, dataset: string): Promise<string | null> {
      const row = await db
        .selectFrom('schedule_checkpoints')
        .select('cursor')
        .where('schedule_id', '=', scheduleId)
        .where('dataset', '=', dataset)
        .executeTakeFirst();
      return row?.cursor ?? null;
    },

    async deliveries(runId: string): Promise<DeliveryRow[]> {
      return db
        .selectFrom('schedule_run_deliveries')
        .selectAll()
        .where('run_id', '=', runId)
        .orderBy('created_at')
        .execute();
    },

    /** Records one delivery outcome (and in the tenant's delivery log). */
    async recordDelivery(
      run: Pick<RunRow, 'id' | 'tenant_id' | 'schedule_id'>,
      exportId: string,
      targetIndex: number,
      result: DeliveryResult,
      now: Date,
    ): Promise<void> {
      const common = {
        tenant_id: run.tenant_id,
        export_id: exportId,
        target_type: result.target.type,
        target_name: result.target.name,
        target_label: result.target.label,
        status: result.status,
        attempts: result.attempts,
        location: result.location,
        error: result.error ?? null,
        error_code: result.errorCode ?? null,
        bytes_sent: result.bytesSent,
        checksum_verified: result.checksumVerified,
        created_at: now,
      };
      await db
        .insertInto('schedule_run_deliveries')
        .values({ id: randomUUID(), run_id: run.id, target_index: targetIndex, ...common })
        .onConflict((oc) => oc.doNothing())
        .execute();
      await db
        .insertInto('deliveries')
        .values({ id: randomUUID(), schedule_id: run.schedule_id, ...common })
        .execute();
    },

    /**
     * running → delivered, with the run's totals, and the checkpoints moved to where the
     * delivered files end, in one transaction. A checkpoint only moves from the value the
     * file started at (so a checkpoint moved by anything else is never overwritten).
     * False (and nothing changed) when the attempt lost the run.
     */
    async deliver(
      run: Pick<RunRow, 'id' | 'schedule_id'>,
      attemptId: string,
      totals: { records: number; tombstones: number; bytes: number },
      cursors: readonly { dataset: string; since: string | null; next: string }[],
      now: Date,
    ): Promise<{ delivered: boolean; advanced: string[] }> {
      return db.transaction().execute(async (trx) => {
        const done = await trx
          .updateTable('schedule_runs')
          .set({
            status: 'delivered',
            lease_until: null,
            finished_at: now,
            updated_at: now,
            records: totals.records,
            tombstones: totals.tombstones,
            bytes: totals.bytes,
            checkpoint_advanced: cursors.length > 0,
            error_code: null,
            error_message: null,
          })
          .where('id', '=', run.id)
          .where('attempt_id', '=', attemptId)
          .where('status', '=', 'running')
          .returning('id')
          .executeTakeFirst();
        if (!done) return { delivered: false, advanced: [] };
        const advanced: string[] = [];
        for (const cursor of cursors) {
          const moved =
            cursor.since === null
              ? await trx
                  .insertInto('schedule_checkpoints')
                  .values({
                    schedule_id: run.schedule_id,
                    dataset: cursor.dataset,
                    cursor: cursor.next,
                    run_id: run.id,
                    updated_at: now,
                  })
                  .onConflict((oc) => oc.columns(['schedule_id', 'dataset']).doNothing())
                  .returning('dataset')
                  .executeTakeFirst()
              : await trx
                  .updateTable('schedule_checkpoints')
                  .set({ cursor: cursor.next, run_id: run.id, updated_at: now })
                  .where('schedule_id', '=', run.schedule_id)
                  .where('dataset', '=', cursor.dataset)
                  .where('cursor', '=', cursor.since)
                  .returning('dataset')
                  .executeTakeFirst();
          if (moved) advanced.push(cursor.dataset);
        }
        if (advanced.length !== cursors.length)
          await trx
            .updateTable('schedule_runs')
            .set({ checkpoint_advanced: false })
            .where('id', '=', run.id)
            .execute();
        return { delivered: true, advanced };
      });
    },

    /** running → retrying after a failed attempt that pg-boss will retry. */
    async retrying(id: string, attemptId: string, error: { code: string; message: string }, now: Date) {
      const row = await db
        .updateTable('schedule_runs')
        .set({
          status: 'retrying',
          lease_until: null,
          error_code: error.code,
          error_message: error.message,
          updated_at: now,
        })
        .where('id', '=', id)
        .where('attempt_id', '=', attemptId)
        .where('status', '=', 'running')
        .returning('id')
        .executeTakeFirst();
      return row !== undefined;
    },

    /**
     * → failed. With an attempt id only while that attempt owns the run; without one
     * (the job ran out of retries after its worker died) from any open state.
     */
    async fail(
      id: string,
      attemptId: string | null,
      error: { code: string; message: string },
      now: Date,
    ): Promise<RunRow | undefined> {
      let query = db
        .updateTable('schedule_runs')
        .set({
          status: 'failed',
          lease_until: null,
          error_code: error.code,
          error_message: error.message,
          finished_at: now,
          updated_at: now,
        })
        .where('id', '=', id)
        .where('status', 'in', [...OPEN_RUN_STATUSES]);
      if (attemptId) query = query.where('attempt_id', '=', attemptId).where('status', '=', 'running');
      return query.returningAll().executeTakeFirst();
    },

    /** A job found its run waiting for an earlier one: it is dispatched again when that one ends. */
    async park(id: string): Promise<void> {
      await db
        .updateTable('schedule_runs')
        .set({ dispatched_at: null })
        .where('id', '=', id)
        .where('status', '=', 'queued')
        .execute();
    },

    /**
     * Marks a queued run as handed to the queue, unless it was (and not long ago): true
     * when the caller should send its job now.
     */
    async markDispatched(id: string, now: Date, staleMs: number): Promise<boolean> {
      const row = await db
        .updateTable('schedule_runs')
        .set({ dispatched_at: now })
        .where('id', '=', id)
        .where('status', '=', 'queued')
        .where((eb) =>
          eb.or([
            eb('dispatched_at', 'is', null),
            eb('dispatched_at', '<', new Date(now.getTime() - staleMs)),
          ]),
        )
        .returning('id')
        .executeTakeFirst();
      return row !== undefined;
    },

    /**
     * Queued runs ready to go (no earlier open run) that were never handed to the queue,
     * or so long ago that the job was probably lost: at most `limit`, oldest first.
     */
    async undispatched(now: Date, staleMs: number, limit: number, scheduleId?: string): Promise<string[]> {
      let query = db
        .selectFrom('schedule_runs')
        .select('id')
        .where('status', '=', 'queued')
        .where((eb) =>
          eb.or([
            eb('dispatched_at', 'is', null),
            eb('dispatched_at', '<', new Date(now.getTime() - staleMs)),
          ]),
        )
        .where((eb) => eb.not(earlierOpenRun()));
      if (scheduleId) query = query.where('schedule_id', '=', scheduleId);
      const rows = await query.orderBy('due_at').limit(limit).execute();
      return rows.map((r) => r.id);
    },
  };
}

export type ScheduleRuns = ReturnType<typeof scheduleRuns>;

export function isOpen(status: RunStatus): boolean {
  return (OPEN_RUN_STATUSES as readonly RunStatus[]).includes(status);
}
