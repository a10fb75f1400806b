import { createHmac } from 'node:crypto';
import { hostname } from 'node:os';
import { PassThrough, type Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type ColumnType, type Kysely, sql } from 'kysely';
import { datasetOf, estimateRows } from '../collect/dataset-source.ts';
import { planKeyRanges } from '../collect/partition-ranges.ts';
import { prepareEnrichment, requestedEnrichments } from '../collect/enrichment.ts';
import { buildExportQuery, selectedFields } from '../collect/query.ts';
import { RecordCounter } from '../collect/record-counter.ts';
import type { ExportRequest } from '../collect/request.ts';
import { exportMetadata, loadTenant, type TenantInfo, zonesFor } from '../collect/tenant.ts';
import type { Config, PartitionSettings } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { getWriter } from '../format/registry.ts';
import type { JobQueue } from '../jobs/queue.ts';
import type { JobDefinition } from '../jobs/types.ts';
import type { Logger } from '../lib/logger.ts';
import { compressionCodec } from '../packaging/compression.ts';
import type { Producer } from '../pipeline/run.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { acceptedExportRequest } from '../collect/request.ts';
import { exportDb } from './tables.ts';

/**
 * Partitioned exports (docs/scaling.md): a large CSV or NDJSON export of a table dataset on
 * PostgreSQL is split by key range into partitions that any worker of the fleet takes.
 *
 * - The attempt that runs the export (the coordinator) opens a `REPEATABLE READ` transaction,
 *   exports its snapshot (`pg_export_snapshot()`) and keeps it open until the file is done.
 *   Every partition is one COPY of its key range on its own connection in that snapshot, so
 *   the parts together are exactly the rows one COPY would have read.
 * - Partitions are rows of `export_partitions`, claimed with `FOR UPDATE SKIP LOCKED` under a
 *   lease kept alive by heartbeats. The coordinator works on them itself and sends an
 *   `export.partition` job per partition for other workers; a partition whose worker died is
 *   taken again when its lease runs out, and only that partition is written again.
 * - Each partition is written to a part object of the export's attempt in the object store.
 *   When all are done the coordinator streams the parts in order into the export's file,
 *   through the run's one SHA-256 and byte meter, and deletes them. Only the first part
 *   carries the CSV header (and byte-order mark), so the file is byte for byte the one a
 *   single COPY gives. Compressed parts are gzip members or zstd frames, which concatenate
 *   into one valid stream of the same content.
 */

export const PARTITION_QUEUE = 'export-partition';

/** Formats whose files are their parts one after the other. */
const PARTITIONABLE_FORMATS = new Set(['csv', 'ndjson']);
/** Failed writes of one partition before the export fails. */
const PARTITION_ATTEMPTS = 3;
/** How often the coordinator looks at the partitions while it waits for other workers. */
const POLL_MS = 200;

type Timestamp = ColumnType<Date, Date | string, Date | string>;
type BigCount = ColumnType<number, number, number>;

interface ExportPartitionsTable {
  export_id: string;
  attempt_id: string;
  idx: number;
  tenant_id: string;
  count: number;
  after_key: string | null;
  through_key: string | null;
  snapshot: string;
  coordinator: string;
  status: 'pending' | 'running' | 'done';
  claimed_by: string | null;
  heartbeat_at: Timestamp | null;
  attempts: ColumnType<number, number | undefined, number>;
  error: string | null;
  object_key: string | null;
  records: BigCount | null;
  bytes: BigCount | null;
  sha256: string | null;
}

/** A partition as read back. */
interface PartitionRow {
  export_id: string;
  attempt_id: string;
  idx: number;
  tenant_id: string;
  after_key: string | null;
  through_key: string | null;
  snapshot: string;
  status: 'pending' | 'running' | 'done';
  heartbeat_at: Date | null;
  attempts: number;
  error: string | null;
  object_key: string | null;
  records: number | null;
}

function partitionsDb(database: Database): Kysely<DB & { export_partitions: ExportPartitionsTable }> {
  return database.db.withTables<{ export_partitions: ExportPartitionsTable }>();
}

/** This worker process, as it appears in `claimed_by` and `coordinator`. */
export const WORKER_NAME = `${hostname()}:${process.pid}`;

export interface PartitionContext {
  readonly database: Database;
  readonly store: ObjectStore;
  readonly queue: JobQueue;
  readonly config: Config;
  readonly logger: Logger;
}

/**
 * How many partitions an export gets: 1 (one stream) unless the database is PostgreSQL, the
 * export is a CSV or NDJSON file of a table dataset, and it holds at least two partitions' rows.
 */
export async function partitionCount(
  database: Database,
  request: ExportRequest,
  settings: PartitionSettings,
): Promise<{ parts: number; estimatedRows: number }> {
  const none = { parts: 1, estimatedRows: 0 };
  if (database.kind !== 'postgres' || settings.rows <= 0 || settings.max < 2) return none;
  if (!PARTITIONABLE_FORMATS.has(request.format) || request.subject) return none;
  if (datasetOf(request).kind !== 'table') return none;
  const zones = zonesFor(request, await loadTenant(database, request.tenantId));
  const estimatedRows = await estimateRows(database, request, zones);
  return { parts: Math.min(settings.max, Math.floor(estimatedRows / settings.rows)), estimatedRows };
}

/** The pseudonym key of a partitioned export: the same in every partition, different per export. */
export function anonymizeKeyOf(config: Config, exportId: string, attemptId: string): string {
  return createHmac('sha256', config.secretKey ?? 'ferry')
    .update(`ferry.export-partition:${exportId}:${attemptId}`)
    .digest('hex')
    .slice(0, 32);
}

/**
 * The producer of a partitioned export's file: plans the partitions in an exported snapshot,
 * writes them with the fleet, and streams the parts in order into `out`.
 */
export function partitionedProducer(
  ctx: PartitionContext,
  request: ExportRequest,
  plan: { exportId: string; attemptId: string; partKeyPrefix: string; parts: number; estimatedRows: number },
): Producer {
  return async (out, run) => {
    const { database } = ctx;
    const settings = ctx.config.exports.partitions;
    // Enriched fields read lookup tables: filled before the snapshot the partitions read in.
    if (requestedEnrichments(datasetOf(request), request).size > 0)
      await prepareEnrichment(
        database,
        datasetOf(request),
        request,
        zonesFor(request, await loadTenant(database, request.tenantId)),
      );
    return database.session('snapshot', async (session) => {
      const snapshot = (await sql<{ id: string }>`SELECT pg_export_snapshot() AS id`.execute(session.db))
        .rows[0]!.id;
      const tenant = await loadTenant(database, request.tenantId);
      const zones = zonesFor(request, tenant);
      const writer = getWriter(request.format);
      const dataset = datasetOf(request);
      // partitionCount only splits table datasets.
      if (dataset.kind !== 'table') throw new FerryError('internal', 'only a table dataset is partitioned');
      const query = buildExportQuery(dataset, request, {
        ...zones,
        anonymizeKey: '0'.repeat(32),
        input: writer.input,
      });
      // Planned inside the snapshot: the sample reads the rows the partitions will read.
      const ranges = await planKeyRanges(session, query, dataset.source, plan.estimatedRows, plan.parts);
      const db = partitionsDb(database);
      await db
        .insertInto('export_partitions')
        .values(
          ranges.map((range, idx) => ({
            export_id: plan.exportId,
            attempt_id: plan.attemptId,
            idx,
            tenant_id: request.tenantId,
            count: ranges.length,
            after_key: range.after ?? null,
            through_key: range.through ?? null,
            snapshot,
            coordinator: WORKER_NAME,
            status: 'pending' as const,
            object_key: `${plan.partKeyPrefix}${String(idx).padStart(4, '0')}`,
          })),
        )
        .execute();
      ctx.logger.info(
        { export_id: plan.exportId, partitions: ranges.length, estimated_rows: plan.estimatedRows },
        'export split into partitions',
      );
      // Other workers take partitions from their jobs; this attempt takes them too.
      for (let i = 1; i < ranges.length; i++) await ctx.queue.send(PARTITION_QUEUE, { id: plan.exportId });
      const progress = new Map<number, number>();
      const report = () => run.records([...progress.values()].reduce((a, b) => a + b, 0));
      const workers = Array.from({ length: Math.max(1, settings.concurrency) }, () =>
        workPartitions(ctx, plan.exportId, plan.attemptId, run.signal, (idx, records) => {
          progress.set(idx, records);
          report();
        }),
      );
      await Promise.all(workers);
      const done = await waitForPartitions(db, plan.exportId, plan.attemptId, run.signal, ctx, (idx, n) => {
        progress.set(idx, n);
        report();
      });
      let records = 0;
      for (const part of done) {
        const source = await ctx.store.get(part.object_key!);
        await pipeline(source, out, { end: false });
        records += Number(part.records);
      }
      out.end();
      for (const part of done) await ctx.store.delete(part.object_key!).catch(() => {});
      return { records };
    });
  };
}

/**
 * Waits until every partition of the attempt is written, taking over any whose lease ran
 * out (its worker died); a partition that failed too often fails the export.
 */
async function waitForPartitions(
  db: ReturnType<typeof partitionsDb>,
  exportId: string,
  attemptId: string,
  signal: AbortSignal,
  ctx: PartitionContext,
  onRecords: (idx: number, records: number) => void,
): Promise<PartitionRow[]> {
  for (;;) {
    signal.throwIfAborted();
    const rows = (await db
      .selectFrom('export_partitions')
      .selectAll()
      .where('export_id', '=', exportId)
      .where('attempt_id', '=', attemptId)
      .orderBy('idx')
      .execute()) as PartitionRow[];
    const failed = rows.find((r) => r.attempts >= PARTITION_ATTEMPTS && r.status === 'pending');
    if (failed)
      throw new FerryError(
        'internal',
        `partition ${failed.idx} of the export failed ${failed.attempts} times: ${failed.error}`,
      );
    if (rows.every((r) => r.status === 'done')) return rows;
    // The claim takes only pending partitions and those whose lease ran out (by the database's clock).
    const took = await workPartitions(ctx, exportId, attemptId, signal, onRecords);
    if (took === 0) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Claims the next partition of the attempt that is pending or whose lease ran out. */
async function claimPartition(
  database: Database,
  exportId: string,
  attemptId: string | null,
  leaseSeconds: number,
): Promise<PartitionRow | undefined> {
  const result = await sql<PartitionRow>`
    UPDATE export_partitions p
       SET status = 'running', claimed_by = ${WORKER_NAME}, heartbeat_at = now(), attempts = p.attempts + 1
      FROM (SELECT export_id, attempt_id, idx FROM export_partitions
             WHERE export_id = ${exportId}
               AND attempt_id = coalesce(${attemptId}::uuid,
                                         (SELECT r.attempt_id FROM export_requests r WHERE r.id = ${exportId}))
               AND attempts < ${PARTITION_ATTEMPTS}
               AND (status = 'pending'
                    OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => ${leaseSeconds})))
             ORDER BY idx
             LIMIT 1
             FOR UPDATE SKIP LOCKED) c
     WHERE p.export_id = c.export_id AND p.attempt_id = c.attempt_id AND p.idx = c.idx
    RETURNING p.*`.execute(database.db);
  return result.rows[0];
}

/** Claims and writes partitions of the export until none is left to take. */
async function workPartitions(
  ctx: PartitionContext,
  exportId: string,
  attemptId: string | null,
  signal: AbortSignal,
  onRecords: (idx: number, records: number) => void = () => {},
): Promise<number> {
  const settings = ctx.config.exports.partitions;
  let written = 0;
  for (;;) {
    signal.throwIfAborted();
    const part = await claimPartition(ctx.database, exportId, attemptId, settings.leaseSeconds);
    if (!part) return written;
    try {
      await writePartition(ctx, part, signal, onRecords);
      written++;
    } catch (err) {
      // Handed back as pending; it is taken again (here or elsewhere) until its attempts run out.
      if (signal.aborted) throw err;
    }
  }
}

/**
 * `export.partition`: a worker of the fleet helps write the partitions of an export, one
 * after the other, until none is left to take. The export's own attempt waits for them.
 */
export const PARTITION_JOB: JobDefinition = {
  name: PARTITION_QUEUE,
  queue: (config) => ({
    retryLimit: 1,
    retryDelay: config.jobs.retryDelaySeconds,
    expireInSeconds: 6 * 60 * 60,
    heartbeatSeconds: config.jobs.heartbeatSeconds,
  }),
  async handle(job, ctx) {
    const exportId = job.data.id;
    if (!exportId) return;
    const written = await workPartitions(ctx, exportId, null, job.signal);
    ctx.logger.info({ export_id: exportId, partitions: written }, 'export partitions written');
  },
};

/** Writes one claimed partition to its part object, with heartbeats; a failure hands it back. */
async function writePartition(
  ctx: PartitionContext,
  part: PartitionRow,
  signal: AbortSignal,
  onRecords: (idx: number, records: number) => void,
): Promise<void> {
  const db = partitionsDb(ctx.database);
  const owned = (q: ReturnType<typeof db.updateTable<'export_partitions'>>) =>
    q
      .where('export_id', '=', part.export_id)
      .where('attempt_id', '=', part.attempt_id)
      .where('idx', '=', part.idx)
      .where('claimed_by', '=', WORKER_NAME)
      .where('status', '=', 'running');
  const heartbeat = setInterval(
    () => {
      void owned(db.updateTable('export_partitions').set({ heartbeat_at: new Date() }))
        .execute()
        .catch(() => {});
    },
    Math.max(250, (ctx.config.exports.partitions.leaseSeconds * 1000) / 4),
  );
  try {
    const row = await exportDb(ctx.database)
      .selectFrom('export_requests')
      .select(['config'])
      .where('id', '=', part.export_id)
      .executeTakeFirst();
    if (!row) throw new FerryError('not_found', 'the export of this partition no longer exists');
    const request = acceptedExportRequest(part.tenant_id, row.config);
    const tenant = await loadTenant(ctx.database, part.tenant_id);
    const source = partitionStream(ctx, request, tenant, part, (n) => onRecords(part.idx, n));
    const body = new PassThrough();
    const writing = ctx.store.put(part.object_key!, body);
    const counted = await Promise.all([pipeline([...source.stages, body] as never, { signal }), writing]);
    const pending = counted[1];
    await pending.commit();
    const records = source.counter.count;
    onRecords(part.idx, records);
    const updated = await owned(
      db.updateTable('export_partitions').set({
        status: 'done',
        records,
        bytes: pending.bytes,
        sha256: pending.sha256,
        error: null,
      }),
    ).executeTakeFirst();
    // Taken over meanwhile (this worker was too slow to beat): the other worker's part stands.
    if (Number(updated.numUpdatedRows) === 0)
      ctx.logger.warn({ export_id: part.export_id, partition: part.idx }, 'partition was taken over');
  } catch (err) {
    ctx.logger.warn(
      { err, export_id: part.export_id, partition: part.idx },
      'partition failed; it will be taken again',
    );
    await owned(
      db
        .updateTable('export_partitions')
        .set({ status: 'pending', claimed_by: null, error: String((err as Error).message ?? err) }),
    )
      .execute()
      .catch(() => {});
    throw err;
  } finally {
    clearInterval(heartbeat);
  }
}

/** One partition's stages: its COPY in the snapshot → count → format → compress. */
function partitionStream(
  ctx: PartitionContext,
  request: ExportRequest,
  tenant: TenantInfo,
  part: PartitionRow,
  onCount: (records: number) => void,
): { stages: (Readable | Transform)[]; counter: RecordCounter } {
  const writer = getWriter(request.format);
  const first = part.idx === 0;
  const dataset = datasetOf(request);
  const zones = zonesFor(request, tenant);
  const anonymizeKey = anonymizeKeyOf(ctx.config, part.export_id, part.attempt_id);
  const counter = new RecordCounter(writer.input, {
    headerLines: first && writer.input === 'csv' ? 1 : 0,
    onCount: (records) => onCount(records),
  });
  const query = buildExportQuery(dataset, request, { ...zones, anonymizeKey, input: writer.input });
  const source = ctx.database.copyOut({
    ...query,
    header: first && (query.header ?? false),
    range: { after: part.after_key, through: part.through_key },
    snapshot: part.snapshot,
  });
  const format = writer.create({
    dataset: request.dataset,
    fields: selectedFields(dataset, request),
    metadata: exportMetadata(request, tenant, part.export_id, zones.timezone),
    bom: first && request.bom,
  });
  const compression = compressionCodec(request.compression).create();
  return { stages: [source, counter, format, ...(compression ? [compression] : [])], counter };
}
