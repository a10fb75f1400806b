/**
 * Selective deletion (docs/deletion.md).
 *
 * - `deletions`: one row per deletion a tenant asked for: its target (a conversation,
 *   conversations chosen by the export engine's filters, a customer, a knowledge-base
 *   document), the plan it was confirmed with, its state and its counts so far. A job
 *   carries it out in batches, each in its own transaction with its counts, and picks up
 *   where it stopped after a crash.
 * - `deletion_rows`: the rows a deletion chose, fixed once when it starts (so a resumed job
 *   deletes what the first attempt would have), each marked when it is gone. Once the
 *   deletion completes, these ids are its part of the erasure ledger: a restore of a backup
 *   taken before the deletion deletes them again before it commits. Like the erasure ledger,
 *   they are never part of a backup.
 */
export const up = /* sql */ `
CREATE TABLE deletions (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  target text NOT NULL CHECK (target IN ('conversation', 'conversations', 'customer', 'document')),
  target_id uuid,
  filters jsonb NOT NULL DEFAULT '{}',
  status text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
  plan jsonb NOT NULL,
  progress jsonb NOT NULL DEFAULT '{}',
  selected integer,
  done integer NOT NULL DEFAULT 0,
  error text,
  actor text NOT NULL,
  created_at timestamptz NOT NULL,
  started_at timestamptz,
  finished_at timestamptz
);

CREATE INDEX deletions_tenant ON deletions (tenant_id, created_at);

CREATE TABLE deletion_rows (
  deletion_id uuid NOT NULL REFERENCES deletions(id) ON DELETE CASCADE,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  dataset text NOT NULL,
  row_id uuid NOT NULL,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'deleted', 'held')),
  PRIMARY KEY (deletion_id, dataset, row_id)
);

CREATE INDEX deletion_rows_pending ON deletion_rows (deletion_id, row_id) WHERE state = 'pending';
CREATE INDEX deletion_rows_tenant ON deletion_rows (tenant_id, dataset);
`;
