/** A schedule either creates runs at its times (`active`) or does not (`paused`). */
export const SCHEDULE_STATUSES = ['active', 'paused'] as const;
export type ScheduleStatus = (typeof SCHEDULE_STATUSES)[number];

/**
 * The state machine of a scheduled run, persisted in `schedule_runs.status`:
 *
 * ```
 * queued → running → delivered
 *            │ ↑ ↺ (lease ran out: another attempt takes over)
 *            ↓ │
 *          retrying
 * queued, running, retrying → failed
 * ```
 *
 * - `queued`: created at its slot (or by hand), waiting for a worker and for the
 *   schedule's earlier runs to close.
 * - `running`: an attempt holds the run's lease and produces or delivers its files.
 * - `retrying`: an attempt failed in a way another may fix; pg-boss runs it again. Or
 *   all it misses is webhook messages waiting for their next attempt: its job is sent
 *   again for then.
 * - `delivered`: every required target received every file; checkpoints moved on.
 * - `failed`: final, after a failure no retry can fix or the last retry.
 */
export const RUN_STATUSES = ['queued', 'running', 'retrying', 'delivered', 'failed'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** Runs a worker may still work on; a schedule's later runs wait for them. */
export const OPEN_RUN_STATUSES = ['queued', 'running', 'retrying'] as const satisfies readonly RunStatus[];

export function isOpenRun(status: RunStatus): boolean {
  return (OPEN_RUN_STATUSES as readonly RunStatus[]).includes(status);
}
