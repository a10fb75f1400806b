import { Type } from 'typebox';
import { authorize } from '../../auth/policy.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { loadOrCreateSecretKey } from '../../lib/secret-box.ts';
import {
  createDeletion,
  DELETION_TARGETS,
  getDeletion,
  listDeletions,
  planDeletion,
  runDeletion,
} from '../../privacy/deletion.ts';
import { DELETION_RUN_JOB } from '../../privacy/deletion-jobs.ts';
import { problemResponses } from '../problem.ts';
import { listBody, listResponse } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const security = [{ bearer: [] }];
const Timestamp = Type.String({ format: 'date-time' });
const NullableTimestamp = Type.Union([Timestamp, Type.Null()]);
const NullableString = Type.Union([Type.String(), Type.Null()]);
const Count = Type.Integer({ minimum: 0 });

const StoreCount = Type.Object(
  {
    store: Type.Enum(['database', 'object_store']),
    dataset: Type.String(),
    deleted: Count,
    anonymized: Count,
    scrubbed: Type.Integer({
      minimum: 0,
      description: 'Rows kept whose reference to the deleted rows was removed',
    }),
    retained: Type.Integer({ minimum: 0, description: 'Rows kept (legal holds)' }),
    retain_reason: NullableString,
  },
  { additionalProperties: false },
);
const File = Type.Object({ export_id: Type.String(), file: Type.String() }, { additionalProperties: false });
const Hold = Type.Object(
  { hold_id: Type.String(), reason: Type.String(), datasets: Type.Array(Type.String()) },
  { additionalProperties: false },
);
const Filters = Type.Record(Type.String(), Type.String());

const Plan = Type.Object(
  {
    target: Type.Enum([...DELETION_TARGETS]),
    id: NullableString,
    filters: Filters,
    stores: Type.Array(StoreCount),
    derived: Type.Array(
      Type.Object(
        {
          dataset: Type.String(),
          effect: Type.Enum(['deleted', 'recomputed', 'reference_removed', 'kept']),
          note: Type.String(),
        },
        { additionalProperties: false },
      ),
    ),
    files: Type.Array(File, { description: 'Stored export files that may hold the rows: deleted with them' }),
    holds: Type.Array(Hold),
  },
  { additionalProperties: false },
);

const DryRun = Type.Object(
  { dry_run: Type.Literal(true), ...Plan.properties },
  { additionalProperties: false },
);

const DeletionRecord = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    tenant_id: Type.String({ format: 'uuid' }),
    target: Type.Enum([...DELETION_TARGETS]),
    target_id: NullableString,
    filters: Filters,
    status: Type.Enum(['pending', 'running', 'completed', 'failed']),
    plan: Plan,
    progress: Type.Object(
      { stores: Type.Array(StoreCount), files: Type.Array(File), held: Count },
      { additionalProperties: false },
    ),
    selected: Type.Union([Count, Type.Null()], {
      description: 'Rows chosen (null until the job chose them)',
    }),
    done: Type.Integer({ minimum: 0, description: 'Chosen rows dealt with so far' }),
    receipt_id: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
    error: NullableString,
    actor: Type.String(),
    created_at: Timestamp,
    started_at: NullableTimestamp,
    finished_at: NullableTimestamp,
  },
  { additionalProperties: false },
);

const Body = Type.Object(
  {
    target: Type.String({ minLength: 1, maxLength: 40, description: DELETION_TARGETS.join(', ') }),
    id: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 64,
        description: 'The conversation, message, customer or document',
      }),
    ),
    filters: Type.Optional(
      Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 2000 }), {
        description:
          '`conversations`: the conversations export filters (`from`, `to`, `site_url`, `tags`, `status`, …)',
      }),
    ),
    timezone: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    dry_run: Type.Optional(Type.Boolean({ default: false })),
  },
  { additionalProperties: false },
);

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) }, { additionalProperties: false });

/** Selective deletion (docs/deletion.md). */
export const deletionRoutes: RoutePlugin = async (app, { database, config, store, queue, now, secrets }) => {
  const clock = now ?? (() => new Date());
  const deps = () => {
    if (!store) throw new FerryError('service_unavailable', 'no object store is configured');
    return { database, store, secretKey: loadOrCreateSecretKey(config), secrets, now: clock };
  };
  app.post(
    '/api/v1/deletions',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['deletions'],
        summary: 'Delete chosen data: plan it (dry_run) or start it (admin, manager)',
        description:
          '`target`: `conversation` (with `id`), `conversations` (with `filters`: exactly the rows an export ' +
          'of the conversations dataset with the same filters holds), `message` (one message: its conversation stays, ' +
          'its message counts recomputed), `customer` or `document` (with `id`). ' +
          '`dry_run: true` answers 200 with the plan and changes nothing; otherwise the deletion is recorded ' +
          'and runs as a batched, resumable job: 202, then poll `GET /api/v1/deletions/{id}`. Legal holds win.',
        security,
        body: Body,
        response: {
          200: DryRun,
          202: DeletionRecord,
          ...problemResponses(400, 401, 403, 404, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'data:delete');
      const { dry_run, ...input } = request.body;
      if (dry_run) return { dry_run: true as const, ...(await planDeletion(database, auth.tenantId, input)) };
      if (!queue) throw new FerryError('service_unavailable', 'no job queue is configured');
      deps();
      const deletion = await createDeletion(database, auth.tenantId, input, auth.actor, { now: clock });
      await queue.send(DELETION_RUN_JOB, { id: deletion.id });
      return reply.code(202).header('location', `/api/v1/deletions/${deletion.id}`).send(deletion);
    },
  );
  app.get(
    '/api/v1/deletions',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['deletions'],
        summary: 'The latest deletions, newest first (admin, manager)',
        security,
        response: { 200: listResponse(DeletionRecord), ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'data:delete');
      return listBody(await listDeletions(database, auth.tenantId));
    },
  );
  app.get(
    '/api/v1/deletions/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['deletions'],
        summary: 'One deletion with its progress and receipt (admin, manager)',
        security,
        params: IdParams,
        response: { 200: DeletionRecord, ...problemResponses(401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'data:delete');
      return getDeletion(database, auth.tenantId, request.params.id);
    },
  );
  app.delete(
    '/api/v1/conversations/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['deletions'],
        summary: 'Delete one conversation now (admin, manager)',
        description:
          'Deletes the conversation with its messages (and what the plan of `POST /api/v1/deletions` lists) at ' +
          'once and answers the completed deletion with its receipt id. A legal hold keeps it: the answer says so ' +
          '(`progress.held`).',
        security,
        params: IdParams,
        response: { 200: DeletionRecord, ...problemResponses(401, 403, 404, 429, 503) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'data:delete');
      const d = deps();
      const deletion = await createDeletion(
        database,
        auth.tenantId,
        { target: 'conversation', id: request.params.id },
        auth.actor,
        { now: clock },
      );
      return runDeletion(d, auth.tenantId, deletion.id);
    },
  );
};
