import { Type } from 'typebox';
import { TARGET_TYPES } from '../../deliver/types.ts';
import { FREQUENCY_TYPES, WEEKDAYS } from '../../schedules/frequency.ts';
import { LAYOUTS, SELECTION_MODES, WINDOW_PERIODS } from '../../schedules/model.ts';
import {
  createSchedule,
  deleteSchedule,
  getSchedule,
  listRuns,
  listSchedules,
  pauseSchedule,
  registerScheduleUsage,
  resumeSchedule,
  runScheduleNow,
  type ScheduleServiceDeps,
  testScheduleTarget,
  updateSchedule,
} from '../../schedules/service.ts';
import { COMPRESSIONS } from '../../domain/compression.ts';
import { REQUEST_PACKAGE_KINDS } from '../../domain/package-kind.ts';
import { PII_LEVELS } from '../../domain/pii-level.ts';
import { RUN_STATUSES } from '../../domain/schedule-state.ts';
import { problemResponses } from '../problem.ts';
import { jsonResponse, listBody, listResponse } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const closed = { additionalProperties: false } as const;
const Instant = Type.String({ format: 'date-time' });
const NullableInstant = Type.Union([Instant, Type.Null()]);
const NullableString = Type.Union([Type.String(), Type.Null()]);
const Emails = Type.Array(Type.String({ maxLength: 254 }), { maxItems: 20 });

const Frequency = Type.Object(
  {
    type: Type.Enum(FREQUENCY_TYPES),
    days: Type.Optional(
      Type.Array(Type.String({ maxLength: 12 }), {
        minItems: 1,
        maxItems: 7,
        description: `weekly: the days (${WEEKDAYS.join(', ')}, or their first three letters)`,
      }),
    ),
    day_of_month: Type.Optional(
      Type.Union([Type.Integer({ minimum: 1, maximum: 31 }), Type.Literal('last')], {
        description: 'monthly: the date (29-31 run on the last day of shorter months), or "last"',
      }),
    ),
    expression: Type.Optional(
      Type.String({ maxLength: 120, description: 'cron: five fields, evaluated in the schedule time zone' }),
    ),
  },
  { ...closed, description: 'daily, weekly on chosen days, monthly on a chosen date, or a cron expression' },
);

const DatasetEntry = Type.Object(
  {
    dataset: Type.String({ maxLength: 64 }),
    mode: Type.Optional(
      Type.Enum(SELECTION_MODES, {
        description:
          '`incremental`: changes since the last delivered run (with deletions); `window`: a time range before ' +
          'the run; `full`: everything. Default: incremental where the dataset has a change feed, else ' +
          'previous_day for analytics and revenue_attribution, else full',
      }),
    ),
    days: Type.Optional(Type.Integer({ minimum: 1, maximum: 366, description: 'window: the last N days' })),
    period: Type.Optional(
      Type.Enum(WINDOW_PERIODS, {
        description: 'window: a whole period before the run, in the schedule time zone',
      }),
    ),
    format: Type.Optional(
      Type.String({ maxLength: 20, description: "This dataset's format, if not the schedule's" }),
    ),
  },
  closed,
);

const DatasetEntryView = Type.Object(
  {
    ...DatasetEntry.properties,
    config: Type.Optional(
      Type.String({
        format: 'uuid',
        description: 'The saved export configuration this entry runs (its schedule, docs/export-configs.md)',
      }),
    ),
  },
  closed,
);

const TargetInput = Type.Object(
  {
    type: Type.Enum(TARGET_TYPES),
    required: Type.Optional(
      Type.Boolean({
        description:
          'A run counts as delivered only once every required target has every file (default true)',
      }),
    ),
  },
  {
    additionalProperties: true,
    description:
      'A delivery target (see docs/destinations.md); secrets are stored encrypted and never returned',
  },
);

const Notifications = Type.Object(
  {
    success: Type.Optional(Emails),
    failure: Type.Optional(Emails),
  },
  {
    ...closed,
    description:
      'Email addresses told about delivered runs (success) and runs that failed for good (failure)',
  },
);

const Retention = Type.Object(
  {
    local_days: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 3650,
        description: 'Days Ferry keeps each file (default: the plan retention)',
      }),
    ),
    target_days: Type.Optional(
      Type.Union([Type.Integer({ minimum: 1, maximum: 3650 }), Type.Null()], {
        description:
          'Days files stay at S3 targets; older objects under the prefix are removed after each delivered run',
      }),
    ),
  },
  closed,
);

const scheduleFields = {
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  frequency: Type.Optional(Frequency),
  time: Type.Optional(
    Type.String({ maxLength: 5, description: 'HH:MM in the schedule time zone', examples: ['02:30'] }),
  ),
  timezone: Type.Optional(
    Type.String({
      maxLength: 64,
      description: "IANA time zone (default: the tenant's)",
      examples: ['Europe/Berlin'],
    }),
  ),
  datasets: Type.Optional(Type.Array(DatasetEntry, { minItems: 1, maxItems: 20 })),
  format: Type.Optional(
    Type.String({ maxLength: 20, description: 'File format (default: each dataset’s first format)' }),
  ),
  compression: Type.Optional(Type.Enum(COMPRESSIONS)),
  package: Type.Optional(
    Type.Enum(REQUEST_PACKAGE_KINDS, {
      description: '`none`: one file per dataset; `zip`/`tar.gz`: one archive per run',
    }),
  ),
  pii: Type.Optional(Type.Enum(PII_LEVELS)),
  targets: Type.Optional(Type.Array(TargetInput, { maxItems: 10 })),
  notifications: Type.Optional(Notifications),
  retention: Type.Optional(Retention),
  status: Type.Optional(Type.Enum(['active', 'paused'])),
  layout: Type.Optional(
    Type.Enum(LAYOUTS, {
      description:
        '`files` (default): one file per dataset (or one package) per run; `lake`: a Hive-partitioned ' +
        'Parquet data lake by day at each S3 target, rewriting the days that changed (docs/bi/data-lake.md)',
    }),
  ),
};

const ExportConfig = Type.Object(
  {
    name: Type.Optional(Type.String({ maxLength: 200 })),
    schedule: Type.Optional(
      Type.String({ maxLength: 120, description: "A cron expression in the tenant's time zone" }),
    ),
    timezone: Type.Optional(Type.String({ maxLength: 64 })),
    data_types: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 20 })),
    format: Type.Optional(Type.String({ maxLength: 20 })),
    compression: Type.Optional(Type.String({ maxLength: 20 })),
    pii: Type.Optional(Type.String({ maxLength: 20 })),
    destination: Type.Optional(Type.Object({}, { additionalProperties: true })),
    notifications: Type.Optional(Notifications),
    retention: Type.Optional(
      Type.Record(
        Type.String({ maxLength: 20 }),
        Type.Union([Type.String({ maxLength: 20 }), Type.Integer()]),
        {
          description:
            '`local`: how long Ferry keeps files; `<destination type>` (e.g. `s3`): how long the destination does. Values like 7_days, 6_months, 1_year',
        },
      ),
    ),
    enabled: Type.Optional(Type.Boolean()),
  },
  { ...closed, description: 'The automated-export configuration of the product documentation' },
);

const CreateBody = Type.Object(
  { ...scheduleFields, export_config: Type.Optional(ExportConfig) },
  {
    ...closed,
    description:
      'Either the schedule fields (name, frequency, time, datasets, ... required as documented) or export_config',
  },
);
const PatchBody = Type.Object(scheduleFields, closed);

const TargetView = Type.Object(
  { type: Type.String(), required: Type.Boolean() },
  { additionalProperties: true, description: 'The target with every secret masked (••••abcd)' },
);

const ScheduleView = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    name: Type.String(),
    status: Type.Enum(['active', 'paused']),
    frequency: Frequency,
    time: NullableString,
    timezone: Type.String(),
    cron: Type.String({ description: 'The cron expression the frequency compiles to (in `timezone`)' }),
    datasets: Type.Array(DatasetEntryView),
    format: NullableString,
    compression: Type.String(),
    package: Type.String(),
    pii: Type.String(),
    layout: Type.Enum(LAYOUTS),
    targets: Type.Array(TargetView),
    notifications: Type.Object(
      { success: Type.Array(Type.String()), failure: Type.Array(Type.String()) },
      closed,
    ),
    retention: Type.Object(
      { local_days: Type.Integer(), target_days: Type.Union([Type.Integer(), Type.Null()]) },
      closed,
    ),
    next_run_at: Type.Union([Instant, Type.Null()], { description: 'The next due slot; null while paused' }),
    next_runs: Type.Array(Instant, { description: 'The next slots (up to three), for a preview' }),
    last_run: Type.Union([
      Type.Object(
        {
          id: Type.String(),
          run_number: Type.Integer(),
          status: Type.Enum(RUN_STATUSES),
          due_at: Instant,
          finished_at: NullableInstant,
        },
        closed,
      ),
      Type.Null(),
    ]),
    checkpoints: Type.Optional(
      Type.Array(
        Type.Object({ dataset: Type.String(), run_id: NullableString, updated_at: Instant }, closed),
        { description: 'Incremental datasets: the run whose delivery set the checkpoint' },
      ),
    ),
    created_at: Instant,
    updated_at: Instant,
    links: Type.Object({ self: Type.String(), runs: Type.String(), run: Type.String() }, closed),
  },
  closed,
);

const Count = Type.Object(
  {
    records: Type.Integer(),
    tombstones: Type.Integer(),
    mode: Type.String(),
    from: NullableString,
    to: NullableString,
  },
  closed,
);

const RunView = Type.Object(
  {
    id: Type.String(),
    schedule_id: Type.String(),
    run_number: Type.Integer(),
    trigger: Type.Enum(['scheduled', 'manual']),
    status: Type.Enum(RUN_STATUSES),
    due_at: Instant,
    created_at: Instant,
    started_at: NullableInstant,
    finished_at: NullableInstant,
    attempts: Type.Integer(),
    records: Type.Integer({ description: 'Rows written (upserts)' }),
    tombstones: Type.Integer({ description: 'Deletions written (incremental datasets)' }),
    bytes: Type.Integer(),
    checksum: Type.Union([
      Type.Object({ algorithm: Type.Literal('sha256'), value: Type.String() }, closed),
      Type.Null(),
    ]),
    files: Type.Array(
      Type.Object(
        {
          export_id: Type.String(),
          name: Type.String(),
          datasets: Type.Array(Type.String()),
          bytes: Type.Integer(),
          records: Type.Integer(),
          tombstones: Type.Integer(),
          sha256: Type.String(),
          counts: Type.Record(Type.String(), Count),
          expires_at: NullableString,
          links: Type.Object({ export: Type.String(), download: Type.String() }, closed),
        },
        closed,
      ),
    ),
    deliveries: Type.Array(
      Type.Object(
        {
          target: Type.Object(
            {
              index: Type.Integer(),
              type: Type.String(),
              name: NullableString,
              label: Type.String(),
              required: Type.Boolean(),
            },
            closed,
          ),
          status: Type.Enum(['delivered', 'failed', 'pending']),
          files: Type.Array(
            Type.Object(
              {
                export_id: Type.String(),
                status: Type.Enum(['delivered', 'failed', 'pending']),
                attempts: Type.Integer(),
                location: NullableString,
                error: NullableString,
                error_code: NullableString,
                checksum_verified: Type.Boolean(),
                at: NullableString,
              },
              closed,
            ),
          ),
        },
        closed,
      ),
      { description: 'Per target: delivered once it has every file of the run' },
    ),
    checkpoint_advanced: Type.Boolean({ description: 'Incremental datasets: the run moved the checkpoint' }),
    error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }, closed), Type.Null()]),
  },
  closed,
);

const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, closed);

/**
 * Scheduled exports: create, list, show, change, delete, pause, resume, run now, and
 * the run history. See docs/schedules.md.
 */
export const scheduleRoutes: RoutePlugin = async (app, deps) => {
  registerScheduleUsage();
  const service: ScheduleServiceDeps = {
    database: deps.database,
    config: deps.config,
    secrets: deps.secrets,
    queue: deps.queue,
    now: deps.now ?? (() => new Date()),
    logger: app.log as ScheduleServiceDeps['logger'],
  };
  const tags = ['schedules'];
  const security = [{ bearer: [] }];

  app.post(
    '/api/v1/schedules',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Create a schedule',
        description:
          'Native fields (name, frequency, time, timezone, datasets, ...) or `{"export_config": {...}}` as in ' +
          'the product documentation. Target secrets are stored encrypted and shown masked. Creating an active ' +
          "schedule counts against the plan's active schedules.",
        security,
        body: CreateBody,
        response: {
          201: jsonResponse(ScheduleView, {
            description: 'Created; `Location` is its URL',
            headers: ['Location'],
          }),
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request, reply) => {
      const created = await createSchedule(service, request.auth!, request.body);
      return reply.code(201).header('location', created.links.self).send(created);
    },
  );

  app.get(
    '/api/v1/schedules',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "The tenant's schedules",
        security,
        querystring: Type.Object(
          {
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
            cursor: Type.Optional(
              Type.String({ maxLength: 200, description: '`next_cursor` of the previous page' }),
            ),
          },
          closed,
        ),
        response: {
          200: listResponse(ScheduleView, { next_cursor: NullableString }),
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request) => {
      const { items, ...page } = await listSchedules(service, request.auth!, request.query);
      return listBody(items, page);
    },
  );

  app.get(
    '/api/v1/schedules/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'One schedule, with its next runs and checkpoints',
        security,
        params: IdParams,
        response: { 200: ScheduleView, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => getSchedule(service, request.auth!, request.params.id),
  );

  app.patch(
    '/api/v1/schedules/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Change a schedule',
        description:
          'Only the fields given change; the result is checked as a whole. `targets` replaces every target ' +
          '(give their secrets again). A changed frequency, time or zone takes effect from the next slot after now.',
        security,
        params: IdParams,
        body: PatchBody,
        response: { 200: ScheduleView, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => updateSchedule(service, request.auth!, request.params.id, request.body),
  );

  app.delete(
    '/api/v1/schedules/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Delete a schedule',
        description:
          'Answers the schedule as it was. Its history and checkpoints go with it; files already made stay until their retention ends.',
        security,
        params: IdParams,
        response: { 200: ScheduleView, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => deleteSchedule(service, request.auth!, request.params.id),
  );

  app.post(
    '/api/v1/schedules/:id/pause',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Pause a schedule',
        security,
        params: IdParams,
        response: { 200: ScheduleView, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => pauseSchedule(service, request.auth!, request.params.id),
  );

  app.post(
    '/api/v1/schedules/:id/resume',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Resume a paused schedule',
        description: "Counts against the plan's active schedules; runs from the next slot after now.",
        security,
        params: IdParams,
        response: { 200: ScheduleView, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => resumeSchedule(service, request.auth!, request.params.id),
  );

  app.post(
    '/api/v1/schedules/:id/run',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Run a schedule now',
        description:
          'Queues a run due now (202), also for a paused schedule. It starts once earlier runs of the schedule ' +
          'have finished; follow it in the history.',
        security,
        params: IdParams,
        response: { 202: RunView, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (request, reply) => {
      const run = await runScheduleNow(service, request.auth!, request.params.id);
      return reply.code(202).send(run);
    },
  );

  app.post(
    '/api/v1/schedules/:id/targets/:index/test',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "Test one of a schedule's destinations",
        description:
          'Delivers a small text file, `ferry-connection-test.txt`, to the destination at `index` (from 0, in the order of ' +
          '`targets`) with its saved credentials: one attempt, through the same code and checks as a run. ' +
          'S3 and SFTP keep the file; an email destination receives it as an attachment. Webhook destinations are ' +
          'not tested this way (400). Answers the delivery result; a failed test is a 200 with `status: "failed"`.',
        security,
        params: Type.Object(
          { id: Type.String({ format: 'uuid' }), index: Type.Integer({ minimum: 0, maximum: 9 }) },
          closed,
        ),
        response: {
          200: Type.Object(
            {
              status: Type.Enum(['delivered', 'failed']),
              target: Type.Object(
                { type: Type.String(), name: NullableString, label: Type.String() },
                closed,
              ),
              location: NullableString,
              bytes_sent: Type.Integer(),
              checksum_verified: Type.Boolean(),
              error: NullableString,
              error_code: NullableString,
            },
            closed,
          ),
          ...problemResponses(400, 401, 403, 404, 429),
        },
      },
    },
    async (request) => {
      const result = await testScheduleTarget(
        service,
        request.auth!,
        request.params.id,
        request.params.index,
        {
          clients: deps.deliveryClients,
          mailer: deps.mailer,
        },
      );
      return {
        status: result.status,
        target: result.target,
        location: result.location ?? null,
        bytes_sent: result.bytesSent,
        checksum_verified: result.checksumVerified,
        error: result.error ?? null,
        error_code: result.errorCode ?? null,
      };
    },
  );

  app.get(
    '/api/v1/schedules/:id/runs',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "A schedule's run history",
        description:
          'Newest first: each run with its status, counts, size, checksums and the delivery result per target.',
        security,
        params: IdParams,
        querystring: Type.Object(
          {
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
            before: Type.Optional(
              // Run numbers are PostgreSQL integers.
              Type.Integer({
                minimum: 1,
                maximum: 2_147_483_647,
                description: '`next_before` of the previous page',
              }),
            ),
          },
          closed,
        ),
        response: {
          200: listResponse(RunView, { next_before: Type.Union([Type.Integer(), Type.Null()]) }),
          ...problemResponses(400, 401, 403, 404, 429),
        },
      },
    },
    async (request) => {
      const { items, ...page } = await listRuns(service, request.auth!, request.params.id, request.query);
      return listBody(items, page);
    },
  );
};
