import { randomUUID } from 'node:crypto';
import { auditCaller, recordAudit } from '../auth/audit.ts';
import type { AuthContext } from '../auth/context.ts';
import { authorize, authorizeExport } from '../auth/policy.ts';
import { limitsFor, quotaExceeded, registerUsageSource } from '../auth/quotas.ts';
import type { Config } from '../config/config.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { loadTenant } from '../collect/tenant.ts';
import type { JobQueue } from '../jobs/queue.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { SCHEDULE_STATUSES, type ScheduleStatus } from '../domain/schedule-state.ts';
import { decodeCursor, encodeCursor } from '../lib/list-cursor.ts';
import type { Logger } from '../lib/logger.ts';
import { outboundPolicy } from '../lib/ssrf.ts';
import { testConnection } from '../deliver/connection-test.ts';
import type { Mailer } from '../deliver/mailer.ts';
import { checkTargetAddresses } from '../deliver/targets.ts';
import type { DeliveryClients, DeliveryResult } from '../deliver/types.ts';
import { webhookDb } from '../webhooks/tables.ts';
import {
  renameError,
  type ScheduleInput,
  translateExportConfig,
  withRenamedErrors,
} from './automated-export-config.ts';
import { nextRunAfter, parseTiming, type Timing } from './frequency.ts';
import {
  checkFolderTargets,
  checkLake,
  checkTargetRetention,
  hasWindow,
  parseDatasets,
  parseLayout,
  parseName,
  parseNotifications,
  parseRetention,
  parseTargets,
  type SavedConfigExport,
  type ScheduleConfig,
  type ScheduleDataset,
} from './model.ts';
import { presentRun, presentSchedule, type RunView, type ScheduleView } from './presenter.ts';
import { type ScheduleRow, type SchedulePatch, tenantSchedules } from './repository.ts';
import { dispatch } from './tick.ts';

/** What the schedule operations need; built by the route plugin (or the CLI) from the app's adapters. */
export interface ScheduleServiceDeps {
  readonly database: Database;
  readonly config: Config;
  /** Seals the targets' secrets and opens them to mask them. */
  readonly secrets: SecretBox;
  readonly queue: Pick<JobQueue, 'send'> | undefined;
  readonly now: () => Date;
  readonly logger?: Logger | undefined;
  /** The caller is the server's operator (the `ferry` command line): it may set folder targets. */
  readonly operator?: boolean | undefined;
}

/** Counts a tenant's active schedules for the usage endpoint and quota checks. */
export function registerScheduleUsage(): void {
  registerUsageSource('active_schedules', (database, tenantId) =>
    tenantSchedules(database, tenantId).countActive(),
  );
}

function notFound(id: string): FerryError {
  return new FerryError('not_found', `no schedule "${id}" in this tenant`);
}

interface Normalized {
  name: string;
  status: ScheduleStatus;
  timing: Timing;
  config: ScheduleConfig;
}

interface NormalizeContext {
  auth: AuthContext;
  tenantZone: string;
  secrets: SecretBox;
  limits: { retentionDays: number; plan: string };
  /** Folder targets are accepted (the operator's command line). */
  allowFolder: boolean;
}

function parseStatus(value: unknown, fallback: ScheduleStatus): ScheduleStatus {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(SCHEDULE_STATUSES as readonly string[]).includes(value))
    throw invalid('status', `unknown status "${String(value)}"`, SCHEDULE_STATUSES);
  return value as ScheduleStatus;
}

/**
 * Validates a schedule (native body) against the data map and the caller's role; the
 * configuration comes back with the target secrets sealed. A stored schedule supplies
 * whatever a change (PATCH) leaves out.
 */
async function normalize(
  input: ScheduleInput,
  ctx: NormalizeContext,
  stored?: ScheduleRow,
): Promise<Normalized> {
  const has = (key: keyof ScheduleInput) => Object.hasOwn(input, key) && input[key] !== undefined;
  const name = has('name') || !stored ? parseName(input.name) : stored.name;
  if (!stored && !has('frequency'))
    throw invalid('frequency', 'is required', ['daily', 'weekly', 'monthly', 'cron']);

  let timing: Timing;
  if (!stored || has('frequency') || has('time') || has('timezone')) {
    const frequency = has('frequency') ? input.frequency : stored?.frequency;
    const cron =
      typeof frequency === 'object' &&
      frequency !== null &&
      (frequency as { type?: unknown }).type === 'cron';
    timing = parseTiming({
      frequency,
      time: has('time') ? input.time : cron ? undefined : (stored?.time_of_day ?? undefined),
      timezone: has('timezone') ? input.timezone : (stored?.timezone ?? ctx.tenantZone),
    });
  } else {
    timing = {
      frequency: stored.frequency,
      time: stored.time_of_day,
      timezone: stored.timezone,
      cron: stored.cron,
    };
  }

  const previous = stored?.config;
  let datasets = previous?.datasets;
  let options = previous && {
    format: previous.format,
    compression: previous.compression,
    package: previous.package,
    pii: previous.pii,
  };
  if (!stored || has('datasets') || has('format') || has('compression') || has('package') || has('pii')) {
    if (!stored && !has('datasets')) throw invalid('datasets', 'is required: the datasets to export');
    const parsed = parseDatasets(has('datasets') ? input.datasets : previous?.datasets, {
      format: has('format') ? input.format : previous?.format,
      compression: has('compression') ? input.compression : previous?.compression,
      package: has('package') ? input.package : previous?.package,
      pii: has('pii') ? input.pii : previous?.pii,
    });
    datasets = parsed.datasets;
    options = parsed.options;
  }
  const layout = has('layout') || !previous ? parseLayout(input.layout) : (previous.layout ?? 'files');
  // A lake is Parquet: the schedule says so rather than leave the format to each dataset.
  if (layout === 'lake' && options!.format === null) options = { ...options!, format: 'parquet' };
  const targets =
    has('targets') || !previous ? await parseTargets(input.targets, ctx.secrets) : previous.targets;
  if (has('targets') || !previous) checkFolderTargets(targets, ctx.allowFolder);
  const notifications =
    has('notifications') || !previous ? parseNotifications(input.notifications) : previous.notifications;
  const retention =
    has('retention') || !previous ? parseRetention(input.retention, ctx.limits) : previous.retention;
  checkTargetRetention(targets, retention);
  const config: ScheduleConfig = {
    datasets: datasets!,
    ...options!,
    targets,
    notifications,
    retention,
    layout,
    ...(previous?.saved_config ? { saved_config: previous.saved_config } : {}),
  };
  checkLake(config);
  // The schedule runs with what the caller may export: every dataset at its pii level.
  for (const entry of config.datasets) authorizeExport(ctx.auth, { dataset: entry.dataset, pii: config.pii });
  return { name, status: parseStatus(input.status, stored?.status ?? 'active'), timing, config };
}

/** Webhook targets must name an active endpoint of the tenant. */
async function checkWebhookTargets(
  database: Database,
  tenantId: string,
  config: ScheduleConfig,
  field = 'targets',
) {
  const ids = config.targets.flatMap(({ target }, i) =>
    target.type === 'webhook' ? [[i, target.endpoint_id] as const] : [],
  );
  if (ids.length === 0) return;
  const found = await webhookDb(database)
    .selectFrom('webhook_endpoints')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where(
      'id',
      'in',
      ids.map(([, id]) => id),
    )
    .execute();
  const known = new Set(found.map((r) => r.id));
  for (const [i, id] of ids)
    if (!known.has(id))
      throw invalid(
        `${field}[${i}].endpoint_id`,
        `no webhook endpoint "${id}" in this tenant (register one with POST /api/v1/webhooks)`,
      );
}

/** Whether the caller's role may run the schedule's export (every dataset at its pii level). */
function mayRun(auth: AuthContext, config: ScheduleConfig): boolean {
  try {
    authorizeSchedule(auth, config);
    return true;
  } catch {
    return false;
  }
}

/**
 * The role matrix applied to a stored schedule, as to an export: running, pausing,
 * resuming, changing or deleting it needs the right to export each of its datasets at
 * its pii level (an analyst cannot run an admin's schedule of personal data).
 */
function authorizeSchedule(auth: AuthContext, config: ScheduleConfig, name?: string): void {
  for (const entry of config.datasets) {
    try {
      authorizeExport(auth, { dataset: entry.dataset, pii: config.pii });
    } catch (err) {
      if (!(err instanceof FerryError) || name === undefined) throw err;
      throw new FerryError('forbidden', `schedule "${name}" exports what this key may not: ${err.message}`);
    }
  }
}

/** S3 endpoints and SFTP hosts of new or changed targets must be addresses Ferry connects to. */
function checkAddresses(deps: ScheduleServiceDeps, config: ScheduleConfig): Promise<void> {
  return checkTargetAddresses(config.targets, outboundPolicy(deps.config.outboundAllow));
}

async function context(deps: ScheduleServiceDeps, auth: AuthContext) {
  const [tenant, limits] = await Promise.all([
    loadTenant(deps.database, auth.tenantId),
    limitsFor(deps.database, auth),
  ]);
  return {
    tenant,
    limits,
    normalize: {
      auth,
      tenantZone: tenant.timezone,
      secrets: deps.secrets,
      limits: { retentionDays: limits.retentionDays, plan: auth.plan },
      allowFolder: deps.operator === true,
    } satisfies NormalizeContext,
  };
}

function limitError(auth: AuthContext, max: number): FerryError {
  return quotaExceeded(
    'active_schedules',
    `the ${auth.plan} plan allows ${max} active schedules and all are in use; pause or delete one first, or upgrade the plan`,
    null,
  );
}

async function view(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  row: ScheduleRow,
  detailed = false,
): Promise<ScheduleView> {
  const schedules = tenantSchedules(deps.database, auth.tenantId);
  const [lastRun] = await schedules.lastRuns([row.id]);
  return presentSchedule(row, {
    secrets: deps.secrets,
    now: deps.now(),
    restricted: !mayRun(auth, row.config),
    lastRun,
    ...(detailed ? { checkpoints: await schedules.checkpoints(row.id) } : {}),
  });
}

async function audit(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  action: string,
  row: { id: string },
  config?: ScheduleConfig,
) {
  await recordAudit(deps.database, {
    ...auditCaller(auth),
    action,
    ...(config ? { dataType: config.datasets.map((d) => d.dataset).join(',') } : {}),
    success: true,
    targetId: row.id,
    occurredAt: deps.now(),
  });
}

/**
 * `POST /api/v1/schedules`: the native body, or `{"export_config": {...}}` as the product
 * documentation writes it (translated, with errors naming its own fields).
 */
export async function createSchedule(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  body: ScheduleInput & { export_config?: unknown },
): Promise<ScheduleView> {
  authorize(auth, 'schedules:manage');
  const ctx = await context(deps, auth);
  let normalized: Normalized;
  if (body.export_config !== undefined) {
    const others = Object.keys(body).filter(
      (k) => k !== 'export_config' && body[k as keyof typeof body] !== undefined,
    );
    if (others.length)
      throw invalid(
        others[0]!,
        'is not used with export_config: give either export_config or the schedule fields',
      );
    const translated = translateExportConfig(body.export_config, ctx.tenant.timezone);
    normalized = await normalize(translated.input, ctx.normalize).catch((err: unknown) => {
      throw renameError(err, translated.rename);
    });
    const checked = normalized.config;
    await Promise.all([
      checkWebhookTargets(deps.database, auth.tenantId, checked),
      checkAddresses(deps, checked),
    ]).catch((err: unknown) => {
      throw withRenamedErrors(translated.rename, () => {
        throw err;
      });
    });
  } else {
    normalized = await normalize(body, ctx.normalize);
    await checkWebhookTargets(deps.database, auth.tenantId, normalized.config);
    await checkAddresses(deps, normalized.config);
  }
  const now = deps.now();
  const id = randomUUID();
  const inserted = await tenantSchedules(deps.database, auth.tenantId).insert(
    {
      id,
      name: normalized.name,
      status: normalized.status,
      timing: normalized.timing,
      config: normalized.config,
      nextRunAt: normalized.status === 'active' ? nextRunAfter(normalized.timing, now) : null,
      actor: auth.actor,
      apiKeyId: auth.apiKeyId,
      teamMemberId: auth.teamMemberId,
      now,
    },
    ctx.limits.activeSchedules,
  );
  if (!inserted) throw limitError(auth, ctx.limits.activeSchedules!);
  const row = (await tenantSchedules(deps.database, auth.tenantId).find(id))!;
  await audit(deps, auth, 'schedule.created', row, row.config);
  return view(deps, auth, row, true);
}

export async function getSchedule(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  id: string,
): Promise<ScheduleView> {
  authorize(auth, 'schedules:read');
  const row = await tenantSchedules(deps.database, auth.tenantId).find(id);
  if (!row) throw notFound(id);
  return view(deps, auth, row, true);
}

export async function listSchedules(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  query: { limit?: number | undefined; cursor?: string | undefined },
): Promise<{ items: ScheduleView[]; next_cursor: string | null }> {
  authorize(auth, 'schedules:read');
  const limit = query.limit ?? 50;
  const schedules = tenantSchedules(deps.database, auth.tenantId);
  const after = query.cursor ? decodeCursor(query.cursor, 'pipe') : undefined;
  const rows = await schedules.list({
    limit: limit + 1,
    after,
  });
  const page = rows.slice(0, limit);
  const last = await schedules.lastRuns(page.map((r) => r.id));
  const tail = page.at(-1);
  return {
    items: await Promise.all(
      page.map((row) =>
        presentSchedule(row, {
          secrets: deps.secrets,
          now: deps.now(),
          restricted: !mayRun(auth, row.config),
          lastRun: last.find((r) => r.schedule_id === row.id),
        }),
      ),
    ),
    next_cursor:
      rows.length > limit && tail ? encodeCursor({ at: tail.cursor_at, id: tail.id }, 'pipe') : null,
  };
}

/** `PATCH /api/v1/schedules/{id}`: changes the given fields; the result is checked as a whole. */
export async function updateSchedule(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  id: string,
  body: ScheduleInput,
): Promise<ScheduleView> {
  authorize(auth, 'schedules:manage');
  const schedules = tenantSchedules(deps.database, auth.tenantId);
  const stored = await schedules.find(id);
  if (!stored) throw notFound(id);
  authorizeSchedule(auth, stored.config, stored.name);
  const saved = stored.config.saved_config;
  if (saved) {
    const fixed = (['datasets', 'format', 'compression', 'package', 'pii'] as const).find(
      (key) => body[key] !== undefined,
    );
    if (fixed)
      throw invalid(
        fixed,
        `this schedule runs the saved export configuration "${saved.name}"; change the configuration ` +
          `instead (PATCH /api/v1/export-configs/${saved.id})`,
      );
  }
  const ctx = await context(deps, auth);
  const normalized = await normalize(body, ctx.normalize, stored);
  await checkWebhookTargets(deps.database, auth.tenantId, normalized.config);
  if (body.targets !== undefined) await checkAddresses(deps, normalized.config);
  const now = deps.now();
  const timingChanged =
    normalized.timing.cron !== stored.cron ||
    normalized.timing.timezone !== stored.timezone ||
    JSON.stringify(normalized.timing.frequency) !== JSON.stringify(stored.frequency);
  const patch: SchedulePatch = {
    name: normalized.name,
    status: normalized.status,
    timing: normalized.timing,
    config: normalized.config,
  };
  if (normalized.status === 'paused') patch.nextRunAt = null;
  else if (stored.status === 'paused' || timingChanged || !stored.next_run_at)
    patch.nextRunAt = nextRunAfter(normalized.timing, now);
  const updated = await schedules.update(id, patch, now, ctx.limits.activeSchedules);
  if (updated === 'limit') throw limitError(auth, ctx.limits.activeSchedules!);
  if (!updated) throw notFound(id);
  await schedules.keepCheckpoints(
    id,
    normalized.config.datasets.filter((d) => d.mode === 'incremental').map((d) => d.dataset),
  );
  await audit(deps, auth, 'schedule.updated', updated, updated.config);
  return view(deps, auth, updated, true);
}

async function setStatus(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  id: string,
  status: ScheduleStatus,
): Promise<ScheduleView> {
  authorize(auth, 'schedules:manage');
  const schedules = tenantSchedules(deps.database, auth.tenantId);
  const stored = await schedules.find(id);
  if (!stored) throw notFound(id);
  authorizeSchedule(auth, stored.config, stored.name);
  if (stored.status === status) return view(deps, auth, stored, true);
  const limits = await limitsFor(deps.database, auth);
  const now = deps.now();
  const timing = { frequency: stored.frequency, cron: stored.cron, timezone: stored.timezone };
  const updated = await schedules.update(
    id,
    { status, nextRunAt: status === 'active' ? nextRunAfter(timing, now) : null },
    now,
    limits.activeSchedules,
  );
  if (updated === 'limit') throw limitError(auth, limits.activeSchedules!);
  if (!updated) throw notFound(id);
  await audit(deps, auth, status === 'active' ? 'schedule.resumed' : 'schedule.paused', updated);
  return view(deps, auth, updated, true);
}

/** `POST /api/v1/schedules/{id}/pause`: no more runs until resumed (runs already queued still run). */
export const pauseSchedule = (deps: ScheduleServiceDeps, auth: AuthContext, id: string) =>
  setStatus(deps, auth, id, 'paused');

/** `POST /api/v1/schedules/{id}/resume`: runs again from the next slot after now (missed slots are not made up). */
export const resumeSchedule = (deps: ScheduleServiceDeps, auth: AuthContext, id: string) =>
  setStatus(deps, auth, id, 'active');

/** `DELETE /api/v1/schedules/{id}`: the schedule, its history and checkpoints; files already made stay until their retention ends. */
export async function deleteSchedule(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  id: string,
): Promise<ScheduleView> {
  authorize(auth, 'schedules:manage');
  const schedules = tenantSchedules(deps.database, auth.tenantId);
  const stored = await schedules.find(id);
  if (!stored) throw notFound(id);
  authorizeSchedule(auth, stored.config, stored.name);
  const shown = await view(deps, auth, stored);
  if (!(await schedules.remove(id))) throw notFound(id);
  await audit(deps, auth, 'schedule.deleted', stored, stored.config);
  return shown;
}

/**
 * `POST /api/v1/schedules/{id}/run`: a run due now, queued at once (also for a paused
 * schedule). It waits for earlier runs of the schedule that are still going.
 */
export async function runScheduleNow(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  id: string,
): Promise<RunView> {
  authorize(auth, 'schedules:manage');
  const schedules = tenantSchedules(deps.database, auth.tenantId);
  const stored = await schedules.find(id);
  if (!stored) throw notFound(id);
  authorizeSchedule(auth, stored.config, stored.name);
  const queue = deps.queue;
  if (!queue)
    throw new FerryError(
      'service_unavailable',
      'this server has no job queue; schedules cannot be run from here',
    );
  const now = deps.now();
  const run = await schedules.insertManualRun(id, auth.actor, now);
  if (!run) throw notFound(id);
  await audit(deps, auth, 'schedule.run_requested', run, stored.config);
  await dispatch({ database: deps.database, queue, now: deps.now, logger: deps.logger }, run.id);
  return presentRun(run, []);
}

/** `GET /api/v1/schedules/{id}/runs`: newest first, each with counts, size, checksums and delivery results per target. */
export async function listRuns(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  id: string,
  query: { limit?: number | undefined; before?: number | undefined },
): Promise<{ items: RunView[]; next_before: number | null }> {
  authorize(auth, 'schedules:read');
  const schedules = tenantSchedules(deps.database, auth.tenantId);
  if (!(await schedules.find(id))) throw notFound(id);
  const limit = query.limit ?? 20;
  const rows = await schedules.runs(id, { limit: limit + 1, before: query.before });
  const page = rows.slice(0, limit);
  const deliveries = await schedules.deliveries(page.map((r) => r.id));
  return {
    items: page.map((r) =>
      presentRun(
        r,
        deliveries.filter((d) => d.run_id === r.id),
      ),
    ),
    next_before: rows.length > limit ? (page.at(-1)?.run_number ?? null) : null,
  };
}

/**
 * "Test connection": delivers a small text file to one of the schedule's stored destinations
 * (`index`, from 0, in the order of `targets`) with its saved credentials, one attempt, and
 * answers how it went (deliver/connection-test.ts). Needs `schedules:manage` and the right
 * to run the schedule; recorded in the audit log as `schedule.target_tested`.
 */
export async function testScheduleTarget(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  id: string,
  index: number,
  adapters: { readonly clients: DeliveryClients | undefined; readonly mailer?: Mailer | undefined },
): Promise<DeliveryResult> {
  authorize(auth, 'schedules:manage');
  const clients = adapters.clients;
  if (!clients) throw new FerryError('service_unavailable', 'this server cannot reach delivery destinations');
  const row = await tenantSchedules(deps.database, auth.tenantId).find(id);
  if (!row) throw notFound(id);
  authorizeSchedule(auth, row.config, row.name);
  const stored = Number.isInteger(index) ? row.config.targets[index] : undefined;
  if (!stored)
    throw invalid(
      'target',
      `schedule ${id} has ${row.config.targets.length} destinations; there is no number ${index + 1}`,
    );
  const tenant = await loadTenant(deps.database, auth.tenantId);
  const result = await testConnection(
    stored.target,
    {
      secrets: deps.secrets,
      outbound: outboundPolicy(deps.config.outboundAllow),
      clients,
      ...(adapters.mailer ? { mailer: adapters.mailer } : {}),
      database: deps.database,
      now: deps.now,
      timeoutMs: 15_000,
      ...(deps.logger ? { logger: deps.logger } : {}),
    },
    tenant,
  );
  await recordAudit(deps.database, {
    ...auditCaller(auth),
    action: 'schedule.target_tested',
    targetId: row.id,
    dataType: stored.target.type,
    success: result.status === 'delivered',
    error: result.status === 'delivered' ? null : (result.error ?? null),
    occurredAt: deps.now(),
  });
  return result;
}

/** When a saved configuration's `daily`, `weekly` (Mondays) or `monthly` (the 1st) schedule runs. */
export const CONFIG_SCHEDULE_TIME = '06:00';

const CONFIG_PERIODS = {
  daily: 'previous_day',
  weekly: 'previous_week',
  monthly: 'previous_month',
} as const;

/** A configuration's `schedule` (daily, weekly, monthly or a cron expression) as a schedule's timing. */
function configTiming(schedule: string, timezone: string): Timing {
  const frequency =
    schedule === 'daily'
      ? { type: 'daily' }
      : schedule === 'weekly'
        ? { type: 'weekly', days: ['monday'] }
        : schedule === 'monthly'
          ? { type: 'monthly', day_of_month: 1 }
          : { type: 'cron', expression: schedule };
  try {
    return parseTiming({
      frequency,
      time: frequency.type === 'cron' ? undefined : CONFIG_SCHEDULE_TIME,
      timezone,
    });
  } catch (err) {
    if (err instanceof FerryError && err.code === 'invalid_parameter')
      throw invalid(
        err.details?.parameter === 'timezone' ? 'timezone' : 'schedule',
        err.message.replace(/^[^:]+: /, ''),
      );
    throw err;
  }
}

/**
 * The one dataset entry of a configuration's schedule: the configuration's first data type
 * over the period before each run (the previous day, week or month) unless the
 * configuration fixes its own `from`/`to`; a cron schedule exports everything.
 */
function configEntry(saved: SavedConfigExport, schedule: string): ScheduleDataset {
  const dataset = saved.export.datasets[0]!;
  const period = CONFIG_PERIODS[schedule as keyof typeof CONFIG_PERIODS];
  const fixed = saved.export.from !== null || saved.export.to !== null;
  if (period && !fixed && hasWindow(dataset)) return { dataset, mode: 'window', period, config: saved.id };
  return { dataset, mode: 'full', config: saved.id };
}

/**
 * The schedule of a saved export configuration (docs/export-configs.md): created when
 * `scheduleId` is null (active, no delivery targets: its files are kept for download and
 * listed in its run history), otherwise brought in step with the configuration (name,
 * timing, what it exports), keeping the targets, notifications, retention and status
 * given to it since. Returns the schedule's id.
 */
export async function saveConfigSchedule(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  input: {
    scheduleId: string | null;
    schedule: string;
    timezone?: string | undefined;
    saved: SavedConfigExport;
  },
): Promise<string> {
  authorize(auth, 'schedules:manage');
  const ctx = await context(deps, auth);
  const timing = configTiming(input.schedule, input.timezone ?? ctx.tenant.timezone);
  const entry = configEntry(input.saved, input.schedule);
  const schedules = tenantSchedules(deps.database, auth.tenantId);
  const stored = input.scheduleId ? await schedules.find(input.scheduleId) : undefined;
  const now = deps.now();
  const name = input.saved.name;
  const fileOptions = {
    format: null,
    compression: 'none',
    package: 'none',
    pii: input.saved.export.pii,
  } as const;
  if (!stored) {
    const id = randomUUID();
    const config: ScheduleConfig = {
      datasets: [entry],
      ...fileOptions,
      targets: [],
      notifications: { success: [], failure: [] },
      retention: parseRetention(undefined, ctx.normalize.limits),
      saved_config: input.saved,
    };
    const inserted = await schedules.insert(
      {
        id,
        name,
        status: 'active',
        timing,
        config,
        nextRunAt: nextRunAfter(timing, now),
        actor: auth.actor,
        apiKeyId: auth.apiKeyId,
        teamMemberId: auth.teamMemberId,
        now,
      },
      ctx.limits.activeSchedules,
    );
    if (!inserted) throw limitError(auth, ctx.limits.activeSchedules!);
    await audit(deps, auth, 'schedule.created', { id }, config);
    return id;
  }
  const config: ScheduleConfig = {
    ...stored.config,
    datasets: [entry],
    ...fileOptions,
    saved_config: input.saved,
  };
  const timingChanged = timing.cron !== stored.cron || timing.timezone !== stored.timezone;
  const patch: SchedulePatch = { name, timing, config };
  if (stored.status === 'active' && (timingChanged || !stored.next_run_at))
    patch.nextRunAt = nextRunAfter(timing, now);
  const updated = await schedules.update(stored.id, patch, now, ctx.limits.activeSchedules);
  if (!updated || updated === 'limit') throw notFound(stored.id);
  await schedules.keepCheckpoints(stored.id, []);
  await audit(deps, auth, 'schedule.updated', updated, config);
  return stored.id;
}

/** Deletes the schedule of a saved export configuration, if it is still the one Ferry made for it. */
export async function deleteConfigSchedule(
  deps: ScheduleServiceDeps,
  auth: AuthContext,
  scheduleId: string,
  configId: string,
): Promise<boolean> {
  const schedules = tenantSchedules(deps.database, auth.tenantId);
  const stored = await schedules.find(scheduleId);
  if (!stored || stored.config.saved_config?.id !== configId) return false;
  if (!(await schedules.remove(scheduleId))) return false;
  await audit(deps, auth, 'schedule.deleted', stored, stored.config);
  return true;
}
