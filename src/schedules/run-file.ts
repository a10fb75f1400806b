import { randomUUID } from 'node:crypto';
import type { PlanLimits } from '../auth/limits.ts';
import { historyStart, quotaExceeded } from '../auth/quotas.ts';
import { type ChangeCursor, decodeChangeCursor, encodeChangeCursor } from '../collect/changes.ts';
import { sessionAnonymizeKey } from '../collect/paging.ts';
import { acceptedExportRequest, type ExportRequest, parseExportRequest } from '../collect/request.ts';
import type { TenantInfo } from '../collect/tenant.ts';
import type { Database } from '../db/database.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { exportPrefix, fileSpec, removeLeftovers } from '../export-requests/export-job.ts';
import { exportJobs, tenantExports } from '../export-requests/repository.ts';
import { fileRequest } from '../export-requests/config.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { Logger } from '../lib/logger.ts';
import { stamp } from '../lib/stamp.ts';
import { datasetFileType } from '../pipeline/export-dataset.ts';
import { slug } from '../lib/slug.ts';
import {
  type ChangesProduced,
  changesProducer,
  datasetProducer,
  packageProducer,
} from '../pipeline/producers.ts';
import { type Producer, runFile } from '../pipeline/run.ts';
import type { ObjectStore } from '../store/object-store.ts';
import {
  type DatasetCount,
  isDayReport,
  type RunFile,
  type ScheduleConfig,
  type ScheduleDataset,
} from './model.ts';
import type { RunRow } from './repository.ts';
import { scheduleRuns } from './run-repository.ts';
import { selectionRange } from './window.ts';

/** What a run reads from the schedule: its config as of the run's creation, with the name and zone. */
export interface RunConfig extends ScheduleConfig {
  name: string;
  timezone: string;
}

export interface ProduceDeps {
  readonly database: Database;
  readonly store: ObjectStore;
  readonly now: () => Date;
  /** Keys the pseudonyms of a schedule's files, so every run pseudonymizes alike. */
  readonly secretKey: string;
  readonly logger: Logger;
}

export interface FileSpecInput {
  /** The dataset, or `package`. */
  readonly key: string;
  readonly datasets: readonly ScheduleDataset[];
}

const DAY_MS = 86_400_000;

/** The files of a run: one per dataset, or one package of all of them. */
export function runFileSpecs(config: ScheduleConfig): FileSpecInput[] {
  if (config.package !== 'none') return [{ key: 'package', datasets: config.datasets }];
  return config.datasets.map((d) => ({ key: d.dataset, datasets: [d] }));
}

const scheduleSlug = (name: string) => slug(name, 'schedule');

/**
 * The export of a saved configuration's entry (docs/export-configs.md): the configuration's
 * compiled export over the entry's window, unless the configuration fixes its own range.
 */
function savedExportOf(config: RunConfig, spec: FileSpecInput, dueAt: Date): ExportConfig | null {
  const entry = spec.datasets[0];
  if (!entry?.config) return null;
  const saved = config.saved_config;
  if (!saved || saved.id !== entry.config)
    throw new FerryError(
      'conflict',
      `the saved export configuration ${entry.config} of this schedule is gone`,
    );
  const range = selectionRange(entry, dueAt, config.timezone);
  const fixed = saved.export.from !== null || saved.export.to !== null;
  return {
    ...saved.export,
    saved_config: { id: saved.id, name: saved.name },
    from: fixed ? saved.export.from : range.from,
    to: fixed ? saved.export.to : range.to,
  };
}

/** The export configuration recorded with the file (what `GET /api/v1/exports/{id}` shows). */
function exportConfigOf(config: RunConfig, spec: FileSpecInput, dueAt: Date): ExportConfig {
  const base = {
    scope: { kind: 'tenant' as const },
    filters: {},
    columns: null,
    pii: config.pii,
    options: {},
    bom: false,
    csv_guard: true,
    recipients: [],
  };
  if (config.package !== 'none')
    return {
      ...base,
      datasets: spec.datasets.map((d) => d.dataset),
      format: null,
      compression: null,
      package: config.package,
      from: null,
      to: null,
      timezone: null,
    };
  const entry = spec.datasets[0]!;
  const range = selectionRange(entry, dueAt, config.timezone);
  const request = parseExportRequest({
    tenantId: '00000000-0000-0000-0000-000000000000',
    dataset: entry.dataset,
    format: entry.format ?? config.format ?? undefined,
    compression: config.compression,
  });
  return {
    ...base,
    datasets: [entry.dataset],
    format: request.format,
    compression: request.compression,
    package: 'none',
    from: range.from,
    to: range.to,
    timezone: range.dayZone,
  };
}

/** The engine's request for one dataset of a run. */
function requestFor(
  tenantId: string,
  config: RunConfig,
  entry: ScheduleDataset,
  dueAt: Date,
  historyFrom: string | null,
): ExportRequest {
  const range = selectionRange(entry, dueAt, config.timezone);
  const report = isDayReport(entry.dataset);
  const dated = !report && hasFromFilter(entry.dataset);
  const from = range.from ?? (entry.mode === 'full' && dated ? historyFrom : null);
  const request = parseExportRequest({
    tenantId,
    dataset: entry.dataset,
    format: entry.format ?? config.format ?? undefined,
    compression: config.package === 'none' ? config.compression : 'none',
    pii: config.pii,
    ...(!report && from ? { from } : {}),
    ...(!report && range.to ? { to: range.to } : {}),
    ...(range.dayZone ? { timezone: range.dayZone } : {}),
  });
  if (!report || (!range.from && !range.to)) return request;
  // Day reports take their range as days in the report zone (the engine reads them from `filters`).
  return { ...request, filters: { ...request.filters, from: range.from!, to: range.to! } };
}

/** The format a dataset is written in: its own, the schedule's, or the dataset's default. */
function formatOf(entry: ScheduleDataset, config: ScheduleConfig): string {
  return parseExportRequest({
    tenantId: '00000000-0000-0000-0000-000000000000',
    dataset: entry.dataset,
    format: entry.format ?? config.format ?? undefined,
  }).format;
}

function hasFromFilter(dataset: string): boolean {
  try {
    parseExportRequest({ tenantId: '00000000-0000-0000-0000-000000000000', dataset, from: '2000-01-01' });
    return true;
  } catch {
    return false;
  }
}

export interface ProduceInput {
  readonly run: RunRow;
  readonly config: RunConfig;
  readonly tenant: TenantInfo;
  readonly limits: PlanLimits;
  readonly spec: FileSpecInput;
  readonly signal: AbortSignal;
  /** Persists the run's file list once the export row exists, so a later attempt can clean up after this one. */
  readonly onStarted: (file: RunFile) => Promise<void>;
}

/**
 * Produces one file of a run through the export engine (the change feed for
 * incremental datasets, the dataset export otherwise) and stores it as a completed
 * export of the tenant: an `export_requests` row walked through its state machine and
 * an `export_files` row, so the file can be downloaded with a signed link and is
 * removed by the export cleanup when its local retention ends. The file is committed
 * to storage before it is recorded; a failure discards it and fails the export row.
 */
export async function produceFile(deps: ProduceDeps, input: ProduceInput): Promise<RunFile> {
  const { run, config, tenant, limits, spec } = input;
  const now = deps.now();
  const exportId = randomUUID();
  const attemptId = randomUUID();
  const exportConfig = savedExportOf(config, spec, run.due_at) ?? exportConfigOf(config, spec, run.due_at);
  const jobs = exportJobs(deps.database);
  const file: RunFile = {
    key: spec.key,
    datasets: spec.datasets.map((d) => d.dataset),
    export_id: exportId,
    state: 'producing',
  };
  // The run names the export before it exists: an attempt that dies anywhere after this
  // leaves the next one enough to fail the export row and remove its bytes.
  await input.onStarted(file);
  let claimed = false;
  try {
    await tenantExports(deps.database, tenant.id).insert({
      id: exportId,
      tenantId: tenant.id,
      actor: `schedule:${run.schedule_id}`,
      apiKeyId: null,
      teamMemberId: null,
      config: exportConfig,
      retentionDays: config.retention.local_days,
      maxFileBytes: limits.maxFileBytes,
      repeatOf: null,
      createdAt: now,
    });
    claimed = (await jobs.claim(exportId, attemptId, now)) !== undefined;
    if (!claimed)
      throw new FerryError('internal', `the export ${exportId} of a scheduled run could not be started`);
    return await writeFile(deps, input, { file, exportId, attemptId, exportConfig, now });
  } catch (err) {
    await abandonFile(deps, tenant.id, exportId, claimed ? attemptId : null, err);
    throw err;
  }
}

interface FileContext {
  readonly file: RunFile;
  readonly exportId: string;
  /** The lease of the export row (its attempt id) and the folder of its bytes. */
  readonly attemptId: string;
  readonly exportConfig: ExportConfig;
  readonly now: Date;
}

/** Streams the file through the pipeline run into the store and records it on the export row. */
async function writeFile(deps: ProduceDeps, input: ProduceInput, ctx: FileContext): Promise<RunFile> {
  const { run, config, tenant, limits, spec } = input;
  const { file, exportId, attemptId, exportConfig, now } = ctx;
  const jobs = exportJobs(deps.database);
  const made = fileSpec(exportConfig, run.due_at);
  const extension = made.name.slice(made.name.indexOf('.'));
  const saved = exportConfig.saved_config;
  const base = saved
    ? slug(saved.name, 'export')
    : spec.key === 'package'
      ? scheduleSlug(config.name)
      : spec.key;
  const name = `${base}-${stamp(run.due_at)}-r${run.run_number}${extension}`;
  const storageKey = `${exportPrefix(tenant.id, exportId)}${attemptId}/${name}`;
  const historyFrom = historyStart(limits, now)?.toISOString().slice(0, 10) ?? null;

  const counts: Record<string, DatasetCount> = {};
  const cursors: NonNullable<RunFile['cursors']> = {};
  /** One dataset of the file: the change feed for incremental datasets, the dataset export otherwise. */
  const datasetEntry = (entry: ScheduleDataset): Producer => {
    const request = requestFor(tenant.id, config, entry, run.due_at, historyFrom);
    if (entry.mode !== 'incremental') {
      const range = selectionRange(entry, run.due_at, config.timezone);
      const produce = datasetProducer(deps.database, request, {
        exportId,
        anonymizeKey: sessionAnonymizeKey(deps.secretKey, tenant.id, `schedule:${run.schedule_id}`),
      });
      return async (out, produceCtx) => {
        const { records } = await produce(out, produceCtx);
        counts[entry.dataset] = { records, tombstones: 0, mode: entry.mode, from: range.from, to: range.to };
        return { records };
      };
    }
    return async (out, produceCtx) => {
      const text = await scheduleRuns(deps.database).checkpoint(run.schedule_id, entry.dataset);
      const since = text
        ? decodeChangeCursor(text, { tenantId: tenant.id, dataset: entry.dataset }, 'checkpoint')
        : null;
      const feed = (from: ChangeCursor | null) =>
        changesProducer(deps.database, request, from, { exportId, secret: deps.secretKey })(out, produceCtx);
      let result: ChangesProduced;
      try {
        result = await feed(since);
      } catch (err) {
        if (!(err instanceof FerryError && err.code === 'gone' && since)) throw err;
        // The checkpoint is too old for the change feed (billions of transactions ago):
        // start the feed over with a full export rather than stop the schedule for good.
        deps.logger.warn(
          { schedule_id: run.schedule_id, dataset: entry.dataset },
          'checkpoint too old; exporting everything',
        );
        result = await feed(null);
      }
      counts[entry.dataset] = {
        records: result.upserts,
        tombstones: result.tombstones,
        mode: 'incremental',
        from: null,
        to: null,
      };
      cursors[entry.dataset] = { since: text, next: encodeChangeCursor(result.nextCursor) };
      return result;
    };
  };
  /** A saved configuration's file: its one dataset, or its package of chosen files. */
  const savedEntry = (entry: ScheduleDataset): Producer => {
    const run_ = { ...exportConfig, history_from: exportConfig.from ? null : historyFrom };
    const options = {
      exportId,
      anonymizeKey: sessionAnonymizeKey(deps.secretKey, tenant.id, `schedule:${run.schedule_id}`),
    };
    let produce: Producer;
    if (run_.files?.length) {
      produce = packageProducer(
        run_.package === 'tar.gz' ? 'tar.gz' : 'zip',
        { root: `${base}-${stamp(run.due_at)}-r${run.run_number}`, mtime: run.due_at },
        run_.files.map((f) => {
          const request = fileRequest(tenant.id, run_, f);
          return {
            path: `${f.path}.${datasetFileType(request.format, 'none').extension}`,
            produce: datasetProducer(deps.database, request, options),
          };
        }),
      );
    } else if (run_.package === 'none') {
      produce = datasetProducer(deps.database, acceptedExportRequest(tenant.id, run_), options);
    } else {
      throw new FerryError(
        'invalid_parameter',
        `the saved export configuration "${saved!.name}" is a package of one dataset; schedules run packages of several files or single files`,
      );
    }
    return async (out, produceCtx) => {
      const { records } = await produce(out, produceCtx);
      counts[entry.dataset] = {
        records,
        tombstones: 0,
        mode: entry.mode,
        from: run_.from ?? null,
        to: run_.to ?? null,
      };
      return { records };
    };
  };
  const produce = saved
    ? savedEntry(spec.datasets[0]!)
    : config.package === 'none'
      ? datasetEntry(spec.datasets[0]!)
      : packageProducer(
          config.package,
          { root: `${scheduleSlug(config.name)}-${stamp(run.due_at)}-r${run.run_number}`, mtime: run.due_at },
          spec.datasets.map((entry) => ({
            path: `${entry.dataset}.${datasetFileType(formatOf(entry, config), 'none').extension}`,
            produce: datasetEntry(entry),
          })),
        );

  let expiresAt = now;
  let fileId = '';
  const outcome = await runFile(
    { store: deps.store },
    {
      produce,
      maxBytes: limits.maxFileBytes,
      tooLarge: (maxBytes) =>
        quotaExceeded(
          'max_file_bytes',
          `the scheduled export grew past the plan's file size limit of ${maxBytes} bytes; narrow the ` +
            'schedule (fewer datasets, a window) or upgrade the plan',
          null,
        ),
    },
    {
      key: storageKey,
      contentType: made.contentType,
      beforeCommit: () => jobs.toPackaging(exportId, attemptId, deps.now()),
      complete: (stored) => {
        const at = deps.now();
        expiresAt = new Date(at.getTime() + config.retention.local_days * DAY_MS);
        fileId = randomUUID();
        return jobs.complete(
          exportId,
          attemptId,
          {
            id: fileId,
            name,
            storageKey,
            contentType: stored.contentType,
            bytes: stored.bytes,
            records: stored.records,
            sha256: stored.sha256,
            encrypted: false,
          },
          { records: stored.records, estimated: null, bytes: stored.bytes, at },
          expiresAt,
        );
      },
    },
    { signal: input.signal },
  );
  if (outcome.status === 'lost')
    throw new FerryError('internal', `the export ${exportId} of a scheduled run was taken over`);
  const records = Object.values(counts).reduce((n, c) => n + c.records, 0);
  const tombstones = Object.values(counts).reduce((n, c) => n + c.tombstones, 0);
  return {
    ...file,
    state: 'ready',
    file_id: fileId,
    name,
    storage_key: storageKey,
    content_type: made.contentType,
    bytes: outcome.file.bytes,
    sha256: outcome.file.sha256,
    records,
    tombstones,
    counts,
    ...(Object.keys(cursors).length ? { cursors } : {}),
    expires_at: expiresAt.toISOString(),
  };
}

/** Fails the export row of a file that was not produced, and removes whatever it stored. */
export async function abandonFile(
  deps: Pick<ProduceDeps, 'database' | 'store' | 'now'>,
  tenantId: string,
  exportId: string,
  attemptId: string | null,
  err: unknown,
): Promise<void> {
  const failure =
    err instanceof FerryError
      ? { code: err.code, message: err.message }
      : { code: 'export_interrupted' as const, message: 'the scheduled run producing this file stopped' };
  await exportJobs(deps.database)
    .fail(exportId, attemptId, failure, deps.now())
    .catch(() => undefined);
  await removeLeftovers(deps.store, exportPrefix(tenantId, exportId)).catch(() => 0);
}
