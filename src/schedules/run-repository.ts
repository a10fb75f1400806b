import type { ErrorCode } from '../domain/error-catalog.ts';
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DeliveryResult } from '../deliver/types.ts';
import { OPEN_RUN_STATUSES } from '../domain/schedule-state.ts';
import type { RunFile } from './model.ts';
import type { DeliveryRow, RunRow } from './repository.ts';
import { scheduleDb } from './tables.ts';

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
    async retrying(id: string, attemptId: string, error: { code: ErrorCode; message: string }, now: Date) {
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
      error: { code: ErrorCode; message: string },
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
