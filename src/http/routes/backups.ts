import { Type } from 'typebox';
import { authorize } from '../../auth/policy.ts';
import { backupById, listBackups } from '../../backup/catalog.ts';
import { backupContext } from '../../backup/context.ts';
import { registerBackup } from '../../backup/create.ts';
import { BACKUP_RESTORE_JOB, BACKUP_RUN_JOB } from '../../backup/jobs.ts';
import {
  type BackupContext,
  listRestores,
  refuseReplaceUnderHold,
  registerRestore,
  restoreById,
  verifyBackup,
} from '../../backup/service.ts';
import { getBackupSettings, presentSettings, putBackupSettings } from '../../backup/settings.ts';
import { VERIFY_LEVELS } from '../../backup/verify.ts';
import { FerryError, invalid } from '../../domain/ferry-error.ts';
import { problemResponses } from '../problem.ts';
import { jsonResponse, listBody, listResponse } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const security = [{ bearer: [] }];
const Timestamp = Type.String({ format: 'date-time' });
const NullableTimestamp = Type.Union([Timestamp, Type.Null()]);
const NullableString = Type.Union([Type.String(), Type.Null()]);
const Uuid = Type.String({ format: 'uuid' });

const Backup = Type.Object(
  {
    id: Uuid,
    tenant_id: Uuid,
    status: Type.Enum(['running', 'completed', 'failed', 'forgotten']),
    kind: Type.Enum(['full', 'incremental'], {
      description:
        '`incremental` reuses the unchanged chunks of its parent; every backup restores on its own',
    }),
    trigger: Type.String({ description: '`api`, `manual` (CLI), `schedule` or `pre_restore`' }),
    actor: Type.String(),
    parent_id: Type.Union([Uuid, Type.Null()]),
    key_id: Type.Union([Uuid, Type.Null()]),
    snapshot_at: NullableTimestamp,
    schema_version: NullableString,
    ferry_version: NullableString,
    tables: Type.Integer({ minimum: 0 }),
    rows: Type.Integer({ minimum: 0 }),
    plain_bytes: Type.Integer({
      minimum: 0,
      description: 'Bytes of the COPY streams and stored files it holds',
    }),
    written_bytes: Type.Integer({
      minimum: 0,
      description: 'Bytes this backup wrote (new chunks), per destination',
    }),
    chunks: Type.Integer({ minimum: 0 }),
    new_chunks: Type.Integer({ minimum: 0 }),
    manifest_sha256: NullableString,
    destinations: Type.Array(Type.Record(Type.String(), Type.Unknown())),
    verified_at: NullableTimestamp,
    verify_status: NullableString,
    verify_error: NullableString,
    started_at: Timestamp,
    finished_at: NullableTimestamp,
    forgotten_at: NullableTimestamp,
    error: NullableString,
  },
  { additionalProperties: false },
);

const Restore = Type.Object(
  {
    id: Uuid,
    tenant_id: Uuid,
    backup_id: Uuid,
    mode: Type.Enum(['replace', 'sandbox', 'database', 'drill']),
    target_tenant_id: Type.Union([Uuid, Type.Null()]),
    status: Type.Enum(['running', 'completed', 'failed']),
    actor: Type.String(),
    report: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], {
      description:
        'Tables restored with their row counts, the erased people erased again (`re_erased`), withheld columns; for a drill, `rto_seconds`, `rpo_seconds` and the recovery targets',
    }),
    error: NullableString,
    started_at: Timestamp,
    finished_at: NullableTimestamp,
  },
  { additionalProperties: false },
);

const Check = Type.Object(
  {
    destination: Type.String(),
    ok: Type.Boolean(),
    error: NullableString,
    signature: Type.Union([Type.Enum(['valid', 'unknown_key']), Type.Null()]),
    chunks_checked: Type.Integer({ minimum: 0 }),
    bytes_read: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);

const Verification = Type.Object(
  {
    backup_id: Uuid,
    level: Type.Enum([...VERIFY_LEVELS]),
    ok: Type.Boolean(),
    destinations: Type.Array(Check),
  },
  { additionalProperties: false },
);

const Settings = Type.Record(Type.String(), Type.Unknown(), {
  description:
    '`enabled`, `frequency` (daily, weekly), `time_of_day` (HH:MM, tenant time zone), `weekday`, `destinations`, `keep` (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within), `stored_files` (reference, content), `recipients` (age), `verify_weekday`, `drill_day`',
});

const SettingsBody = Type.Object(
  {
    enabled: Type.Optional(Type.Boolean()),
    frequency: Type.Optional(Type.String({ maxLength: 20 })),
    time_of_day: Type.Optional(Type.String({ maxLength: 5 })),
    weekday: Type.Optional(Type.Integer()),
    destinations: Type.Optional(Type.Array(Type.Record(Type.String(), Type.Unknown()), { maxItems: 2 })),
    keep: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    stored_files: Type.Optional(Type.String({ maxLength: 20 })),
    recipients: Type.Optional(Type.Array(Type.String({ maxLength: 200 }), { maxItems: 10 })),
    verify_weekday: Type.Optional(Type.Integer()),
    drill_day: Type.Optional(Type.Integer()),
  },
  { additionalProperties: false },
);

const VerifyBody = Type.Object(
  { level: Type.Optional(Type.String({ maxLength: 10, description: '`quick` (default) or `full`' })) },
  { additionalProperties: false },
);

const RestoreBody = Type.Object(
  {
    mode: Type.String({
      maxLength: 20,
      description:
        '`sandbox` (a new tenant beside the live one) or `replace` (the live tenant; needs `confirm`)',
    }),
    confirm: Type.Optional(Type.Boolean()),
    destination: Type.Optional(Type.String({ maxLength: 40 })),
  },
  { additionalProperties: false },
);

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) }, { additionalProperties: false });
const ListQuery = Type.Object(
  { all: Type.Optional(Type.Boolean({ description: 'Include running, failed and forgotten backups' })) },
  { additionalProperties: false },
);

/** Tenant backups: list, take, verify, restore, drills and settings (docs/backup.md). */
export const backupRoutes: RoutePlugin = async (app, { database, config, store, queue, now, secrets }) => {
  let context: BackupContext | undefined;
  const ctx = (): BackupContext => {
    if (!store) throw new FerryError('service_unavailable', 'no object store is configured');
    context ??= backupContext({ database, config, store, secrets, now });
    return context;
  };
  const clock = now ?? (() => new Date());
  const needQueue = () => {
    if (!queue) throw new FerryError('service_unavailable', 'no job queue is configured');
    return queue;
  };

  app.get(
    '/api/v1/backups',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: "The tenant's backups, newest first (admin)",
        description:
          'Completed backups (the ones a restore can use); `all=true` adds running, failed and forgotten ones.',
        security,
        querystring: ListQuery,
        response: { 200: listResponse(Backup), ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      return listBody(await listBackups(database.db, auth.tenantId, { all: request.query.all ?? false }));
    },
  );

  app.post(
    '/api/v1/backups',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: 'Take a backup now (admin)',
        description:
          'Registers a backup and queues it; answers 202 with the running backup. Poll `GET /api/v1/backups/{id}` until ' +
          '`status` is `completed` (or `failed`). A backup reuses the unchanged chunks of the previous one.',
        security,
        response: {
          202: jsonResponse(Backup, {
            description: 'Accepted: the backup is running; `Location` is its URL',
            headers: ['Location'],
          }),
          ...problemResponses(401, 403, 409, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      const q = needQueue();
      const id = await registerBackup(
        database.db,
        { tenantId: auth.tenantId, trigger: 'api', actor: auth.actor },
        clock(),
      );
      await q.send(BACKUP_RUN_JOB, { id });
      const row = (await backupById(database.db, auth.tenantId, id))!;
      return reply.code(202).header('location', `/api/v1/backups/${id}`).send(row);
    },
  );

  app.get(
    '/api/v1/backups/settings',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: "The tenant's backup schedule, destinations and keep policy (admin)",
        security,
        response: { 200: Settings, ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      return presentSettings(await getBackupSettings(database.db, auth.tenantId), secrets);
    },
  );

  app.put(
    '/api/v1/backups/settings',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: "Change the tenant's backup settings (admin)",
        description:
          'Fields left out keep their value. `destinations`: one or two of `{"type": "default", "name"}` (the ' +
          "operator's storage), `s3` and `sftp` (the fields of schedule delivery targets, plus `name`). `keep`: " +
          "restic's forget rules. `recipients`: the tenant's age public keys; backup keys are encrypted to them too.",
        security,
        body: SettingsBody,
        response: { 200: Settings, ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      const settings = await putBackupSettings(database.db, auth.tenantId, request.body, {
        secrets,
        actor: auth.actor,
      });
      return presentSettings(settings, secrets);
    },
  );

  app.get(
    '/api/v1/backups/restores',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: 'Restores of the tenant, newest first, with their reports (admin)',
        security,
        response: { 200: listResponse(Restore), ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      return listBody(await listRestores(database.db, auth.tenantId));
    },
  );

  app.get(
    '/api/v1/backups/restores/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: 'One restore or drill and its report (admin)',
        security,
        params: IdParams,
        response: { 200: Restore, ...problemResponses(401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      const row = await restoreById(database.db, auth.tenantId, request.params.id);
      if (!row) throw new FerryError('not_found', `no restore ${request.params.id}`);
      return row;
    },
  );

  app.get(
    '/api/v1/backups/drills',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: 'Restore drills and their measured RTO and RPO (admin)',
        security,
        response: { 200: listResponse(Restore), ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      return listBody(await listRestores(database.db, auth.tenantId, { drills: true }));
    },
  );

  app.post(
    '/api/v1/backups/drills',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: 'Run a restore drill of the latest backup (admin)',
        description:
          'Queues a drill: the latest backup is restored into a throwaway sandbox tenant, checked against its ' +
          'manifest, timed (RTO) and aged (RPO), and the sandbox deleted. Answers 202; poll the `Location`.',
        security,
        response: {
          202: jsonResponse(Restore, {
            description: 'Accepted: the drill is running; `Location` is its URL',
            headers: ['Location'],
          }),
          ...problemResponses(401, 403, 404, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      const q = needQueue();
      const latest = (await listBackups(database.db, auth.tenantId, { limit: 1 }))[0];
      if (!latest) throw new FerryError('not_found', 'this tenant has no completed backup to drill');
      const id = await registerRestore(database.db, {
        tenantId: auth.tenantId,
        backupId: latest.id,
        mode: 'drill',
        actor: auth.actor,
        at: clock(),
      });
      await q.send(BACKUP_RESTORE_JOB, { id });
      return reply
        .code(202)
        .header('location', `/api/v1/backups/restores/${id}`)
        .send((await restoreById(database.db, auth.tenantId, id))!);
    },
  );

  app.get(
    '/api/v1/backups/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: 'One backup (admin)',
        security,
        params: IdParams,
        response: { 200: Backup, ...problemResponses(401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      const row = await backupById(database.db, auth.tenantId, request.params.id);
      if (!row) throw new FerryError('not_found', `no backup ${request.params.id}`);
      return row;
    },
  );

  app.post(
    '/api/v1/backups/:id/verify',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: 'Verify a backup at each destination (admin)',
        description:
          '`quick`: the manifest, its MAC and signature, the key file, and every chunk present with its size. ' +
          '`full`: besides, every chunk read, decrypted and hashed, and every table stream checked against the ' +
          'manifest. A failure names the destination, table and chunk.',
        security,
        params: IdParams,
        body: VerifyBody,
        response: { 200: Verification, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      const level = request.body.level ?? 'quick';
      if (!(VERIFY_LEVELS as readonly string[]).includes(level))
        throw invalid('level', 'is not a verification level', VERIFY_LEVELS);
      const result = await verifyBackup(ctx(), {
        tenantId: auth.tenantId,
        backupId: request.params.id,
        level: level as 'quick' | 'full',
        actor: auth.actor,
      });
      return { ...result, destinations: [...result.destinations] };
    },
  );

  app.post(
    '/api/v1/backups/:id/restore',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['backups'],
        summary: 'Restore a backup (admin)',
        description:
          '`sandbox`: into a new tenant beside the live one (every id mapped to a new one). `replace`: over the ' +
          'live tenant, after a backup of its current state; needs `"confirm": true`. Either way the erasure ' +
          'ledger is replayed before the restore commits, and a failure changes nothing. Answers 202; poll the ' +
          '`Location` for the report.',
        security,
        params: IdParams,
        body: RestoreBody,
        response: {
          202: jsonResponse(Restore, {
            description: 'Accepted: the restore is running; `Location` is its URL',
            headers: ['Location'],
          }),
          ...problemResponses(400, 401, 403, 404, 409, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'backups:manage');
      const { mode, confirm, destination } = request.body;
      if (mode !== 'sandbox' && mode !== 'replace')
        throw invalid(
          'mode',
          'is not a restore mode the API offers (a restore into another database is `ferry backup restore --into`)',
          ['sandbox', 'replace'],
        );
      if (mode === 'replace' && confirm !== true)
        throw invalid(
          'confirm',
          'restoring over the live tenant replaces its data with the backup: send "confirm": true (a backup of the current state is taken first)',
        );
      const backup = await backupById(database.db, auth.tenantId, request.params.id);
      if (backup?.status !== 'completed')
        throw new FerryError('not_found', `no completed backup ${request.params.id}`);
      if (mode === 'replace') await refuseReplaceUnderHold(database, auth.tenantId);
      if (destination !== undefined && !backup.destinations.some((d) => d.name === destination))
        throw invalid(
          'destination',
          'is not a destination this backup was written to',
          backup.destinations.map((d) => d.name),
        );
      const q = needQueue();
      const id = await registerRestore(database.db, {
        tenantId: auth.tenantId,
        backupId: backup.id,
        mode,
        actor: auth.actor,
        at: clock(),
        destination,
      });
      await q.send(BACKUP_RESTORE_JOB, { id });
      return reply
        .code(202)
        .header('location', `/api/v1/backups/restores/${id}`)
        .send((await restoreById(database.db, auth.tenantId, id))!);
    },
  );
};
