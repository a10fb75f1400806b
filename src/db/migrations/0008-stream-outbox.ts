/**
 * The live stream's outbox: conversation events written by triggers in the same
 * transaction as the change, so every API process (on PostgreSQL) sees them and none is
 * lost. See docs/stream.md.
 *
 * - `seq` is the event id clients see and resume from.
 * - `tx` is the writing transaction (`pg_current_xact_id()`). Sequence values are taken
 *   before commit, so a reader ordering by `seq` alone could pass over an event of a
 *   transaction that commits late. Readers instead order by `(tx, seq)` and only read
 *   rows with `tx` below the xmin of their snapshot: those transactions have all ended,
 *   so nothing can appear later before that point (no gaps, no duplicates).
 * - The triggers are statement-level with transition tables: a COPY of a million messages
 *   runs one `INSERT ... SELECT` instead of a million trigger calls. An UPDATE that only
 *   moves `last_updated` (which migration 0005 bumps on every update) is no event.
 * - Message content is not copied here: readers join it from `messages`, so an erased or
 *   edited message is not kept in a second place.
 * - A notification on `ferry_stream_<schema>` (payload: the tenant id) wakes listeners;
 *   it is only a hint, readers poll by position as well.
 * - `ferry_prune_stream_events(interval)` deletes events older than the interval (and
 *   those of tenants that no longer exist); the job scheduler calls it daily.
 *
 * Runs on PostgreSQL 15+ and PGlite. Functions pin `search_path` to the schema the
 * migration ran in, so writers with another search_path still reach the outbox.
 */
export const up = /* sql */ `
CREATE TABLE stream_events (
  seq bigserial PRIMARY KEY,
  tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
  tenant_id uuid NOT NULL,
  conversation_id uuid NOT NULL,
  site_id uuid NOT NULL,
  event text NOT NULL CHECK (event IN ('conversation_started', 'message_created', 'conversation_updated', 'conversation_ended')),
  data jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stream_events_position ON stream_events (tx, seq);
CREATE INDEX stream_events_created ON stream_events USING brin (created_at);

CREATE FUNCTION ferry_stream_conversations_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
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

CREATE FUNCTION ferry_stream_conversations_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
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

CREATE FUNCTION ferry_stream_messages_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO stream_events (tenant_id, conversation_id, site_id, event, data)
  SELECT n.tenant_id, n.conversation_id,
    (SELECT c.site_id FROM conversations c WHERE c.id = n.conversation_id), 'message_created',
    jsonb_build_object('message_id', n.id)
  FROM new_rows n;
  PERFORM pg_notify('ferry_stream_' || TG_TABLE_SCHEMA, t.tenant_id::text)
  FROM (SELECT DISTINCT tenant_id FROM new_rows) t;
  RETURN NULL;
END $$;

CREATE TRIGGER ferry_stream_conversations_inserted AFTER INSERT ON conversations
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION ferry_stream_conversations_inserted();
CREATE TRIGGER ferry_stream_conversations_updated AFTER UPDATE ON conversations
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION ferry_stream_conversations_updated();
CREATE TRIGGER ferry_stream_messages_inserted AFTER INSERT ON messages
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION ferry_stream_messages_inserted();

CREATE FUNCTION ferry_prune_stream_events(keep interval) RETURNS bigint
LANGUAGE sql SET search_path FROM CURRENT AS $$
  WITH gone AS (
    DELETE FROM stream_events e
    WHERE e.created_at < now() - keep
       OR NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = e.tenant_id)
    RETURNING 1
  )
  SELECT count(*) FROM gone
$$;
`;
