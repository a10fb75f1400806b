/**
 * Saved export configurations (docs/export-configs.md).
 *
 * A named export definition per tenant, as the product documentation writes it (`definition`,
 * stored as parsed), runnable at any time and, with a `schedule`, by the schedule Ferry keeps
 * for it (`schedule_id`; the schedule may be deleted on its own, which leaves the
 * configuration without one). Names are unique per tenant regardless of case. The last run
 * is recorded by its export id (exports expire; the id stays as history).
 */
export const up = /* sql */ `
CREATE TABLE export_configs (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name text NOT NULL,
  definition jsonb NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  last_run_at timestamptz,
  last_export_id uuid,
  schedule_id uuid REFERENCES schedules(id) ON DELETE SET NULL
);
CREATE UNIQUE INDEX export_configs_tenant_name ON export_configs (tenant_id, lower(name));
CREATE INDEX export_configs_tenant_created ON export_configs (tenant_id, created_at, id);
`;
