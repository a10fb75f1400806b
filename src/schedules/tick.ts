import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import type { JobQueue } from '../jobs/queue.ts';
import type { Logger } from '../lib/logger.ts';
import { dueSlot } from './frequency.ts';
import type { RunConfig } from './run-file.ts';
import { scheduleRuns } from './run-repository.ts';
import { scheduleDb } from './tables.ts';

export const SCHEDULE_RUN_QUEUE = 'schedule-run';

/** Schedules taken per tick; a tick loops until none is due. */
const BATCH = 100;
/** A queued run handed to the queue this long ago without starting is handed over again. */
export const DISPATCH_STALE_MS = 10 * 60_000;
/** The actor of runs the scheduler starts. */
export const SCHEDULER_ACTOR = 'system:scheduler';

export interface TickDeps {
  readonly database: Database;
  readonly queue: Pick<JobQueue, 'send'>;
  readonly now: () => Date;
  readonly logger?: Logger | undefined;
}

export interface TickResult {
  /** Runs this tick created (one per due slot it claimed). */
  readonly created: string[];
  /** Runs whose job this tick sent. */
  readonly dispatched: string[];
}

/**
 * The scheduler tick (a pg-boss cron job, every minute, on any number of workers).
 * In one transaction it takes the due schedules with `FOR UPDATE SKIP LOCKED` (a
 * schedule another tick holds is skipped, not waited for), inserts a run for the due
 * slot (`ON CONFLICT (schedule_id, due_at) DO NOTHING`: a slot gets one run however
 * many ticks race) and moves `next_run_at` to the next slot. After the commit it sends
 * each new run's job (payload: the run id), and re-sends jobs of queued runs whose
 * send was lost.
 */
export async function tickSchedules(deps: TickDeps): Promise<TickResult> {
  const db = scheduleDb(deps.database);
  const created: string[] = [];
  for (;;) {
    const now = deps.now();
    const batch = await db.transaction().execute(async (trx) => {
      const due = await trx
        .selectFrom('schedules')
        .select([
          'id',
          'tenant_id',
          'name',
          'frequency',
          'cron',
          'timezone',
          'config',
          'next_run_at',
          'run_count',
        ])
        .where('status', '=', 'active')
        .where('next_run_at', '<=', now)
        // A closed account's schedules wait: they run again if it is reopened.
        .where(
          sql<boolean>`EXISTS (SELECT 1 FROM tenants x WHERE x.id = schedules.tenant_id AND x.status = 'active')`,
        )
        .orderBy('next_run_at')
        .limit(BATCH)
        .forUpdate()
        .skipLocked()
        .execute();
      const runs: string[] = [];
      for (const schedule of due) {
        const { slot, next } = dueSlot(schedule, schedule.next_run_at!, now);
        const config: RunConfig = { ...schedule.config, name: schedule.name, timezone: schedule.timezone };
        const inserted = await trx
          .insertInto('schedule_runs')
          .values({
            id: randomUUID(),
            schedule_id: schedule.id,
            tenant_id: schedule.tenant_id,
            run_number: schedule.run_count + 1,
            due_at: slot,
            trigger: 'scheduled',
            actor: SCHEDULER_ACTOR,
            config: JSON.stringify(config),
            created_at: now,
            updated_at: now,
          })
          .onConflict((oc) => oc.doNothing())
          .returning('id')
          .executeTakeFirst();
        await trx
          .updateTable('schedules')
          .set({ next_run_at: next, ...(inserted ? { run_count: schedule.run_count + 1 } : {}) })
          .where('id', '=', schedule.id)
          .execute();
        if (inserted) runs.push(inserted.id);
      }
      return { runs, more: due.length === BATCH };
    });
    created.push(...batch.runs);
    if (!batch.more) break;
  }
  const dispatched: string[] = [];
  for (const id of created) if (await dispatch(deps, id)) dispatched.push(id);
  // Safety net: runs whose job was never sent (the process died after the commit) or got lost.
  for (const id of await scheduleRuns(deps.database).undispatched(deps.now(), DISPATCH_STALE_MS, BATCH))
    if (await dispatch(deps, id)) dispatched.push(id);
  if (created.length || dispatched.length)
    deps.logger?.info({ created: created.length, dispatched: dispatched.length }, 'scheduler tick');
  return { created, dispatched };
}

/** Sends a queued run's job, unless it was sent recently; true when sent. */
export async function dispatch(deps: TickDeps, runId: string): Promise<boolean> {
  const runs = scheduleRuns(deps.database);
  if (!(await runs.markDispatched(runId, deps.now(), DISPATCH_STALE_MS))) return false;
  try {
    await deps.queue.send(SCHEDULE_RUN_QUEUE, { id: runId });
    return true;
  } catch (err) {
    // The run stays queued; the next tick sends it again once DISPATCH_STALE_MS passed.
    deps.logger?.error({ err, run_id: runId }, 'could not send the job of a scheduled run');
    return false;
  }
}

/** Sends the jobs of a schedule's queued runs that no earlier run holds back any more. */
export async function dispatchReady(deps: TickDeps, scheduleId: string): Promise<void> {
  for (const id of await scheduleRuns(deps.database).undispatched(
    deps.now(),
    DISPATCH_STALE_MS,
    5,
    scheduleId,
  ))
    await dispatch(deps, id);
}
