import { randomUUID } from 'node:crypto';
import { CompiledQuery, type Kysely, sql } from 'kysely';
import { AUDIT_ACTIONS, auditCaller, auditInsert, recordAudit } from '../auth/audit.ts';
import type { AuthContext } from '../auth/context.ts';
import type { PlanLimits } from '../auth/limits.ts';
import { tenantAccess } from '../auth/ip-allowlist.ts';
import { authorize } from '../auth/policy.ts';
import {
  checkExportQuota,
  countAcceptedExport,
  historyStart,
  limitsFor,
  registerUsageSource,
  subjectRequestOf,
} from '../auth/quotas.ts';
import type { Config } from '../config/config.ts';
import type { LinkSigner } from '../crypto/link-signer.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { acceptedExportRequest } from '../collect/request.ts';
import { checkSiteUrls, requestedSites } from '../collect/tenant.ts';
import type { DB } from '../db/schema.ts';
import type { JobQueue } from '../jobs/queue.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { ExportFormat } from '../format/types.ts';
import { decodeCursor, encodeCursor } from '../lib/list-cursor.ts';
import type { Logger } from '../lib/logger.ts';
import { estimateDataset } from '../pipeline/export-dataset.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { authorizeConfig, checkAgainstDataMap, exportConfigFromBody } from './config.ts';
import type { ExportBody } from './export-body.ts';
import {
  checkIdempotencyKey,
  credentialOf,
  findIdempotentResponse,
  idempotencyWindowStart,
  requestHash,
} from './idempotency.ts';
import { EXPORT_QUEUE, sendExportJob } from './jobs.ts';
import { downloadPath } from './links.ts';
import { type ExportView, presentExport } from './presenter.ts';
import {
  type ExportFileRow,
  type ExportRow,
  type IdempotencyClaim,
  type ListFilter,
  isLocalExport,
  tenantExports,
} from './repository.ts';
import { estimatePackage, exportPrefix, removeLeftovers } from './export-job.ts';
import { type ExportStatus, isActive } from '../domain/export-state.ts';
import { exportDb } from './tables.ts';

/** What the export operations need; built by the route plugin from the app's adapters. */
export interface ExportServiceDeps {
  readonly database: Database;
  readonly config: Config;
  readonly queue: JobQueue | undefined;
  readonly store: ObjectStore | undefined;
  readonly signer: LinkSigner | undefined;
  /** Seals target secrets of the schedules saved export configurations keep. */
  readonly secrets: SecretBox;
  readonly now: () => Date;
  readonly logger: Logger;
}

/** Runs `fn` in a transaction, with a Database whose queries go through it. */
async function inTransaction<T>(database: Database, fn: (tx: Database) => Promise<T>): Promise<T> {
  return database.db.transaction().execute((trx) => fn({ ...database, db: trx }));
}

/** pg-boss's view of a Kysely connection, so a job is sent inside the caller's transaction. */
export function jobConnection(db: Kysely<DB>) {
  return {
    async executeSql(text: string, values: unknown[] = []) {
      const result = await db.executeQuery(CompiledQuery.raw(text, values));
      return { rows: result.rows as unknown[] };
    },
  };
}

/** The answer to a create or repeat: 202, or the stored answer of an earlier request with the same key. */
export interface Accepted {
  statusCode: number;
  body: ExportView;
  replayed: boolean;
}

/** Roles that see every export of the tenant; the others see the exports they asked for. */
const SEES_ALL: readonly AuthContext['role'][] = ['admin', 'manager'];

/** Counts the tenant's export jobs that are running, for the `concurrent_jobs` quota and usage. */
export function registerExportUsage(): void {
  registerUsageSource('concurrent_jobs', async (database, tenantId) => {
    const row = await exportDb(database)
      .selectFrom('export_requests')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('tenant_id', '=', tenantId)
      // Literals, not parameters: a prepared statement's generic plan can then use the
      // partial index of running exports (migration 0009).
      .where(sql<boolean>`status IN ('running', 'packaging')`)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  });
}

/** The row of an export just accepted: queued, nothing done yet. */
export function queuedRow(
  auth: Pick<AuthContext, 'tenantId' | 'actor' | 'apiKeyId' | 'teamMemberId'>,
  id: string,
  config: ExportConfig,
  limits: Pick<PlanLimits, 'retentionDays' | 'maxFileBytes'>,
  repeatOf: string | null,
  now: Date,
): ExportRow {
  return {
    id,
    tenant_id: auth.tenantId,
    actor: auth.actor,
    api_key_id: auth.apiKeyId,
    team_member_id: auth.teamMemberId,
    status: 'queued',
    // An organisation export is always one archive of the tenants' folders.
    kind: config.package === 'none' && !config.organisation ? 'dataset' : 'package',
    datasets: config.datasets,
    config,
    retention_days: limits.retentionDays,
    max_file_bytes: limits.maxFileBytes,
    repeat_of: repeatOf,
    records_done: 0,
    records_estimated: null,
    bytes_done: 0,
    progress_at: null,
    attempts: 0,
    attempt_id: null,
    error_code: null,
    error_message: null,
    download_count: 0,
    created_at: now,
    started_at: null,
    finished_at: null,
    expires_at: null,
    files_deleted_at: null,
    updated_at: now,
  };
}

export function requireQueue(deps: ExportServiceDeps): JobQueue {
  if (!deps.queue)
    throw new FerryError(
      'service_unavailable',
      'this server has no job queue; exports cannot be requested here',
    );
  return deps.queue;
}

function requireSigner(deps: ExportServiceDeps): LinkSigner {
  if (!deps.signer)
    throw new FerryError(
      'service_unavailable',
      'this server has no link signer; downloads are not served here',
    );
  return deps.signer;
}

function requireStore(deps: ExportServiceDeps): ObjectStore {
  if (!deps.store)
    throw new FerryError(
      'service_unavailable',
      'this server has no file storage; downloads are not served here',
    );
  return deps.store;
}

function notFound(id: string): FerryError {
  return new FerryError('not_found', `no export "${id}" in this tenant`);
}

/**
 * The export, if the caller may see it: admins and managers see every export of the
 * tenant, other roles the exports asked for with their key or by their team member.
 * Anything else answers 404, like an export of another tenant.
 */
async function visibleExport(deps: ExportServiceDeps, auth: AuthContext, id: string): Promise<ExportRow> {
  const row = await tenantExports(deps.database, auth.tenantId).find(id);
  if (!row || !canSee(auth, row)) throw notFound(id);
  return row;
}

/**
 * Whether the caller may read an export: the roles that see every export, or the key or member
 * that asked for it. An organisation's export (other tenants' data) only the key or member that
 * asked for it.
 */
export function canSee(
  auth: AuthContext,
  row: Pick<ExportRow, 'api_key_id' | 'team_member_id'> & { config?: Pick<ExportConfig, 'organisation'> },
): boolean {
  const requester =
    (auth.apiKeyId !== null && row.api_key_id === auth.apiKeyId) ||
    (auth.teamMemberId !== null && row.team_member_id === auth.teamMemberId);
  if (row.config?.organisation) return requester;
  return SEES_ALL.includes(auth.role) || requester;
}

async function view(deps: ExportServiceDeps, auth: AuthContext, row: ExportRow): Promise<ExportView> {
  const files = await tenantExports(deps.database, auth.tenantId).files([row.id]);
  return presentExport(row, files, deps.now());
}

/** `POST /api/v1/exports`: validates, authorizes, checks the quota, stores the export and enqueues its job. */
export async function createExport(
  deps: ExportServiceDeps,
  auth: AuthContext,
  body: ExportBody,
  idempotencyKey: string | undefined,
  /** The tenant's limits when the caller already has them (the auth plugin does). */
  limits?: PlanLimits | null,
): Promise<Accepted> {
  authorize(auth, 'exports:create');
  const idempotency = idempotencyKey
    ? {
        key: checkIdempotencyKey(idempotencyKey),
        operation: 'exports.create',
        hash: requestHash('exports.create', body),
      }
    : undefined;
  const replay = await replayed(deps, auth, idempotency);
  if (replay) return replay;
  const config = authorizeConfig(auth, exportConfigFromBody(auth.tenantId, body));
  await checkSiteUrls(deps.database, auth.tenantId, configSites(config));
  return accept(deps, auth, config, { repeatOf: null, idempotency, limits });
}

/**
 * Runs an export request built elsewhere (a saved export configuration compiled against the
 * data map): authorized, quota-checked, stored and queued exactly as `createExport` does.
 * `operation` and `hashed` key the idempotency record.
 */
export async function createExportOf(
  deps: ExportServiceDeps,
  auth: AuthContext,
  requested: ExportConfig,
  options: {
    idempotencyKey: string | undefined;
    operation: string;
    hashed: unknown;
    limits?: PlanLimits | null;
  },
): Promise<Accepted> {
  authorize(auth, 'exports:create');
  const idempotency = options.idempotencyKey
    ? {
        key: checkIdempotencyKey(options.idempotencyKey),
        operation: options.operation,
        hash: requestHash(options.operation, options.hashed),
      }
    : undefined;
  const replay = await replayed(deps, auth, idempotency);
  if (replay) return replay;
  const config = authorizeConfig(auth, requested);
  await checkSiteUrls(deps.database, auth.tenantId, configSites(config));
  return accept(deps, auth, config, { repeatOf: null, idempotency, limits: options.limits });
}

/** The request as the job runs it: without a `from`, it starts at the plan's history window. */
function withHistoryWindow(config: ExportConfig, limits: PlanLimits, now: Date): ExportConfig {
  const floor = historyStart(limits, now);
  if (config.from || !floor) return config;
  return { ...config, history_from: floor.toISOString().slice(0, 10) };
}

/** What an export would write, before it is requested (`POST /api/v1/exports/estimate`). */
export interface ExportEstimate {
  datasets: string[];
  /** Rows the export would write; null for document datasets, whose size is not a row count. */
  rows: number | null;
  /** Size of the file; null when `rows` is. */
  bytes: number | null;
  /** Running time in whole seconds (at least 1); null when `rows` is. */
  seconds: number | null;
  /**
   * `history`: bytes per row (and, when timed, rows per second) of the tenant's own completed
   * exports of the same first dataset, format, compression and package; `default`: fixed
   * per-format figures.
   */
  basis: 'history' | 'default';
}

/** Bytes per row of an uncompressed file when the tenant has no history to go by. */
const DEFAULT_ROW_BYTES = {
  csv: 400,
  json: 700,
  ndjson: 700,
  xml: 1000,
  parquet: 150,
} as const satisfies Record<ExportFormat, number>;

/** Rows per second when the tenant has no timed history to go by. */
const DEFAULT_ROWS_PER_SECOND = 50_000;

/** How many of the tenant's latest matching exports the history figures come from. */
const HISTORY_EXPORTS = 20;

/**
 * `POST /api/v1/exports/estimate`: the rows, size and running time of the export this body
 * would request. Validated and authorized exactly as `createExport` does, but nothing is
 * stored, counted against a quota or queued.
 */
export async function estimateExport(
  deps: ExportServiceDeps,
  auth: AuthContext,
  body: ExportBody,
): Promise<ExportEstimate> {
  authorize(auth, 'exports:create');
  const requested = authorizeConfig(auth, exportConfigFromBody(auth.tenantId, body));
  await checkSiteUrls(deps.database, auth.tenantId, configSites(requested));
  const config = withHistoryWindow(requested, await limitsFor(deps.database, auth), deps.now());
  const rows =
    config.package === 'none'
      ? await estimateDataset(deps.database, acceptedExportRequest(auth.tenantId, config))
      : await estimatePackage(deps.database, auth.tenantId, config);
  const estimate: ExportEstimate = {
    datasets: config.datasets,
    rows,
    bytes: null,
    seconds: null,
    basis: 'default',
  };
  if (rows === null) return estimate;
  const history = await exportHistory(deps.database, auth.tenantId, config);
  const rowBytes = history?.rowBytes ?? defaultRowBytes(config);
  const rowsPerSecond = history?.rowsPerSecond ?? DEFAULT_ROWS_PER_SECOND;
  return {
    ...estimate,
    bytes: Math.round(rows * rowBytes),
    seconds: Math.max(1, Math.ceil(rows / rowsPerSecond)),
    basis: history ? 'history' : 'default',
  };
}

/** Bytes per row by format; compressed files (gzip, zstd, and the zip or tar.gz package) take half. */
function defaultRowBytes(config: ExportConfig): number {
  const format = (config.format ?? 'csv') as ExportFormat;
  const perRow: number = DEFAULT_ROW_BYTES[format] ?? DEFAULT_ROW_BYTES.csv;
  const compressed = config.package !== 'none' || (config.compression ?? 'none') !== 'none';
  return compressed ? perRow / 2 : perRow;
}

/**
 * Bytes per row and rows per second of the tenant's latest completed exports shaped like
 * this one (first dataset, format, compression, package); null without one that wrote a row.
 * Rows per second is null when none of them took measurable time.
 */
async function exportHistory(
  database: Database,
  tenantId: string,
  config: ExportConfig,
): Promise<{ rowBytes: number; rowsPerSecond: number | null } | null> {
  const result = await sql<{ records: number; bytes: number; timed_records: number; seconds: number }>`
    SELECT coalesce(sum(f.records), 0)::float8 AS records,
      coalesce(sum(f.bytes), 0)::float8 AS bytes,
      coalesce(sum(f.records) FILTER (WHERE r.finished_at > r.started_at), 0)::float8 AS timed_records,
      coalesce(sum(extract(epoch FROM r.finished_at - r.started_at)) FILTER (WHERE r.finished_at > r.started_at),
        0)::float8 AS seconds
    FROM (
      SELECT id, started_at, finished_at FROM export_requests
      WHERE tenant_id = ${tenantId} AND status IN ('completed', 'expired')
        AND datasets[1] = ${config.datasets[0]!}
        AND config->>'package' = ${config.package}
        AND config->>'format' IS NOT DISTINCT FROM ${config.format}::text
        AND config->>'compression' IS NOT DISTINCT FROM ${config.compression}::text
      ORDER BY created_at DESC
      LIMIT ${HISTORY_EXPORTS}
    ) r
    JOIN export_files f ON f.export_id = r.id AND f.tenant_id = ${tenantId}`.execute(exportDb(database));
  const row = result.rows[0];
  if (!row || Number(row.records) <= 0) return null;
  const timed = Number(row.timed_records);
  const seconds = Number(row.seconds);
  return {
    rowBytes: Number(row.bytes) / Number(row.records),
    rowsPerSecond: timed > 0 && seconds > 0 ? timed / seconds : null,
  };
}

/** `POST /api/v1/exports/{id}/repeat`: runs a past export's configuration again, as a new export. */
export async function repeatExport(
  deps: ExportServiceDeps,
  auth: AuthContext,
  id: string,
  idempotencyKey: string | undefined,
  limits?: PlanLimits | null,
): Promise<Accepted> {
  authorize(auth, 'exports:create');
  const idempotency = idempotencyKey
    ? {
        key: checkIdempotencyKey(idempotencyKey),
        operation: 'exports.repeat',
        hash: requestHash('exports.repeat', { id }),
      }
    : undefined;
  const replay = await replayed(deps, auth, idempotency);
  if (replay) return replay;
  const source = await visibleExport(deps, auth, id);
  if (source.config.organisation)
    throw invalid(
      'id',
      `export ${id} is an organisation's export across its tenants; request it again with POST /api/v1/organisation/exports`,
    );
  if (source.config.package === 'directory')
    throw invalid(
      'id',
      `export ${id} is a folder written by \`ferry export --package directory\`; run that command again instead`,
    );
  // The plan's history window is the repeat's own, taken on acceptance.
  const { history_from: _window, ...request } = source.config;
  const config = authorizeConfig(auth, checkAgainstDataMap(auth.tenantId, request));
  await checkSiteUrls(deps.database, auth.tenantId, configSites(config));
  return accept(deps, auth, config, { repeatOf: source.id, idempotency, limits });
}

/** The sites an export's filters and options name, by their names in the request body. */
function configSites(config: ExportConfig) {
  return requestedSites(config.filters, config.options, {
    filter: 'filters.site_url',
    option: 'options.site_urls',
  });
}

interface IdempotencyInput {
  key: string;
  operation: string;
  hash: string;
}

async function replayed(
  deps: ExportServiceDeps,
  auth: AuthContext,
  idempotency: IdempotencyInput | undefined,
): Promise<Accepted | undefined> {
  if (!idempotency) return undefined;
  const stored = await findIdempotentResponse(deps.database, auth, {
    key: idempotency.key,
    operation: idempotency.operation,
    requestHash: idempotency.hash,
    notBefore: idempotencyWindowStart(deps.now()),
  });
  if (!stored) return undefined;
  return { statusCode: stored.statusCode, body: stored.response as ExportView, replayed: true };
}

async function accept(
  deps: ExportServiceDeps,
  auth: AuthContext,
  requested: ExportConfig,
  options: {
    repeatOf: string | null;
    idempotency: IdempotencyInput | undefined;
    limits: PlanLimits | null | undefined;
  },
): Promise<Accepted> {
  const queue = requireQueue(deps);
  const now = deps.now();
  const limits: PlanLimits = options.limits ?? (await limitsFor(deps.database, auth));
  await checkExportQuota(deps.database, auth, {
    manual: true,
    from: requested.from ?? undefined,
    subjectRequest: subjectRequestOf(requested.scope),
    now,
    limits,
  });
  const config = withHistoryWindow(requested, limits, now);
  const id = randomUUID();
  const row = queuedRow(auth, id, config, limits, options.repeatOf, now);
  const body = presentExport(row, [], now);
  const { idempotency } = options;
  const inserted = await recordAccepted(
    deps.database,
    auth,
    { id, config, limits, repeatOf: options.repeatOf, now },
    {
      idempotency: idempotency && {
        credential: credentialOf(auth),
        key: idempotency.key,
        operation: idempotency.operation,
        requestHash: idempotency.hash,
        statusCode: 202,
        response: body,
        notBefore: idempotencyWindowStart(now),
      },
      // The job exists only if the export does.
      send: (tx) => sendExportJob(queue, id, { id: auth.tenantId, plan: auth.plan }, jobConnection(tx.db)),
    },
  );
  if (!inserted) {
    // A concurrent request with the same key won; answer as it did.
    const replay = await replayed(deps, auth, idempotency);
    if (replay) return replay;
    throw new FerryError(
      'conflict',
      'a request with this Idempotency-Key is still being processed; retry shortly',
    );
  }
  return { statusCode: 202, body, replayed: false };
}

/**
 * Stores an accepted export with its audit entry (`export.requested`) and the month's
 * count, in one transaction: they exist together or not at all (and cost one commit).
 * Every export is recorded this way, whatever started it (the API, the command line).
 * `send` runs inside the transaction (the API's job). False when the idempotency key was
 * taken by a concurrent request.
 */
export async function recordAccepted(
  database: Database,
  auth: AuthContext,
  accepted: {
    id: string;
    config: ExportConfig;
    limits: PlanLimits;
    repeatOf: string | null;
    now: Date;
  },
  options: { idempotency?: IdempotencyClaim | undefined; send?: (tx: Database) => Promise<void> } = {},
): Promise<boolean> {
  const { id, config, limits, now } = accepted;
  return inTransaction(database, async (tx) => {
    const stored = await tenantExports(tx, auth.tenantId).insert(
      {
        id,
        tenantId: auth.tenantId,
        actor: auth.actor,
        apiKeyId: auth.apiKeyId,
        teamMemberId: auth.teamMemberId,
        config,
        retentionDays: limits.retentionDays,
        maxFileBytes: limits.maxFileBytes,
        repeatOf: accepted.repeatOf,
        createdAt: now,
      },
      options.idempotency,
    );
    if (!stored) return false;
    await options.send?.(tx);
    // The audit entry and the month's count go in one statement (one round trip); the
    // count's row stays locked until the commit, so it comes last.
    const audit = auditInsert(tx, {
      ...auditCaller(auth),
      action: AUDIT_ACTIONS.exportRequested,
      dataType: config.datasets.join(','),
      dateRange:
        config.from || config.to ? { from: config.from ?? undefined, to: config.to ?? undefined } : null,
      success: true,
      targetId: id,
      occurredAt: now,
    });
    await countAcceptedExport(tx, auth.tenantId, now, audit, subjectRequestOf(config.scope));
    return true;
  });
}

/** `GET /api/v1/exports/{id}`. */
export async function getExport(deps: ExportServiceDeps, auth: AuthContext, id: string): Promise<ExportView> {
  authorize(auth, 'exports:read');
  return view(deps, auth, await visibleExport(deps, auth, id));
}

export interface ListQuery {
  status?: ExportStatus[] | undefined;
  dataset?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

/** `GET /api/v1/exports`: newest first, with keyset pagination. */
export async function listExports(
  deps: ExportServiceDeps,
  auth: AuthContext,
  query: ListQuery,
): Promise<{ data: ExportView[]; next_cursor: string | null }> {
  authorize(auth, 'exports:read');
  const limit = query.limit ?? 20;
  const after = query.cursor ? decodeCursor(query.cursor, 'pipe') : undefined;
  const filter: ListFilter = {
    statuses: query.status,
    dataset: query.dataset,
    from: query.from ? parseInstant('from', query.from) : undefined,
    to: query.to ? parseInstant('to', query.to, true) : undefined,
    requester: SEES_ALL.includes(auth.role)
      ? undefined
      : { apiKeyId: auth.apiKeyId, teamMemberId: auth.teamMemberId },
    organisationExportsOf: { apiKeyId: auth.apiKeyId, teamMemberId: auth.teamMemberId },
    after,
    limit: limit + 1,
  };
  const exports = tenantExports(deps.database, auth.tenantId);
  const rows = await exports.list(filter);
  const page = rows.slice(0, limit);
  const files = await exports.files(page.filter((r) => r.status === 'completed').map((r) => r.id));
  const byExport = new Map<string, ExportFileRow[]>();
  for (const file of files) byExport.set(file.export_id, [...(byExport.get(file.export_id) ?? []), file]);
  const now = deps.now();
  const last = page[page.length - 1];
  return {
    data: page.map((row) => presentExport(row, byExport.get(row.id) ?? [], now)),
    next_cursor:
      rows.length > limit && last ? encodeCursor({ at: last.cursor_at, id: last.id }, 'pipe') : null,
  };
}

/** A date (the whole day, UTC) or an ISO 8601 timestamp; `to` dates are inclusive. */
function parseInstant(param: string, value: string, endOfDay = false): Date {
  const day = /^\d{4}-\d{2}-\d{2}$/.test(value);
  const parsed = new Date(day ? `${value}T00:00:00Z` : value);
  if (Number.isNaN(parsed.getTime()) || (!day && !/T.*(Z|[+-]\d{2}:?\d{2})$/.test(value)))
    throw invalid(param, `"${value}" is not a date (YYYY-MM-DD) or an ISO 8601 timestamp with offset`);
  return day && endOfDay ? new Date(parsed.getTime() + 86_400_000) : parsed;
}

/**
 * `DELETE /api/v1/exports/{id}`: cancels a queued or running export (its worker stops
 * within a second and keeps nothing), or deletes the stored files of a completed one.
 * Failed, cancelled and expired exports have no files; deleting them changes nothing.
 */
export async function deleteExport(
  deps: ExportServiceDeps,
  auth: AuthContext,
  id: string,
): Promise<ExportView> {
  authorize(auth, 'exports:delete');
  let row = await visibleExport(deps, auth, id);
  const exports = tenantExports(deps.database, auth.tenantId);
  const now = deps.now();
  if (isActive(row.status)) {
    const cancelled = await exports.cancel(id, now);
    if (cancelled) {
      // The queued job would find the export cancelled anyway; cancelling it saves a fetch.
      await deps.queue?.boss.cancel(EXPORT_QUEUE, id).catch(() => {});
      if (deps.store) await removeLeftovers(deps.store, exportPrefix(auth.tenantId, id)).catch(() => 0);
      await recordAudit(deps.database, {
        ...auditCaller(auth),
        action: 'export.cancelled',
        dataType: row.datasets.join(','),
        success: true,
        targetId: id,
        occurredAt: now,
      });
      return view(deps, auth, cancelled);
    }
    row = (await exports.find(id)) ?? row; // it finished meanwhile
  }
  if (row.status === 'completed') {
    const store = requireStore(deps);
    for (const file of await exports.files([id])) await store.delete(file.storage_key);
    const deleted = await exports.markFilesDeleted(id, now);
    if (deleted) {
      await recordAudit(deps.database, {
        ...auditCaller(auth),
        action: AUDIT_ACTIONS.exportDeleted,
        dataType: row.datasets.join(','),
        success: true,
        targetId: id,
        occurredAt: now,
      });
      row = deleted;
    }
  }
  return view(deps, auth, row);
}

export interface DownloadLink {
  url: string;
  expires_at: string;
  method: 'signed' | 'presigned';
  file: ExportView['files'][number];
}

/**
 * `GET /api/v1/exports/{id}/download`: a short-lived link to one file of a completed
 * export. With S3 storage and no encryption at rest it is a presigned S3 URL (counted
 * and audited here, since S3 serves it); otherwise Ferry's own signed download URL,
 * which counts and audits each download it serves.
 */
export async function issueDownload(
  deps: ExportServiceDeps,
  auth: AuthContext,
  id: string,
  options: { fileName?: string | undefined; baseUrl: string; bindIpAllowlist?: boolean | undefined },
): Promise<DownloadLink> {
  authorize(auth, 'exports:download');
  const row = await visibleExport(deps, auth, id);
  authorizeConfig(auth, row.config);
  const now = deps.now();
  assertDownloadable(row, now);
  if (isLocalExport(row))
    throw new FerryError(
      'conflict',
      `export ${row.id} was written by \`ferry export\` to a file on the machine that ran it; Ferry keeps no copy to download`,
    );
  const files = await tenantExports(deps.database, auth.tenantId).files([id]);
  const file = options.fileName ? files.find((f) => f.name === options.fileName) : files[0];
  if (!file)
    throw invalid(
      'file',
      `export ${id} has no file "${options.fileName}"`,
      files.map((f) => f.name),
    );
  const remaining = Math.floor((row.expires_at!.getTime() - now.getTime()) / 1000);
  const seconds = Math.max(1, Math.min(deps.config.downloadLinkSeconds, remaining));
  const expires = Math.floor(now.getTime() / 1000) + seconds;
  const presented = presentExport(row, [file], now).files[0]!;
  const store = requireStore(deps);
  // Bound by default when the tenant has an allow-list: Ferry's own signed link, checked at
  // download time (a presigned S3 URL cannot be bound to an address).
  const bound =
    options.bindIpAllowlist !== false &&
    (await tenantAccess(deps.database, auth.tenantId)).ipAllowlist.length > 0;
  const presigned = bound ? null : await store.presignGet(file.storage_key, seconds, file.name);
  if (presigned) {
    const count = await tenantExports(deps.database, auth.tenantId).countDownload(id);
    await recordAudit(deps.database, {
      ...auditCaller(auth),
      action: AUDIT_ACTIONS.exportDownloaded,
      dataType: row.datasets.join(','),
      fileBytes: Number(file.bytes),
      downloadCount: count,
      success: true,
      targetId: id,
      occurredAt: now,
    });
    return {
      url: presigned,
      expires_at: new Date(expires * 1000).toISOString(),
      method: 'presigned',
      file: presented,
    };
  }
  const target = { tenantId: auth.tenantId, exportId: id, fileId: file.id, expires, bound };
  return {
    url: `${options.baseUrl}${downloadPath(target, requireSigner(deps).sign(target))}`,
    expires_at: new Date(expires * 1000).toISOString(),
    method: 'signed',
    file: presented,
  };
}

/** 410 for exports whose files are gone; 409 for exports that have none yet. */
export function assertDownloadable(row: ExportRow, now: Date): void {
  if (row.status === 'expired' || (row.status === 'completed' && row.expires_at && row.expires_at <= now)) {
    const when = (row.files_deleted_at ?? row.expires_at)?.toISOString() ?? 'earlier';
    throw new FerryError(
      'gone',
      `the files of export ${row.id} were removed at ${when} (retention or deletion)`,
    );
  }
  if (row.status !== 'completed')
    throw new FerryError(
      'conflict',
      `export ${row.id} is ${row.status}; files can be downloaded once it is completed`,
    );
}
