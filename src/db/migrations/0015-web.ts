/**
 * The dashboard and the privacy center (docs/dashboard.md).
 *
 * - `web_sessions`: a signed-in team member's browser session. The cookie holds a random
 *   token; only its SHA-256 is stored. A session ends at `expires_at` (absolute) or when
 *   it was idle past `idle_expires_at`; signing out or a password change sets `ended_at`.
 *   `second_factor_pending` is true between the password and the TOTP code.
 * - `sign_in_tokens`: one-time links: the first-run sign-in link, password resets and
 *   invitations. Only the token's SHA-256 is stored; a link emailed by a job gets its token
 *   in the job (`token_hash` stays empty until then), so no secret waits in the queue.
 * - `auth_failures`: failed sign-ins and failed API-key authentications per key
 *   (`account:<email>` or `ip:<address>`), counted in a window, with the lockout they caused.
 * - `team_member_factors`: a member's TOTP secret (sealed with the install's secret key),
 *   enabled once a first code confirmed it; `last_step` refuses a code used twice.
 */
export const up = /* sql */ `
CREATE TABLE web_sessions (
  id uuid PRIMARY KEY,
  token_hash text NOT NULL UNIQUE,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  team_member_id uuid NOT NULL REFERENCES team_members(id) ON DELETE CASCADE,
  second_factor_pending boolean NOT NULL DEFAULT false,
  ip text,
  user_agent text,
  created_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  idle_expires_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  ended_at timestamptz
);
CREATE INDEX web_sessions_member ON web_sessions (team_member_id, created_at DESC);

CREATE TABLE sign_in_tokens (
  id uuid PRIMARY KEY,
  token_hash text UNIQUE,
  purpose text NOT NULL CHECK (purpose IN ('sign_in', 'reset', 'invite')),
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  team_member_id uuid NOT NULL REFERENCES team_members(id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  sent_at timestamptz,
  used_at timestamptz
);
CREATE INDEX sign_in_tokens_member ON sign_in_tokens (team_member_id, created_at DESC);

CREATE TABLE auth_failures (
  key text PRIMARY KEY,
  failures integer NOT NULL,
  window_started_at timestamptz NOT NULL,
  locked_until timestamptz
);

CREATE TABLE team_member_factors (
  team_member_id uuid PRIMARY KEY REFERENCES team_members(id) ON DELETE CASCADE,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  totp_secret text NOT NULL,
  enabled_at timestamptz,
  last_step bigint
);
`;
