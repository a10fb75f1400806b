/**
 * The `lake` layout of schedules (docs/bi/data-lake.md): three runs with changes between
 * them (new rows, a late change to an old day, a row moved to another day, deletions that
 * empty a day) keep a Hive-partitioned Parquet lake at a folder target and an S3 target
 * (a real S3 server process). After each run both lakes are read with DuckDB
 * (`read_parquet(..., hive_partitioning = true)`) and compared with the source rows read
 * independently in SQL; the manifests are checked against the files' own bytes. A run
 * stopped while it writes (its worker stopping, as pg-boss aborts a job) leaves no
 * `_SUCCESS`, every day file whole, and the next attempt completes the lake.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { AuthContext } from '../src/auth/context.ts';
import type { Config } from '../src/config/config.ts';
import { createAdapters, JOBS } from '../src/compose.ts';
import { createJobQueue, type JobQueue } from '../src/jobs/queue.ts';
import type { FerryJob } from '../src/jobs/types.ts';
import { createLogger } from '../src/lib/logger.ts';
import { loadOrCreateSecretKey } from '../src/lib/secret-box.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import type { LakeManifest } from '../src/schedules/lake.ts';
import { runScheduleJob } from '../src/schedules/run-job.ts';
import type { RunDeps } from '../src/schedules/run-types.ts';
import {
  createSchedule,
  listRuns,
  runScheduleNow,
  type ScheduleServiceDeps,
} from '../src/schedules/service.ts';
import { seed } from '../src/seed/seed.ts';
import { authTestConfig } from './support/fixtures/auth.ts';
import { cloneRow, s3Objects } from './support/fixtures/schedules.ts';
import {
  createTestDatabase,
  DIALECTS,
  dropJobsSchema,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';
import { settle, waitForRun } from './support/wait.ts';
import { killGroup, startWorker, type WorkerProcess } from './support/worker-process.ts';
import { testAdapters, testSecrets } from './support/keyring.ts';

const SECRET = 'schedules-lake-test-secret-0123456789abcdef';
/** Quotes, a comma, CR LF and LF, a formula, an emoji and CJK. */
const TRICKY = 'She said "hi", then\r\nleft;\n=SUM(A1:A9) 😀 注文';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Every file under `dir`, recursively, as paths relative to it (hidden folders too). */
function walk(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? walk(path.join(dir, entry.name), `${prefix}${entry.name}/`)
      : [`${prefix}${entry.name}`],
  );
}

interface LakeRow {
  message_id: string;
  message_content: string | null;
  micros: string;
  date: string;
}

/** The lake under `root` as DuckDB reads it, with the Hive columns, in id order. */
async function readLake(root: string, folder = ''): Promise<LakeRow[]> {
  const files = walk(path.join(root, folder)).filter((f) => f.endsWith('.parquet'));
  if (files.length === 0) return [];
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  try {
    const glob = path.join(root, folder, '**', '*.parquet').replaceAll("'", "''");
    const reader = await connection.runAndReadAll(
      `SELECT message_id::VARCHAR AS message_id, message_content, epoch_us("timestamp")::VARCHAR AS micros,
         "date"::VARCHAR AS date, dataset
       FROM read_parquet('${glob}', hive_partitioning = true) ORDER BY message_id`,
    );
    const rows = reader.getRowObjectsJS() as unknown as (LakeRow & { dataset: string })[];
    for (const r of rows) expect(r.dataset).toBe('messages');
    return rows.map(({ dataset: _d, ...r }) => r);
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

/** Rows of one Parquet file, as DuckDB counts them. */
async function parquetRows(file: string): Promise<number> {
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  try {
    const reader = await connection.runAndReadAll(
      `SELECT count(*)::INTEGER AS n FROM read_parquet('${file.replaceAll("'", "''")}')`,
    );
    return (reader.getRowObjectsJS()[0] as { n: number }).n;
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

for (const dialect of DIALECTS) {
  describe(`a schedule's data lake on ${dialect}`, () => {
    let t: TestDatabase;
    let config: Config;
    let s3: TestS3Server;
    let deps: RunDeps;
    let service: ScheduleServiceDeps;
    let auth: AuthContext;
    let tenantId: string;
    let scheduleId: string;
    let folder: string;
    let mirror: string;
    const sent: string[] = [];
    const manifests: { folder: LakeManifest; s3: LakeManifest }[] = [];

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 24,
        messagesPerConversation: 3,
        seed: 41,
        since: new Date('2026-09-01T00:00:00Z'),
        until: new Date('2026-09-11T00:00:00Z'),
        secretKey: SECRET,
      });
      tenantId = summary.tenants[0]!.id;
      await t.database.db.updateTable('tenants').set({ plan: 'agency' }).where('id', '=', tenantId).execute();
      s3 = await startS3Server();
      config = authTestConfig({ FERRY_SECRET_KEY: SECRET, FERRY_OUTBOUND_ALLOW: '127.0.0.1', ...t.env });
      folder = await mkdtemp(path.join(tmpdir(), 'ferry-lake-'));
      mirror = await mkdtemp(path.join(tmpdir(), 'ferry-lake-s3-'));
      const logger = createLogger({ logLevel: 'silent' });
      const queue = {
        send: async (_name: string, data: { id: string }) => {
          sent.push(data.id);
          return randomUUID();
        },
      };
      const adapters = createAdapters(config);
      const keys = await testAdapters(t.database, config);
      deps = {
        database: t.database,
        config,
        logger,
        store: keys.store,
        queue,
        now: () => new Date(),
        secretKey: loadOrCreateSecretKey(config),
        secrets: keys.secrets,
        outbound: outboundPolicy(config.outboundAllow),
        signer: adapters.signer,
        deliveryClients: adapters.deliveryClients,
        deliveryTimeoutMs: 5_000,
      };
      service = {
        database: t.database,
        config,
        secrets: keys.secrets,
        queue,
        now: () => new Date(),
        operator: true,
      };
      auth = {
        tenantId,
        plan: 'agency',
        role: 'admin',
        apiKeyId: null,
        teamMemberId: null,
        scopes: [],
        actor: 'cli',
        ip: null,
        userAgent: null,
      };
      const created = await createSchedule(service, auth, {
        name: 'Messages lake',
        frequency: { type: 'daily' },
        time: '03:00',
        datasets: [{ dataset: 'messages', mode: 'incremental' }],
        pii: 'full',
        layout: 'lake',
        targets: [
          { type: 'folder', name: 'share', path: folder },
          {
            type: 's3',
            name: 'bucket',
            bucket: s3.bucket,
            prefix: 'lake/',
            region: s3.region,
            endpoint: s3.endpoint,
            force_path_style: true,
            access_key_id: s3.accessKeyId,
            secret_access_key: s3.secretAccessKey,
          },
        ],
      });
      expect(created.layout).toBe('lake');
      expect(created.format).toBe('parquet');
      scheduleId = created.id;
    }, 180_000);

    afterAll(async () => {
      await s3?.stop();
      await t?.drop();
      if (folder) await rm(folder, { recursive: true, force: true });
      if (mirror) await rm(mirror, { recursive: true, force: true });
      if (config) await rm(config.dataDir, { recursive: true, force: true });
    });

    /** The source, read independently: the tenant's messages with their UTC day. */
    async function source(): Promise<LakeRow[]> {
      const rows = await sql<LakeRow>`
        SELECT id::text AS message_id, content AS message_content,
          ((extract(epoch FROM created_at) * 1000000)::bigint)::text AS micros,
          to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS date
        FROM messages WHERE tenant_id = ${tenantId} ORDER BY id::text`.execute(t.database.db);
      return rows.rows;
    }

    /** Copies the S3 lake into a folder, as a reader syncing the bucket would, and returns its keys. */
    async function mirrorS3(): Promise<string[]> {
      await rm(mirror, { recursive: true, force: true });
      await mkdir(mirror, { recursive: true });
      const objects = await s3Objects(s3, 'lake/');
      for (const o of objects) {
        const file = path.join(mirror, o.key.slice('lake/'.length));
        await mkdir(path.dirname(file), { recursive: true });
        await writeFile(file, o.body);
      }
      return objects.map((o) => o.key.slice('lake/'.length));
    }

    function job(signal: AbortSignal, runId: string): FerryJob {
      return {
        id: randomUUID(),
        name: 'schedules.run',
        data: { id: runId },
        signal,
        retryCount: 0,
        retryLimit: 3,
      } as unknown as FerryJob;
    }

    async function runOnce(id: string): Promise<string> {
      await settle(t.database);
      const queued = await runScheduleNow(service, auth, id);
      await runScheduleJob(job(new AbortController().signal, queued.id), deps);
      const status = await sql<{ status: string; error_message: string | null }>`
        SELECT status, error_message FROM schedule_runs WHERE id = ${queued.id}`.execute(t.database.db);
      expect(status.rows[0], JSON.stringify(status.rows[0])).toMatchObject({ status: 'delivered' });
      return queued.id;
    }

    async function run(): Promise<{ folder: LakeManifest; s3: LakeManifest }> {
      await settle(t.database);
      const queued = await runScheduleNow(service, auth, scheduleId);
      await runScheduleJob(job(new AbortController().signal, queued.id), deps);
      const status = await sql<{ status: string; error_message: string | null }>`
        SELECT status, error_message FROM schedule_runs WHERE id = ${queued.id}`.execute(t.database.db);
      expect(status.rows[0], JSON.stringify(status.rows[0])).toMatchObject({ status: 'delivered' });
      const lakes = await checkLakes(queued.id);
      // The run's history: no files, what it wrote, and each target delivered with its manifest.
      const view = (await listRuns(service, auth, scheduleId, { limit: 1 })).items[0]!;
      expect(view.id).toBe(queued.id);
      expect(view.files).toEqual([]);
      expect(view.records).toBe(lakes.folder.totals.rows_written);
      expect(view.bytes).toBe(lakes.folder.totals.bytes_written);
      expect(view.deliveries.map((d) => [d.target.type, d.status, d.files[0]?.location])).toEqual([
        ['folder', 'delivered', `file://${folder}/_manifest.json`],
        ['s3', 'delivered', `s3://${s3.bucket}/lake/_manifest.json`],
      ]);
      return lakes;
    }

    /** Both lakes equal the source, have _SUCCESS, and their manifests describe their files. */
    async function checkLakes(runId: string): Promise<{ folder: LakeManifest; s3: LakeManifest }> {
      const expected = await source();
      const keys = await mirrorS3();
      const out: Partial<Record<'folder' | 's3', LakeManifest>> = {};
      for (const [name, root] of [
        ['folder', folder],
        ['s3', mirror],
      ] as const) {
        expect(await readLake(root), `${name} lake`).toEqual(expected);
        const files = walk(root).filter((f) => !f.startsWith('.tmp/'));
        expect(files).toContain('_SUCCESS');
        const manifest = JSON.parse(readFileSync(path.join(root, '_manifest.json'), 'utf8')) as LakeManifest;
        expect(manifest.run.id).toBe(runId);
        const perRun = path.join(root, '_runs', manifest.run.name, '_manifest.json');
        expect(readFileSync(perRun, 'utf8')).toBe(readFileSync(path.join(root, '_manifest.json'), 'utf8'));
        expect(JSON.parse(readFileSync(path.join(root, '_SUCCESS'), 'utf8')).run).toBe(manifest.run.name);
        // The manifest lists exactly the Parquet files of the lake, with their bytes, checksums and rows.
        const parquet = files.filter((f) => f.endsWith('.parquet')).sort();
        const listed = manifest.datasets.messages!.partitions;
        expect(listed.map((p) => p.path).sort()).toEqual(parquet);
        for (const p of listed) {
          const bytes = readFileSync(path.join(root, p.path));
          expect(p.bytes).toBe(bytes.length);
          expect(p.sha256).toBe(sha256(bytes));
          expect(p.rows).toBe(await parquetRows(path.join(root, p.path)));
          expect(p.rows).toBe(expected.filter((r) => r.date === p.date).length);
          expect(p.path).toBe(`dataset=messages/date=${p.date}/part-0.parquet`);
        }
        expect(manifest.totals.rows).toBe(expected.length);
        out[name] = manifest;
      }
      // No temporary or partial object is left in the bucket.
      expect(
        keys.every((k) => k.endsWith('.parquet') || k.endsWith('_manifest.json') || k === '_SUCCESS'),
      ).toBe(true);
      expect(await s3.incompleteUploads()).toBe(0);
      return out as { folder: LakeManifest; s3: LakeManifest };
    }

    const daysOf = (rows: { date: string }[]) => [...new Set(rows.map((r) => r.date))].sort();
    const writtenDays = (m: LakeManifest) => m.datasets.messages!.written.map((w) => w.date).sort();
    const removedPaths = (m: LakeManifest) => [...m.datasets.messages!.removed].sort();

    test('refuses what a lake cannot be, naming the field', async () => {
      const s3Target = {
        type: 's3',
        bucket: s3.bucket,
        prefix: 'lake/',
        region: s3.region,
        endpoint: s3.endpoint,
        force_path_style: true,
        access_key_id: s3.accessKeyId,
        secret_access_key: s3.secretAccessKey,
      };
      const base = {
        name: 'Refused',
        frequency: { type: 'daily' },
        time: '03:00',
        datasets: ['messages'],
        layout: 'lake',
        targets: [s3Target],
      };
      const cases: [Record<string, unknown>, string, string][] = [
        [{ layout: 'pond' }, 'layout', 'unknown layout "pond"'],
        [{ compression: 'gzip' }, 'compression', 'Parquet compresses its columns itself'],
        [{ package: 'zip' }, 'package', 'a lake is Parquet files by day'],
        [{ format: 'csv' }, 'format', 'a lake is written in Parquet'],
        [{ datasets: ['messages', 'analytics'] }, 'datasets[1].dataset', 'cannot be in a lake'],
        [{ targets: [] }, 'targets', 'a lake needs a target'],
        [{ targets: [{ type: 'email', to: ['a@example.com'] }] }, 'targets[0].type', 'S3 or a folder'],
        [{ targets: [{ ...s3Target, prefix: 'lake/{date}/' }] }, 'targets[0].prefix', 'one fixed folder'],
        [
          { targets: [{ ...s3Target, prefix: 'lake/.hidden/' }] },
          'targets[0].prefix',
          'not a valid key prefix',
        ],
        [{ retention: { target_days: 30 } }, 'retention.target_days', 'keeps each day'],
      ];
      for (const [change, parameter, message] of cases) {
        const err = await createSchedule(service, auth, { ...base, ...change }).catch((e: unknown) => e);
        expect(err, parameter).toMatchObject({ code: 'invalid_parameter', details: { parameter } });
        expect((err as Error).message).toContain(message);
      }
      // A folder target is the operator's: the API's caller (no operator) is refused.
      const folderTarget = { type: 'folder', path: folder };
      const refused = await createSchedule({ ...service, operator: false }, auth, {
        ...base,
        targets: [folderTarget],
      }).catch((e: unknown) => e);
      expect(refused).toMatchObject({ code: 'invalid_parameter', details: { parameter: 'targets[0].type' } });
    });

    test('the first run writes every day of the source', async () => {
      const first = await run();
      manifests.push(first);
      const days = daysOf(await source());
      expect(days.length).toBeGreaterThan(5);
      expect(writtenDays(first.folder)).toEqual(days);
      expect(writtenDays(first.s3)).toEqual(days);
      expect(first.folder.totals.rows_written).toBe((await source()).length);
    });

    test('new rows and a late change to an old day rewrite only the days they touch', async () => {
      const before = await source();
      const days = daysOf(before);
      const old = before.find((r) => r.date === days[1])!;
      // A late edit of a message on an old day, and two new messages on a new day
      // (one with microseconds and text that is hard to carry).
      await sql`UPDATE messages SET content = ${TRICKY} WHERE id = ${old.message_id}::uuid`.execute(
        t.database.db,
      );
      const fresh = await cloneRow(t.database, 'messages', before[0]!.message_id);
      await sql`UPDATE messages SET created_at = '2026-09-20T23:59:59.987654Z', content = ${`${TRICKY} again`}
        WHERE id = ${fresh}::uuid`.execute(t.database.db);
      const other = await cloneRow(t.database, 'messages', before[1]!.message_id);
      await sql`UPDATE messages SET created_at = '2026-09-20T00:00:00.000001Z' WHERE id = ${other}::uuid`.execute(
        t.database.db,
      );
      const previous = manifests[0]!.folder.datasets.messages!.partitions;
      const untouched = previous.filter((p) => p.date !== days[1]);
      const mtimes = new Map(untouched.map((p) => [p.path, statSync(path.join(folder, p.path)).mtimeMs]));

      const second = await run();
      manifests.push(second);
      expect(writtenDays(second.folder)).toEqual([days[1]!, '2026-09-20'].sort());
      expect(writtenDays(second.s3)).toEqual([days[1]!, '2026-09-20'].sort());
      expect(removedPaths(second.folder)).toEqual([]);
      // The other days' files are the very files the first run wrote.
      for (const p of untouched) {
        expect(statSync(path.join(folder, p.path)).mtimeMs).toBe(mtimes.get(p.path));
        const now = second.folder.datasets.messages!.partitions.find((q) => q.path === p.path)!;
        expect(now.sha256).toBe(p.sha256);
        expect(now.run).toBe(manifests[0]!.folder.run.name);
      }
      const lake = await readLake(folder);
      expect(lake.find((r) => r.message_id === old.message_id)!.message_content).toBe(TRICKY);
      expect(lake.find((r) => r.message_id === fresh)).toMatchObject({
        micros: String(Date.parse('2026-09-20T23:59:59.987Z') * 1000 + 654),
        date: '2026-09-20',
      });
    });

    test('deletions and a row moved to another day disappear from the days they left', async () => {
      const before = await source();
      const days = daysOf(before);
      // Every message of one day deleted (its file goes), one message of another day
      // deleted, and one moved from a third day to a fourth.
      const emptied = days[3]!;
      const thinned = days[4]!;
      const from = days[5]!;
      const gone = before.find((r) => r.date === thinned)!;
      const moved = before.find((r) => r.date === from)!;
      await sql`DELETE FROM messages WHERE tenant_id = ${tenantId}
        AND to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') = ${emptied}`.execute(t.database.db);
      await sql`DELETE FROM messages WHERE id = ${gone.message_id}::uuid`.execute(t.database.db);
      await sql`UPDATE messages SET created_at = created_at - interval '4 days' WHERE id = ${moved.message_id}::uuid`.execute(
        t.database.db,
      );
      const to = (await source()).find((r) => r.message_id === moved.message_id)!.date;

      const third = await run();
      manifests.push(third);
      const expectedDays = [thinned, from, to].filter((d) => d !== emptied);
      for (const m of [third.folder, third.s3]) {
        expect(writtenDays(m)).toEqual([...new Set(expectedDays)].sort());
        expect(removedPaths(m)).toEqual([`dataset=messages/date=${emptied}/part-0.parquet`]);
      }
      expect(existsSync(path.join(folder, `dataset=messages/date=${emptied}`, 'part-0.parquet'))).toBe(false);
      const lake = await readLake(folder);
      expect(lake.some((r) => r.message_id === gone.message_id)).toBe(false);
      expect(lake.filter((r) => r.message_id === moved.message_id).map((r) => r.date)).toEqual([to]);
    });

    test('window and full datasets rewrite the days of their range, and remove the days left empty', async () => {
      const lake = await mkdtemp(path.join(tmpdir(), 'ferry-lake-window-'));
      try {
        const id = (
          await createSchedule(service, auth, {
            name: 'Window and full',
            frequency: { type: 'daily' },
            time: '03:00',
            datasets: [
              { dataset: 'conversations', mode: 'window', days: 2 },
              { dataset: 'messages', mode: 'full' },
            ],
            pii: 'full',
            layout: 'lake',
            targets: [{ type: 'folder', path: lake }],
          })
        ).id;
        // Two conversations inside the window (the run's slot is now), one of them yesterday.
        const [seeded] = (
          await sql<{
            id: string;
          }>`SELECT id::text AS id FROM conversations WHERE tenant_id = ${tenantId} LIMIT 1`.execute(
            t.database.db,
          )
        ).rows;
        const recent = await cloneRow(t.database, 'conversations', seeded!.id);
        const yesterday = await cloneRow(t.database, 'conversations', seeded!.id);
        await sql`UPDATE conversations SET start_timestamp = now() - interval '1 minute' WHERE id = ${recent}::uuid`.execute(
          t.database.db,
        );
        await sql`UPDATE conversations SET start_timestamp = now() - interval '26 hours' WHERE id = ${yesterday}::uuid`.execute(
          t.database.db,
        );
        const conversationDays = async () =>
          (
            await sql<{ id: string; date: string }>`
              SELECT id::text AS id, to_char(start_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS date
              FROM conversations WHERE id IN (${recent}::uuid, ${yesterday}::uuid) ORDER BY id::text`.execute(
              t.database.db,
            )
          ).rows;
        const lakeConversations = async () => {
          const instance = await DuckDBInstance.create(':memory:');
          const connection = await instance.connect();
          try {
            const glob = path.join(lake, 'dataset=conversations', '**', '*.parquet');
            const reader = await connection.runAndReadAll(
              `SELECT conversation_id::VARCHAR AS id, "date"::VARCHAR AS date
               FROM read_parquet('${glob}', hive_partitioning = true) ORDER BY id`,
            );
            return reader.getRowObjectsJS() as unknown as { id: string; date: string }[];
          } finally {
            connection.closeSync();
            instance.closeSync();
          }
        };
        const manifestOf = () =>
          JSON.parse(readFileSync(path.join(lake, '_manifest.json'), 'utf8')) as LakeManifest;

        await runOnce(id);
        const expected = await conversationDays();
        expect(await lakeConversations()).toEqual(expected);
        let manifest = manifestOf();
        const windowDays = [...new Set(expected.map((r) => r.date))].sort();
        expect(manifest.datasets.conversations!.written.map((w) => w.date).sort()).toEqual(windowDays);
        expect(manifest.datasets.conversations!.range.from).not.toBeNull();
        expect(await readLake(lake, 'dataset=messages')).toEqual(await source());
        const messageDays = daysOf(await source());
        expect(manifest.datasets.messages!.written.map((w) => w.date).sort()).toEqual(messageDays);

        // One of them deleted: its day is emptied and removed if nothing else is on it; a
        // full dataset rewrites every day again.
        await sql`DELETE FROM conversations WHERE id = ${yesterday}::uuid`.execute(t.database.db);
        await runOnce(id);
        manifest = manifestOf();
        const left = await conversationDays();
        expect(await lakeConversations()).toEqual(left);
        const gone = expected.find((r) => r.id === yesterday)!.date;
        // 25 hours apart, the two conversations are on different days: the deleted one's day is empty.
        expect(left.some((r) => r.date === gone)).toBe(false);
        expect(manifest.datasets.conversations!.removed).toEqual([
          `dataset=conversations/date=${gone}/part-0.parquet`,
        ]);
        expect(existsSync(path.join(lake, `dataset=conversations/date=${gone}`, 'part-0.parquet'))).toBe(
          false,
        );
        expect(manifest.datasets.messages!.written.map((w) => w.date).sort()).toEqual(messageDays);
        expect(manifest.datasets.messages!.removed).toEqual([]);
      } finally {
        await rm(lake, { recursive: true, force: true });
      }
    });

    test('a run stopped while it writes leaves whole days and no _SUCCESS; its next attempt completes the lake', async () => {
      // Every day changes, so the run has many days to write.
      await sql`UPDATE messages SET content = coalesce(content, '') || ' (edited)' WHERE tenant_id = ${tenantId}`.execute(
        t.database.db,
      );
      await settle(t.database);
      const queued = await runScheduleNow(service, auth, scheduleId);
      const previous = manifests.at(-1)!.folder.datasets.messages!.partitions;
      const stop = new AbortController();
      // The worker stops once the run has replaced a first day at the folder target.
      const watch = setInterval(() => {
        const changed = previous.some((p) => {
          const file = path.join(folder, p.path);
          return existsSync(file) && sha256(readFileSync(file)) !== p.sha256;
        });
        if (changed) stop.abort(new Error('the worker is stopping'));
      }, 5);
      try {
        await expect(runScheduleJob(job(stop.signal, queued.id), deps)).rejects.toThrow();
      } finally {
        clearInterval(watch);
      }
      expect(stop.signal.aborted).toBe(true);
      const state = await sql<{
        status: string;
      }>`SELECT status FROM schedule_runs WHERE id = ${queued.id}`.execute(t.database.db);
      expect(state.rows[0]!.status).toBe('retrying');

      // No _SUCCESS; every day file is a whole Parquet file holding its day as before or after.
      expect(existsSync(path.join(folder, '_SUCCESS'))).toBe(false);
      const files = walk(folder).filter((f) => f.endsWith('.parquet'));
      const now = await source();
      const lake = await readLake(folder);
      for (const file of files) {
        const date = /date=(\d{4}-\d{2}-\d{2})/.exec(file)![1]!;
        const rows = lake.filter((r) => r.date === date);
        const want = now.filter((r) => r.date === date);
        expect(rows.length).toBe(want.length);
        const edited = rows.filter((r) => r.message_content?.endsWith(' (edited)')).length;
        expect([0, rows.length]).toContain(edited);
      }
      // The root manifest is still the last complete run's.
      const root = JSON.parse(readFileSync(path.join(folder, '_manifest.json'), 'utf8')) as LakeManifest;
      expect(root.run.id).toBe(manifests.at(-1)!.folder.run.id);

      // The next attempt of the same run brings both lakes up to date.
      await runScheduleJob(job(new AbortController().signal, queued.id), deps);
      const done = await checkLakes(queued.id);
      expect(done.folder.datasets.messages!.written.length).toBe(daysOf(now).length);
      expect((await readLake(folder)).every((r) => r.message_content?.endsWith(' (edited)'))).toBe(true);
    });
  });
}

describe.skipIf(!testsDialect('postgres'))('a lake run whose worker process is killed', () => {
  let t: TestDatabase;
  let config: Config;
  let env: Record<string, string>;
  let queue: JobQueue;
  let service: ScheduleServiceDeps;
  let auth: AuthContext;
  let tenantId: string;
  let scheduleId: string;
  let folder: string;
  const workers: WorkerProcess[] = [];
  const logs = () =>
    workers
      .flatMap((w) => w.output)
      .join('')
      .slice(-4000);

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    env = {
      ...t.env,
      FERRY_SECRET_KEY: SECRET,
      FERRY_JOB_HEARTBEAT_SECONDS: '10',
      FERRY_JOB_SUPERVISE_SECONDS: '2',
      FERRY_JOB_RETRY_DELAY_SECONDS: '1',
      FERRY_WORKER_CONCURRENCY: '1',
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'info',
    };
    config = authTestConfig(env);
    env.FERRY_DATA_DIR = config.dataDir;
    const summary = await seed(t.database, {
      tenants: 1,
      conversations: 400,
      messagesPerConversation: 4,
      seed: 43,
      since: new Date('2026-07-01T00:00:00Z'),
      until: new Date('2026-09-30T00:00:00Z'),
      secretKey: SECRET,
    });
    tenantId = summary.tenants[0]!.id;
    await t.database.db.updateTable('tenants').set({ plan: 'agency' }).where('id', '=', tenantId).execute();
    folder = await mkdtemp(path.join(tmpdir(), 'ferry-lake-kill-'));
    queue = await createJobQueue(t.database, config, createLogger({ logLevel: 'silent' }), {
      definitions: JOBS,
      supervise: false,
    });
    service = {
      database: t.database,
      config,
      secrets: await testSecrets(t.database, SECRET),
      queue,
      now: () => new Date(),
      operator: true,
    };
    auth = {
      tenantId,
      plan: 'agency',
      role: 'admin',
      apiKeyId: null,
      teamMemberId: null,
      scopes: [],
      actor: 'cli',
      ip: null,
      userAgent: null,
    };
    scheduleId = (
      await createSchedule(service, auth, {
        name: 'Killed lake',
        frequency: { type: 'daily' },
        time: '03:00',
        datasets: ['messages'],
        pii: 'full',
        layout: 'lake',
        targets: [{ type: 'folder', path: folder }],
      })
    ).id;
  }, 180_000);

  afterAll(async () => {
    for (const w of workers) {
      killGroup(w, 'SIGTERM');
      await w.exited;
    }
    await queue?.stop(1_000);
    await t?.drop();
    if (folder) await rm(folder, { recursive: true, force: true });
    if (config) await rm(config.dataDir, { recursive: true, force: true });
    if (config) await dropJobsSchema(config);
  });

  async function source(): Promise<{ message_id: string; message_content: string | null; date: string }[]> {
    const rows = await sql<{ message_id: string; message_content: string | null; date: string }>`
      SELECT id::text AS message_id, content AS message_content,
        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS date
      FROM messages WHERE tenant_id = ${tenantId} ORDER BY id::text`.execute(t.database.db);
    return rows.rows;
  }

  test('leaves every day whole and no _SUCCESS; another worker completes the lake', async () => {
    const first = startWorker(env);
    workers.push(first);
    await settle(t.database);
    const initial = await runScheduleNow(service, auth, scheduleId);
    await waitForRun(t.database, initial.id, ['delivered'], { timeoutMs: 120_000, context: logs });
    expect(existsSync(path.join(folder, '_SUCCESS'))).toBe(true);
    const days = walk(folder).filter((f) => f.endsWith('.parquet')).length;
    expect(days).toBeGreaterThan(60);

    // Every day changes, so the next run rewrites them all, one after the other.
    await sql`UPDATE messages SET content = coalesce(content, '') || ' (edited)' WHERE tenant_id = ${tenantId}`.execute(
      t.database.db,
    );
    await settle(t.database);
    const startedAt = Date.now();
    const queued = await runScheduleNow(service, auth, scheduleId);
    // Killed once the run has replaced some days but not all.
    const replaced = () =>
      walk(folder).filter((f) => f.endsWith('.parquet') && statSync(path.join(folder, f)).mtimeMs > startedAt)
        .length;
    const deadline = Date.now() + 120_000;
    while (replaced() < 3) {
      if (Date.now() > deadline) throw new Error(`the run never replaced a day\n${logs()}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    killGroup(first, 'SIGKILL');
    await first.exited;
    const written = replaced();
    expect(written).toBeLessThan(days);

    // No _SUCCESS; each day whole: all of its rows, all edited or none.
    expect(existsSync(path.join(folder, '_SUCCESS'))).toBe(false);
    const now = await source();
    const lake = await readLake(folder);
    expect(lake.map((r) => r.message_id).sort()).toEqual(now.map((r) => r.message_id).sort());
    const byDay = new Map<string, LakeRow[]>();
    for (const r of lake) byDay.set(r.date, [...(byDay.get(r.date) ?? []), r]);
    let edited = 0;
    for (const [date, rows] of byDay) {
      expect(rows.length, date).toBe(now.filter((r) => r.date === date).length);
      const n = rows.filter((r) => r.message_content?.endsWith(' (edited)')).length;
      expect([0, rows.length], date).toContain(n);
      if (n > 0) edited++;
    }
    expect(edited).toBeGreaterThan(0);
    expect(edited).toBeLessThan(byDay.size);
    const root = JSON.parse(readFileSync(path.join(folder, '_manifest.json'), 'utf8')) as LakeManifest;
    expect(root.run.id).toBe(initial.id);

    // Another worker takes the run over once its lease has run out, and completes the lake.
    const second = startWorker(env);
    workers.push(second);
    await waitForRun(t.database, queued.id, ['delivered'], { timeoutMs: 180_000, context: logs });
    const done = JSON.parse(readFileSync(path.join(folder, '_manifest.json'), 'utf8')) as LakeManifest;
    expect(done.run.id).toBe(queued.id);
    expect(existsSync(path.join(folder, '_SUCCESS'))).toBe(true);
    const complete = await readLake(folder);
    expect(complete.map(({ micros: _m, ...r }) => r)).toEqual(now);
    expect(complete.every((r) => r.message_content?.endsWith(' (edited)'))).toBe(true);
    expect(done.datasets.messages!.partitions.length).toBe(days);
  }, 400_000);
});
