import { randomUUID } from 'node:crypto';
import { auditCaller, recordAudit } from '../auth/audit.ts';
import type { AuthContext } from '../auth/context.ts';
import type { PlanLimits } from '../auth/limits.ts';
import { authorize } from '../auth/policy.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { authorizeConfig, fileRequest } from '../export-requests/config.ts';
import { type Accepted, createExportOf, type ExportServiceDeps } from '../export-requests/service.ts';
import { decodeCursor, encodeCursor } from '../lib/list-cursor.ts';
import { datasetFileType } from '../pipeline/export-dataset.ts';
import { deleteConfigSchedule, saveConfigSchedule } from '../schedules/service.ts';
import {
  compileDefinition,
  DEFINITION_FIELDS,
  parseDefinition,
  type SavedConfigDefinition,
  scheduleOf,
} from './definition.ts';
import { type ExportConfigRow, tenantExportConfigs } from './repository.ts';

/**
 * Saved export configurations (docs/export-configs.md): named export definitions of a
 * tenant, checked against the data map when saved, run on demand as API exports, and, with
 * a `schedule`, by a schedule Ferry keeps in step with them.
 */

/** What the operations need: the export service's adapters (the schedule service's are a subset). */
export type ExportConfigServiceDeps = ExportServiceDeps;

export const EXPORT_CONFIG_AUDIT = {
  created: 'export_config.created',
  updated: 'export_config.updated',
  deleted: 'export_config.deleted',
  run: 'export_config.run',
} as const;

/** What a definition compiles to: the export it runs, in brief. */
export interface CompiledView {
  datasets: string[];
  format: string | null;
  /** `none` for one file; `zip` or `tar.gz` for a package of files. */
  package: string;
  /** The files written: the one file, or each entry of the package, with extensions. */
  files: string[];
  /** The columns of the first data type's file; null for all of them. */
  columns: string[] | null;
}

export interface ExportConfigView {
  id: string;
  export_name: string;
  definition: SavedConfigDefinition;
  /** Null when the stored definition no longer compiles (the data map changed); `error` says why. */
  compiles_to: CompiledView | null;
  error: string | null;
  schedule: string | null;
  schedule_id: string | null;
  last_run: { at: string; export_id: string } | null;
  created_by: string;
  created_at: string;
  updated_at: string;
  links: { self: string; run: string; schedule?: string; last_export?: string };
}

function notFound(id: string): FerryError {
  return new FerryError('not_found', `no export configuration "${id}" in this tenant`);
}

function nameTaken(name: string): FerryError {
  return new FerryError(
    'conflict',
    `an export configuration named "${name}" already exists in this tenant (names are compared without case)`,
  );
}

/** The files an export writes, by name inside its package (or the one file's name). */
function filesOf(tenantId: string, config: ExportConfig): string[] {
  if (config.files?.length)
    return config.files.map(
      (file) =>
        `${file.path}.${datasetFileType(fileRequest(tenantId, config, file).format, 'none').extension}`,
    );
  const type = datasetFileType(config.format ?? 'json', config.compression ?? 'none');
  return [`${config.datasets[0]}.${type.extension}`];
}

function compiledView(tenantId: string, config: ExportConfig): CompiledView {
  return {
    datasets: config.datasets,
    format: config.format,
    package: config.package,
    files: filesOf(tenantId, config),
    columns: config.files?.length ? (config.files[0]!.columns ?? null) : config.columns,
  };
}

export function presentExportConfig(row: ExportConfigRow): ExportConfigView {
  let compiled: CompiledView | null = null;
  let error: string | null = null;
  try {
    compiled = compiledView(row.tenant_id, compileDefinition(row.tenant_id, row.definition));
  } catch (err) {
    if (!(err instanceof FerryError)) throw err;
    error = err.message;
  }
  const self = `/api/v1/export-configs/${row.id}`;
  return {
    id: row.id,
    export_name: row.name,
    definition: row.definition,
    compiles_to: compiled,
    error,
    schedule: row.definition.schedule?.trim() ?? null,
    schedule_id: row.schedule_id,
    last_run:
      row.last_run_at && row.last_export_id
        ? { at: row.last_run_at.toISOString(), export_id: row.last_export_id }
        : null,
    created_by: row.created_by,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
    links: {
      self,
      run: `${self}/run`,
      ...(row.schedule_id ? { schedule: `/api/v1/schedules/${row.schedule_id}` } : {}),
      ...(row.last_export_id ? { last_export: `/api/v1/exports/${row.last_export_id}` } : {}),
    },
  };
}

/** The path of the first text holding a NUL character, which PostgreSQL cannot store. */
function nulPath(value: unknown, path: string): string | null {
  if (typeof value === 'string') return value.includes('\u0000') ? path : null;
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) {
      const found = nulPath(item, `${path}[${i}]`);
      if (found) return found;
    }
    return null;
  }
  if (typeof value === 'object' && value !== null)
    for (const [key, item] of Object.entries(value)) {
      const found = key.includes('\u0000')
        ? path || 'definition'
        : nulPath(item, path ? `${path}.${key}` : key);
      if (found) return found;
    }
  return null;
}

/** A definition checked as a whole: its shape, then the export it compiles to, then the caller's right to run it. */
function validate(auth: AuthContext, raw: unknown) {
  const nul = nulPath(raw, '');
  if (nul) throw invalid(nul, 'must not contain NUL characters');
  const definition = parseDefinition(raw);
  const compiled = compileDefinition(auth.tenantId, definition);
  authorizeConfig(auth, compiled);
  return { definition, compiled, schedule: scheduleOf(definition) };
}

async function audit(deps: ExportConfigServiceDeps, auth: AuthContext, action: string, row: ExportConfigRow) {
  await recordAudit(deps.database, {
    ...auditCaller(auth),
    action,
    dataType: row.name,
    success: true,
    targetId: row.id,
    occurredAt: deps.now(),
  });
}

/** `POST /api/v1/export-configs`: the definition as the product documentation writes it. */
export async function createExportConfig(
  deps: ExportConfigServiceDeps,
  auth: AuthContext,
  raw: unknown,
): Promise<ExportConfigView> {
  authorize(auth, 'export_configs:write');
  const { definition, compiled, schedule } = validate(auth, raw);
  const configs = tenantExportConfigs(deps.database, auth.tenantId);
  if (await configs.findByName(definition.export_name)) throw nameTaken(definition.export_name);
  const id = randomUUID();
  const scheduleId = schedule
    ? await saveConfigSchedule(deps, auth, {
        scheduleId: null,
        schedule,
        timezone: definition.timezone,
        saved: { id, name: definition.export_name, export: compiled },
      })
    : null;
  const inserted = await configs.insert({
    id,
    definition,
    createdBy: auth.actor,
    scheduleId,
    now: deps.now(),
  });
  if (!inserted) {
    if (scheduleId) await deleteConfigSchedule(deps, auth, scheduleId, id);
    throw nameTaken(definition.export_name);
  }
  const row = (await configs.find(id))!;
  await audit(deps, auth, EXPORT_CONFIG_AUDIT.created, row);
  return presentExportConfig(row);
}

/** `GET /api/v1/export-configs`: oldest first, with keyset pagination. */
export async function listExportConfigs(
  deps: ExportConfigServiceDeps,
  auth: AuthContext,
  query: { limit?: number | undefined; cursor?: string | undefined },
): Promise<{ items: ExportConfigView[]; next_cursor: string | null }> {
  authorize(auth, 'export_configs:read');
  const limit = query.limit ?? 50;
  const after = query.cursor ? decodeCursor(query.cursor, 'pipe') : undefined;
  const rows = await tenantExportConfigs(deps.database, auth.tenantId).list({ limit: limit + 1, after });
  const page = rows.slice(0, limit);
  const tail = page.at(-1);
  return {
    items: page.map(presentExportConfig),
    next_cursor:
      rows.length > limit && tail ? encodeCursor({ at: tail.cursor_at, id: tail.id }, 'pipe') : null,
  };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function stored(deps: ExportConfigServiceDeps, auth: AuthContext, idOrName: string) {
  const configs = tenantExportConfigs(deps.database, auth.tenantId);
  const row = UUID.test(idOrName) ? await configs.find(idOrName) : await configs.findByName(idOrName);
  if (!row) throw notFound(idOrName);
  return row;
}

/** `GET /api/v1/export-configs/{id}` (the command line also finds one by name). */
export async function getExportConfig(
  deps: ExportConfigServiceDeps,
  auth: AuthContext,
  idOrName: string,
): Promise<ExportConfigView> {
  authorize(auth, 'export_configs:read');
  return presentExportConfig(await stored(deps, auth, idOrName));
}

/**
 * `PATCH /api/v1/export-configs/{id}`: the top-level fields given replace the stored ones
 * (`null` removes one), and the result is checked as a whole as on creation. The
 * configuration's schedule follows: created, changed or deleted.
 */
export async function updateExportConfig(
  deps: ExportConfigServiceDeps,
  auth: AuthContext,
  idOrName: string,
  patch: unknown,
): Promise<ExportConfigView> {
  authorize(auth, 'export_configs:write');
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch))
    throw invalid('definition', 'a change is an object of the fields to replace', DEFINITION_FIELDS);
  const row = await stored(deps, auth, idOrName);
  const merged: Record<string, unknown> = { ...row.definition };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete merged[key];
    else merged[key] = value;
  }
  const { definition, compiled, schedule } = validate(auth, merged);
  const configs = tenantExportConfigs(deps.database, auth.tenantId);
  const other = await configs.findByName(definition.export_name);
  if (other && other.id !== row.id) throw nameTaken(definition.export_name);
  let scheduleId = row.schedule_id;
  if (schedule)
    scheduleId = await saveConfigSchedule(deps, auth, {
      scheduleId,
      schedule,
      timezone: definition.timezone,
      saved: { id: row.id, name: definition.export_name, export: compiled },
    });
  else if (scheduleId) {
    await deleteConfigSchedule(deps, auth, scheduleId, row.id);
    scheduleId = null;
  }
  const updated = await configs.update(row.id, { definition, scheduleId }, deps.now());
  if (updated === 'taken') throw nameTaken(definition.export_name);
  if (!updated) throw notFound(idOrName);
  await audit(deps, auth, EXPORT_CONFIG_AUDIT.updated, updated);
  return presentExportConfig(updated);
}

/** `DELETE /api/v1/export-configs/{id}`: the configuration and the schedule Ferry made for it. Answers it as it was. */
export async function deleteExportConfig(
  deps: ExportConfigServiceDeps,
  auth: AuthContext,
  idOrName: string,
): Promise<ExportConfigView> {
  authorize(auth, 'export_configs:write');
  const row = await stored(deps, auth, idOrName);
  if (row.schedule_id) await deleteConfigSchedule(deps, auth, row.schedule_id, row.id);
  const deleted = await tenantExportConfigs(deps.database, auth.tenantId).delete(row.id);
  if (!deleted) throw notFound(idOrName);
  await audit(deps, auth, EXPORT_CONFIG_AUDIT.deleted, deleted);
  return presentExportConfig({ ...deleted, schedule_id: null });
}

/**
 * `POST /api/v1/export-configs/{id}/run`: compiles the configuration against the data map
 * as it is now and requests it as an API export (authorized, quota-checked, queued), named
 * after the configuration. Answers as `POST /api/v1/exports` does, `Idempotency-Key` included.
 */
export async function runExportConfig(
  deps: ExportConfigServiceDeps,
  auth: AuthContext,
  idOrName: string,
  options: { idempotencyKey?: string | undefined; limits?: PlanLimits | null | undefined } = {},
): Promise<Accepted & { config: ExportConfigView }> {
  authorize(auth, 'export_configs:read');
  const row = await stored(deps, auth, idOrName);
  const compiled: ExportConfig = {
    ...compileDefinition(auth.tenantId, row.definition),
    saved_config: { id: row.id, name: row.name },
  };
  const accepted = await createExportOf(deps, auth, compiled, {
    idempotencyKey: options.idempotencyKey,
    operation: 'export_configs.run',
    hashed: { id: row.id },
    limits: options.limits ?? null,
  });
  if (accepted.replayed) return { ...accepted, config: presentExportConfig(row) };
  const updated =
    (await tenantExportConfigs(deps.database, auth.tenantId).recordRun(
      row.id,
      accepted.body.id,
      deps.now(),
    )) ?? row;
  await recordAudit(deps.database, {
    ...auditCaller(auth),
    action: EXPORT_CONFIG_AUDIT.run,
    dataType: row.name,
    success: true,
    targetId: row.id,
    occurredAt: deps.now(),
  });
  return { ...accepted, config: presentExportConfig(updated) };
}
