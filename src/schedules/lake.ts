import { randomUUID } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { sql } from 'kysely';
import type { PlanLimits } from '../auth/limits.ts';
import { historyStart } from '../auth/quotas.ts';
import { sessionAnonymizeKey } from '../collect/paging.ts';
import { parseExportRequest } from '../collect/request.ts';
import type { TenantInfo } from '../collect/tenant.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { openTarget, targetLabel, targetSecrets } from '../deliver/targets.ts';
import type { DeliveryClients, DeliveryTarget, S3Target } from '../deliver/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { datasetFolder } from '../format/parquet-partitions.ts';
import type { Logger } from '../lib/logger.ts';
import type { OutboundPolicy } from '../lib/ssrf.ts';
import { stamp } from '../lib/stamp.ts';
import { datasetProducer } from '../pipeline/producers.ts';
import { LocalObjectStore } from '../store/local-object-store.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { type S3Api, S3ObjectStore } from '../store/s3-object-store.ts';
import { lakeTimeColumn, type ScheduleDataset, type SelectionMode } from './model.ts';
import type { RunRow } from './repository.ts';
import type { RunConfig } from './run-file.ts';
import { selectionRange } from './window.ts';

/**
 * The `lake` layout of a schedule (docs/bi/data-lake.md): each run keeps, at every target,
 *
 * ```
 * <prefix>dataset=<name>/date=YYYY-MM-DD/part-0.parquet   one file per dataset and UTC day
 * <prefix>_runs/<run stamp>/_manifest.json                 what each run wrote (kept)
 * <prefix>_manifest.json                                   the last complete run's manifest
 * <prefix>_SUCCESS                                         written last; absent while a run writes
 * ```
 *
 * A day is always written whole: its rows are exported again from the database (the
 * dataset's export with `from`/`to` set to that UTC day) and the file replaces the old
 * one in one step (S3 completes a multipart upload, a folder renames a finished file),
 * so a reader sees the day before or after, never half of it or both. A day that no
 * longer has rows is removed. Which days a run writes depends on the dataset's mode:
 *
 * - `incremental`: the days whose rows changed since the target's last complete run. Each
 *   day's fingerprint (its row count and the sum of a 64-bit hash of each row's id and
 *   version, `xmin`) is one aggregate query in the database, compared with the one the
 *   manifest recorded. A new row, a late change to an old day, a row moved to another
 *   day and a deleted row all change the fingerprint of the days they touch, so those
 *   days, and only those, are rewritten; deleted rows are gone from the new files.
 * - `window`: every UTC day the run's window touches, rewritten whole.
 * - `full`: every day.
 *
 * The state is the target's own manifest, so a new target, or one whose last run died,
 * is brought up to date by the next run. `_SUCCESS` is removed before the first day is
 * touched and written after both manifests; a run that dies leaves no `_SUCCESS` and each
 * day either as it was or as the run wrote it, and the next run rewrites what the last
 * complete manifest does not describe.
 */

/** The manifest format, named in every manifest. */
export const LAKE_MANIFEST_FORMAT = 'ferry.lake.manifest/1';
export const LAKE_MANIFEST = '_manifest.json';
export const LAKE_SUCCESS = '_SUCCESS';
export const LAKE_RUNS = '_runs';
const PARQUET_TYPE = 'application/vnd.apache.parquet';
const DAY_MS = 86_400_000;
/** A folder's temporary file this old is a killed attempt's (a day is written in far less). */
const STALE_TEMP_MS = 3_600_000;

/** One day's file in the lake. */
export interface LakePartition {
  /** Relative to the target's prefix: `dataset=<name>/date=YYYY-MM-DD/part-0.parquet`. */
  path: string;
  date: string;
  rows: number;
  bytes: number;
  sha256: string;
  /** The rows' fingerprint when the day was written (incremental datasets). */
  fingerprint: string | null;
  /** The run that wrote the file (`<stamp>-r<number>`). */
  run: string;
}

export interface LakeDatasetManifest {
  mode: SelectionMode;
  /** The column whose UTC date partitions the rows. */
  time_column: string;
  /** Window datasets: the range the run covered (whole UTC days around it are rewritten). */
  range: { from: string | null; to: string | null };
  /** Files this run wrote. */
  written: Omit<LakePartition, 'fingerprint' | 'run'>[];
  /** Files this run removed (their day has no rows any more). */
  removed: string[];
  /** Every file of the dataset once the run is complete. */
  partitions: LakePartition[];
}

export interface LakeManifest {
  format: typeof LAKE_MANIFEST_FORMAT;
  schedule: { id: string; name: string };
  run: {
    id: string;
    number: number;
    /** `<stamp>-r<number>`: the folder of this manifest under `_runs/`. */
    name: string;
    due_at: string;
    started_at: string;
    finished_at: string;
  };
  datasets: Record<string, LakeDatasetManifest>;
  totals: {
    files_written: number;
    rows_written: number;
    bytes_written: number;
    files_removed: number;
    partitions: number;
    rows: number;
  };
}

/** What a run did at one target. */
export interface LakeTargetResult {
  index: number;
  label: string;
  required: boolean;
  status: 'delivered' | 'failed';
  error?: string;
  manifest?: LakeManifest;
}

export interface LakeDeps {
  readonly database: Database;
  readonly now: () => Date;
  /** Keys the pseudonyms of the lake's files (HMAC). */
  readonly secretKey: string;
  /** Opens the targets' sealed secrets. */
  readonly secrets: SecretBox;
  readonly outbound: OutboundPolicy;
  readonly deliveryClients: DeliveryClients;
  readonly deliveryTimeoutMs?: number | undefined;
  readonly logger: Logger;
}

export interface LakeInput {
  readonly run: RunRow;
  readonly config: RunConfig;
  readonly tenant: TenantInfo;
  readonly limits: PlanLimits;
  readonly signal: AbortSignal;
}

/** The relative path of a day's file. */
export function lakePartitionPath(dataset: string, date: string): string {
  return `${datasetFolder(dataset)}/date=${date}/part-0.parquet`;
}

/** `<stamp of the run's start>-r<run number>`, the same in every attempt of the run. */
export function lakeRunName(run: Pick<RunRow, 'started_at' | 'due_at' | 'run_number'>): string {
  return `${stamp(run.started_at ?? run.due_at)}-r${run.run_number}`;
}

/** One day of the source: its row count and fingerprint. */
interface SourceDay {
  rows: number;
  fingerprint: string | null;
}

/**
 * The days of a dataset in the database, by UTC date of its time column: row count and,
 * for datasets with a record id, the fingerprint of the rows' ids and versions. One
 * aggregate query; no row leaves the database.
 */
async function sourceDays(
  database: Database,
  tenantId: string,
  dataset: string,
  since: string | null,
): Promise<Map<string, SourceDay>> {
  const declared = REFERENCE_DATAMAP.datasets[dataset];
  const time = lakeTimeColumn(dataset);
  if (declared?.kind !== 'table' || typeof time === 'string')
    throw new FerryError('invalid_parameter', `dataset ${dataset} cannot be in a lake`, { permanent: true });
  const table = REFERENCE_DATAMAP.tables[declared.source]!;
  const id = declared.changeFeed?.idColumn ?? (table.primaryKey.length === 1 ? table.primaryKey[0] : null);
  const column = sql.ref(`t.${time.column}`);
  const fingerprint = id
    ? sql`sum(hashtextextended(${sql.ref(`t.${id}`)}::text || ':' || t.xmin::text, 0))::text`
    : sql`NULL::text`;
  const rows = await sql<{ day: string; rows: string; fingerprint: string | null }>`
    SELECT to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*)::text AS rows,
      ${fingerprint} AS fingerprint
    FROM ${sql.table(declared.source)} t
    WHERE ${sql.ref(`t.${table.tenantKey}`)} = ${tenantId} AND ${column} IS NOT NULL
      AND ${column} >= ${since ?? '-infinity'}::timestamptz
      AND ${column} < 'infinity'::timestamptz
    GROUP BY 1`.execute(database.db);
  return new Map(rows.rows.map((r) => [r.day, { rows: Number(r.rows), fingerprint: r.fingerprint ?? null }]));
}

/** The UTC days from `from` (inclusive) to `to` (exclusive instants), as YYYY-MM-DD. */
function daysBetween(from: string, to: string): string[] {
  const days: string[] = [];
  const end = new Date(to).getTime();
  for (let t = Date.parse(from.slice(0, 10)); t < end; t += DAY_MS)
    days.push(new Date(t).toISOString().slice(0, 10));
  return days;
}

const nextDay = (date: string) => new Date(Date.parse(date) + DAY_MS).toISOString().slice(0, 10);

/** The object store of a lake target and the prefix its keys start with. */
interface OpenedTarget {
  readonly store: ObjectStore;
  readonly prefix: string;
  readonly secrets: string[];
  close(): void;
}

async function openLakeTarget(target: DeliveryTarget, deps: LakeDeps): Promise<OpenedTarget> {
  if (target.type === 'folder')
    // Writes go to `<path>/.tmp/` and are renamed into place when complete.
    return { store: new LocalObjectStore({ root: target.path }), prefix: '', secrets: [], close() {} };
  if (target.type !== 's3')
    throw new FerryError('invalid_parameter', `a lake cannot be written to a ${target.type} target`, {
      permanent: true,
    });
  const opened = (await openTarget(target, deps.secrets)) as S3Target<string>;
  const client = deps.deliveryClients.s3(opened, deps.outbound, deps.deliveryTimeoutMs);
  const store = new S3ObjectStore({
    // The clients of compose.ts are the SDK's aggregated client, which is an S3Api.
    api: client as unknown as S3Api,
    bucket: opened.bucket,
    presign: async () => {
      throw new FerryError('not_found', 'lake objects have no download links');
    },
  });
  return { store, prefix: opened.prefix, secrets: targetSecrets(opened), close: () => client.destroy() };
}

async function readText(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

/** The target's last complete manifest, or null when there is none (or it cannot be read as one). */
async function previousManifest(store: ObjectStore, prefix: string): Promise<LakeManifest | null> {
  const key = `${prefix}${LAKE_MANIFEST}`;
  if (!(await store.head(key))) return null;
  try {
    const parsed = JSON.parse(await readText(await store.get(key))) as LakeManifest;
    return parsed?.format === LAKE_MANIFEST_FORMAT ? parsed : null;
  } catch (err) {
    if (err instanceof SyntaxError) return null;
    throw err;
  }
}

async function putText(store: ObjectStore, key: string, text: string, contentType: string): Promise<void> {
  const pending = await store.put(key, Readable.from([Buffer.from(text, 'utf8')]), { contentType });
  await pending.commit();
}

/**
 * Brings the lake at every target of a run up to date. Targets are written one after the
 * other; a target that fails does not stop the others. Throws only when the run is
 * stopped (`signal`).
 */
export async function writeLake(deps: LakeDeps, input: LakeInput): Promise<LakeTargetResult[]> {
  const { config, tenant, limits } = input;
  const since = historyStart(limits, deps.now())?.toISOString() ?? null;
  // The source's days are read once per run and shared by the targets.
  const sources = new Map<string, Map<string, SourceDay>>();
  for (const entry of config.datasets)
    sources.set(entry.dataset, await sourceDays(deps.database, tenant.id, entry.dataset, since));
  const results: LakeTargetResult[] = [];
  for (const [index, { target, required }] of config.targets.entries()) {
    if (input.signal.aborted) throw input.signal.reason;
    const label = targetLabel(target);
    let opened: OpenedTarget | undefined;
    try {
      opened = await openLakeTarget(target, deps);
      const manifest = await writeTarget(deps, input, opened, sources, since);
      results.push({ index, label, required, status: 'delivered', manifest });
    } catch (err) {
      if (input.signal.aborted) throw err;
      let message = err instanceof Error ? err.message : String(err);
      for (const secret of opened?.secrets ?? []) message = message.replaceAll(secret, '••••');
      deps.logger.warn({ err, target: label }, 'lake target not brought up to date');
      results.push({ index, label, required, status: 'failed', error: message });
    } finally {
      opened?.close();
    }
  }
  return results;
}

async function writeTarget(
  deps: LakeDeps,
  input: LakeInput,
  target: OpenedTarget,
  sources: ReadonlyMap<string, Map<string, SourceDay>>,
  since: string | null,
): Promise<LakeManifest> {
  const { run, config, tenant, signal } = input;
  const { store, prefix } = target;
  const runName = lakeRunName(run);
  const startedAt = deps.now();
  // Writes of an attempt that was killed between writing and committing a day (a folder
  // keeps them under `.tmp/`; S3 never shows an incomplete upload).
  if (store instanceof LocalObjectStore)
    await store.removeStaleTemp(new Date(startedAt.getTime() - STALE_TEMP_MS)).catch(() => 0);
  const previous = await previousManifest(store, prefix);
  // From here on the lake is being changed: readers that wait for _SUCCESS wait.
  await store.delete(`${prefix}${LAKE_SUCCESS}`);

  const datasets: Record<string, LakeDatasetManifest> = {};
  for (const entry of config.datasets) {
    const source = sources.get(entry.dataset)!;
    datasets[entry.dataset] = await writeDataset(deps, {
      input,
      target,
      entry,
      source,
      previous: previous?.datasets[entry.dataset] ?? null,
      since,
      runName,
    });
  }
  if (signal.aborted) throw signal.reason;

  const all = Object.values(datasets);
  const manifest: LakeManifest = {
    format: LAKE_MANIFEST_FORMAT,
    schedule: { id: run.schedule_id, name: config.name },
    run: {
      id: run.id,
      number: run.run_number,
      name: runName,
      due_at: run.due_at.toISOString(),
      started_at: startedAt.toISOString(),
      finished_at: deps.now().toISOString(),
    },
    datasets,
    totals: {
      files_written: all.reduce((n, d) => n + d.written.length, 0),
      rows_written: all.reduce((n, d) => n + d.written.reduce((m, f) => m + f.rows, 0), 0),
      bytes_written: all.reduce((n, d) => n + d.written.reduce((m, f) => m + f.bytes, 0), 0),
      files_removed: all.reduce((n, d) => n + d.removed.length, 0),
      partitions: all.reduce((n, d) => n + d.partitions.length, 0),
      rows: all.reduce((n, d) => n + d.partitions.reduce((m, f) => m + f.rows, 0), 0),
    },
  };
  const text = `${JSON.stringify(manifest, null, 2)}\n`;
  await putText(store, `${prefix}${LAKE_RUNS}/${runName}/${LAKE_MANIFEST}`, text, 'application/json');
  await putText(store, `${prefix}${LAKE_MANIFEST}`, text, 'application/json');
  await putText(
    store,
    `${prefix}${LAKE_SUCCESS}`,
    `${JSON.stringify({ run: runName, manifest: `${LAKE_RUNS}/${runName}/${LAKE_MANIFEST}`, finished_at: manifest.run.finished_at })}\n`,
    'application/json',
  );
  deps.logger.info(
    { tenant_id: tenant.id, run: runName, ...manifest.totals },
    'lake brought up to date at a target',
  );
  return manifest;
}

interface DatasetInput {
  readonly input: LakeInput;
  readonly target: OpenedTarget;
  readonly entry: ScheduleDataset;
  readonly source: ReadonlyMap<string, SourceDay>;
  readonly previous: LakeDatasetManifest | null;
  readonly since: string | null;
  readonly runName: string;
}

/** Writes the days of one dataset the run must write and removes the days that are gone. */
async function writeDataset(deps: LakeDeps, d: DatasetInput): Promise<LakeDatasetManifest> {
  const { input, target, entry, source, previous, since, runName } = d;
  const { store, prefix } = target;
  const { run, config, tenant, signal } = input;
  const time = lakeTimeColumn(entry.dataset) as { column: string };
  const sinceDay = since?.slice(0, 10) ?? null;
  const kept = (date: string) => sinceDay === null || date >= sinceDay;

  // What the lake holds: the last manifest's files, and whatever files are there besides
  // (a run that died after writing a new day, or a lake made before its first manifest).
  const present = new Map<string, LakePartition>();
  for (const p of previous?.partitions ?? []) present.set(p.date, p);
  const folder = `${prefix}${datasetFolder(entry.dataset)}/`;
  const listed = new Set<string>();
  for await (const object of store.list(folder)) {
    const match = /^date=(\d{4}-\d{2}-\d{2})\/part-0\.parquet$/.exec(object.key.slice(folder.length));
    if (match) listed.add(match[1]!);
  }

  const range = selectionRange(entry, run.due_at, config.timezone);
  let candidates: string[];
  if (entry.mode === 'window' && range.from && range.to)
    candidates = daysBetween(range.from, range.to).filter(
      (date) => source.has(date) || present.has(date) || listed.has(date),
    );
  else candidates = [...new Set([...source.keys(), ...present.keys(), ...listed])];
  candidates = candidates.filter(kept).sort();

  const write: string[] = [];
  const remove: string[] = [];
  for (const date of candidates) {
    const now = source.get(date);
    const before = present.get(date);
    if (!now) {
      if (before || listed.has(date)) remove.push(date);
      continue;
    }
    const unchanged =
      entry.mode === 'incremental' &&
      before !== undefined &&
      listed.has(date) &&
      now.fingerprint !== null &&
      before.fingerprint === now.fingerprint &&
      before.rows === now.rows;
    if (!unchanged) write.push(date);
  }

  const anonymizeKey = sessionAnonymizeKey(deps.secretKey, tenant.id, `schedule:${run.schedule_id}`);
  const written: LakeDatasetManifest['written'] = [];
  const removed: string[] = [];
  for (const date of write) {
    if (signal.aborted) throw signal.reason;
    const path = lakePartitionPath(entry.dataset, date);
    const request = parseExportRequest({
      tenantId: tenant.id,
      dataset: entry.dataset,
      format: 'parquet',
      compression: 'none',
      pii: config.pii,
      from: `${date}T00:00:00Z`,
      to: `${nextDay(date)}T00:00:00Z`,
    });
    const produce = datasetProducer(deps.database, request, { exportId: randomUUID(), anonymizeKey });
    // The file streams into a pending object: nothing shows under its key until commit.
    const bytes = new PassThrough();
    const putting = store.put(`${prefix}${path}`, bytes, { contentType: PARQUET_TYPE });
    putting.catch(() => {});
    let records: number;
    try {
      ({ records } = await produce(bytes, { signal, records: () => {} }));
    } catch (err) {
      bytes.destroy(err as Error);
      await putting.then((p) => p.discard()).catch(() => {});
      throw err;
    }
    const pending = await putting;
    if (records === 0) {
      // The day's rows went between the count and the export: the day is gone.
      await pending.discard();
      if (present.has(date) || listed.has(date)) {
        await store.delete(`${prefix}${path}`);
        removed.push(path);
      }
      present.delete(date);
      continue;
    }
    if (signal.aborted) {
      await pending.discard().catch(() => {});
      throw signal.reason;
    }
    await pending.commit();
    const file = { path, date, rows: records, bytes: pending.bytes, sha256: pending.sha256 };
    written.push(file);
    present.set(date, { ...file, fingerprint: source.get(date)!.fingerprint, run: runName });
  }
  for (const date of remove) {
    if (signal.aborted) throw signal.reason;
    const path = lakePartitionPath(entry.dataset, date);
    await store.delete(`${prefix}${path}`);
    removed.push(path);
    present.delete(date);
  }
  return {
    mode: entry.mode,
    time_column: time.column,
    range: { from: range.from, to: range.to },
    written,
    removed,
    partitions: [...present.values()].sort((a, b) => a.date.localeCompare(b.date)),
  };
}
