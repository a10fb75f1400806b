/**
 * Retention, legal holds, account closure, consent history, records of processing,
 * processors and the tamper-evident audit trail (docs/retention.md, docs/legal-holds.md,
 * docs/compliance.md).
 *
 * - `tenants.status`: `active`, `closing` (closed, in its grace period, `purge_after` set)
 *   or `purged` (the row stays only while a legal hold keeps data of the tenant).
 * - `legal_holds`: what no deletion may touch while `released_at` is empty. A hold is
 *   released with a reason, never dropped.
 * - `retention_policies`: per-tenant overrides of the data map's defaults.
 * - `retention_sweeps`: one row per sweep; `as_of` fixes the cutoffs so a resumed sweep
 *   deletes what the first attempt would have, `progress` holds the per-dataset counts.
 * - `retention_archives`: the verified packages `archive` policies wrote before deleting.
 * - `consent_records` gains the legal basis and the policy version of each record; the
 *   records are events (given or withdrawn), so the table is the full history.
 * - `processing_activities`, `processors`, `processor_notifications`: the record of
 *   processing (ROPA), the third parties, and each erasure's notice to them.
 * - The audit chain: each event carries `seq`, `prev_hash` and `hash`, set by the insert
 *   trigger below from the tenant's chain head in `audit_chains` (the row lock orders
 *   concurrent writers, a rolled-back insert leaves no gap). The scrubbable text (error,
 *   user agent) enters the hash through `text_digest`, so an erasure that scrubs it leaves
 *   the chain intact and is marked by `redacted_by` (from the transaction setting
 *   `ferry.redaction`). `pruned_seq`/`pruned_hash` record where retention cut the start of
 *   the chain; `audit_anchors` are the signed daily chain heads.
 */
export const up = /* sql */ `
ALTER TABLE tenants
  ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closing', 'purged')),
  ADD COLUMN closed_at timestamptz,
  ADD COLUMN closed_by text,
  ADD COLUMN purge_after timestamptz,
  ADD COLUMN purged_at timestamptz;

CREATE TABLE legal_holds (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  scope text NOT NULL CHECK (scope IN ('tenant', 'subject', 'dataset', 'conversation_ids', 'date_range')),
  subject jsonb,
  datasets text[] NOT NULL DEFAULT '{}',
  conversation_ids uuid[] NOT NULL DEFAULT '{}',
  date_from timestamptz,
  date_to timestamptz,
  reason text NOT NULL,
  matter text NOT NULL,
  created_at timestamptz NOT NULL,
  created_by text NOT NULL,
  released_at timestamptz,
  released_by text,
  release_reason text
);
CREATE INDEX legal_holds_tenant ON legal_holds (tenant_id, created_at);

CREATE TABLE retention_policies (
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  dataset text NOT NULL,
  keep text NOT NULL,
  after text NOT NULL CHECK (after IN ('last_activity', 'created', 'account_closed')),
  action text NOT NULL CHECK (action IN ('delete', 'anonymize', 'archive')),
  archive_keep text,
  updated_at timestamptz NOT NULL,
  updated_by text NOT NULL,
  PRIMARY KEY (tenant_id, dataset)
);

CREATE TABLE retention_sweeps (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  trigger text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
  sweep_date date NOT NULL,
  as_of timestamptz NOT NULL,
  status text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
  progress jsonb NOT NULL DEFAULT '{}',
  error text,
  actor text NOT NULL,
  started_at timestamptz NOT NULL,
  finished_at timestamptz
);
CREATE UNIQUE INDEX retention_sweeps_daily ON retention_sweeps (tenant_id, sweep_date) WHERE trigger = 'schedule';
CREATE INDEX retention_sweeps_tenant ON retention_sweeps (tenant_id, started_at);

CREATE TABLE retention_archives (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  sweep_id uuid NOT NULL,
  dataset text NOT NULL,
  object_key text NOT NULL,
  sha256 text NOT NULL,
  bytes bigint NOT NULL,
  records bigint NOT NULL,
  cutoff timestamptz NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz,
  UNIQUE (sweep_id, dataset)
);

ALTER TABLE consent_records
  ADD COLUMN legal_basis text NOT NULL DEFAULT 'consent',
  ADD COLUMN policy_version text;
CREATE INDEX consent_records_customer ON consent_records (tenant_id, customer_id, recorded_at);

CREATE TABLE processing_activities (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  processing_activity text NOT NULL,
  legal_basis text NOT NULL,
  datasets text[] NOT NULL,
  data_subjects text[] NOT NULL,
  recipients text[] NOT NULL DEFAULT '{}',
  international_transfers jsonb NOT NULL DEFAULT '{"countries": [], "safeguards": null}',
  automated_processing jsonb NOT NULL DEFAULT '{"exists": false, "description": null, "human_review": null}',
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);

CREATE TABLE processors (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name text NOT NULL,
  purpose text NOT NULL,
  data_categories text[] NOT NULL,
  location text NOT NULL,
  retention text NOT NULL,
  deletion_channel text NOT NULL CHECK (deletion_channel IN ('email', 'webhook', 'manual')),
  deletion_contact text,
  deletion_instructions text,
  included_in_exports boolean NOT NULL DEFAULT false,
  export_instructions_url text,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  UNIQUE (tenant_id, name)
);

CREATE TABLE processor_notifications (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  processor_id uuid NOT NULL REFERENCES processors(id) ON DELETE CASCADE,
  request_id uuid NOT NULL,
  channel text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'acknowledged')),
  notified_at timestamptz,
  acknowledged_at timestamptz,
  error text,
  created_at timestamptz NOT NULL,
  UNIQUE (request_id, processor_id)
);

ALTER TABLE audit_events
  ADD COLUMN seq bigint,
  ADD COLUMN prev_hash text,
  ADD COLUMN hash text,
  ADD COLUMN text_digest text,
  ADD COLUMN redacted_by text;
CREATE UNIQUE INDEX audit_events_chain ON audit_events (tenant_id, seq);

CREATE TABLE audit_chains (
  tenant_id uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
  last_seq bigint NOT NULL DEFAULT 0,
  last_hash text,
  pruned_seq bigint NOT NULL DEFAULT 0,
  pruned_hash text
);

CREATE TABLE audit_anchors (
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  seq bigint NOT NULL,
  hash text NOT NULL,
  anchored_at timestamptz NOT NULL,
  body text NOT NULL,
  signature text NOT NULL,
  key_id text NOT NULL,
  PRIMARY KEY (tenant_id, seq)
);

CREATE OR REPLACE FUNCTION ferry_audit_text_digest(p_error text, p_user_agent text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT encode(sha256(convert_to(jsonb_build_array(p_error, p_user_agent)::text, 'UTF8')), 'hex')
$$;

CREATE OR REPLACE FUNCTION ferry_audit_hash(e audit_events) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT encode(sha256(convert_to(jsonb_build_array(
    e.seq, e.prev_hash, e.id, e.tenant_id,
    (extract(epoch FROM e.occurred_at) * 1000000)::bigint::text,
    e.actor, e.action, e.target_id, e.data_type, e.date_from, e.date_to,
    e.record_count::text, e.file_bytes::text, e.download_count, e.ip_address, e.success,
    (extract(epoch FROM e.retention_until) * 1000000)::bigint::text,
    e.text_digest
  )::text, 'UTF8')), 'hex')
$$;

CREATE OR REPLACE FUNCTION ferry_audit_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_seq bigint;
  v_prev text;
BEGIN
  INSERT INTO audit_chains (tenant_id) VALUES (NEW.tenant_id) ON CONFLICT (tenant_id) DO NOTHING;
  UPDATE audit_chains SET last_seq = last_seq + 1 WHERE tenant_id = NEW.tenant_id
    RETURNING last_seq, last_hash INTO v_seq, v_prev;
  NEW.seq := v_seq;
  NEW.prev_hash := v_prev;
  NEW.text_digest := ferry_audit_text_digest(NEW.error, NEW.user_agent);
  NEW.redacted_by := NULL;
  NEW.hash := ferry_audit_hash(NEW);
  UPDATE audit_chains SET last_hash = NEW.hash WHERE tenant_id = NEW.tenant_id;
  RETURN NEW;
END
$$;

CREATE TRIGGER audit_events_chain BEFORE INSERT ON audit_events
  FOR EACH ROW EXECUTE FUNCTION ferry_audit_chain();

CREATE OR REPLACE FUNCTION ferry_audit_redaction() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.error IS DISTINCT FROM OLD.error OR NEW.user_agent IS DISTINCT FROM OLD.user_agent)
     AND coalesce(current_setting('ferry.redaction', true), '') <> '' THEN
    NEW.redacted_by := current_setting('ferry.redaction', true);
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER audit_events_redaction BEFORE UPDATE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION ferry_audit_redaction();

DO $$
DECLARE
  r audit_events%ROWTYPE;
  v_tenant uuid := NULL;
  v_seq bigint := 0;
  v_prev text := NULL;
  v_hash text;
BEGIN
  FOR r IN SELECT * FROM audit_events ORDER BY tenant_id, occurred_at, id LOOP
    IF v_tenant IS DISTINCT FROM r.tenant_id THEN
      IF v_tenant IS NOT NULL THEN
        INSERT INTO audit_chains (tenant_id, last_seq, last_hash) VALUES (v_tenant, v_seq, v_prev);
      END IF;
      v_tenant := r.tenant_id;
      v_seq := 0;
      v_prev := NULL;
    END IF;
    v_seq := v_seq + 1;
    r.seq := v_seq;
    r.prev_hash := v_prev;
    r.text_digest := ferry_audit_text_digest(r.error, r.user_agent);
    v_hash := ferry_audit_hash(r);
    UPDATE audit_events SET seq = v_seq, prev_hash = v_prev, text_digest = r.text_digest, hash = v_hash
      WHERE id = r.id;
    v_prev := v_hash;
  END LOOP;
  IF v_tenant IS NOT NULL THEN
    INSERT INTO audit_chains (tenant_id, last_seq, last_hash) VALUES (v_tenant, v_seq, v_prev);
  END IF;
END
$$;
`;
