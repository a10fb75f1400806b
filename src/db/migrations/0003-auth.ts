/**
 * Ferry's own tables for authentication and accounting: API keys (only a keyed hash of
 * each key is stored), rate-limit counters shared by every API process, per-tenant usage
 * counters for plan quotas, free data-subject requests, and the audit trail.
 * See docs/auth.md.
 */
export const up = /* sql */ `
CREATE TABLE api_keys (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name text,
  role text NOT NULL CHECK (role IN ('admin', 'manager', 'analyst', 'agent')),
  team_member_id uuid REFERENCES team_members(id) ON DELETE CASCADE,
  prefix text NOT NULL,
  key_hash text NOT NULL,
  scopes text[] NOT NULL DEFAULT '{}',
  created_by text,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz,
  CHECK (role <> 'agent' OR team_member_id IS NOT NULL)
);
CREATE INDEX api_keys_prefix ON api_keys (prefix);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at, id);

CREATE TABLE rate_limit_counters (
  api_key_id uuid NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
  window_kind text NOT NULL CHECK (window_kind IN ('hour', 'burst')),
  window_start timestamptz NOT NULL,
  count integer NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (api_key_id, window_kind, window_start)
);

CREATE TABLE usage_counters (
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  metric text NOT NULL,
  period_start timestamptz NOT NULL,
  count integer NOT NULL,
  PRIMARY KEY (tenant_id, metric, period_start)
);

CREATE TABLE subject_requests (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  subject_id text NOT NULL,
  occurred_at timestamptz NOT NULL
);
CREATE INDEX subject_requests_subject ON subject_requests (tenant_id, subject_id, occurred_at);

CREATE TABLE audit_events (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  occurred_at timestamptz NOT NULL,
  actor text NOT NULL,
  action text NOT NULL,
  target_id text,
  data_type text,
  date_from text,
  date_to text,
  record_count bigint,
  file_bytes bigint,
  download_count integer,
  ip_address text,
  user_agent text,
  success boolean NOT NULL,
  error text,
  retention_until timestamptz
);
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, occurred_at, id);
CREATE INDEX audit_events_action ON audit_events (tenant_id, action, occurred_at);
`;
