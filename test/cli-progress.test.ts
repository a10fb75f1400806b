import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { TEST_DATABASE_URL, testsDialect } from './support/databases.ts';

const exec = promisify(execFile);
const BIN = path.resolve('bin/ferry.js');

/**
 * The company package's progress bar as a person at a terminal sees it: `script` gives the
 * command a pseudo-terminal, so the bar is drawn exactly as on a real one.
 */
describe.skipIf(!testsDialect('postgres'))('ferry export --package progress bar', () => {
  let env: NodeJS.ProcessEnv;
  let work: string;
  let schema: string;

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'ferry-cli-progress-'));
    schema = `ferry_cli_progress_${process.pid}_${Date.now()}`;
    env = {
      ...process.env,
      DATABASE_URL: TEST_DATABASE_URL,
      DATABASE_SCHEMA: schema,
      FERRY_DATA_DIR: work,
      LOG_LEVEL: 'silent',
      COLUMNS: '160',
    };
    await exec(process.execPath, [BIN, 'seed', '--tenants', '1', '--conversations', '300', '--seed', '4'], {
      env,
    });
  }, 180_000);
  afterAll(async () => {
    const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
    await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.close();
    await rm(work, { recursive: true, force: true });
  });

  it('counts towards an estimate made before the first record, and shows the bytes written', {
    timeout: 180_000,
  }, async () => {
    const tenants = JSON.parse(
      (await exec(process.execPath, [BIN, 'tenants', '--json'], { env })).stdout,
    ) as {
      slug: string;
    }[];
    const out = path.join(work, 'package.zip');
    const command = [
      process.execPath,
      BIN,
      'export',
      '--tenant',
      tenants[0]!.slug,
      '--package',
      'zip',
      '--out',
      out,
    ]
      .map((a) => `'${a.replaceAll("'", "'\\''")}'`)
      .join(' ');
    const { stdout } = await exec('script', ['-qefc', command, '/dev/null'], { env, maxBuffer: 64 << 20 });
    const frames = [...stdout.matchAll(/(\d+)\/(\d+) records \| ([\d.]+ [KMGT]?B)/g)].map((m) => ({
      done: Number(m[1]),
      total: Number(m[2]),
      bytes: m[3]!,
    }));
    const wrote = /wrote \S+ \((\d+) records\)/.exec(stdout);
    expect(wrote, stdout.slice(-500)).not.toBeNull();
    const records = Number(wrote![1]);
    expect(frames.length).toBeGreaterThan(1);
    // The first frame already knows how many records to expect: the estimate, not the count so far.
    expect(frames[0]!.total).toBeGreaterThan(frames[0]!.done);
    expect(frames[0]!.total).toBeGreaterThanOrEqual(records * 0.5);
    // It advances, never backwards, to the records written; bytes are counted as they go.
    const dones = frames.map((f) => f.done);
    expect(dones).toEqual([...dones].sort((a, b) => a - b));
    expect(new Set(dones).size).toBeGreaterThan(1);
    expect(frames.at(-1)!.done).toBe(records);
    expect(frames.some((f) => f.bytes !== '0 B')).toBe(true);
  });
});
