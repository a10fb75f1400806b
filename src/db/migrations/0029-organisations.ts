/**
 * Agency organisations (docs/organisations.md): one organisation manages several client tenants.
 *
 * - `organisations`: its name and its home tenant (the agency's own tenant, on the agency plan).
 * - `organisation_tenants`: the client tenants it manages; a tenant belongs to at most one
 *   organisation (the primary key), and the home tenant is never one of its own clients.
 * - `organisation_members`: team members of the home tenant who work across the tenants;
 *   `manages` makes one an organisation admin (members, roles, keys), `default_role` is their
 *   role in every client tenant (NULL: none unless a tenant says otherwise).
 * - `organisation_member_roles` and `organisation_key_roles`: the role of a member or an
 *   organisation key in one client tenant, over the default; `none` takes the tenant away.
 * - `api_keys.organisation_id`: an organisation key. The row stays the home tenant's; its `role`
 *   is its role at home and its default in every client tenant.
 * - `web_sessions.acting_tenant_id`: the tenant a member's dashboard session switched to (NULL:
 *   the home tenant); checked against the organisation on every request.
 */
export const up = /* sql */ `
CREATE TABLE organisations (
  id uuid PRIMARY KEY,
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  home_tenant_id uuid NOT NULL UNIQUE REFERENCES tenants(id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  created_by text
);

CREATE TABLE organisation_tenants (
  tenant_id uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
  organisation_id uuid NOT NULL REFERENCES organisations(id) ON DELETE CASCADE,
  added_at timestamptz NOT NULL,
  added_by text
);
CREATE INDEX organisation_tenants_organisation ON organisation_tenants (organisation_id, added_at, tenant_id);

CREATE TABLE organisation_members (
  team_member_id uuid PRIMARY KEY REFERENCES team_members(id) ON DELETE CASCADE,
  organisation_id uuid NOT NULL REFERENCES organisations(id) ON DELETE CASCADE,
  manages boolean NOT NULL DEFAULT false,
  default_role text CHECK (default_role IN ('admin', 'manager', 'analyst')),
  added_at timestamptz NOT NULL,
  added_by text
);
CREATE INDEX organisation_members_organisation ON organisation_members (organisation_id);

CREATE TABLE organisation_member_roles (
  team_member_id uuid NOT NULL REFERENCES organisation_members(team_member_id) ON DELETE CASCADE,
  tenant_id uuid NOT NULL REFERENCES organisation_tenants(tenant_id) ON DELETE CASCADE,
  role text NOT NULL CHECK (role IN ('admin', 'manager', 'analyst', 'none')),
  PRIMARY KEY (team_member_id, tenant_id)
);

ALTER TABLE api_keys ADD COLUMN organisation_id uuid REFERENCES organisations(id) ON DELETE CASCADE;
CREATE INDEX api_keys_organisation ON api_keys (organisation_id) WHERE organisation_id IS NOT NULL;

CREATE TABLE organisation_key_roles (
  api_key_id uuid NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
  tenant_id uuid NOT NULL REFERENCES organisation_tenants(tenant_id) ON DELETE CASCADE,
  role text NOT NULL CHECK (role IN ('admin', 'manager', 'analyst', 'none')),
  PRIMARY KEY (api_key_id, tenant_id)
);

ALTER TABLE web_sessions ADD COLUMN acting_tenant_id uuid REFERENCES tenants(id) ON DELETE SET NULL;
`;
