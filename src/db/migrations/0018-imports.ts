/**
 * Imports (docs/import.md).
 *
 * - `imports`: one row per import or plan (dry run): its source, options, state, progress,
 *   the checkpoint of its last committed batch (a resumed import starts after it) and its
 *   report (counts per entity: created, updated, unchanged, conflicts, rejected).
 * - `import_map`: every imported item, keyed by (tenant, source system, entity, source type,
 *   source id), with the Ferry row it became, the hash of the source content last applied and the
 *   hash of the row as the import left it (a row changed in Ferry since then is a conflict,
 *   not an update). Running the same import again changes nothing.
 * - `import_rejections`: the items an import could not take, with the original record and
 *   the reasons; `GET /api/v1/imports/{id}/rejected` writes them as a file to fix and import again.
 * - The live-stream triggers step aside while a silent import writes (the transaction
 *   setting `ferry.silent`), as they do for a restore.
 */
export const up = /* sql */ `
CREATE TABLE imports (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  source text NOT NULL,
  dataset text,
  input_kind text NOT NULL CHECK (input_kind IN ('stored', 'path')),
  input_ref text NOT NULL,
  input_name text NOT NULL,
  input_bytes bigint NOT NULL DEFAULT 0,
  input_deleted_at timestamptz,
  dry_run boolean NOT NULL,
  conflict jsonb NOT NULL DEFAULT '{}',
  all_or_nothing boolean NOT NULL DEFAULT false,
  notify boolean NOT NULL DEFAULT false,
  status text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
  phase text,
  items_done bigint NOT NULL DEFAULT 0,
  items_total bigint,
  bytes_done bigint NOT NULL DEFAULT 0,
  checkpoint jsonb,
  report jsonb NOT NULL DEFAULT '{}',
  rejected_count integer NOT NULL DEFAULT 0,
  error_code text,
  error text,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX imports_tenant ON imports (tenant_id, created_at DESC);

CREATE TABLE import_map (
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  source_system text NOT NULL,
  source_type text NOT NULL,
  source_id text NOT NULL,
  entity text NOT NULL,
  target_id uuid NOT NULL,
  content_hash text NOT NULL,
  row_hash text NOT NULL,
  import_id uuid NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, source_system, entity, source_type, source_id)
);
CREATE INDEX import_map_target ON import_map (target_id);
CREATE INDEX import_map_import ON import_map (import_id);

CREATE TABLE import_rejections (
  import_id uuid NOT NULL REFERENCES imports(id) ON DELETE CASCADE,
  seq integer NOT NULL,
  entity text NOT NULL,
  location text NOT NULL,
  errors text[] NOT NULL,
  raw text NOT NULL,
  PRIMARY KEY (import_id, seq)
);

CREATE OR REPLACE FUNCTION ferry_stream_conversations_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  -- A restore loads rows that already happened, and a silent import rows of another
  -- system's past: no live events for them.
  IF coalesce(current_setting('ferry.restoring', true), '') = 'on'
    OR coalesce(current_setting('ferry.silent', true), '') = 'on' THEN RETURN NULL; END IF;
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
  -- A restore loads rows that already happened, and a silent import rows of another
  -- system's past: no live events for them.
  IF coalesce(current_setting('ferry.restoring', true), '') = 'on'
    OR coalesce(current_setting('ferry.silent', true), '') = 'on' THEN RETURN NULL; END IF;
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
  -- A restore loads rows that already happened, and a silent import rows of another
  -- system's past: no live events for them.
  IF coalesce(current_setting('ferry.restoring', true), '') = 'on'
    OR coalesce(current_setting('ferry.silent', true), '') = 'on' THEN RETURN NULL; END IF;
  INSERT INTO stream_events (tenant_id, conversation_id, site_id, event, data)
  SELECT n.tenant_id, n.conversation_id,
    (SELECT c.site_id FROM conversations c WHERE c.id = n.conversation_id), 'message_created',
    jsonb_build_object('message_id', n.id)
  FROM new_rows n;
  PERFORM pg_notify('ferry_stream_' || TG_TABLE_SCHEMA, t.tenant_id::text)
  FROM (SELECT DISTINCT tenant_id FROM new_rows) t;
  RETURN NULL;
END $$;
`;
