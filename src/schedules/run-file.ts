import { createHash, randomUUID } from 'node:crypto';
import { PassThrough, Transform, type TransformCallback, type Writable } from 'node:stream';
import type { PlanLimits } from '../auth/limits.ts';
import { historyStart, quotaExceeded } from '../auth/quotas.ts';
import type { Database } from '../db/database.ts';
import { decodeChangeCursor, encodeChangeCursor, exportChanges } from '../collect/changes.ts';
import { sessionAnonymizeKey } from '../collect/paging.ts';
import { type ExportRequest, parseExportRequest } from '../collect/request.ts';
import { exportDataset, type TenantInfo } from '../pipeline/export-dataset.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { exportJobs, tenantExports } from '../export-requests/repository.ts';
import { exportPrefix, fileSpec, removeLeftovers } from '../export-requests/export-job.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { Logger } from '../lib/logger.ts';
import { createPackageWriter } from '../packaging/archive.ts';
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

function stamp(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

function slug(text: string): string {
  const s = text
    .normalize('NFKD')
    .replace(/[^\w\s-]/g, '')
    .trim()
    .toLowerCase()
    .replace(/[\s_-]+/g, '-')
    .slice(0, 60)
    .replace(/-+$/, '');
  return s || 'schedule';
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

/** Passes bytes through, hashing and counting them, and stops past `maxBytes`. */
class FileMeter extends Transform {
  readonly #maxBytes: number | null;
  readonly digest = createHash('sha256');
  bytes = 0;

  constructor(maxBytes: number | null) {
    super();
    this.#maxBytes = maxBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.#maxBytes !== null && this.bytes > this.#maxBytes) {
      done(
        quotaExceeded(
          'max_file_bytes',
          `the scheduled export grew past the plan's file size limit of ${this.#maxBytes} bytes; narrow the ` +
            'schedule (fewer datasets, a window) or upgrade the plan',
          null,
        ),
      );
      return;
    }
    this.digest.update(chunk);
    done(null, chunk);
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
  const exportConfig = exportConfigOf(config, spec, run.due_at);
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

/** Streams the file into the store, checks it, commits it, and records it on the export row. */
async function writeFile(deps: ProduceDeps, input: ProduceInput, ctx: FileContext): Promise<RunFile> {
  const { run, config, tenant, limits, spec } = input;
  const { file, exportId, attemptId, exportConfig, now } = ctx;
  const jobs = exportJobs(deps.database);
  const made = fileSpec(exportConfig, run.due_at);
  const extension = made.name.slice(made.name.indexOf('.'));
  const base = spec.key === 'package' ? slug(config.name) : spec.key;
  const name = `${base}-${stamp(run.due_at)}-r${run.run_number}${extension}`;
  const storageKey = `${exportPrefix(tenant.id, exportId)}${attemptId}/${name}`;
  const historyFrom = historyStart(limits, now)?.toISOString().slice(0, 10) ?? null;

  const counts: Record<string, DatasetCount> = {};
  const cursors: NonNullable<RunFile['cursors']> = {};
  const writeDataset = async (entry: ScheduleDataset, out: Writable) => {
    const request = requestFor(tenant.id, config, entry, run.due_at, historyFrom);
    const range = selectionRange(entry, run.due_at, config.timezone);
    if (entry.mode === 'incremental') {
      const text = await scheduleRuns(deps.database).checkpoint(run.schedule_id, entry.dataset);
      const since = text
        ? decodeChangeCursor(text, { tenantId: tenant.id, dataset: entry.dataset }, 'checkpoint')
        : null;
      let result: Awaited<ReturnType<typeof exportChanges>>;
      try {
        result = await exportChanges(deps.database, request, since, out, {
          exportId,
          secret: deps.secretKey,
          signal: input.signal,
        });
      } catch (err) {
        if (!(err instanceof FerryError && err.code === 'gone' && since)) throw err;
        // The checkpoint is too old for the change feed (billions of transactions ago):
        // start the feed over with a full export rather than stop the schedule for good.
        deps.logger.warn(
          { schedule_id: run.schedule_id, dataset: entry.dataset },
          'checkpoint too old; exporting everything',
        );
        result = await exportChanges(deps.database, request, null, out, {
          exportId,
          secret: deps.secretKey,
          signal: input.signal,
        });
      }
      counts[entry.dataset] = {
        records: result.records,
        tombstones: result.tombstones,
        mode: 'incremental',
        from: null,
        to: null,
      };
      cursors[entry.dataset] = { since: text, next: encodeChangeCursor(result.nextCursor) };
      return;
    }
    const outcome = await exportDataset(deps.database, request, out, {
      exportId,
      anonymizeKey: sessionAnonymizeKey(deps.secretKey, tenant.id, `schedule:${run.schedule_id}`),
      ...(input.signal ? { signal: input.signal } : {}),
    });
    counts[entry.dataset] = {
      records: outcome.records,
      tombstones: 0,
      mode: entry.mode,
      from: range.from,
      to: range.to,
    };
  };

  const meter = new FileMeter(limits.maxFileBytes);
  const putting = deps.store.put(storageKey, meter, { contentType: made.contentType });
  const producing = (async () => {
    if (config.package === 'none') {
      await writeDataset(spec.datasets[0]!, meter);
      return;
    }
    const writer = createPackageWriter(config.package, meter, {
      root: `${slug(config.name)}-${stamp(run.due_at)}-r${run.run_number}`,
      mtime: run.due_at,
    });
    try {
      for (const entry of spec.datasets) {
        const source = new PassThrough();
        const inner = fileSpec(
          {
            ...exportConfig,
            package: 'none',
            datasets: [entry.dataset],
            format: formatOf(entry, config),
            compression: 'none',
          },
          run.due_at,
        );
        const adding = writer.add(`${entry.dataset}${inner.name.slice(inner.name.indexOf('.'))}`, source);
        await Promise.all([writeDataset(entry, source), adding]);
      }
      await writer.finish();
    } catch (err) {
      writer.abort(err as Error);
      throw err;
    }
  })().catch((err: unknown) => {
    meter.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  });

  const [produced, stored] = await Promise.allSettled([producing, putting]);
  {
    if (produced.status === 'rejected' || stored.status === 'rejected') {
      if (stored.status === 'fulfilled') await stored.value.discard().catch(() => {});
      if (input.signal.aborted) throw input.signal.reason;
      throw produced.status === 'rejected' ? produced.reason : (stored as PromiseRejectedResult).reason;
    }
    const pending = stored.value;
    const sha256 = meter.digest.digest('hex');
    if (pending.sha256 !== sha256 || pending.bytes !== meter.bytes) {
      await pending.discard().catch(() => {});
      throw new FerryError(
        'internal',
        `checksum mismatch between the scheduled export and the stored file "${storageKey}"`,
      );
    }
    const records = Object.values(counts).reduce((n, c) => n + c.records, 0);
    const tombstones = Object.values(counts).reduce((n, c) => n + c.tombstones, 0);
    if (!(await jobs.toPackaging(exportId, attemptId, deps.now()))) {
      await pending.discard().catch(() => {});
      throw new FerryError('internal', `the export ${exportId} of a scheduled run was taken over`);
    }
    await pending.commit();
    const at = deps.now();
    const expiresAt = new Date(at.getTime() + config.retention.local_days * DAY_MS);
    const fileId = randomUUID();
    const completed = await jobs.complete(
      exportId,
      attemptId,
      {
        id: fileId,
        name,
        storageKey,
        contentType: made.contentType,
        bytes: pending.bytes,
        records: records + tombstones,
        sha256: pending.sha256,
        encrypted: false,
      },
      { records: records + tombstones, estimated: null, bytes: pending.bytes, at },
      expiresAt,
    );
    if (!completed) {
      await deps.store.delete(storageKey).catch(() => {});
      throw new FerryError('internal', `the export ${exportId} of a scheduled run was taken over`);
    }
    return {
      ...file,
      state: 'ready',
      file_id: fileId,
      name,
      storage_key: storageKey,
      content_type: made.contentType,
      bytes: pending.bytes,
      sha256: pending.sha256,
      records,
      tombstones,
      counts,
      ...(Object.keys(cursors).length ? { cursors } : {}),
      expires_at: expiresAt.toISOString(),
    };
  }
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
