/**
 * Export jobs: the export requests with their persisted state machine and progress,
 * the files they produced, and the idempotency keys of POST requests. The job queue
 * itself lives in pg-boss's own schema (see src/jobs/queue.ts).
 *
 * An export's `config` is the normalized request (what `POST /api/v1/exports/{id}/repeat`
 * runs again); `datasets` repeats its dataset names for filtering. `attempt_id` is the
 * lease of the worker attempt that currently owns the export: every state change a
 * worker makes is conditional on it, so an attempt that lost the export (cancelled, or
 * taken over after its worker was presumed dead) can never mark it completed.
 */
export const up = /* sql */ `
CREATE TABLE export_requests (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  actor text NOT NULL,
  api_key_id uuid,
  team_member_id uuid,
  status text NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'running', 'packaging', 'completed', 'failed', 'cancelled', 'expired')),
  kind text NOT NULL CHECK (kind IN ('dataset', 'package')),
  datasets text[] NOT NULL,
  config jsonb NOT NULL,
  retention_days integer NOT NULL CHECK (retention_days > 0),
  max_file_bytes bigint CHECK (max_file_bytes > 0),
  repeat_of uuid REFERENCES export_requests(id) ON DELETE SET NULL,
  records_done bigint NOT NULL DEFAULT 0,
  records_estimated bigint,
  bytes_done bigint NOT NULL DEFAULT 0,
  progress_at timestamptz,
  attempts integer NOT NULL DEFAULT 0,
  attempt_id uuid,
  error_code text,
  error_message text,
  download_count integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz,
  expires_at timestamptz,
  files_deleted_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX export_requests_tenant_created_idx ON export_requests (tenant_id, created_at DESC, id DESC);
CREATE INDEX export_requests_expiry_idx ON export_requests (expires_at) WHERE status = 'completed';
CREATE INDEX export_requests_active_idx ON export_requests (tenant_id, status)
  WHERE status IN ('queued', 'running', 'packaging');

CREATE TABLE export_files (
  id uuid PRIMARY KEY,
  export_id uuid NOT NULL REFERENCES export_requests(id) ON DELETE CASCADE,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name text NOT NULL,
  storage_key text NOT NULL UNIQUE,
  content_type text NOT NULL,
  bytes bigint NOT NULL CHECK (bytes >= 0),
  records bigint NOT NULL CHECK (records >= 0),
  sha256 char(64) NOT NULL,
  encrypted boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (export_id, name)
);

CREATE INDEX export_files_tenant_idx ON export_files (tenant_id);

CREATE TABLE idempotency_keys (
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  credential text NOT NULL,
  key text NOT NULL,
  operation text NOT NULL,
  request_hash char(64) NOT NULL,
  resource_id uuid,
  status_code integer NOT NULL,
  response jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, credential, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
`;
