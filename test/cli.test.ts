import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parse as parseCsv } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { TEST_DATABASE_URL } from './support/databases.ts';

const exec = promisify(execFile);
const BIN = path.resolve('bin/ferry.js');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

describe('ferry CLI (PostgreSQL through DATABASE_URL)', () => {
  let env: NodeJS.ProcessEnv;
  let work: string;
  let schema: string;

  async function ferry(...args: string[]): Promise<Result> {
    try {
      const { stdout, stderr } = await exec(process.execPath, [BIN, ...args], {
        env,
        maxBuffer: 64 * 1024 * 1024,
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'ferry-cli-'));
    schema = `ferry_cli_${process.pid}_${Date.now()}`;
    env = {
      ...process.env,
      DATABASE_URL: TEST_DATABASE_URL,
      DATABASE_SCHEMA: schema,
      FERRY_DATA_DIR: work,
      LOG_LEVEL: 'silent',
    };
  });
  afterAll(async () => {
    const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
    await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.close();
    await rm(work, { recursive: true, force: true });
  });

  it('migrates, seeds, lists tenants and exports to a file and to stdout', async () => {
    expect((await ferry('migrate')).stdout).toMatch(/applied: 0001-reference-schema/);
    expect((await ferry('migrate')).stdout).toBe('database is up to date\n');
    const seeded = await ferry('seed', '--tenants', '1', '--conversations', '25', '--seed', '9');
    expect(seeded.code).toBe(0);
    const tenants = JSON.parse((await ferry('tenants', '--json')).stdout) as { id: string; slug: string }[];
    expect(tenants).toHaveLength(1);
    const slug = tenants[0]!.slug;

    const file = path.join(work, 'conversations.csv');
    const exported = await ferry(
      'export',
      '--tenant',
      slug,
      '--dataset',
      'conversations',
      '--format',
      'csv',
      '--pii',
      'full',
      '--out',
      file,
    );
    expect(exported.code).toBe(0);
    expect(exported.stderr).toMatch(/exported 25 conversations records to .*sha256 [0-9a-f]{64}/);
    const rows = parseCsv(await readFile(file), { columns: true }) as Record<string, string>[];
    expect(rows).toHaveLength(25);

    const piped = await ferry(
      'export',
      '--tenant',
      slug,
      '--dataset',
      'messages',
      '--format',
      'ndjson',
      '--out',
      '-',
    );
    expect(piped.code).toBe(0);
    const lines = piped.stdout.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThan(25);
    expect(JSON.parse(lines[0]!)).toHaveProperty('message_id');
    expect(piped.stderr).toBe('');

    const pkg = path.join(work, 'company.zip');
    const packaged = await ferry(
      'export',
      '--tenant',
      slug,
      '--package',
      'zip',
      '--datasets',
      'conversations,messages',
      '--out',
      pkg,
    );
    expect(packaged.code).toBe(0);
    const listing = await exec('unzip', ['-l', pkg]);
    expect(listing.stdout).toMatch(/company-export-\d{4}-\d{2}-\d{2}\/checksums\.sha256/);
    expect(listing.stdout).toMatch(/\/messages\.csv\n/);

    // --format applies to the package's tabular files.
    const jsonPkg = path.join(work, 'company-json.zip');
    const asJson = await ferry(
      'export',
      '--tenant',
      slug,
      '--package',
      'zip',
      '--format',
      'json',
      '--datasets',
      'conversations,messages',
      '--out',
      jsonPkg,
    );
    expect(asJson.code, asJson.stderr).toBe(0);
    const jsonListing = (await exec('unzip', ['-Z1', jsonPkg])).stdout.split('\n');
    expect(jsonListing.filter((f) => /\/(messages\.json|schemas\/messages\.schema\.json)$/.test(f))).toHaveLength(2);
    expect(jsonListing.filter((f) => f.endsWith('.csv'))).toEqual([]);
    const descriptor = JSON.parse((await exec('unzip', ['-p', jsonPkg, '*/datapackage.json'])).stdout) as {
      resources: { path: string; format: string }[];
    };
    expect(descriptor.resources.map((r) => [r.path, r.format])).toEqual([['messages.json', 'json']]);
  });

  it('prints one clear line and exits non-zero on bad input', async () => {
    const badFormat = await ferry('export', '--tenant', 'x', '--dataset', 'messages', '--format', 'xls');
    expect(badFormat.code).not.toBe(0);
    expect(badFormat.stderr).toMatch(
      /--format <format>' argument 'xls' is invalid\. Allowed choices are csv, json, ndjson, xml, parquet, markdown/,
    );

    const markdownPackage = await ferry('export', '--tenant', 'x', '--package', 'zip', '--format', 'markdown');
    expect(markdownPackage.code).not.toBe(0);
    expect(markdownPackage.stderr).toMatch(/--format: a package writes its tabular files as csv, json, ndjson, xml, parquet/);

    const unknownTenant = await ferry(
      'export',
      '--tenant',
      'no-such-tenant',
      '--dataset',
      'messages',
      '--out',
      '-',
    );
    expect(unknownTenant.code).toBe(1);
    expect(unknownTenant.stderr.trim().split('\n')).toEqual([
      'ferry: tenant "no-such-tenant" does not exist (see `ferry tenants`)',
    ]);

    const badFilter = await ferry(
      'export',
      '--tenant',
      'x',
      '--dataset',
      'messages',
      '--filter',
      'colour=red',
    );
    expect(badFilter.code).toBe(1);
    expect(badFilter.stderr).toMatch(/^ferry: filter: dataset messages has no filter "colour" \(accepted: /);
    expect(badFilter.stderr.trim().split('\n')).toHaveLength(1);

    const badSeed = await ferry('seed', '--tenants', 'many');
    expect(badSeed.code).not.toBe(0);
    expect(badSeed.stderr).toMatch(/--tenants/);
  });

  it('prints the data map as text and JSON', async () => {
    const json = JSON.parse((await ferry('datamap', '--format', 'json')).stdout) as {
      tables: { name: string }[];
      datasets: { name: string }[];
    };
    expect(json.tables.map((t) => t.name)).toContain('conversations');
    expect(json.datasets.map((d) => d.name)).toEqual(
      expect.arrayContaining(['conversations', 'messages', 'analytics', 'knowledge_base']),
    );
    const text = (await ferry('datamap', '--dataset', 'messages')).stdout;
    expect(text).toMatch(/message_content\s+string\s+free_text/);
  });
});
