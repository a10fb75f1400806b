import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { invalid } from '../domain/ferry-error.ts';

/** How long stream events are kept for clients to resume from, unless told otherwise. */
export const STREAM_RETENTION_DAYS = 7;

/**
 * Deletes stream events older than `days` days, and those of tenants that no longer
 * exist. Returns how many were deleted. Meant for a daily job; a client that resumes
 * from a pruned event is told its id is gone. Rows are deleted in one statement: at
 * the outbox's volumes (one row per message) a day's worth is a quick delete.
 */
export async function pruneStreamEvents(
  database: Database,
  options: { days?: number } = {},
): Promise<number> {
  const days = options.days ?? STREAM_RETENTION_DAYS;
  if (!Number.isFinite(days) || days < 0)
    throw invalid('days', `must be a number of days from 0, got ${days}`);
  const result = await sql<{ deleted: string | number }>`
    SELECT ferry_prune_stream_events(make_interval(secs => ${days * 86_400})) AS deleted`.execute(
    database.db,
  );
  return Number(result.rows[0]?.deleted ?? 0);
}
