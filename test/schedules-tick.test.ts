import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Config } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { createJobQueue, type JobQueue, jobsSchema } from '../src/jobs/queue.ts';
import { JOBS } from '../src/compose.ts';
import { createLogger } from '../src/lib/logger.ts';
import { localDate, nextRunAfter, nextRuns, parseTiming, type Timing } from '../src/schedules/frequency.ts';
import type { ScheduleConfig } from '../src/schedules/model.ts';
import { scheduleDb } from '../src/schedules/tables.ts';
import { SCHEDULE_RUN_QUEUE, tickSchedules } from '../src/schedules/tick.ts';
import { authTestConfig, createTenant, type TestTenant } from './support/fixtures/auth.ts';
import {
  createTestDatabase,
  dropJobsSchema,
  DIALECTS,
  TEST_DATABASE_URL,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';

const BERLIN_0230 = parseTiming({ frequency: { type: 'daily' }, time: '02:30', timezone: 'Europe/Berlin' });

/** The runs of a timing between two instants, by local calendar day. */
function runsPerDay(timing: Timing, from: string, to: string): Map<string, string[]> {
  const days = new Map<string, string[]>();
  for (const run of nextRuns(timing, new Date(from), 400)) {
    if (run.getTime() >= new Date(to).getTime()) break;
    const d = localDate(run, timing.timezone);
    const key = `${d.year}-${String(d.month).padStart(2, '0')}-${String(d.day).padStart(2, '0')}`;
    days.set(key, [...(days.get(key) ?? []), run.toISOString()]);
  }
  return days;
}

describe('schedule timing across daylight-saving changes', () => {
  test('a 02:30 Europe/Berlin daily schedule runs once on the spring-forward day (at 03:00) and once on the fall-back day', () => {
    const spring = runsPerDay(BERLIN_0230, '2027-03-26T00:00:00Z', '2027-03-31T00:00:00Z');
    expect([...spring.keys()]).toEqual([
      '2027-03-26',
      '2027-03-27',
      '2027-03-28',
      '2027-03-29',
      '2027-03-30',
    ]);
    for (const runs of spring.values()) expect(runs).toHaveLength(1);
    expect(spring.get('2027-03-27')).toEqual(['2027-03-27T01:30:00.000Z']); // 02:30 CET
    expect(spring.get('2027-03-28')).toEqual(['2027-03-28T01:00:00.000Z']); // 02:30 does not exist: 03:00 CEST
    expect(spring.get('2027-03-29')).toEqual(['2027-03-29T00:30:00.000Z']); // 02:30 CEST

    const autumn = runsPerDay(BERLIN_0230, '2027-10-29T00:00:00Z', '2027-11-03T00:00:00Z');
    expect([...autumn.keys()]).toEqual([
      '2027-10-29',
      '2027-10-30',
      '2027-10-31',
      '2027-11-01',
      '2027-11-02',
    ]);
    for (const runs of autumn.values()) expect(runs).toHaveLength(1);
    expect(autumn.get('2027-10-30')).toEqual(['2027-10-30T00:30:00.000Z']); // 02:30 CEST
    expect(autumn.get('2027-10-31')).toEqual(['2027-10-31T00:30:00.000Z']); // the first of the two 02:30s
    expect(autumn.get('2027-11-01')).toEqual(['2027-11-01T01:30:00.000Z']); // 02:30 CET
  });

  test('weekly and monthly frequencies keep their local time and date', () => {
    const weekly = parseTiming({
      frequency: { type: 'weekly', days: ['sun', 'wed'] },
      time: '23:45',
      timezone: 'America/New_York',
    });
    for (const run of nextRuns(weekly, new Date('2027-03-01T00:00:00Z'), 10)) {
      const local = new Intl.DateTimeFormat('en-US', {
        timeZone: 'America/New_York',
        weekday: 'short',
        hour: '2-digit',
        minute: '2-digit',
        hourCycle: 'h23',
      }).format(run);
      expect(local).toMatch(/^(Sun|Wed) 23:45$/);
    }
    const monthly = parseTiming({
      frequency: { type: 'monthly', day_of_month: 30 },
      time: '08:00',
      timezone: 'UTC',
    });
    expect(nextRuns(monthly, new Date('2027-01-01T00:00:00Z'), 4).map((d) => d.toISOString())).toEqual([
      '2027-01-30T08:00:00.000Z',
      '2027-02-28T08:00:00.000Z',
      '2027-03-30T08:00:00.000Z',
      '2027-04-30T08:00:00.000Z',
    ]);
    const last = parseTiming({
      frequency: { type: 'monthly', day_of_month: 'last' },
      time: '08:00',
      timezone: 'UTC',
    });
    expect(nextRunAfter(last, new Date('2028-02-01T00:00:00Z'))?.toISOString()).toBe(
      '2028-02-29T08:00:00.000Z',
    );
  });
});

const CONFIG: ScheduleConfig = {
  datasets: [{ dataset: 'conversations', mode: 'incremental' }],
  format: 'ndjson',
  compression: 'none',
  package: 'none',
  pii: 'enhanced',
  targets: [],
  notifications: { success: [], failure: [] },
  retention: { local_days: 7, target_days: null },
};

async function insertSchedule(
  database: Database,
  tenant: TestTenant,
  timing: Timing,
  nextRunAt: Date,
): Promise<string> {
  const id = randomUUID();
  await scheduleDb(database)
    .insertInto('schedules')
    .values({
      id,
      tenant_id: tenant.id,
      name: `schedule ${id.slice(0, 8)}`,
      frequency: JSON.stringify(timing.frequency),
      time_of_day: timing.time,
      timezone: timing.timezone,
      cron: timing.cron,
      config: JSON.stringify(CONFIG),
      next_run_at: nextRunAt,
      actor: 'test',
    })
    .execute();
  return id;
}

/** The runs that have a job in the queue (a run's job may be sent again when it sat unstarted for long). */
async function runsWithJobs(database: Database, config: Config): Promise<Set<string>> {
  const result = await sql<{
    id: string;
  }>`SELECT data->>'id' AS id FROM ${sql.table(`${jobsSchema(config)}.job`)} WHERE name = ${SCHEDULE_RUN_QUEUE}`.execute(
    database.db,
  );
  return new Set(result.rows.map((r) => r.id));
}

for (const dialect of DIALECTS) {
  describe(`scheduler tick on ${dialect}`, () => {
    let t: TestDatabase;
    let config: Config;
    let queue: JobQueue;
    let tenant: TestTenant;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      config = authTestConfig(t.env);
      queue = await createJobQueue(t.database, config, createLogger({ logLevel: 'silent' }), {
        definitions: JOBS,
        supervise: false,
      });
      tenant = await createTenant(t.database);
    });
    afterAll(async () => {
      await queue?.stop(1_000);
      await t?.drop();
      await dropJobsSchema(config);
    });

    test('ticking every 10 minutes through both DST days creates exactly one run per day, at the expected instants', async () => {
      const id = await insertSchedule(
        t.database,
        tenant,
        BERLIN_0230,
        nextRunAfter(BERLIN_0230, new Date('2027-03-27T12:00:00Z'))!,
      );
      const days: [string, string][] = [
        ['2027-03-27T12:00:00Z', '2027-03-29T12:00:00Z'],
        ['2027-10-30T12:00:00Z', '2027-11-01T12:00:00Z'],
      ];
      const created: string[] = [];
      for (const [from, to] of days) {
        await scheduleDb(t.database)
          .updateTable('schedules')
          .set({ next_run_at: nextRunAfter(BERLIN_0230, new Date(from)) })
          .where('id', '=', id)
          .execute();
        for (let at = new Date(from).getTime(); at < new Date(to).getTime(); at += 10 * 60_000) {
          const result = await tickSchedules({ database: t.database, queue, now: () => new Date(at) });
          created.push(...result.created);
        }
      }
      const runs = await scheduleDb(t.database)
        .selectFrom('schedule_runs')
        .select(['id', 'due_at', 'run_number'])
        .where('schedule_id', '=', id)
        .orderBy('due_at')
        .execute();
      expect(runs.map((r) => r.due_at.toISOString())).toEqual([
        '2027-03-28T01:00:00.000Z',
        '2027-03-29T00:30:00.000Z',
        '2027-10-31T00:30:00.000Z',
        '2027-11-01T01:30:00.000Z',
      ]);
      expect(runs.map((r) => r.run_number)).toEqual([1, 2, 3, 4]);
      expect(created.sort()).toEqual(runs.map((r) => r.id).sort());
    });

    test('missed slots collapse into one run of the latest; the next slot is in the future', async () => {
      const daily = parseTiming({ frequency: { type: 'daily' }, time: '06:00', timezone: 'UTC' });
      const id = await insertSchedule(t.database, tenant, daily, new Date('2030-01-01T06:00:00Z'));
      const now = new Date('2030-01-05T09:00:00Z');
      const result = await tickSchedules({ database: t.database, queue, now: () => now });
      const runs = await scheduleDb(t.database)
        .selectFrom('schedule_runs')
        .select(['id', 'due_at', 'trigger', 'status'])
        .where('schedule_id', '=', id)
        .execute();
      expect(runs).toHaveLength(1);
      const { id: runId, ...run } = runs[0]!;
      expect(result.created).toContain(runId);
      expect(run).toEqual({
        due_at: new Date('2030-01-05T06:00:00Z'),
        trigger: 'scheduled',
        status: 'queued',
      });
      const schedule = await scheduleDb(t.database)
        .selectFrom('schedules')
        .select('next_run_at')
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
      expect(schedule.next_run_at).toEqual(new Date('2030-01-06T06:00:00Z'));
    });

    test("a closed account's schedules wait, and run again when it is reopened", async () => {
      const closed = await createTenant(t.database);
      const daily = parseTiming({ frequency: { type: 'daily' }, time: '06:00', timezone: 'UTC' });
      const id = await insertSchedule(t.database, closed, daily, new Date('2031-01-01T06:00:00Z'));
      await sql`UPDATE tenants SET status = 'closing', closed_at = now() WHERE id = ${closed.id}`.execute(
        t.database.db,
      );
      const now = new Date('2031-01-01T07:00:00Z');
      await tickSchedules({ database: t.database, queue, now: () => now });
      const runs = () =>
        scheduleDb(t.database)
          .selectFrom('schedule_runs')
          .select('id')
          .where('schedule_id', '=', id)
          .execute();
      expect(await runs()).toHaveLength(0);
      await sql`UPDATE tenants SET status = 'active', closed_at = NULL WHERE id = ${closed.id}`.execute(
        t.database.db,
      );
      await tickSchedules({ database: t.database, queue, now: () => now });
      expect(await runs()).toHaveLength(1);
    });
  });
}

describe.skipIf(!testsDialect('postgres'))(
  'scheduler tick: exactly once under concurrency (PostgreSQL, two connection pools)',
  () => {
    let t: TestDatabase;
    let config: Config;
    let second: Database;
    const queues: JobQueue[] = [];
    let tenant: TestTenant;

    beforeAll(async () => {
      t = await createTestDatabase('postgres');
      config = authTestConfig(t.env);
      // A second "process": its own pool of connections to the same schema, its own job queue client.
      second = postgresDatabase({ connectionString: TEST_DATABASE_URL, schema: t.schema!, max: 4 });
      const logger = createLogger({ logLevel: 'silent' });
      queues.push(await createJobQueue(t.database, config, logger, { definitions: JOBS, supervise: false }));
      queues.push(await createJobQueue(second, config, logger, { definitions: JOBS, supervise: false }));
      tenant = await createTenant(t.database);
    });
    afterAll(async () => {
      for (const queue of queues) await queue.stop(1_000);
      await second?.close();
      await t?.drop();
      await dropJobsSchema(config);
    });

    test('concurrent ticks of two pools claim every due slot once, and every run gets its job', async () => {
      const hourly = parseTiming({
        frequency: { type: 'cron', expression: '0 * * * *' },
        time: undefined,
        timezone: 'UTC',
      });
      const start = new Date('2031-06-01T00:00:00Z');
      const ids: string[] = [];
      for (let i = 0; i < 40; i++) ids.push(await insertSchedule(t.database, tenant, hourly, start));
      const databases = [t.database, second];
      let created = 0;
      // Eight rounds of two simultaneous ticks, each round one hour later: 40 schedules × 8 slots.
      for (let round = 0; round < 8; round++) {
        const now = new Date(start.getTime() + round * 3_600_000 + 60_000);
        const results = await Promise.all(
          [0, 1, 0, 1].map((i) =>
            tickSchedules({ database: databases[i]!, queue: queues[i]!, now: () => now }),
          ),
        );
        created += results.reduce((n, r) => n + r.created.length, 0);
      }
      const runs = await scheduleDb(t.database)
        .selectFrom('schedule_runs')
        .select(['schedule_id', 'due_at'])
        .where('schedule_id', 'in', ids)
        .execute();
      expect(runs).toHaveLength(40 * 8);
      expect(created).toBe(40 * 8);
      expect(new Set(runs.map((r) => `${r.schedule_id}@${r.due_at.toISOString()}`)).size).toBe(40 * 8);
      const all = await scheduleDb(t.database)
        .selectFrom('schedule_runs')
        .select('id')
        .where('schedule_id', 'in', ids)
        .execute();
      expect(await runsWithJobs(t.database, config)).toEqual(new Set(all.map((r) => r.id)));

      // A tick that read a stale next_run_at (as a slow process could) cannot claim the slot again:
      // the unique (schedule_id, due_at) refuses the second run.
      const replay = new Date(start.getTime() + 7 * 3_600_000);
      await scheduleDb(t.database)
        .updateTable('schedules')
        .set({ next_run_at: replay })
        .where('id', 'in', ids)
        .execute();
      const again = await Promise.all(
        [0, 1].map((i) =>
          tickSchedules({
            database: databases[i]!,
            queue: queues[i]!,
            now: () => new Date(replay.getTime() + 60_000),
          }),
        ),
      );
      expect(again.flatMap((r) => r.created)).toEqual([]);
      expect(
        await scheduleDb(t.database)
          .selectFrom('schedule_runs')
          .select('id')
          .where('schedule_id', 'in', ids)
          .execute(),
      ).toHaveLength(40 * 8);
      const schedules = await scheduleDb(t.database)
        .selectFrom('schedules')
        .select('next_run_at')
        .where('id', 'in', ids)
        .execute();
      for (const s of schedules) expect(s.next_run_at).toEqual(new Date(start.getTime() + 8 * 3_600_000));
    }, 120_000);
  },
);
