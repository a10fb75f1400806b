/**
 * How the `ferry` process starts and fails to start: on a Node.js too old to run the
 * TypeScript sources it says in one line what to run instead, and `ferry serve` on a
 * port another process holds exits non-zero with one line and leaves nothing locked.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/open.ts';
import { dropJobsSchema, DIALECTS, TEST_DATABASE_URL } from './support/databases.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { loadConfig } from '../src/config/config.ts';

const exec = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, '..');
const BIN = path.join(REPO, 'bin/ferry.js');
/** The machine's own Node.js, which may be older than the one installed with Ferry. */
const SYSTEM_NODE = '/usr/bin/node';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(node: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(node, args, { cwd: REPO, env, timeout: 90_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

function expectVersionHint(result: Run, version: string) {
  expect(result.code).toBe(1);
  expect(result.stdout).toBe('');
  const lines = result.stderr.trimEnd().split('\n');
  expect(lines, result.stderr).toHaveLength(1);
  expect(lines[0]).toContain(`needs Node.js 24 or later, but this is Node.js ${version}`);
  expect(lines[0]).toContain('npm run ferry -- <command>');
  expect(lines[0]).toContain('npx ferry');
  expect(result.stderr).not.toContain('ERR_UNKNOWN_FILE_EXTENSION');
}

describe('bin/ferry.js on an old Node.js', () => {
  it.skipIf(!existsSync(SYSTEM_NODE))(
    "says in one line how to run Ferry, on the machine's own Node.js",
    async () => {
      const version = (await run(SYSTEM_NODE, ['-p', 'process.versions.node'])).stdout.trim();
      const result = await run(SYSTEM_NODE, [BIN, '--version']);
      if (Number(version.split('.')[0]) >= 24) expect(result.code).toBe(0);
      else expectVersionHint(result, version);
    },
  );

  it('says it for any Node.js before 24, before loading a TypeScript file', async () => {
    const pretend = `data:text/javascript,Object.defineProperty(process.versions,'node',{value:'20.20.2'})`;
    expectVersionHint(await run(process.execPath, ['--import', pretend, BIN, '--version']), '20.20.2');
  });

  it('runs on Node.js 24', async () => {
    const result = await run(process.execPath, [BIN, '--version']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
  });
});

/** A TCP server on a free loopback port, standing for whatever else uses the port. */
async function occupyPort(): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Runs `ferry serve` to its end (it is expected to fail); kills it if it outlives the timeout. */
function serveUntilExit(port: number, env: NodeJS.ProcessEnv): Promise<Run & { timedOut: boolean }> {
  const {
    PORT: _port,
    HOST: _host,
    DATABASE_URL: _url,
    DATABASE_SCHEMA: _schema,
    ...inherited
  } = process.env;
  const child = spawn(process.execPath, [BIN, 'serve', '--port', String(port), '--host', '127.0.0.1'], {
    cwd: REPO,
    env: { ...inherited, FERRY_DEMO: 'off', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, 60_000);
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, timedOut });
    }),
  );
}

for (const dialect of DIALECTS) {
  describe(`ferry serve on a port in use, on ${dialect}`, () => {
    const dirs: string[] = [];
    afterAll(() => {
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    });

    it('exits non-zero with one clear line and releases the database', async () => {
      const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-busy-'));
      dirs.push(dataDir);
      const schema = `ferry_serve_${Math.random().toString(16).slice(2, 10)}`;
      const env: Record<string, string> =
        dialect === 'pglite'
          ? { FERRY_DATA_DIR: dataDir }
          : { FERRY_DATA_DIR: dataDir, DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: schema };
      const busy = await occupyPort();
      try {
        const result = await serveUntilExit(busy.port, env);
        expect(result.timedOut, 'ferry serve kept running on a port in use').toBe(false);
        expect(result.code).toBe(1);
        const lines = result.stderr.trimEnd().split('\n');
        expect(lines, result.stderr).toEqual([
          `ferry: port ${busy.port} on 127.0.0.1 is already in use by another process: stop it, or choose another port with --port or PORT`,
        ]);
        expect(result.stdout).not.toContain('listening on');
      } finally {
        await busy.close();
        if (dialect === 'postgres') {
          const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
          await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
          await admin.close();
          await dropJobsSchema(loadConfig(env));
        }
      }
      if (dialect === 'pglite') {
        // The lock is gone: the next command opens the embedded database at once.
        expect(existsSync(path.join(dataDir, 'ferry.pid'))).toBe(false);
        const database = await openDatabase(loadConfig({ FERRY_DATA_DIR: dataDir }), { migrate: false });
        await database.close();
      }
    }, 120_000);
  });
}
