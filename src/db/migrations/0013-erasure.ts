/**
 * Erasure of a data subject (docs/erasure.md).
 *
 * - `erasure_runs`: per request and store (`database`, `object_store`), the outcome of that
 *   store's erasure, written in the same transaction as the database's changes. A run that
 *   is repeated (a retry after a crash) finds the outcome and reports it again instead of
 *   erasing twice: the totals of a resumed erasure equal those of an uninterrupted one.
 * - `erasure_ledger`: one row per erasure: the subject's keyed hash, the datasets touched,
 *   when. A restore of a backup taken before the erasure replays the ledger, so an erased
 *   person stays erased. It holds no identifier.
 * - `ferry_erase_text(txt, emails, phones, names)`: the text with the subject's email
 *   addresses (`[email]`), phone numbers in any common writing (`[phone]`) and names
 *   (`[name]`) replaced, case-insensitively; everything else is left as it is.
 */
export const up = /* sql */ `
CREATE TABLE erasure_runs (
  request_id uuid NOT NULL,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  store text NOT NULL CHECK (store IN ('database', 'object_store')),
  outcome jsonb NOT NULL,
  finished_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (request_id, store)
);

CREATE TABLE erasure_ledger (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  request_id uuid NOT NULL UNIQUE,
  subject_key text NOT NULL,
  datasets text[] NOT NULL,
  erased_at timestamptz NOT NULL
);

CREATE INDEX erasure_ledger_tenant ON erasure_ledger (tenant_id, erased_at);

CREATE OR REPLACE FUNCTION ferry_erase_text(txt text, emails text[], phones text[], names text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_out text := txt;
  v_item text;
  v_match text;
  v_digits text;
BEGIN
  IF v_out IS NULL THEN
    RETURN NULL;
  END IF;
  FOREACH v_item IN ARRAY coalesce(emails, '{}') LOOP
    IF length(v_item) > 0 AND strpos(lower(v_out), lower(v_item)) > 0 THEN
      v_out := regexp_replace(v_out, regexp_replace(v_item, '([.^$*+?()\\[\\]{}|\\\\-])', '\\\\\\1', 'g'), '[email]', 'gi');
    END IF;
  END LOOP;
  FOREACH v_item IN ARRAY coalesce(names, '{}') LOOP
    IF length(v_item) > 0 AND strpos(lower(v_out), lower(v_item)) > 0 THEN
      v_out := regexp_replace(v_out, regexp_replace(v_item, '([.^$*+?()\\[\\]{}|\\\\-])', '\\\\\\1', 'g'), '[name]', 'gi');
    END IF;
  END LOOP;
  IF coalesce(array_length(phones, 1), 0) > 0 AND v_out ~ '[0-9]{3}' THEN
    FOR v_match IN
      SELECT DISTINCT m[1] FROM regexp_matches(v_out, '(\\+?[0-9][0-9 ().-]{5,}[0-9])', 'g') AS m
    LOOP
      v_digits := ltrim(regexp_replace(v_match, '[^0-9]', '', 'g'), '0');
      IF length(v_digits) >= 6 AND EXISTS (
        SELECT 1 FROM unnest(phones) AS k
        WHERE right(regexp_replace(k, '[^0-9]', '', 'g'), length(v_digits)) = v_digits
      ) THEN
        v_out := replace(v_out, v_match, '[phone]');
      END IF;
    END LOOP;
  END IF;
  RETURN v_out;
END
$$;
`;
