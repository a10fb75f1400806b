import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Writable } from 'node:stream';
import type { Role } from '../src/auth/context.ts';
import type { Config } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { createJobQueue, type JobQueue, jobsSchema } from '../src/jobs/queue.ts';
import { createAdapters, JOBS } from '../src/compose.ts';
import { startWorkers } from '../src/jobs/workers.ts';
import { createLogger } from '../src/lib/logger.ts';
import { seed } from '../src/seed/seed.ts';
import { createObjectStore } from '../src/store/create-object-store.ts';
import type { ObjectStore } from '../src/store/object-store.ts';
import { authTestConfig, bearer, createTenant, keysByRole, type TestTenant } from './auth-fixtures.ts';
import {
  createTestDatabase,
  type Dialect,
  TEST_DATABASE_URL,
  type TestDatabase,
} from './support/databases.ts';

export const SECRET = 'export-jobs-test-secret-key-0123456789abcdef';

/** A clock the test moves by hand. */
export class TestClock {
  #now: number;
  constructor(start = Date.now()) {
    this.#now = start;
  }
  now = (): Date => new Date(this.#now);
  advance(ms: number): void {
    this.#now += ms;
  }
}

export interface ExportHarness {
  t: TestDatabase;
  database: Database;
  config: Config;
  app: FerryApp;
  queue: JobQueue;
  store: ObjectStore;
  clock: TestClock;
  tenant: TestTenant;
  other: TestTenant;
  keys: Record<Role, string>;
  otherKeys: Record<Role, string>;
  /** Log lines (JSON) of the app and the workers. */
  logs: Record<string, unknown>[];
  /** Resolves with the first log line that matches. */
  waitForLog(
    match: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** Starts in-process workers (not started by default, so tests can look at queued exports). */
  startWorkers(): Promise<void>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  env?: Record<string, string>;
  /** Start the workers right away. */
  workers?: boolean;
  conversations?: number;
  /** Makes the tenant an enterprise tenant with these `ferry.limits` (default: an agency tenant). */
  limits?: Record<string, unknown>;
  /** Wraps the real object store (to hold or fail writes at a chosen moment). */
  wrapStore?: (store: ObjectStore) => ObjectStore;
}

/**
 * The app with real adapters on a fresh database: the job queue (pg-boss), the object
 * store, a seeded tenant with keys for every role, and a second tenant.
 */
export async function exportHarness(dialect: Dialect, options: HarnessOptions = {}): Promise<ExportHarness> {
  const t = await createTestDatabase(dialect);
  const config = authTestConfig({
    FERRY_SECRET_KEY: SECRET,
    FERRY_JOB_HEARTBEAT_SECONDS: '10',
    FERRY_JOB_SUPERVISE_SECONDS: '2',
    FERRY_JOB_RETRY_DELAY_SECONDS: '1',
    FERRY_WORKER_CONCURRENCY: '2',
    ...(dialect === 'postgres' ? { DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: t.schema! } : {}),
    ...options.env,
  });
  const database = t.database;
  const summary = await seed(database, {
    tenants: 1,
    conversations: options.conversations ?? 40,
    messagesPerConversation: 5,
    seed: 5,
    since: new Date('2026-08-01T00:00:00Z'),
    until: new Date('2026-10-01T00:00:00Z'),
    secretKey: SECRET,
  });
  const tenantId = summary.tenants[0]!.id;
  await database.db
    .updateTable('tenants')
    .set({ plan: options.limits ? 'enterprise' : 'agency' })
    .where('id', '=', tenantId)
    .execute();
  if (options.limits) {
    const value = JSON.stringify(options.limits);
    await database.db
      .insertInto('settings')
      .values({ tenant_id: tenantId, key: 'ferry.limits', value } as never)
      .onConflict((oc) => oc.columns(['tenant_id', 'key']).doUpdateSet({ value } as never))
      .execute();
  }
  const clock = new TestClock();
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
      done();
    },
  });
  const logger = createLogger({ logLevel: 'info' }, sink);
  const real = await createObjectStore(config);
  const store = options.wrapStore ? options.wrapStore(real) : real;
  const queue = await createJobQueue(database, config, logger, { definitions: JOBS, supervise: true });
  const adapters = createAdapters(config);
  const app = await buildApp({
    database,
    config,
    logger,
    queue,
    store,
    signer: adapters.signer,
    now: clock.now,
  });
  await app.ready();
  const tenant = await seededTenant(database, summary.tenants[0]!);
  const other = await createTenant(database, 'agency');
  const keys = await keysByRole(database, tenant);
  const otherKeys = await keysByRole(database, other);
  let started = false;
  const harness: ExportHarness = {
    t,
    database,
    config,
    app,
    queue,
    store,
    clock,
    tenant,
    other,
    keys,
    otherKeys,
    logs,
    async waitForLog(match, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const found = logs.find(match);
        if (found) return found;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error('no matching log line in time');
    },
    async startWorkers() {
      if (started) return;
      started = true;
      await startWorkers(
        queue,
        { database, config, logger, store, queue, now: clock.now, ...adapters },
        JOBS,
      );
    },
    async close() {
      await app.close();
      await queue.stop(2_000);
      await t.drop();
      await rm(config.dataDir, { recursive: true, force: true });
      if (dialect === 'postgres') {
        const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
        await admin.exec(`DROP SCHEMA IF EXISTS ${jobsSchema(config)} CASCADE`);
        await admin.close();
      }
    },
  };
  if (options.workers) await harness.startWorkers();
  return harness;
}

/** The seeded tenant with one team member per role (adding the roles the seed did not make). */
async function seededTenant(database: Database, seeded: { id: string; slug: string }): Promise<TestTenant> {
  const rows = await database.db
    .selectFrom('team_members')
    .select(['id', 'role'])
    .where('tenant_id', '=', seeded.id)
    .orderBy('id')
    .execute();
  const members = {} as Record<Role, string>;
  for (const role of ['admin', 'manager', 'analyst', 'agent'] as const) {
    const found = rows.find((r) => r.role === role);
    if (found) {
      members[role] = found.id;
      continue;
    }
    members[role] = crypto.randomUUID();
    await database.db
      .insertInto('team_members')
      .values({
        id: members[role],
        tenant_id: seeded.id,
        name: `${role} member`,
        email: `${role}@${seeded.slug}.example`,
        role,
        password_hash: 'x',
      })
      .execute();
  }
  return { id: seeded.id, slug: seeded.slug, members };
}

export const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

export interface ExportJson {
  id: string;
  status: string;
  files: { id: string; name: string; bytes: number; records: number; sha256: string; content_type: string }[];
  progress: { records: number; records_estimated: number | null; bytes: number; percentage: number | null };
  error: { code: string; message: string } | null;
  attempts: number;
  download_count: number;
  links: { self: string; download?: string };
  [key: string]: unknown;
}

/** Asks the API for the export until `done` holds (or the deadline passes). */
export async function waitForExport(
  app: FerryApp,
  key: string,
  id: string,
  done: (e: ExportJson) => boolean = (e) => ['completed', 'failed', 'cancelled'].includes(e.status),
  timeoutMs = 90_000,
): Promise<ExportJson> {
  const deadline = Date.now() + timeoutMs;
  let last: ExportJson | undefined;
  while (Date.now() < deadline) {
    const res = await app.inject({ method: 'GET', url: `/api/v1/exports/${id}`, headers: bearer(key) });
    if (res.statusCode !== 200) throw new Error(`GET export answered ${res.statusCode}: ${res.body}`);
    last = res.json() as ExportJson;
    if (done(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`export ${id} did not reach the expected state in time; last: ${JSON.stringify(last)}`);
}

/** Requests an export and returns the 202 body. */
export async function requestExport(
  app: FerryApp,
  key: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<ExportJson> {
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/exports',
    headers: { ...bearer(key), ...headers },
    payload: body,
  });
  if (res.statusCode !== 202) throw new Error(`POST /api/v1/exports answered ${res.statusCode}: ${res.body}`);
  return res.json() as ExportJson;
}
