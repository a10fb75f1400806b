/**
 * Waiting in tests: for a job's persisted state (an export request, a scheduled run),
 * for whatever else a probe can see, and for other sessions' transactions. Exports and
 * runs emit no notification on a change of state, so the one place that polls is
 * `until`, with a short interval and a timeout error that says what it last saw.
 */
import { sql } from 'kysely';
import type { Database } from '../../src/db/database.ts';
import { canTransition, EXPORT_STATUSES, type ExportStatus } from '../../src/domain/export-state.ts';
import { isOpenRun, type RunStatus } from '../../src/domain/schedule-state.ts';

const POLL_MS = 25;

export interface WaitOptions {
  /** Give up after this long (default 60 s). */
  timeoutMs?: number;
  /** More to print when the wait fails (a worker's output, say). */
  context?: () => string;
}

/**
 * Resolves with the first value `probe` returns other than `undefined`, asking again
 * every few milliseconds; fails after the timeout with `what` and, from `last`, what it
 * saw last.
 */
export async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  options: WaitOptions & { last?: () => string } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) {
      const details = [options.last?.(), options.context?.()].filter(Boolean).join('\n');
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${details ? `\n${details}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/**
 * Waits until the row `read` returns (a job's persisted state) has one of `statuses` and
 * `where` holds. Fails at once when the row is in a state from which `canReach` says no
 * target can be reached, and on timeout; both errors print the last row seen.
 */
async function waitForState<S extends { status: string }>(
  what: string,
  read: () => Promise<S | undefined>,
  statuses: readonly S['status'][],
  canReach: (from: S['status']) => boolean,
  options: WaitOptions & { where?: (state: S) => boolean },
): Promise<S> {
  let last: S | undefined;
  const describe = () => `last state of ${what}: ${last ? JSON.stringify(last) : 'not found'}`;
  const target = statuses.join(' or ');
  return until(
    `${what} to be ${target}`,
    async () => {
      last = await read();
      if (!last) return undefined;
      if (statuses.includes(last.status) && (options.where?.(last) ?? true)) return last;
      if (!canReach(last.status)) throw new Error(`${what} can no longer be ${target}; ${describe()}`);
      return undefined;
    },
    { ...options, last: describe },
  );
}

/** An export request as stored (`export_requests`), the columns a test waits on. */
export interface ExportState {
  id: string;
  status: ExportStatus;
  attempts: number;
  records_done: number;
  error_code: string | null;
  error_message: string | null;
}

/** Export states in which an export has stopped moving (until it expires). */
export const EXPORT_DONE: readonly ExportStatus[] = ['completed', 'failed', 'cancelled'];

/** Whether an export in `from` can still get to one of `targets` by the export state machine. */
function exportCanReach(from: ExportStatus, targets: readonly ExportStatus[]): boolean {
  const seen = new Set<ExportStatus>([from]);
  for (const status of seen) {
    if (targets.includes(status)) return true;
    for (const next of EXPORT_STATUSES) if (canTransition(status, next)) seen.add(next);
  }
  return false;
}

/**
 * Waits until export `id` is stored in one of `statuses` (and `where` holds, if given);
 * returns its row. Fails at once when no target can be reached any more (waiting for
 * `completed` on a `failed` export), and on timeout, with the state it was stuck in.
 */
export async function waitForExport(
  database: Database,
  id: string,
  statuses: readonly ExportStatus[] = EXPORT_DONE,
  options: WaitOptions & { where?: (state: ExportState) => boolean } = {},
): Promise<ExportState> {
  const read = async () => {
    const [row] = (
      await sql<ExportState>`
        SELECT id, status, attempts, records_done, error_code, error_message
        FROM export_requests WHERE id = ${id}`.execute(database.db)
    ).rows;
    return row && { ...row, records_done: Number(row.records_done) };
  };
  return waitForState(`export ${id}`, read, statuses, (from) => exportCanReach(from, statuses), options);
}

/** A scheduled run as stored (`schedule_runs`), the columns a test waits on. */
export interface RunState {
  id: string;
  status: RunStatus;
  attempts: number;
  error_code: string | null;
  error_message: string | null;
}

/** Run states a run never leaves. */
export const RUN_DONE: readonly RunStatus[] = ['delivered', 'failed'];

/**
 * Waits until scheduled run `id` is stored in one of `statuses`; returns its row. Fails
 * at once when the run closed in another state, and on timeout, with its last state.
 */
export async function waitForRun(
  database: Database,
  id: string,
  statuses: readonly RunStatus[] = RUN_DONE,
  options: WaitOptions = {},
): Promise<RunState> {
  const read = async () =>
    (
      await sql<RunState>`
        SELECT id, status, attempts, error_code, error_message
        FROM schedule_runs WHERE id = ${id}`.execute(database.db)
    ).rows[0];
  return waitForState(`run ${id}`, read, statuses, isOpenRun, options);
}

/**
 * Waits until every transaction that was open when our writes committed has ended: a
 * change-feed run covers transactions older than the oldest one still running, so on a
 * shared PostgreSQL other sessions' open transactions delay (never drop) changes.
 */
export async function settle(database: Database): Promise<void> {
  const read = async (fn: 'xmin' | 'xmax') =>
    BigInt(
      (
        await sql<{
          x: string;
        }>`SELECT ${sql.raw(`pg_snapshot_${fn}`)}(pg_current_snapshot())::text AS x`.execute(database.db)
      ).rows[0]!.x,
    );
  const mark = await read('xmax');
  await until(
    'the transactions open at our commit to end',
    async () => ((await read('xmin')) >= mark ? true : undefined),
    { timeoutMs: 120_000, last: () => 'a transaction of another session stayed open' },
  );
}
