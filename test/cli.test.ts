import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { parse as parseCsv } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateXML } from 'xmllint-wasm';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { TEST_DATABASE_URL, testsDialect } from './support/databases.ts';

const exec = promisify(execFile);
const BIN = path.resolve('bin/ferry.js');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

describe.skipIf(!testsDialect('postgres'))('ferry CLI (PostgreSQL through DATABASE_URL)', () => {
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
    // An existing package is never overwritten unless asked.
    const before = await readFile(pkg);
    const again = await ferry(
      'export',
      '--tenant',
      slug,
      '--package',
      'zip',
      '--datasets',
      'messages',
      '--out',
      pkg,
    );
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(
      `ferry: ${pkg} already exists: Ferry never overwrites a package; choose another --out, remove it, or pass --overwrite\n`,
    );
    expect((await readFile(pkg)).equals(before)).toBe(true);
    const replaced = await ferry(
      'export',
      '--tenant',
      slug,
      '--package',
      'zip',
      '--datasets',
      'messages',
      '--out',
      pkg,
      '--overwrite',
    );
    expect(replaced.code, replaced.stderr).toBe(0);
    expect((await exec('unzip', ['-Z1', pkg])).stdout).not.toMatch(/conversations\//);

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
    expect(
      jsonListing.filter((f) => /\/(messages\.json|schemas\/messages\.schema\.json)$/.test(f)),
    ).toHaveLength(2);
    expect(jsonListing.filter((f) => f.endsWith('.csv'))).toEqual([]);
    const descriptor = JSON.parse((await exec('unzip', ['-p', jsonPkg, '*/datapackage.json'])).stdout) as {
      resources: { path: string; format: string; type?: string }[];
    };
    expect(descriptor.resources.filter((r) => r.type === 'table').map((r) => [r.path, r.format])).toEqual([
      ['messages.json', 'json'],
    ]);
  });

  it('partitions by date into DIR/ without deleting what was there, replacing only with --overwrite', async () => {
    const slug = (JSON.parse((await ferry('tenants', '--json')).stdout) as { slug: string }[])[0]!.slug;
    const lake = path.join(work, 'lake');
    const partitioned = (...extra: string[]) =>
      ferry(
        'export',
        '--tenant',
        slug,
        '--dataset',
        'messages',
        '--format',
        'parquet',
        '--partition-by-date',
        '--out',
        `${lake}/`,
        ...extra,
      );
    const first = await partitioned();
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(
      /exported \d+ messages records into \d+ partitions under .*dataset=messages/,
    );
    const days = await readdir(path.join(lake, 'dataset=messages'));
    expect(days.length).toBeGreaterThan(0);
    expect(days.every((d) => d.startsWith('date='))).toBe(true);

    // Someone else's file in the lake: a second export is refused, and nothing is touched.
    await writeFile(path.join(lake, 'notes.txt'), 'mine');
    await mkdir(path.join(lake, 'dataset=conversations'));
    await writeFile(path.join(lake, 'dataset=conversations', 'keep.parquet'), 'other dataset');
    await writeFile(path.join(lake, 'dataset=messages', 'stale.parquet'), 'old export');
    const refused = await partitioned();
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n')).toEqual([
      `ferry: --out: ${lake}/ is not empty; choose another directory, or pass --overwrite to replace only its dataset=messages folder`,
    ]);
    expect(await readFile(path.join(lake, 'notes.txt'), 'utf8')).toBe('mine');
    expect(await readdir(path.join(lake, 'dataset=messages'))).toContain('stale.parquet');

    // --overwrite replaces the dataset's own folder and leaves everything else alone.
    const replaced = await partitioned('--overwrite');
    expect(replaced.code, replaced.stderr).toBe(0);
    expect((await readdir(path.join(lake, 'dataset=messages'))).sort()).toEqual([...days].sort());
    expect(await readFile(path.join(lake, 'notes.txt'), 'utf8')).toBe('mine');
    expect(await readFile(path.join(lake, 'dataset=conversations', 'keep.parquet'), 'utf8')).toBe(
      'other dataset',
    );
    expect((await readdir(lake)).sort()).toEqual(['dataset=conversations', 'dataset=messages', 'notes.txt']);

    // Without the trailing slash, into a new folder, the same.
    const fresh = await ferry(
      'export',
      '--tenant',
      slug,
      '--dataset',
      'messages',
      '--format',
      'parquet',
      '--partition-by-date',
      '--out',
      path.join(work, 'lake2'),
    );
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(await readdir(path.join(work, 'lake2'))).toEqual(['dataset=messages']);
  });

  it('names a compressed file with its suffix and writes the XSD beside an XML export', async () => {
    const slug = (JSON.parse((await ferry('tenants', '--json')).stdout) as { slug: string }[])[0]!.slug;
    const csv = path.join(work, 'm.csv');
    const compressed = await ferry(
      'export',
      '--tenant',
      slug,
      '--dataset',
      'messages',
      '--compression',
      'gzip',
      '--out',
      csv,
    );
    expect(compressed.code, compressed.stderr).toBe(0);
    expect(compressed.stderr).toContain(`records to ${csv}.gz (`);
    expect((await readdir(work)).filter((f) => f.startsWith('m.csv'))).toEqual(['m.csv.gz']);
    expect(gunzipSync(await readFile(`${csv}.gz`)).toString('utf8')).toMatch(/^message_id,/);

    const dir = path.join(work, 'xml');
    const xmlFile = path.join(dir, 'september.xml');
    const xml = await ferry(
      'export',
      '--tenant',
      slug,
      '--dataset',
      'messages',
      '--format',
      'xml',
      '--columns',
      'sender_type,message_id,timestamp',
      '--out',
      xmlFile,
    );
    expect(xml.code, xml.stderr).toBe(0);
    expect(xml.stderr).toContain(`wrote its XML Schema to ${path.join(dir, 'messages.xsd')}`);
    expect((await readdir(dir)).sort()).toEqual(['messages.xsd', 'september.xml']);
    const contents = await readFile(xmlFile, 'utf8');
    expect(contents).toContain('messages.xsd"');
    const result = await validateXML({
      xml: [{ fileName: 'september.xml', contents }],
      schema: [
        { fileName: 'messages.xsd', contents: await readFile(path.join(dir, 'messages.xsd'), 'utf8') },
      ],
    });
    expect(result.errors).toEqual([]);
    expect(result.valid).toBe(true);
  });

  it('prints one clear line and exits non-zero on bad input', async () => {
    const badFormat = await ferry('export', '--tenant', 'x', '--dataset', 'messages', '--format', 'xls');
    expect(badFormat.code).not.toBe(0);
    expect(badFormat.stderr).toMatch(
      /--format <format>' argument 'xls' is invalid\. Allowed choices are csv, json, ndjson, xml, parquet, markdown/,
    );

    const markdownPackage = await ferry(
      'export',
      '--tenant',
      'x',
      '--package',
      'zip',
      '--format',
      'markdown',
    );
    expect(markdownPackage.code).not.toBe(0);
    expect(markdownPackage.stderr).toMatch(
      /--format: a package writes its tabular files as csv, json, ndjson, xml, parquet/,
    );

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

    const [tenant] = JSON.parse((await ferry('tenants', '--json')).stdout) as { slug: string }[];
    const unknownSite = await ferry(
      'export',
      '--tenant',
      tenant!.slug,
      '--dataset',
      'conversations',
      '--filter',
      'site_url=https://shop.acme.example',
      '--out',
      path.join(work, 'nothing.csv'),
    );
    expect(unknownSite.code).toBe(1);
    expect(unknownSite.stderr.trim().split('\n')).toHaveLength(1);
    expect(unknownSite.stderr).toMatch(
      /^ferry: site_url: "https:\/\/shop\.acme\.example" is not a site of this tenant \(accepted: https?:\/\//,
    );

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
