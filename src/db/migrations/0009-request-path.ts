/**
 * Cheaper writes on the API's request path (see docs/benchmarks.md, export requests):
 *
 * - `rate_limit_counters` becomes UNLOGGED. Every authenticated request bumps its key's
 *   counters; an unlogged table writes no WAL, so that statement's commit does not wait
 *   for a disk flush. A PostgreSQL crash empties the table, which only resets the current
 *   windows: losing a few minutes of request counts is the accepted price.
 * - `usage_counters` rows are split into shards. Every manual export of a tenant bumped
 *   one row per month, held locked until its transaction committed, so a tenant's
 *   concurrent export requests queued behind each other's commits. Writers now pick one
 *   of eight shards at random and readers sum them.
 * - The `concurrent_jobs` quota counts a tenant's running exports on every export
 *   request; a partial index of exactly those rows keeps that count independent of how
 *   many exports wait in the queue.
 */
export const up = /* sql */ `
ALTER TABLE rate_limit_counters SET UNLOGGED;

ALTER TABLE usage_counters ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE usage_counters DROP CONSTRAINT usage_counters_pkey;
ALTER TABLE usage_counters ADD PRIMARY KEY (tenant_id, metric, period_start, shard);

CREATE INDEX export_requests_running_idx ON export_requests (tenant_id)
  WHERE status IN ('running', 'packaging');
`;
