/**
 * Partitioned exports (docs/scaling.md).
 *
 * A large export is split by key range into partitions that any worker of the fleet takes:
 * one row per partition with its range, the exported snapshot every partition reads in, who
 * holds it and until when (a lease kept alive by heartbeats; a partition whose worker died is
 * taken again), and, once written, the part object with its records, bytes and SHA-256. The
 * attempt that planned them assembles the parts in order into the export's file.
 */
export const up = /* sql */ `
CREATE TABLE export_partitions (
  export_id uuid NOT NULL REFERENCES export_requests(id) ON DELETE CASCADE,
  attempt_id uuid NOT NULL,
  idx integer NOT NULL,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  count integer NOT NULL,
  after_key text,
  through_key text,
  snapshot text NOT NULL,
  coordinator text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'running', 'done')),
  claimed_by text,
  heartbeat_at timestamptz,
  attempts integer NOT NULL DEFAULT 0,
  error text,
  object_key text,
  records bigint,
  bytes bigint,
  sha256 text,
  PRIMARY KEY (export_id, attempt_id, idx)
);
`;
