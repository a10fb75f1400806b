/**
 * IP allow-lists and dashboard session timeouts (docs/auth.md#ip-allow-lists).
 *
 * - `tenant_access`: one row per tenant that set any of these: the tenant's allow-list (CIDR
 *   ranges, IPv4 and IPv6; empty = no restriction) and its dashboard session timeouts in
 *   minutes (NULL = Ferry's defaults: 8 hours idle, 7 days absolute).
 * - `api_keys.allowed_ips`: a key's own allow-list, checked as well as the tenant's.
 */
export const up = /* sql */ `
CREATE TABLE tenant_access (
  tenant_id uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
  ip_allowlist text[] NOT NULL DEFAULT '{}',
  session_idle_minutes integer CHECK (session_idle_minutes BETWEEN 5 AND 10080),
  session_absolute_minutes integer CHECK (session_absolute_minutes BETWEEN 5 AND 10080),
  updated_at timestamptz NOT NULL,
  updated_by text
);

ALTER TABLE api_keys ADD COLUMN allowed_ips text[] NOT NULL DEFAULT '{}';
`;
