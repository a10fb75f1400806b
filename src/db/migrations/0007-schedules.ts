/**
 * Scheduled exports (docs/schedules.md).
 *
 * - `schedules`: one row per schedule. `frequency`, `time_of_day` and `timezone` are
 *   what the user entered; `cron` is the expression they compile to (evaluated in
 *   `timezone`). `config` holds the datasets with their selection mode, the file
 *   options, the delivery targets (secrets sealed), notification addresses and
 *   retention. `next_run_at` is the next due slot of an active schedule (null while
 *   paused); the scheduler tick moves it forward. `run_count` numbers the runs.
 * - `schedule_runs`: one row per due slot (or "run now"). UNIQUE (schedule_id, due_at)
 *   is what makes a slot run once however many scheduler ticks race for it. A run
 *   keeps a snapshot of the schedule's config, so retries deliver what the first
 *   attempt started, to the same targets. `attempt_id` and `lease_until` are the lease
 *   of the worker attempt that owns the run; `files` lists what the run produced, with
 *   the change-feed cursor each incremental file reaches.
 * - `schedule_run_deliveries`: per file and target, every delivery outcome. At most
 *   one `delivered` row per (run, file, target): a retried run only delivers where it
 *   has not yet.
 * - `schedule_checkpoints`: per schedule and incremental dataset, the change-feed
 *   cursor of the last delivered run. It moves only in the transaction that marks a
 *   run delivered.
 */
export const up = /* sql */ `
CREATE TABLE schedules (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name text NOT NULL,
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
  frequency jsonb NOT NULL,
  time_of_day text,
  timezone text NOT NULL,
  cron text NOT NULL,
  config jsonb NOT NULL,
  next_run_at timestamptz,
  run_count integer NOT NULL DEFAULT 0,
  actor text NOT NULL,
  api_key_id uuid,
  team_member_id uuid,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_due ON schedules (next_run_at) WHERE status = 'active';
CREATE INDEX schedules_tenant ON schedules (tenant_id, created_at, id);

CREATE TABLE schedule_runs (
  id uuid PRIMARY KEY,
  schedule_id uuid NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  run_number integer NOT NULL,
  due_at timestamptz NOT NULL,
  trigger text NOT NULL CHECK (trigger IN ('scheduled', 'manual')),
  actor text NOT NULL,
  status text NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'running', 'retrying', 'delivered', 'failed')),
  config jsonb NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  attempt_id uuid,
  lease_until timestamptz,
  dispatched_at timestamptz,
  files jsonb NOT NULL DEFAULT '[]',
  records bigint,
  tombstones bigint,
  bytes bigint,
  checkpoint_advanced boolean NOT NULL DEFAULT false,
  error_code text,
  error_message text,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (schedule_id, due_at),
  UNIQUE (schedule_id, run_number)
);

CREATE INDEX schedule_runs_history ON schedule_runs (schedule_id, run_number DESC);
CREATE INDEX schedule_runs_open ON schedule_runs (schedule_id, due_at)
  WHERE status IN ('queued', 'running', 'retrying');

CREATE TABLE schedule_run_deliveries (
  id uuid PRIMARY KEY,
  run_id uuid NOT NULL REFERENCES schedule_runs(id) ON DELETE CASCADE,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  export_id uuid NOT NULL,
  target_index integer NOT NULL,
  target_type text NOT NULL CHECK (target_type IN ('s3', 'sftp', 'email', 'webhook')),
  target_name text,
  target_label text NOT NULL,
  status text NOT NULL CHECK (status IN ('delivered', 'failed')),
  attempts integer NOT NULL,
  location text,
  error text,
  error_code text,
  bytes_sent bigint NOT NULL DEFAULT 0,
  checksum_verified boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedule_run_deliveries_run ON schedule_run_deliveries (run_id, created_at);
CREATE UNIQUE INDEX schedule_run_deliveries_once ON schedule_run_deliveries (run_id, export_id, target_index)
  WHERE status = 'delivered';

CREATE TABLE schedule_checkpoints (
  schedule_id uuid NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
  dataset text NOT NULL,
  cursor text NOT NULL,
  run_id uuid,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (schedule_id, dataset)
);
`;
