/**
 * Data subject requests (docs/dsar.md).
 *
 * - `dsar_requests`: one row per request a person (or someone on their behalf) made.
 *   `subject` holds the normalized identifiers while the request is open; once a request
 *   is closed only `subject_key` (a keyed hash) stays, so the register keeps no
 *   identifiers. `due_at` is the legal deadline in force (the extended one after an
 *   extension), computed in the tenant's time zone when the request was received.
 *   `stage` is where an open request stands besides an extension (`extended` is shown
 *   as the status while the request waits with a moved deadline). `failed_step` says
 *   where a failed run resumes. `verification_*` is the one-time code sent by email,
 *   stored only as a keyed hash. `duplicate_of` links a request to the open one it
 *   repeats; `result` holds what the run produced (the access package's export, the
 *   erasure outcome's counts). `run_token`/`run_until` is the lease of the process running
 *   the request (a worker, or `ferry dsar run`), so two never run it at once.
 * - `ferry_scrub_others(txt, keep_emails, keep_phones)`: free text of a data subject's access
 *   package keeps the subject's own email addresses and phone numbers and replaces everyone
 *   else's (`[email]`, `[phone]`), so a package never hands one person another's contact data.
 */
export const up = /* sql */ `
CREATE TABLE dsar_requests (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  type text NOT NULL
    CHECK (type IN ('access', 'portability', 'erasure', 'rectification', 'restriction', 'opt_out')),
  regulation text NOT NULL CHECK (regulation IN ('gdpr', 'ccpa')),
  source text NOT NULL CHECK (source IN ('api', 'privacy_center', 'email', 'manual')),
  status text NOT NULL CHECK (status IN ('received', 'identity_pending', 'verified', 'awaiting_approval',
    'in_progress', 'completed', 'extended', 'denied', 'cancelled', 'failed')),
  stage text NOT NULL,
  subject jsonb,
  subject_key text NOT NULL,
  changes jsonb,
  note text,
  excessive boolean NOT NULL DEFAULT false,
  duplicate_of uuid REFERENCES dsar_requests(id) ON DELETE SET NULL,
  received_at timestamptz NOT NULL,
  confirm_by timestamptz,
  due_at timestamptz NOT NULL,
  original_due_at timestamptz NOT NULL,
  extended_at timestamptz,
  extension_reason text,
  verified_at timestamptz,
  verification_method text,
  approved_at timestamptz,
  completed_at timestamptz,
  closed_reason text,
  outcome text,
  failed_step text,
  error_message text,
  result jsonb,
  receipt_id uuid,
  verification_code_hash text,
  verification_expires_at timestamptz,
  verification_attempts integer NOT NULL DEFAULT 0,
  verification_sent_at timestamptz,
  overdue_notified_at timestamptz,
  run_token uuid,
  run_until timestamptz,
  actor text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dsar_requests_tenant ON dsar_requests (tenant_id, received_at DESC, id DESC);
CREATE INDEX dsar_requests_subject ON dsar_requests (tenant_id, subject_key, type);
CREATE INDEX dsar_requests_open_due ON dsar_requests (due_at)
  WHERE status NOT IN ('completed', 'denied', 'cancelled');

CREATE OR REPLACE FUNCTION ferry_scrub_others(txt text, keep_emails text[], keep_phones text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_out text := txt;
  v_match text;
  v_digits text;
BEGIN
  IF v_out IS NULL THEN
    RETURN NULL;
  END IF;
  IF strpos(v_out, '@') > 0 THEN
    FOR v_match IN
      SELECT DISTINCT m[1] FROM regexp_matches(v_out, '([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,})', 'g') AS m
    LOOP
      IF NOT (lower(v_match) = ANY (coalesce(keep_emails, '{}'))) THEN
        v_out := replace(v_out, v_match, '[email]');
      END IF;
    END LOOP;
  END IF;
  IF v_out ~ '[0-9]{3}' THEN
    FOR v_match IN
      SELECT DISTINCT m[1] FROM regexp_matches(v_out, '(\\+?[0-9][0-9 ().-]{6,}[0-9])', 'g') AS m
    LOOP
      v_digits := ltrim(regexp_replace(v_match, '[^0-9]', '', 'g'), '0');
      -- The subject's own number, written internationally or nationally (trunk zero dropped).
      IF ferry_is_phone(v_match) AND NOT EXISTS (
        SELECT 1 FROM unnest(coalesce(keep_phones, '{}')) AS k
        WHERE length(v_digits) >= 6 AND right(regexp_replace(k, '[^0-9]', '', 'g'), length(v_digits)) = v_digits
      ) THEN
        v_out := replace(v_out, v_match, '[phone]');
      END IF;
    END LOOP;
  END IF;
  RETURN v_out;
END
$$;
`;
