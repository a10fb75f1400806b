/**
 * Tenant backups (docs/backup.md).
 *
 * - `backup_keys`: each tenant's data keys. `sealed` is the key sealed by the operator's
 *   secret key; `age_armor` the same key encrypted to the tenant's own age recipients (so
 *   the tenant can restore without the operator). Destroying a key (account purge) clears
 *   both and sets `destroyed_at`: every backup written under it becomes unreadable.
 * - `backup_settings`: a tenant's schedule (daily or weekly at a time of its zone), its
 *   destinations (sealed secrets), the keep policy (restic's forget rules), whether stored
 *   export files go in by reference or by content, and the prune lease that keeps a backup
 *   and a prune of the same repository from running at once.
 * - `backups`: the catalog. A row is `running` while it is written and `completed` only
 *   after its signed manifest is committed at every destination; `failed` otherwise;
 *   `forgotten` once retention dropped it (its manifest is deleted, its chunks pruned).
 * - `backup_restores`: restores and drills, with their reports (what was restored,
 *   re-erased, measured).
 * - The live-stream triggers and the audit chain trigger step aside while a restore loads
 *   rows (the transaction setting `ferry.restoring`): restored messages are not new events,
 *   and restored audit events keep the sequence and hashes they were chained with.
 */
export const up = /* sql */ `
CREATE TABLE backup_keys (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  sealed text,
  age_armor text,
  recipients text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  destroyed_at timestamptz
);
CREATE INDEX backup_keys_tenant ON backup_keys (tenant_id, created_at DESC);

CREATE TABLE backup_settings (
  tenant_id uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
  enabled boolean NOT NULL DEFAULT false,
  frequency text NOT NULL DEFAULT 'daily' CHECK (frequency IN ('daily', 'weekly')),
  time_of_day text NOT NULL DEFAULT '02:00',
  weekday smallint NOT NULL DEFAULT 1 CHECK (weekday BETWEEN 1 AND 7),
  destinations jsonb NOT NULL DEFAULT '[]',
  keep jsonb NOT NULL DEFAULT '{}',
  stored_files text NOT NULL DEFAULT 'reference' CHECK (stored_files IN ('reference', 'content')),
  recipients text[] NOT NULL DEFAULT '{}',
  verify_weekday smallint NOT NULL DEFAULT 7 CHECK (verify_weekday BETWEEN 1 AND 7),
  drill_day smallint NOT NULL DEFAULT 15 CHECK (drill_day BETWEEN 1 AND 28),
  last_scheduled_on date,
  last_verified_on date,
  last_drilled_on date,
  prune_until timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  updated_by text NOT NULL DEFAULT 'system'
);

CREATE TABLE backups (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  status text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'forgotten')),
  kind text NOT NULL CHECK (kind IN ('full', 'incremental')),
  trigger text NOT NULL,
  actor text NOT NULL,
  parent_id uuid,
  key_id uuid,
  snapshot_at timestamptz,
  schema_version text,
  ferry_version text,
  tables integer NOT NULL DEFAULT 0,
  rows bigint NOT NULL DEFAULT 0,
  plain_bytes bigint NOT NULL DEFAULT 0,
  written_bytes bigint NOT NULL DEFAULT 0,
  chunks integer NOT NULL DEFAULT 0,
  new_chunks integer NOT NULL DEFAULT 0,
  manifest_sha256 text,
  destinations jsonb NOT NULL DEFAULT '[]',
  verified_at timestamptz,
  verify_status text,
  verify_error text,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  forgotten_at timestamptz,
  error text
);
CREATE INDEX backups_tenant ON backups (tenant_id, started_at DESC);

CREATE TABLE backup_restores (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  backup_id uuid NOT NULL,
  mode text NOT NULL CHECK (mode IN ('replace', 'sandbox', 'database', 'drill')),
  target_tenant_id uuid,
  destination text,
  status text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
  actor text NOT NULL,
  report jsonb,
  error text,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE INDEX backup_restores_tenant ON backup_restores (tenant_id, started_at DESC);

CREATE OR REPLACE FUNCTION ferry_stream_conversations_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  -- A restore loads rows that already happened: no live events for them.
  IF coalesce(current_setting('ferry.restoring', true), '') = 'on' THEN RETURN NULL; END IF;
  INSERT INTO stream_events (tenant_id, conversation_id, site_id, event, data)
  SELECT n.tenant_id, n.id, n.site_id, 'conversation_started',
    jsonb_build_object(
      'conversation_id', n.id, 'status', n.status, 'satisfaction_score', n.satisfaction_score,
      'resolution_time_minutes', n.resolution_time_minutes, 'message_count', n.message_count,
      'start_timestamp', n.start_timestamp, 'end_timestamp', n.end_timestamp)
  FROM new_rows n;
  PERFORM pg_notify('ferry_stream_' || TG_TABLE_SCHEMA, t.tenant_id::text)
  FROM (SELECT DISTINCT tenant_id FROM new_rows) t;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ferry_stream_conversations_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  -- A restore loads rows that already happened: no live events for them.
  IF coalesce(current_setting('ferry.restoring', true), '') = 'on' THEN RETURN NULL; END IF;
  INSERT INTO stream_events (tenant_id, conversation_id, site_id, event, data)
  SELECT n.tenant_id, n.id, n.site_id,
    CASE
      WHEN (o.end_timestamp IS NULL AND n.end_timestamp IS NOT NULL)
        OR (n.status = 'resolved' AND o.status <> 'resolved') THEN 'conversation_ended'
      ELSE 'conversation_updated'
    END,
    jsonb_build_object(
      'conversation_id', n.id, 'status', n.status, 'satisfaction_score', n.satisfaction_score,
      'resolution_time_minutes', n.resolution_time_minutes, 'message_count', n.message_count,
      'start_timestamp', n.start_timestamp, 'end_timestamp', n.end_timestamp)
  FROM new_rows n JOIN old_rows o ON o.id = n.id
  WHERE to_jsonb(o) - 'last_updated' IS DISTINCT FROM to_jsonb(n) - 'last_updated';
  IF FOUND THEN
    PERFORM pg_notify('ferry_stream_' || TG_TABLE_SCHEMA, t.tenant_id::text)
    FROM (SELECT DISTINCT tenant_id FROM new_rows) t;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ferry_stream_messages_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  -- A restore loads rows that already happened: no live events for them.
  IF coalesce(current_setting('ferry.restoring', true), '') = 'on' THEN RETURN NULL; END IF;
  INSERT INTO stream_events (tenant_id, conversation_id, site_id, event, data)
  SELECT n.tenant_id, n.conversation_id,
    (SELECT c.site_id FROM conversations c WHERE c.id = n.conversation_id), 'message_created',
    jsonb_build_object('message_id', n.id)
  FROM new_rows n;
  PERFORM pg_notify('ferry_stream_' || TG_TABLE_SCHEMA, t.tenant_id::text)
  FROM (SELECT DISTINCT tenant_id FROM new_rows) t;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ferry_audit_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_seq bigint;
  v_prev text;
BEGIN
  -- A restore loads events with the seq and hashes they were chained with.
  IF coalesce(current_setting('ferry.restoring', true), '') = 'on' AND NEW.hash IS NOT NULL THEN
    RETURN NEW;
  END IF;
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
`;
