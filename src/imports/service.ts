import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Kysely, sql } from 'kysely';
import { recordAudit } from '../auth/audit.ts';
import { subjectKey } from '../privacy/subject-key.ts';
import type { ImportLimits } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { utcInstantSql } from '../db/keyset.ts';
import type { DB } from '../db/schema.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { emitEvent } from '../webhooks/emit.ts';
import {
  type Checkpoint,
  CONFLICT_POLICIES,
  type ConflictPolicies,
  type ImportReport,
  type Rejection,
  runImport,
} from './engine.ts';
import { openInput } from './input.ts';
import { meterLimits } from './read.ts';
import { openSource } from './sources/index.ts';
import { IMPORT_ENTITIES, IMPORT_SOURCES, type ImportEntity, type ImportSourceName } from './types.ts';

/**
 * Imports as a service (docs/import.md): an import is a row in `imports`, created by the API,
 * the dashboard or the CLI, run by a worker (`import.run`) or in the CLI's own process, and
 * resumed from its checkpoint when its worker died. The input is a file in the object store
 * (an upload, under `imports/<tenant>/<id>/`) or, from the CLI, a path on the machine.
 */
export interface ImportContext {
  readonly database: Database;
  /** The install's secret key: the erasure ledger names people by a hash keyed with it. */
  readonly secretKey: string;
  readonly store: ObjectStore;
  readonly limits: ImportLimits;
  readonly batchSize: number;
  readonly now?: () => Date;
}

export type ImportInputRef =
  | { readonly kind: 'stored'; readonly key: string; readonly name: string; readonly bytes: number }
  | { readonly kind: 'path'; readonly path: string };

export interface CreateImport {
  readonly tenantId: string;
  readonly source: ImportSourceName;
  readonly dataset?: string | undefined;
  readonly input: ImportInputRef;
  readonly dryRun: boolean;
  readonly conflict: ConflictPolicies;
  readonly allOrNothing: boolean;
  readonly notify: boolean;
  readonly actor: string;
}

export interface ImportRow {
  id: string;
  tenant_id: string;
  source: ImportSourceName;
  dataset: string | null;
  input_kind: 'stored' | 'path';
  input_ref: string;
  input_name: string;
  input_bytes: number;
  dry_run: boolean;
  conflict: ConflictPolicies;
  all_or_nothing: boolean;
  notify: boolean;
  status: 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
  phase: string | null;
  items_done: number;
  bytes_done: number;
  checkpoint: Checkpoint | null;
  report: ImportReport;
  rejected_count: number;
  /** When the uploaded file was deleted (UPLOAD_KEEP_DAYS after its last import). */
  input_deleted_at: string | null;
  error_code: string | null;
  error: string | null;
  created_by: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

const COLUMNS = sql.raw(`id::text, tenant_id::text, source, dataset, input_kind, input_ref, input_name,
  input_bytes::float8 AS input_bytes, dry_run, conflict, all_or_nothing, notify, status, phase,
  items_done::float8 AS items_done, bytes_done::float8 AS bytes_done, checkpoint, report, rejected_count,
  CASE WHEN input_deleted_at IS NULL THEN NULL ELSE ${utcInstantSql('input_deleted_at')} END AS input_deleted_at,
  error_code, error, created_by, ${utcInstantSql('created_at')} AS created_at,
  CASE WHEN started_at IS NULL THEN NULL ELSE ${utcInstantSql('started_at')} END AS started_at,
  CASE WHEN finished_at IS NULL THEN NULL ELSE ${utcInstantSql('finished_at')} END AS finished_at`);

/** `--conflict skip` or `--conflict skip,customers=overwrite`: a default and per-entity policies. */
export function parseConflict(text: string | undefined): ConflictPolicies {
  const policies: Record<string, string> = { default: 'skip' };
  for (const part of (text ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const [a, b] = part.split('=').map((p) => p.trim()) as [string, string | undefined];
    const [entity, policy] = b === undefined ? ['default', a] : [a, b];
    if (!(CONFLICT_POLICIES as readonly string[]).includes(policy))
      throw new FerryError(
        'invalid_parameter',
        `conflict: "${policy}" is not a conflict policy (accepted: ${CONFLICT_POLICIES.join(', ')})`,
        {
          parameter: 'conflict',
          accepted: [...CONFLICT_POLICIES],
        },
      );
    if (entity !== 'default' && !(IMPORT_ENTITIES as readonly string[]).includes(entity))
      throw new FerryError(
        'invalid_parameter',
        `conflict: "${entity}" is not an imported entity (accepted: ${IMPORT_ENTITIES.join(', ')})`,
        {
          parameter: 'conflict',
          accepted: [...IMPORT_ENTITIES],
        },
      );
    policies[entity] = policy;
  }
  return policies as unknown as ConflictPolicies;
}

export function checkSource(source: string): ImportSourceName {
  if (!(IMPORT_SOURCES as readonly string[]).includes(source))
    throw new FerryError(
      'invalid_parameter',
      `source: "${source}" is not an import source (accepted: ${IMPORT_SOURCES.join(', ')})`,
      {
        parameter: 'source',
        accepted: [...IMPORT_SOURCES],
      },
    );
  return source as ImportSourceName;
}

export async function createImport(
  ctx: ImportContext,
  input: CreateImport,
  id: string = randomUUID(),
): Promise<ImportRow> {
  const ref = input.input.kind === 'stored' ? input.input.key : path.resolve(input.input.path);
  const name = input.input.kind === 'stored' ? input.input.name : path.basename(input.input.path);
  const bytes = input.input.kind === 'stored' ? input.input.bytes : 0;
  await sql`INSERT INTO imports (id, tenant_id, source, dataset, input_kind, input_ref, input_name, input_bytes,
      dry_run, conflict, all_or_nothing, notify, status, created_by, created_at, updated_at)
    VALUES (${id}, ${input.tenantId}, ${input.source}, ${input.dataset ?? null}, ${input.input.kind}, ${ref}, ${name}, ${bytes},
      ${input.dryRun}, ${JSON.stringify(input.conflict)}::jsonb, ${input.allOrNothing}, ${input.notify}, 'queued',
      ${input.actor}, ${now(ctx)}, ${now(ctx)})`.execute(ctx.database.db);
  await recordAudit(ctx.database, {
    tenantId: input.tenantId,
    actor: input.actor,
    action: input.dryRun ? 'import.planned' : 'import.requested',
    targetId: id,
    dataType: input.source,
    success: true,
  });
  return (await getImport(ctx.database.db, input.tenantId, id))!;
}

export async function getImport(db: Kysely<DB>, tenantId: string, id: string): Promise<ImportRow | null> {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) return null;
  const { rows } =
    await sql<ImportRow>`SELECT ${COLUMNS} FROM imports WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(
      db,
    );
  return rows[0] ?? null;
}

export async function listImports(db: Kysely<DB>, tenantId: string, limit = 50): Promise<ImportRow[]> {
  const { rows } = await sql<ImportRow>`SELECT ${COLUMNS} FROM imports WHERE tenant_id = ${tenantId}
    ORDER BY created_at DESC, id DESC LIMIT ${limit}`.execute(db);
  return rows;
}

/** Cancels a queued or running import; a running one stops at its next batch (a partial one keeps what it committed). */
export async function cancelImport(
  ctx: ImportContext,
  tenantId: string,
  id: string,
  actor: string,
): Promise<ImportRow> {
  const current = await getImport(ctx.database.db, tenantId, id);
  if (!current) throw new FerryError('not_found', `import ${id} not found`);
  if (current.status !== 'queued' && current.status !== 'running')
    throw new FerryError(
      'conflict',
      `import ${id} is ${current.status}; only a queued or running import can be cancelled`,
    );
  await sql`UPDATE imports SET status = 'cancelled', finished_at = ${now(ctx)}, updated_at = ${now(ctx)}
    WHERE id = ${id} AND status IN ('queued', 'running')`.execute(ctx.database.db);
  await recordAudit(ctx.database, {
    tenantId,
    actor,
    action: 'import.cancelled',
    targetId: id,
    success: true,
  });
  return (await getImport(ctx.database.db, tenantId, id))!;
}

/** This run of an import found another run of it further on. */
class LostRun extends Error {}

export interface RunOptions {
  /** Progress while it runs (the CLI's bar). */
  readonly onProgress?: (p: { phase: ImportEntity; items: number; bytes: number; total: number }) => void;
}

/**
 * Runs (or resumes) one import. A partial apply continues after its checkpoint; a plan and an
 * all-or-nothing apply start over (their work was rolled back with the process that died).
 */
export async function runImportById(
  ctx: ImportContext,
  id: string,
  options: RunOptions = {},
): Promise<ImportRow> {
  const { rows } = await sql<ImportRow>`SELECT ${COLUMNS} FROM imports WHERE id = ${id}`.execute(
    ctx.database.db,
  );
  const row = rows[0];
  if (!row) throw new FerryError('not_found', `import ${id} not found`);
  if (row.status !== 'queued' && row.status !== 'running') return row;
  const wholeRun = row.dry_run || row.all_or_nothing;
  const resume =
    !wholeRun && row.checkpoint
      ? { checkpoint: row.checkpoint, report: row.report, rejected: row.rejected_count }
      : null;
  if (wholeRun) await sql`DELETE FROM import_rejections WHERE import_id = ${id}`.execute(ctx.database.db);
  const claimed =
    await sql`UPDATE imports SET status = 'running', started_at = coalesce(started_at, ${now(ctx)}), updated_at = ${now(ctx)}
    WHERE id = ${id} AND status IN ('queued', 'running')`.execute(ctx.database.db);
  if (Number(claimed.numAffectedRows ?? 0) === 0)
    return (await getImport(ctx.database.db, row.tenant_id, id))!;
  // The checkpoint this run last wrote: another run of the same import that moved it on wins.
  let ownCheckpoint: Checkpoint | null = row.checkpoint ?? null;
  const same = (a: Checkpoint | null, b: Checkpoint | null) =>
    a?.entity === b?.entity && a?.items === b?.items;
  const temp =
    row.input_kind === 'stored' ? await mkdtemp(path.join(tmpdir(), 'ferry-import-upload-')) : null;
  const { limits, meter } = meterLimits(ctx.limits);
  let lastPhase: ImportEntity = 'sites';
  try {
    let file = row.input_ref;
    if (temp) {
      file = path.join(temp, safeName(row.input_name));
      await pipeline(await ctx.store.get(row.input_ref), createWriteStream(file));
    }
    const opened = await openInput(file, limits);
    try {
      const total = opened.bytes;
      await sql`UPDATE imports SET input_bytes = ${total} WHERE id = ${id}`.execute(ctx.database.db);
      const source = await openSource(row.source, opened.input, {
        limits,
        dataset: row.dataset ?? undefined,
      });
      const ledger = await sql<{
        subject_key: string;
      }>`SELECT subject_key FROM erasure_ledger WHERE tenant_id = ${row.tenant_id}`.execute(ctx.database.db);
      const erasedKeys = new Set(ledger.rows.map((r) => r.subject_key));
      const outcome = await runImport({
        erased: erasedKeys.size
          ? (identifier: string) => erasedKeys.has(subjectKey(ctx.secretKey, row.tenant_id, identifier))
          : undefined,
        database: ctx.database,
        tenantId: row.tenant_id,
        importId: id,
        source,
        conflict: row.conflict,
        mode: row.dry_run ? 'plan' : 'apply',
        allOrNothing: row.all_or_nothing,
        notify: row.notify,
        batchSize: ctx.batchSize,
        resume,
        onBatch: async (state, db) => {
          lastPhase = state.checkpoint.entity;
          options.onProgress?.({ phase: lastPhase, items: state.itemsDone, bytes: meter.bytes, total });
          const current = await sql<{
            status: string;
            checkpoint: Checkpoint | null;
          }>`SELECT status, checkpoint FROM imports
            WHERE id = ${id} FOR UPDATE`.execute(db);
          if (current.rows[0]?.status === 'cancelled')
            throw new FerryError('conflict', 'the import was cancelled');
          if (wholeRun) return;
          if (!same(current.rows[0]?.checkpoint ?? null, ownCheckpoint)) throw new LostRun();
          ownCheckpoint = state.checkpoint;
          await sql`UPDATE imports SET checkpoint = ${JSON.stringify(state.checkpoint)}::jsonb,
              report = ${JSON.stringify(state.report)}::jsonb, items_done = ${state.itemsDone},
              bytes_done = ${meter.bytes}, rejected_count = ${state.rejected}, phase = ${state.checkpoint.entity},
              updated_at = ${now(ctx)}
            WHERE id = ${id}`.execute(db);
        },
        onRejected: (rejections, db, seq) => saveRejections(db, id, rejections, seq),
      });
      if (outcome.heldRejections.length > 0)
        await saveRejections(ctx.database.db, id, outcome.heldRejections, 0);
      const failedAll = !row.dry_run && row.all_or_nothing && outcome.rejected > 0;
      await sql`UPDATE imports SET status = ${failedAll ? 'failed' : 'completed'},
          report = ${JSON.stringify(outcome.report)}::jsonb, items_done = ${outcome.report.items}, bytes_done = ${meter.bytes},
          rejected_count = ${outcome.rejected}, phase = NULL,
          error_code = ${failedAll ? 'import_rejected' : null},
          error = ${failedAll ? `${outcome.rejected} item(s) rejected; an all-or-nothing import writes nothing then` : null},
          finished_at = ${now(ctx)}, updated_at = ${now(ctx)}
        WHERE id = ${id} AND status = 'running'`.execute(ctx.database.db);
      const done = (await getImport(ctx.database.db, row.tenant_id, id))!;
      await announce(ctx, done);
      return done;
    } finally {
      await opened.close();
    }
  } catch (err) {
    // Another run of this import has moved on: it reports, this one stops without a word.
    if (err instanceof LostRun) return (await getImport(ctx.database.db, row.tenant_id, id))!;
    const code = err instanceof FerryError ? err.code : 'internal';
    // Only Ferry's own messages are shown (they name files, lines, limits); anything else may
    // carry values or paths, and goes to the log of whoever runs the import.
    const message =
      err instanceof FerryError
        ? err.message
        : 'the import stopped on an internal error; nothing of the batch that failed was kept';
    const current = await getImport(ctx.database.db, row.tenant_id, id);
    if (current?.status === 'cancelled') return current;
    await sql`UPDATE imports SET status = 'failed', error_code = ${code}, error = ${message.slice(0, 2000)},
        finished_at = ${now(ctx)}, updated_at = ${now(ctx)}
      WHERE id = ${id}`.execute(ctx.database.db);
    const failed = (await getImport(ctx.database.db, row.tenant_id, id))!;
    await announce(ctx, failed);
    if (err instanceof FerryError) return failed;
    throw err;
  } finally {
    if (temp) await rm(temp, { recursive: true, force: true });
  }
}

async function saveRejections(
  db: Kysely<DB>,
  id: string,
  rejections: readonly Rejection[],
  seq: number,
): Promise<void> {
  if (rejections.length === 0) return;
  const rows = rejections.map((r, i) => ({
    seq: seq + i + 1,
    entity: r.entity,
    location: r.location,
    errors: r.errors,
    raw: r.raw,
  }));
  await sql`INSERT INTO import_rejections (import_id, seq, entity, location, errors, raw)
    SELECT ${id}::uuid, v.seq, v.entity, v.location, v.errors, v.raw
    FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS v(seq int, entity text, location text, errors text[], raw text)
    ON CONFLICT (import_id, seq) DO NOTHING`.execute(db);
}

async function announce(ctx: ImportContext, row: ImportRow): Promise<void> {
  const ok = row.status === 'completed';
  await recordAudit(ctx.database, {
    tenantId: row.tenant_id,
    actor: row.created_by,
    action: ok ? (row.dry_run ? 'import.plan_completed' : 'import.completed') : 'import.failed',
    targetId: row.id,
    dataType: row.source,
    recordCount: row.items_done,
    fileBytes: row.input_bytes,
    success: ok,
    error: row.error,
  });
  const counts: Record<string, unknown> = {};
  for (const [entity, r] of Object.entries(row.report.entities ?? {}))
    counts[entity] = {
      created: r.created,
      updated: r.updated,
      unchanged: r.unchanged,
      conflicts: r.conflicts,
      rejected: r.rejected,
    };
  await emitEvent(
    ctx.database,
    row.tenant_id,
    ok ? 'import.completed' : 'import.failed',
    ok
      ? {
          data: {
            import_id: row.id,
            source: row.source,
            dry_run: row.dry_run,
            items: row.items_done,
            rejected: row.rejected_count,
            entities: counts,
          },
        }
      : { data: { import_id: row.id, source: row.source, code: row.error_code, error: row.error } },
  );
}

export interface RejectedFile {
  readonly contentType: string;
  readonly filename: string;
  readonly body: Readable;
}

/**
 * The rejected items as a file to fix and import again: for a CSV import the original rows
 * with an `errors` column added (one header per file imported), otherwise NDJSON, each line
 * the original record with `errors` (and, for rows of a CSV file inside a package, `_file`).
 */
export async function rejectedFile(db: Kysely<DB>, row: ImportRow): Promise<RejectedFile> {
  const csv = row.source === 'csv';
  async function* lines(): AsyncGenerator<string> {
    let after = 0;
    let header: string | null = null;
    const { stringify } = await import('csv-stringify/sync');
    for (;;) {
      const { rows } = await sql<{
        seq: number;
        errors: string[];
        raw: string;
      }>`SELECT seq, errors, raw FROM import_rejections
        WHERE import_id = ${row.id} AND seq > ${after} ORDER BY seq LIMIT 1000`.execute(db);
      if (rows.length === 0) return;
      for (const r of rows) {
        after = r.seq;
        const raw = JSON.parse(r.raw) as
          | { kind: 'csv'; file: string; header: string[]; row: string[] }
          | { kind: 'json'; value: unknown };
        const errors = r.errors.join('; ');
        if (csv && raw.kind === 'csv') {
          const h = stringify([[...raw.header, 'errors']]);
          if (h !== header) {
            header = h;
            yield h;
          }
          yield stringify([[...raw.row, errors]]);
        } else if (raw.kind === 'csv') {
          const record: Record<string, unknown> = { _file: raw.file };
          raw.header.forEach((h, i) => {
            record[h] = raw.row[i];
          });
          yield `${JSON.stringify({ ...record, errors: r.errors })}\n`;
        } else {
          const value =
            raw.value && typeof raw.value === 'object' && !Array.isArray(raw.value)
              ? raw.value
              : { record: raw.value };
          yield `${JSON.stringify({ ...(value as object), errors: r.errors })}\n`;
        }
      }
    }
  }
  return {
    contentType: csv ? 'text/csv; charset=utf-8' : 'application/x-ndjson',
    filename: `import-${row.id}-rejected.${csv ? 'csv' : 'ndjson'}`,
    body: Readable.from(lines()),
  };
}

/** Days an uploaded file is kept after the last import that used it finished. */
export const UPLOAD_KEEP_DAYS = 7;
/** Days the rejected items (original records, personal data) are kept after their import finished. */
export const REJECTIONS_KEEP_DAYS = 30;

/** An import of a tenant under an active legal hold: its files and rejected items wait. */
const underHold = sql`EXISTS (SELECT 1 FROM legal_holds h WHERE h.tenant_id = imports.tenant_id AND h.released_at IS NULL)`;

/**
 * Deletes what imports keep only for a while: uploaded files 7 days after the last import
 * that used them finished, rejected items 30 days after theirs. Nothing of a tenant under a legal hold. Returns
 * what it deleted.
 */
export async function cleanupImports(ctx: ImportContext): Promise<{ uploads: number; rejections: number }> {
  const at = now(ctx);
  const uploadsBefore = new Date(at.getTime() - UPLOAD_KEEP_DAYS * 86_400_000);
  const { rows } = await sql<{ input_ref: string }>`SELECT input_ref FROM imports
    WHERE input_kind = 'stored' AND input_deleted_at IS NULL AND NOT ${underHold}
    GROUP BY input_ref
    HAVING bool_and(status IN ('completed', 'failed', 'cancelled')) AND max(coalesce(finished_at, created_at)) < ${uploadsBefore}`.execute(
    ctx.database.db,
  );
  for (const { input_ref } of rows) {
    await ctx.store.delete(input_ref);
    await sql`UPDATE imports SET input_deleted_at = ${at} WHERE input_kind = 'stored' AND input_ref = ${input_ref}`.execute(
      ctx.database.db,
    );
  }
  const rejectionsBefore = new Date(at.getTime() - REJECTIONS_KEEP_DAYS * 86_400_000);
  const deleted = await sql`DELETE FROM import_rejections r USING imports
    WHERE r.import_id = imports.id AND imports.finished_at < ${rejectionsBefore} AND NOT ${underHold}`.execute(
    ctx.database.db,
  );
  return { uploads: rows.length, rejections: Number(deleted.numAffectedRows ?? 0) };
}

/** Stores an upload under the tenant's import prefix; returns the input of a new import. */
export async function storeUpload(
  ctx: ImportContext,
  tenantId: string,
  id: string,
  name: string,
  body: Readable,
): Promise<ImportInputRef> {
  const key = `imports/${tenantId}/${id}/${safeName(name)}`;
  const pending = await ctx.store.put(key, body, { contentType: 'application/octet-stream' });
  const stored = await pending.commit();
  return { kind: 'stored', key: stored.key, name: safeName(name), bytes: stored.bytes };
}

/** An uploaded file's name reduced to one safe segment (its extension picks the reader). */
export function safeName(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? '';
  const clean = base.replace(/[^\w.-]+/g, '_').replace(/^\.+/, '');
  return clean.slice(-120) || 'upload';
}

function now(ctx: ImportContext): Date {
  return (ctx.now ?? (() => new Date()))();
}
