/**
 * Webhook endpoints, their outbox of signed messages and each delivery attempt, and
 * the per-target results of file deliveries (S3, SFTP, email, webhook). See
 * docs/webhooks.md and docs/destinations.md.
 */
export const up = /* sql */ `
CREATE TABLE webhook_endpoints (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  url text NOT NULL,
  description text,
  -- Event names the endpoint receives; ["*"] means every event.
  events jsonb NOT NULL,
  -- Signing secrets (whsec_...), sealed with the secret key; the previous one signs too until it expires.
  secret_sealed text NOT NULL,
  previous_secret_sealed text,
  previous_secret_expires_at timestamptz,
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  disabled_at timestamptz,
  disabled_reason text,
  -- Messages that exhausted their retries in a row, and the first failure since the last success.
  consecutive_failures integer NOT NULL DEFAULT 0,
  failing_since timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at);

-- The outbox: one message per event and endpoint. Its id is the webhook-id header,
-- the same on every retry; payload holds the exact bytes that are signed and sent.
CREATE TABLE webhook_messages (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  endpoint_id uuid NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
  event text NOT NULL,
  payload text NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz,
  -- A worker's lease while it attempts the message; an expired lease means the worker died.
  locked_until timestamptz,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz,
  failed_at timestamptz
);

CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_endpoint ON webhook_messages (endpoint_id, created_at DESC);

CREATE TABLE webhook_attempts (
  id uuid PRIMARY KEY,
  message_id text NOT NULL REFERENCES webhook_messages(id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  started_at timestamptz NOT NULL,
  status_code integer,
  latency_ms integer NOT NULL,
  outcome text NOT NULL CHECK (outcome IN ('success', 'failure')),
  error text,
  response_excerpt text,
  UNIQUE (message_id, attempt)
);

-- One row per export and delivery target: what deliverAll reported.
CREATE TABLE deliveries (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  export_id text NOT NULL,
  schedule_id text,
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

CREATE INDEX deliveries_export ON deliveries (tenant_id, export_id);
`;
