import { randomUUID } from 'node:crypto';
import multipart from '@fastify/multipart';
import { Type } from 'typebox';
import { authorize } from '../../auth/policy.ts';
import { FerryError, invalid } from '../../domain/ferry-error.ts';
import { importContext } from '../../imports/context.ts';
import { IMPORT_RUN_JOB } from '../../imports/jobs.ts';
import {
  cancelImport,
  checkSource,
  createImport,
  getImport,
  type ImportContext,
  type ImportInputRef,
  type ImportRow,
  listImports,
  parseConflict,
  rejectedFile,
  storeUpload,
} from '../../imports/service.ts';
import { IMPORT_SOURCES } from '../../imports/types.ts';
import { CONFLICT_POLICIES } from '../../imports/engine.ts';
import type { FastifyRequest } from 'fastify';
import type { Multipart } from '@fastify/multipart';
import { problemResponses } from '../problem.ts';
import { jsonResponse, listBody, listResponse, responseHeaders } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const security = [{ bearer: [] }];
const Uuid = Type.String({ format: 'uuid' });
const NullableString = Type.Union([Type.String(), Type.Null()]);
const NullableTimestamp = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);

const Import = Type.Object(
  {
    id: Uuid,
    tenant_id: Uuid,
    source: Type.Enum([...IMPORT_SOURCES]),
    dataset: NullableString,
    input_kind: Type.Enum(['stored', 'path']),
    input_ref: Type.String({
      description: 'The object-store key of the uploaded file (reusable as `object_key`), or the CLI path',
    }),
    input_name: Type.String(),
    input_bytes: Type.Integer({ minimum: 0 }),
    dry_run: Type.Boolean({ description: 'A plan: the import ran in a transaction that was rolled back' }),
    conflict: Type.Record(Type.String(), Type.String(), {
      description: '`default` and per-entity conflict policies: skip, overwrite, newest_wins, fail',
    }),
    all_or_nothing: Type.Boolean(),
    notify: Type.Boolean(),
    status: Type.Enum(['queued', 'running', 'completed', 'failed', 'cancelled']),
    phase: Type.Union([Type.String({ description: 'The entity being imported' }), Type.Null()]),
    items_done: Type.Integer({ minimum: 0 }),
    bytes_done: Type.Integer({
      minimum: 0,
      description: 'Bytes of the input read so far (of `input_bytes`)',
    }),
    checkpoint: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
    report: Type.Record(Type.String(), Type.Unknown(), {
      description:
        '`entities`: per entity `created`, `updated`, `unchanged`, `conflicts`, `rejected`, and the first conflicts (with the fields that differ), ids assigned and rejections; `items`; `warnings`',
    }),
    rejected_count: Type.Integer({ minimum: 0 }),
    input_deleted_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
      description: 'When the uploaded file was deleted (7 days after the last import that used it)',
    }),
    error_code: NullableString,
    error: NullableString,
    created_by: Type.String(),
    created_at: Type.String({ format: 'date-time' }),
    started_at: NullableTimestamp,
    finished_at: NullableTimestamp,
  },
  { additionalProperties: false },
);

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) }, { additionalProperties: false });

/** Options of an import, from a JSON body or the fields of a multipart upload. */
interface ImportFields {
  source?: unknown;
  dataset?: unknown;
  object_key?: unknown;
  dry_run?: unknown;
  conflict?: unknown;
  all_or_nothing?: unknown;
  notify?: unknown;
}

const FIELDS = [
  'source',
  'dataset',
  'object_key',
  'dry_run',
  'conflict',
  'all_or_nothing',
  'notify',
] as const;

function flag(value: unknown, name: string): boolean {
  if (value === undefined || value === null || value === '') return false;
  if (typeof value === 'boolean') return value;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw invalid(name, 'must be true or false');
}

function text(value: unknown, name: string, max = 200): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string' || value.length > max)
    throw invalid(name, `must be a string of at most ${max} characters`);
  return value;
}

/** The parts of a multipart body; a body that is not valid multipart is a 400, not a 500. */
async function* multipartParts(request: FastifyRequest): AsyncGenerator<Multipart> {
  try {
    yield* request.parts();
  } catch (err) {
    if (err instanceof FerryError || (err as { statusCode?: number }).statusCode === 413) throw err;
    throw new FerryError(
      'malformed_request',
      `the multipart body could not be read: ${(err as Error).message.slice(0, 200)}`,
    );
  }
}

/** The conflict option: a policy, `a,b=c` text, or an object of entity → policy. */
function conflictOf(value: unknown) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value as Record<string, unknown>))
      if (typeof v !== 'string' || !(CONFLICT_POLICIES as readonly string[]).includes(v))
        throw invalid(`conflict.${k}`, 'must be a conflict policy', CONFLICT_POLICIES);
  }
  if (value && typeof value === 'object' && !Array.isArray(value))
    return parseConflict(
      Object.entries(value as Record<string, unknown>)
        .map(([k, v]) => (k === 'default' ? String(v) : `${k}=${String(v)}`))
        .join(','),
    );
  return parseConflict(text(value, 'conflict'));
}

/** Imports: upload or name a file, plan or apply, follow, fetch the rejected items (docs/import.md). */
export const importRoutes: RoutePlugin = async (app, { database, config, store, queue, now }) => {
  await app.register(multipart, {
    limits: { fileSize: config.imports.limits.maxBytes, files: 1, fields: 20, fieldSize: 4096, parts: 25 },
    throwFileSizeLimit: true,
  });
  let context: ImportContext | undefined;
  const ctx = (): ImportContext => {
    if (!store) throw new FerryError('service_unavailable', 'no object store is configured');
    context ??= importContext({ database, config, store, now });
    return context;
  };
  const needQueue = () => {
    if (!queue) throw new FerryError('service_unavailable', 'no job queue is configured');
    return queue;
  };

  app.get(
    '/api/v1/imports',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['imports'],
        summary: "The tenant's imports and plans, newest first (admin)",
        security,
        response: { 200: listResponse(Import), ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'imports:manage');
      return listBody(await listImports(database.db, auth.tenantId));
    },
  );

  app.post(
    '/api/v1/imports',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['imports'],
        summary: 'Plan or start an import (admin)',
        description:
          'Either `multipart/form-data` with the file in a part named `file` and the options as fields, or ' +
          '`application/json` naming a file already uploaded (`object_key`, the `input_ref` of an earlier import, e.g. its plan). ' +
          'Options: `source` (required: ' +
          IMPORT_SOURCES.join(', ') +
          '), `dataset` (csv/json/ndjson), `dry_run` (a plan: nothing is written), `conflict` (skip, overwrite, newest_wins, fail; ' +
          'per entity as `customers=overwrite` or an object), `all_or_nothing`, `notify`. Answers 202 with the queued import; ' +
          'poll `GET /api/v1/imports/{id}`.',
        security,
        response: {
          202: jsonResponse(Import, {
            description: 'Accepted: the import is queued; `Location` is its URL',
            headers: ['Location'],
          }),
          ...problemResponses(400, 401, 403, 404, 413, 415, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'imports:manage');
      const q = needQueue();
      const id = randomUUID();
      const fields: ImportFields = {};
      let input: ImportInputRef | undefined;
      let stored: string | null = null;
      let row: ImportRow;
      try {
        if (request.isMultipart()) {
          for await (const part of multipartParts(request)) {
            if (part.type === 'file') {
              if (part.fieldname !== 'file')
                throw invalid(part.fieldname, 'the file goes in a part named "file"');
              input = await storeUpload(ctx(), auth.tenantId, id, part.filename || 'upload', part.file);
              stored = input.kind === 'stored' ? input.key : null;
              if (part.file.truncated)
                throw new FerryError(
                  'payload_too_large',
                  `the file exceeds FERRY_IMPORT_MAX_BYTES (${config.imports.limits.maxBytes} bytes)`,
                );
            } else if ((FIELDS as readonly string[]).includes(part.fieldname)) {
              (fields as Record<string, unknown>)[part.fieldname] = part.value;
            } else throw invalid(part.fieldname, 'is not an import option', [...FIELDS, 'file']);
          }
          if (!input) throw invalid('file', 'a multipart import needs the file in a part named "file"');
        } else {
          const body = request.body;
          if (!body || typeof body !== 'object' || Array.isArray(body))
            throw invalid('body', 'must be a JSON object');
          for (const key of Object.keys(body))
            if (!(FIELDS as readonly string[]).includes(key))
              throw invalid(key, 'is not an import option', FIELDS);
          Object.assign(fields, body);
          const key = text(fields.object_key, 'object_key', 1024);
          if (!key)
            throw invalid('object_key', 'name an uploaded file, or upload one as multipart/form-data');
          if (!key.startsWith(`imports/${auth.tenantId}/`) || key.includes('..'))
            throw new FerryError('not_found', `object ${key} not found`);
          const head = await ctx().store.head(key);
          if (!head)
            throw new FerryError(
              'not_found',
              `object ${key} not found (uploads are kept 7 days after their last import)`,
            );
          input = { kind: 'stored', key, name: key.split('/').pop()!, bytes: head.bytes };
        }
        const source = text(fields.source, 'source');
        if (!source) throw invalid('source', 'is required', IMPORT_SOURCES);
        row = await createImport(
          ctx(),
          {
            tenantId: auth.tenantId,
            source: checkSource(source),
            dataset: text(fields.dataset, 'dataset', 64),
            input,
            dryRun: flag(fields.dry_run, 'dry_run'),
            conflict: conflictOf(fields.conflict),
            allOrNothing: flag(fields.all_or_nothing, 'all_or_nothing'),
            notify: flag(fields.notify, 'notify'),
            actor: auth.actor,
          },
          id,
        );
      } catch (err) {
        // An upload whose request failed is not kept (it may hold personal data, and nothing names it).
        if (stored)
          await ctx()
            .store.delete(stored)
            .catch(() => {});
        throw err;
      }
      await q.send(IMPORT_RUN_JOB, { id });
      return reply.code(202).header('location', `/api/v1/imports/${id}`).send(row);
    },
  );

  app.get(
    '/api/v1/imports/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['imports'],
        summary: 'An import: status, progress, and its plan or report (admin)',
        security,
        params: IdParams,
        response: { 200: Import, ...problemResponses(401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'imports:manage');
      const row = await getImport(database.db, auth.tenantId, request.params.id);
      if (!row) throw new FerryError('not_found', `import ${request.params.id} not found`);
      return row;
    },
  );

  app.get(
    '/api/v1/imports/:id/rejected',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['imports'],
        summary: 'The rejected items, to fix and import again (admin)',
        description:
          'CSV for a CSV import (the original rows with an `errors` column), otherwise NDJSON (each original record with `errors`).',
        security,
        params: IdParams,
        response: {
          200: {
            description: 'The rejected items',
            headers: responseHeaders('Content-Disposition'),
            content: {
              'text/csv': { schema: Type.String() },
              'application/x-ndjson': { schema: Type.String() },
            },
          },
          ...problemResponses(401, 403, 404, 429),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'imports:manage');
      const row = await getImport(database.db, auth.tenantId, request.params.id);
      if (!row) throw new FerryError('not_found', `import ${request.params.id} not found`);
      const file = await rejectedFile(database.db, row);
      return (
        reply
          .header('content-type', file.contentType)
          .header('content-disposition', `attachment; filename="${file.filename}"`)
          // A stream, which Fastify sends as it is; the schema describes the text it carries.
          .send(file.body as unknown as string)
      );
    },
  );

  app.delete(
    '/api/v1/imports/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['imports'],
        summary: 'Cancel a queued or running import (admin)',
        description:
          'A partial import keeps the batches it committed; a plan or an all-or-nothing import writes nothing.',
        security,
        params: IdParams,
        response: { 200: Import, ...problemResponses(401, 403, 404, 409, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'imports:manage');
      return cancelImport(ctx(), auth.tenantId, request.params.id, auth.actor);
    },
  );
};
