import type { ErrorCode } from '../domain/error-catalog.ts';
import { type Selectable, sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { afterPosition, instantText } from '../db/keyset.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { type ExportStatus, predecessors } from '../domain/export-state.ts';
import { type ExportFilesTable, type ExportRequestsTable, exportDb } from './tables.ts';

export type ExportRow = Selectable<ExportRequestsTable>;

/** The actor of exports made with `ferry export`, as of every other change made on the command line. */
export const CLI_ACTOR = 'cli';

/**
 * An export the command line wrote to a file (or folder) of its own on the machine
 * that ran it: recorded, audited and counted like any other, but Ferry keeps no copy.
 */
export function isLocalExport(row: Pick<ExportRow, 'actor'>): boolean {
  return row.actor === CLI_ACTOR;
}
export type ExportFileRow = Selectable<ExportFilesTable>;

export interface NewExport {
  id: string;
  tenantId: string;
  actor: string;
  apiKeyId: string | null;
  teamMemberId: string | null;
  config: ExportConfig;
  retentionDays: number;
  /** The plan's largest file; the worker stops an export that grows past it. */
  maxFileBytes: number | null;
  repeatOf: string | null;
  createdAt: Date;
}

export interface IdempotencyClaim {
  credential: string;
  key: string;
  operation: string;
  requestHash: string;
  statusCode: number;
  response: unknown;
  /** A key stored before this time has expired and is taken over. */
  notBefore: Date;
}

export interface ListFilter {
  statuses?: readonly ExportStatus[] | undefined;
  dataset?: string | undefined;
  from?: Date | undefined;
  to?: Date | undefined;
  /** Only exports requested by this API key or team member (roles that see their own exports only). */
  requester?: { apiKeyId: string | null; teamMemberId: string | null } | undefined;
  /** Organisation exports (across several tenants) only when requested by this API key or team member. */
  organisationExportsOf?: { apiKeyId: string | null; teamMemberId: string | null } | undefined;
  /** Exclusive keyset position: created_at (the database's text, see db/keyset.ts) and id of the last row of the previous page. */
  after?: { at: string; id: string } | undefined;
  limit: number;
}

/**
 * The export tables of one tenant: every query is scoped to `tenantId`, so a
 * route cannot reach another tenant's export by forgetting a `where`.
 */
export function tenantExports(database: Database, tenantId: string) {
  const db = exportDb(database);

  return {
    /**
     * Inserts a queued export; with an idempotency claim, the claim and the export are
     * written by one statement, and nothing is written when the key is already taken
     * (false). Concurrent requests with the same key wait for each other on the key.
     */
    async insert(row: NewExport, claim?: IdempotencyClaim): Promise<boolean> {
      if (row.tenantId !== tenantId) throw new Error('export of another tenant');
      const values = {
        id: row.id,
        tenant_id: tenantId,
        actor: row.actor,
        api_key_id: row.apiKeyId,
        team_member_id: row.teamMemberId,
        // An organisation's export is an archive of folders, whatever each folder holds.
        kind:
          row.config.package === 'none' && !row.config.organisation
            ? ('dataset' as const)
            : ('package' as const),
        datasets: row.config.datasets,
        config: JSON.stringify(row.config),
        retention_days: row.retentionDays,
        max_file_bytes: row.maxFileBytes,
        repeat_of: row.repeatOf,
        created_at: row.createdAt,
        updated_at: row.createdAt,
      };
      if (!claim) {
        await db.insertInto('export_requests').values(values).execute();
        return true;
      }
      const result = await sql<{ id: string }>`
        WITH claim AS (
          INSERT INTO idempotency_keys
            (tenant_id, credential, key, operation, request_hash, resource_id, status_code, response, created_at)
          VALUES (${tenantId}, ${claim.credential}, ${claim.key}, ${claim.operation}, ${claim.requestHash},
            ${row.id}, ${claim.statusCode}, ${JSON.stringify(claim.response)}::jsonb, ${row.createdAt})
          ON CONFLICT (tenant_id, credential, key) DO UPDATE SET operation = EXCLUDED.operation,
            request_hash = EXCLUDED.request_hash, resource_id = EXCLUDED.resource_id,
            status_code = EXCLUDED.status_code, response = EXCLUDED.response, created_at = EXCLUDED.created_at
          WHERE idempotency_keys.created_at < ${claim.notBefore}
          RETURNING resource_id
        )
        INSERT INTO export_requests (id, tenant_id, actor, api_key_id, team_member_id, kind, datasets, config,
          retention_days, max_file_bytes, repeat_of, created_at, updated_at)
        SELECT resource_id, ${tenantId}::uuid, ${values.actor}, ${values.api_key_id}::uuid,
          ${values.team_member_id}::uuid, ${values.kind}, ${values.datasets}::text[], ${values.config}::jsonb,
          ${values.retention_days}::int, ${values.max_file_bytes}::bigint, ${values.repeat_of}::uuid, ${row.createdAt}::timestamptz,
          ${row.createdAt}::timestamptz
        FROM claim
        RETURNING id`.execute(db);
      return result.rows.length === 1;
    },

    async find(id: string): Promise<ExportRow | undefined> {
      return db
        .selectFrom('export_requests')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .executeTakeFirst();
    },

    async files(exportIds: readonly string[]): Promise<ExportFileRow[]> {
      if (exportIds.length === 0) return [];
      return db
        .selectFrom('export_files')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('export_id', 'in', exportIds)
        .orderBy('name')
        .execute();
    },

    /** One page, newest first; each row carries `cursor_at`, its position for the next page. */
    async list(filter: ListFilter): Promise<(ExportRow & { cursor_at: string })[]> {
      let query = db
        .selectFrom('export_requests')
        .selectAll()
        .select(instantText('created_at').as('cursor_at'))
        .where('tenant_id', '=', tenantId);
      if (filter.statuses?.length) query = query.where('status', 'in', filter.statuses);
      if (filter.dataset) query = query.where(sql<boolean>`${filter.dataset} = ANY(datasets)`);
      if (filter.from) query = query.where('created_at', '>=', filter.from);
      if (filter.to) query = query.where('created_at', '<', filter.to);
      const requester = filter.requester;
      if (requester) {
        query = query.where((eb) =>
          eb.or([
            ...(requester.apiKeyId ? [eb('api_key_id', '=', requester.apiKeyId)] : []),
            ...(requester.teamMemberId ? [eb('team_member_id', '=', requester.teamMemberId)] : []),
            eb.val(false),
          ]),
        );
      }
      const own = filter.organisationExportsOf;
      if (own) {
        query = query.where((eb) =>
          eb.or([
            sql<boolean>`coalesce(jsonb_typeof(config->'organisation'), 'null') = 'null'`,
            ...(own.apiKeyId ? [eb('api_key_id', '=', own.apiKeyId)] : []),
            ...(own.teamMemberId ? [eb('team_member_id', '=', own.teamMemberId)] : []),
          ]),
        );
      }
      if (filter.after) query = query.where(afterPosition('created_at', filter.after, 'desc'));
      return query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute();
    },

    /** queued/running/packaging → cancelled; the worker notices on its next progress write. */
    async cancel(id: string, now: Date): Promise<ExportRow | undefined> {
      return db
        .updateTable('export_requests')
        .set({ status: 'cancelled', attempt_id: null, finished_at: now, updated_at: now })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('status', 'in', predecessors('cancelled'))
        .returningAll()
        .executeTakeFirst();
    },

    /** completed → expired after its files were removed on request. */
    async markFilesDeleted(id: string, now: Date): Promise<ExportRow | undefined> {
      return db
        .updateTable('export_requests')
        .set({ status: 'expired', files_deleted_at: now, updated_at: now })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('status', '=', 'completed')
        .returningAll()
        .executeTakeFirst();
    },

    /** Counts one more download and returns the new count. */
    async countDownload(id: string): Promise<number> {
      const row = await db
        .updateTable('export_requests')
        .set((eb) => ({ download_count: eb('download_count', '+', 1) }))
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .returning('download_count')
        .executeTakeFirst();
      return row?.download_count ?? 0;
    },
  };
}

export type TenantExports = ReturnType<typeof tenantExports>;

/** Progress of a running attempt, as the worker writes it. */
export interface ProgressUpdate {
  records: number;
  estimated: number | null;
  bytes: number;
  at: Date;
}

export interface CommittedFile {
  id: string;
  name: string;
  storageKey: string;
  contentType: string;
  bytes: number;
  records: number;
  sha256: string;
  encrypted: boolean;
}

/**
 * The worker's side of the export tables. Every write by an attempt is conditional
 * on its lease (`attempt_id`) and on the state machine, so a cancelled export or an
 * attempt that another worker took over cannot be moved by a stale worker.
 */
export function exportJobs(database: Database) {
  const db = exportDb(database);

  return {
    async load(id: string): Promise<ExportRow | undefined> {
      return db.selectFrom('export_requests').selectAll().where('id', '=', id).executeTakeFirst();
    },

    /** Takes the export for a new attempt (queued, or left running by a worker that died). */
    async claim(id: string, attemptId: string, now: Date): Promise<ExportRow | undefined> {
      return db
        .updateTable('export_requests')
        .set((eb) => ({
          status: 'running',
          attempt_id: attemptId,
          attempts: eb('attempts', '+', 1),
          started_at: eb.fn.coalesce('started_at', eb.val(now)),
          records_done: 0,
          bytes_done: 0,
          records_estimated: null,
          progress_at: now,
          error_code: null,
          error_message: null,
          updated_at: now,
        }))
        .where('id', '=', id)
        .where('status', 'in', predecessors('running'))
        .returningAll()
        .executeTakeFirst();
    },

    /** Writes progress; false when the attempt no longer owns the export (cancelled or taken over). */
    async progress(id: string, attemptId: string, update: ProgressUpdate): Promise<boolean> {
      const row = await db
        .updateTable('export_requests')
        .set({
          records_done: update.records,
          records_estimated: update.estimated,
          bytes_done: update.bytes,
          progress_at: update.at,
          updated_at: update.at,
        })
        .where('id', '=', id)
        .where('attempt_id', '=', attemptId)
        .where('status', 'in', ['running', 'packaging'])
        .returning('id')
        .executeTakeFirst();
      return row !== undefined;
    },

    async toPackaging(id: string, attemptId: string, now: Date): Promise<boolean> {
      const row = await db
        .updateTable('export_requests')
        .set({ status: 'packaging', updated_at: now })
        .where('id', '=', id)
        .where('attempt_id', '=', attemptId)
        .where('status', 'in', predecessors('packaging'))
        .returning('id')
        .executeTakeFirst();
      return row !== undefined;
    },

    /**
     * packaging → completed, recording the committed file (or every file of a set, such
     * as the parts of a split package) in the same statement; false (and nothing
     * recorded) when the attempt lost the export in the meantime.
     */
    async complete(
      id: string,
      attemptId: string,
      file: CommittedFile | readonly CommittedFile[],
      progress: ProgressUpdate,
      expiresAt: Date,
    ): Promise<boolean> {
      const now = progress.at;
      const files = Array.isArray(file) ? file : [file as CommittedFile];
      if (files.length === 0) throw new Error('an export completes with at least one file');
      const values = sql.join(
        files.map(
          (f) =>
            sql`(${f.id}::uuid, ${f.name}, ${f.storageKey}, ${f.contentType}, ${f.bytes}::bigint, ${f.records}::bigint, ${f.sha256}, ${f.encrypted}::boolean)`,
        ),
      );
      const result = await sql<{ id: string }>`
        WITH done AS (
          UPDATE export_requests
          SET status = 'completed', finished_at = ${now}, expires_at = ${expiresAt},
            records_done = ${progress.records}, bytes_done = ${progress.bytes}, progress_at = ${now},
            records_estimated = ${progress.estimated}, updated_at = ${now}
          WHERE id = ${id} AND attempt_id = ${attemptId} AND status = 'packaging'
          RETURNING id, tenant_id
        )
        INSERT INTO export_files (id, export_id, tenant_id, name, storage_key, content_type, bytes, records,
          sha256, encrypted, created_at)
        SELECT f.id, done.id, done.tenant_id, f.name, f.storage_key, f.content_type, f.bytes, f.records,
          f.sha256, f.encrypted, ${now}::timestamptz
        FROM done, (VALUES ${values}) AS f(id, name, storage_key, content_type, bytes, records, sha256, encrypted)
        RETURNING id`.execute(db);
      return result.rows.length === files.length;
    },

    /** running/packaging → queued after a failed attempt that will be retried. */
    async requeue(id: string, attemptId: string, error: { code: ErrorCode; message: string }, now: Date) {
      const row = await db
        .updateTable('export_requests')
        .set({
          status: 'queued',
          attempt_id: null,
          error_code: error.code,
          error_message: error.message,
          updated_at: now,
        })
        .where('id', '=', id)
        .where('attempt_id', '=', attemptId)
        .where('status', 'in', ['running', 'packaging'])
        .returning('id')
        .executeTakeFirst();
      return row !== undefined;
    },

    /**
     * → failed. With an attempt id only while that attempt owns the export; without one
     * (the job ran out of retries without a live attempt) whatever active state it is in.
     */
    async fail(
      id: string,
      attemptId: string | null,
      error: { code: ErrorCode; message: string },
      now: Date,
    ): Promise<ExportRow | undefined> {
      let query = db
        .updateTable('export_requests')
        .set({
          status: 'failed',
          attempt_id: null,
          error_code: error.code,
          error_message: error.message,
          finished_at: now,
          updated_at: now,
        })
        .where('id', '=', id)
        .where('status', 'in', predecessors('failed'));
      if (attemptId) query = query.where('attempt_id', '=', attemptId);
      return query.returningAll().executeTakeFirst();
    },

    /** Completed exports whose retention ended, oldest first. */
    async dueForExpiry(now: Date, limit: number): Promise<ExportRow[]> {
      return db
        .selectFrom('export_requests')
        .selectAll()
        .where('status', '=', 'completed')
        .where('expires_at', '<=', now)
        .orderBy('expires_at')
        .limit(limit)
        .execute();
    },

    /** completed → expired, once the files are gone. */
    async expire(id: string, now: Date): Promise<boolean> {
      const row = await db
        .updateTable('export_requests')
        .set({ status: 'expired', files_deleted_at: now, updated_at: now })
        .where('id', '=', id)
        .where('status', '=', 'completed')
        .returning('id')
        .executeTakeFirst();
      return row !== undefined;
    },

    async files(exportId: string): Promise<ExportFileRow[]> {
      return db.selectFrom('export_files').selectAll().where('export_id', '=', exportId).execute();
    },

    /**
     * Running exports of the command line whose progress stopped before `before`: their
     * process ended without recording an outcome (killed, machine gone).
     */
    async staleLocal(before: Date, limit: number): Promise<ExportRow[]> {
      return db
        .selectFrom('export_requests')
        .selectAll()
        .where('actor', '=', CLI_ACTOR)
        .where('status', 'in', ['running', 'packaging'])
        .where('progress_at', '<', before)
        .orderBy('created_at')
        .limit(limit)
        .execute();
    },

    /** Queued exports older than `before`: candidates whose job may have been lost before it was sent. */
    async staleQueued(before: Date, limit: number): Promise<ExportRow[]> {
      return db
        .selectFrom('export_requests')
        .selectAll()
        .where('status', '=', 'queued')
        .where('updated_at', '<', before)
        .orderBy('created_at')
        .limit(limit)
        .execute();
    },
  };
}

export type ExportJobs = ReturnType<typeof exportJobs>;
