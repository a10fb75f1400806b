import { randomBytes, randomUUID } from 'node:crypto';
import { appendFileSync, cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { sql } from 'kysely';
import tarStream, { type Header as TarHeader } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/db/database.ts';
import { createImport, type ImportContext, type ImportRow, runImportById } from '../src/imports/service.ts';
import { DEFAULT_IMPORT_LIMITS, type ImportLimits, type ImportSourceName } from '../src/imports/types.ts';
import { exportCompanyPackage } from '../src/pipeline/company-package.ts';
import { seed } from '../src/seed/seed.ts';
import { LocalObjectStore } from '../src/store/local-object-store.ts';
import { createTestDatabase, type TestDatabase } from './support/databases.ts';
import { type RawZipEntry, rawZip } from './support/raw-zip.ts';

/**
 * Hostile inputs: every one is refused with its stable error code and a message that names the
 * problem, the tenant is left as it was (every imported table and the import map, row for row),
 * and nothing is written outside the import's private extraction folder.
 */

const SECRET = 'imports-hostile-secret-key-0123456789abcdef';
const TABLES = [
  'sites',
  'team_members',
  'customers',
  'consent_records',
  'documents',
  'conversations',
  'messages',
  'import_map',
] as const;
const LIMITS: ImportLimits = {
  ...DEFAULT_IMPORT_LIMITS,
  maxEntries: 50,
  maxRatio: 100,
  maxFieldBytes: 1024 * 1024,
};
const MiB = 1024 * 1024;
const CUSTOMERS_HEADER = 'customer_id,tenant_id,email,name,phone,country,customer_segment,created_at';

let t: TestDatabase;
let database: Database;
let tenantId: string;
let work: string;
let ctx: ImportContext;
let packageRoot: string;
/** Errors that escaped the import (an `error` event nobody listens to): they would crash a worker. */
const uncaught: unknown[] = [];
const collect = (err: unknown) => uncaught.push(err);

beforeAll(async () => {
  process.on('uncaughtException', collect);
  t = await createTestDatabase('pglite');
  database = t.database;
  const summary = await seed(database, {
    tenants: 1,
    conversations: 20,
    messagesPerConversation: 4,
    seed: 31,
    since: new Date('2025-06-01T00:00:00Z'),
    until: new Date('2026-06-01T00:00:00Z'),
    secretKey: SECRET,
  });
  tenantId = summary.tenants[0]!.id;
  work = path.join(tmpdir(), `ferry-hostile-${randomUUID().slice(0, 8)}`);
  mkdirSync(work);
  ctx = {
    database,
    secretKey: 'hostile-import-secret-key-0123456789abcd',
    store: new LocalObjectStore({ root: path.join(work, 'store') }),
    limits: LIMITS,
    batchSize: 100,
  };
  const exported = path.join(work, 'exported');
  mkdirSync(exported);
  const outcome = await exportCompanyPackage(
    database,
    { tenantId, kind: 'directory', pii: 'full' },
    { dir: exported },
  );
  packageRoot = path.join(exported, outcome.root);
}, 120_000);

afterAll(async () => {
  process.off('uncaughtException', collect);
  await t?.drop();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Count and digest of the tenant's rows in every table an import writes. */
async function snapshot(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const table of TABLES) {
    const { rows } = await sql<{ n: number; h: string | null }>`SELECT count(*)::int AS n,
        md5(string_agg(t::text, ',' ORDER BY t::text)) AS h
      FROM ${sql.table(table)} t WHERE tenant_id = ${tenantId}`.execute(database.db);
    out[table] = `${rows[0]!.n}:${rows[0]!.h ?? ''}`;
  }
  return out;
}

/** A fresh folder for one case, under the test's folder. */
function caseDir(name: string): string {
  const dir = path.join(work, `${name}-${randomUUID().slice(0, 8)}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Runs an import of `file` (apply, conflicts skipped) and checks that the tenant did not change. */
async function importOf(
  file: string,
  source: ImportSourceName,
  options: { dataset?: string; limits?: ImportLimits; dryRun?: boolean } = {},
): Promise<ImportRow> {
  const before = await snapshot();
  const run = { ...ctx, limits: options.limits ?? LIMITS };
  const created = await createImport(run, {
    tenantId,
    source,
    dataset: options.dataset,
    input: { kind: 'path', path: file },
    dryRun: options.dryRun ?? false,
    conflict: { default: 'skip' },
    allOrNothing: false,
    notify: false,
    actor: 'test:hostile',
  });
  uncaught.length = 0;
  const done = await runImportById(run, created.id);
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(uncaught.map(String), 'errors escaped the import (they crash the process)').toEqual([]);
  expect(await snapshot(), 'the tenant changed').toEqual(before);
  return done;
}

function expectRefused(row: ImportRow, code: string, ...patterns: RegExp[]): void {
  expect({ status: row.status, code: row.error_code, error: row.error }).toMatchObject({
    status: 'failed',
    code,
    error: expect.any(String),
  });
  for (const p of patterns) expect(row.error, `error code ${row.error_code}`).toMatch(p);
}

function findFile(root: string, name: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.name.includes(name)) out.push(full);
      if (entry.isDirectory() && !entry.isSymbolicLink()) walk(full);
    }
  };
  walk(root);
  return out;
}

/** Nothing named `token` was written where an escaping entry would land, nor anywhere under the case's folder. */
function expectNothingOutside(token: string, dir: string): void {
  const places = [tmpdir(), path.dirname(tmpdir()), work, dir, process.cwd(), '/abs'];
  const found = places
    .filter((p) => existsSync(p))
    .flatMap((p) =>
      readdirSync(p)
        .filter((n) => n.includes(token))
        .map((n) => path.join(p, n)),
    );
  expect([...found, ...findFile(work, token)]).toEqual([]);
}

function writeZip(dir: string, entries: readonly RawZipEntry[], name = 'hostile.zip'): string {
  const file = path.join(dir, name);
  writeFileSync(file, rawZip(entries));
  return file;
}

async function writeTarGz(
  dir: string,
  entries: readonly { header: Partial<TarHeader> & { name: string }; data?: string }[],
): Promise<string> {
  const pack = tarStream.pack();
  for (const e of entries) pack.entry(e.header, e.data ?? '');
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  const file = path.join(dir, 'hostile.tar.gz');
  writeFileSync(file, gzipSync(Buffer.concat(chunks)));
  return file;
}

const CSV_BODY = Buffer.from(`${CUSTOMERS_HEADER}\n`);

describe('hostile archives', () => {
  it('imports a well-formed archive written by the same ZIP writer (control)', async () => {
    const dir = caseDir('control-zip');
    const file = writeZip(dir, [
      { name: 'customers.csv', data: CSV_BODY, method: 'deflate' },
      { name: 'more/notes.txt', data: Buffer.from('hello') },
    ]);
    const row = await importOf(file, 'csv', { dryRun: true });
    expect({ status: row.status, code: row.error_code, error: row.error }).toEqual({
      status: 'completed',
      code: null,
      error: null,
    });
  });

  const token = () => `evil-${randomUUID().slice(0, 8)}`;
  const slips: [string, (evil: string, dir: string) => RawZipEntry[]][] = [
    ['a parent segment (../)', (evil) => [{ name: `../${evil}.txt`, data: Buffer.from('pwned') }]],
    ['an absolute path', (evil) => [{ name: `/abs/${evil}.txt`, data: Buffer.from('pwned') }]],
    [
      'an absolute path into the temporary folder',
      (evil) => [{ name: path.join(tmpdir(), `${evil}.txt`), data: Buffer.from('pwned') }],
    ],
    ['a drive letter', (evil) => [{ name: `C:\\${evil}.txt`, data: Buffer.from('pwned') }]],
    [
      'a parent segment after a folder',
      (evil) => [{ name: `a/../../${evil}.txt`, data: Buffer.from('pwned') }],
    ],
    ['backslashes that climb', (evil) => [{ name: `..\\..\\${evil}.txt`, data: Buffer.from('pwned') }]],
    ['a backslash', (evil) => [{ name: `dir\\${evil}.txt`, data: Buffer.from('pwned') }]],
    ['a NUL byte', (evil) => [{ name: `${evil}.txt\u0000.csv`, data: Buffer.from('pwned') }]],
    [
      'a symbolic link',
      (evil) => [{ name: `${evil}-passwd`, data: Buffer.from('/etc/passwd'), unixMode: 0o120777 }],
    ],
    [
      'a symbolic link and a file written through it',
      (evil, dir) => {
        const outside = path.join(dir, 'outside');
        mkdirSync(outside);
        return [
          { name: `${evil}-link`, data: Buffer.from(outside), unixMode: 0o120777 },
          { name: `${evil}-link/${evil}.txt`, data: Buffer.from('pwned'), unixMode: 0o100644 },
        ];
      },
    ],
  ];
  it.each(slips)('zip slip: refuses an entry with %s', async (_what, build) => {
    const evil = token();
    const dir = caseDir('slip');
    const file = writeZip(dir, [{ name: 'customers.csv', data: CSV_BODY }, ...build(evil, dir)]);
    const row = await importOf(file, 'csv');
    expectRefused(row, 'import_unsafe', new RegExp(evil));
    expectNothingOutside(evil, dir);
  });

  it('zip bomb: refuses an entry of 50 MiB of zeros (ratio about 1000:1)', async () => {
    const dir = caseDir('bomb');
    const file = writeZip(dir, [{ name: 'customers.csv', data: Buffer.alloc(50 * MiB), method: 'deflate' }]);
    const row = await importOf(file, 'csv');
    expectRefused(row, 'import_limit_exceeded', /maxRatio/, /FERRY_IMPORT_MAX_RATIO/, /customers\.csv/);
  });

  it('refuses an entry whose header lies about its size (1 KiB declared, 5 MiB inside)', async () => {
    const dir = caseDir('liar');
    // Random bytes do not compress: only the size check can notice, not the ratio.
    const file = writeZip(dir, [
      { name: 'payload.bin', data: randomBytes(5 * MiB), method: 'deflate', declaredSize: 1024 },
    ]);
    const row = await importOf(file, 'csv');
    expect(['import_unsafe', 'import_unreadable']).toContain(row.error_code);
    expectRefused(row, row.error_code ?? 'import_unsafe', /payload\.bin/, /too many bytes|size/i, /1024/);
  });

  it('refuses an archive with more entries than maxEntries', async () => {
    const dir = caseDir('entries');
    const entries = Array.from({ length: 60 }, (_, i) => ({ name: `f${i}.txt`, data: Buffer.from(`${i}`) }));
    const file = writeZip(dir, entries);
    const row = await importOf(file, 'csv');
    expectRefused(row, 'import_limit_exceeded', /maxEntries/, /FERRY_IMPORT_MAX_ENTRIES=50/, /60/);
  });

  it('refuses an archive inside the archive', async () => {
    const dir = caseDir('nested');
    const inner = rawZip([{ name: 'customers.csv', data: CSV_BODY }]);
    const file = writeZip(dir, [
      { name: 'customers.csv', data: CSV_BODY },
      { name: 'inner.zip', data: inner },
    ]);
    const row = await importOf(file, 'csv');
    expectRefused(row, 'import_unsafe', /inner\.zip/, /archive inside/);
  });

  it('refuses an entry 300 folders deep (a path over 1024 bytes)', async () => {
    const dir = caseDir('deep');
    const name = `${'dir/'.repeat(300)}x.csv`;
    expect(Buffer.byteLength(name)).toBeGreaterThan(1024);
    const file = writeZip(dir, [{ name, data: CSV_BODY }]);
    const row = await importOf(file, 'csv');
    expectRefused(row, 'import_unsafe', /dir\/dir\/dir/, /1024/);
  });

  it('tar.gz: refuses an entry with a parent segment (../)', async () => {
    const evil = token();
    const dir = caseDir('tar-slip');
    const file = await writeTarGz(dir, [
      { header: { name: 'customers.csv' }, data: CSV_BODY.toString() },
      { header: { name: `../${evil}.txt` }, data: 'pwned' },
    ]);
    const row = await importOf(file, 'csv');
    expectRefused(row, 'import_unsafe', new RegExp(`\\.\\./${evil}`));
    expectNothingOutside(evil, dir);
  });

  it('tar.gz: refuses a symbolic link', async () => {
    const evil = token();
    const dir = caseDir('tar-link');
    const file = await writeTarGz(dir, [
      { header: { name: 'customers.csv' }, data: CSV_BODY.toString() },
      { header: { name: `${evil}-link`, type: 'symlink', linkname: '/etc/passwd' } },
      { header: { name: `${evil}-link/${evil}.txt` }, data: 'pwned' },
    ]);
    const row = await importOf(file, 'csv');
    expectRefused(row, 'import_unsafe', new RegExp(`${evil}-link`), /link/);
    expectNothingOutside(evil, dir);
  });
});

describe('malformed files', () => {
  const customer = (n: number) =>
    `${randomUUID()},${randomUUID()},hostile${n}@example.com,Hostile ${n},+4915112345678,DE,smb,2026-01-01T00:00:00.000Z`;

  it('CSV: refuses an unclosed quote, naming the file and the line', async () => {
    const dir = caseDir('csv-quote');
    const file = path.join(dir, 'customers.csv');
    writeFileSync(file, `${CUSTOMERS_HEADER}\n"${randomUUID()},x,hostile@example.com,Never closed\n`);
    const row = await importOf(file, 'csv');
    expectRefused(row, 'import_unreadable', /customers\.csv/, /line 2/);
  });

  it('CSV: refuses a row with the wrong number of fields, naming the file and the line', async () => {
    const dir = caseDir('csv-fields');
    const file = path.join(dir, 'customers.csv');
    writeFileSync(file, `${CUSTOMERS_HEADER}\n${customer(1)}\n${randomUUID()},x,short@example.com\n`);
    const row = await importOf(file, 'csv');
    expectRefused(row, 'import_unreadable', /customers\.csv/, /line 3/);
  });

  it('JSON: refuses a truncated file, naming the file and a byte offset', async () => {
    const dir = caseDir('json-truncated');
    const file = path.join(dir, 'customers.json');
    writeFileSync(file, '{"export_metadata":{"dataset":"customers"},"data":[{"customer_id":"');
    const row = await importOf(file, 'json');
    expectRefused(row, 'import_unreadable', /customers\.json/, /byte \d+/);
  });

  it('NDJSON: refuses a bad line 3, naming it', async () => {
    const dir = caseDir('ndjson');
    const file = path.join(dir, 'customers.ndjson');
    const record = (n: number) =>
      JSON.stringify({
        customer_id: randomUUID(),
        email: `hostile${n}@example.com`,
        name: `Hostile ${n}`,
        country: 'DE',
      });
    writeFileSync(file, `${record(1)}\n${record(2)}\n{"customer_id": "c3", oops}\n${record(4)}\n`);
    const row = await importOf(file, 'ndjson');
    expectRefused(row, 'import_unreadable', /customers\.ndjson/, /line 3\b/);
  });

  it('CSV: refuses a 5 MiB field (maxFieldBytes 1 MiB)', async () => {
    const dir = caseDir('csv-field');
    const file = path.join(dir, 'customers.csv');
    const big = `${randomUUID()},x,big@example.com,${'x'.repeat(5 * MiB)},,DE,smb,2026-01-01T00:00:00.000Z`;
    writeFileSync(file, `${CUSTOMERS_HEADER}\n${customer(1)}\n${big}\n`);
    const row = await importOf(file, 'csv', {
      limits: { ...LIMITS, maxFieldBytes: DEFAULT_IMPORT_LIMITS.maxFieldBytes },
    });
    expectRefused(
      row,
      'import_limit_exceeded',
      /maxFieldBytes/,
      /FERRY_IMPORT_MAX_FIELD_BYTES/,
      /customers\.csv/,
    );
  });

  it('JSON: refuses a 5 MiB string (maxFieldBytes 1 MiB)', async () => {
    const dir = caseDir('json-field');
    const file = path.join(dir, 'customers.json');
    const data = [
      { customer_id: randomUUID(), email: 'small@example.com', name: 'Small' },
      { customer_id: randomUUID(), email: 'big@example.com', name: 'x'.repeat(5 * MiB) },
    ];
    writeFileSync(file, JSON.stringify({ export_metadata: { dataset: 'customers' }, data }));
    const row = await importOf(file, 'json', {
      limits: { ...LIMITS, maxFieldBytes: DEFAULT_IMPORT_LIMITS.maxFieldBytes },
    });
    expectRefused(
      row,
      'import_limit_exceeded',
      /maxFieldBytes/,
      /FERRY_IMPORT_MAX_FIELD_BYTES/,
      /customers\.json/,
    );
  });
});

describe('a Ferry package changed after export', () => {
  /** A copy of the exported package to tamper with. */
  function copyOfPackage(name: string): string {
    const dir = path.join(caseDir(name), 'package');
    cpSync(packageRoot, dir, { recursive: true });
    expect(existsSync(path.join(dir, 'messages.csv'))).toBe(true);
    expect(existsSync(path.join(dir, 'checksums.sha256'))).toBe(true);
    return dir;
  }

  it('plans the untouched package (control)', async () => {
    const row = await importOf(copyOfPackage('package-control'), 'ferry', { dryRun: true });
    expect({ status: row.status, code: row.error_code, error: row.error }).toEqual({
      status: 'completed',
      code: null,
      error: null,
    });
  });

  it('refuses a package whose messages.csv gained a byte', async () => {
    const dir = copyOfPackage('package-appended');
    appendFileSync(path.join(dir, 'messages.csv'), '\n');
    const row = await importOf(dir, 'ferry');
    expectRefused(row, 'import_unreadable', /messages\.csv/, /checksums\.sha256/);
  });

  it('refuses a package with a file added', async () => {
    const dir = copyOfPackage('package-added');
    writeFileSync(path.join(dir, 'extra-customers.csv'), CSV_BODY);
    const row = await importOf(dir, 'ferry');
    expectRefused(row, 'import_unreadable', /extra-customers\.csv/, /not listed/);
  });

  it('refuses a package with a listed file deleted', async () => {
    const dir = copyOfPackage('package-deleted');
    rmSync(path.join(dir, 'messages.csv'));
    const row = await importOf(dir, 'ferry');
    expectRefused(row, 'import_unreadable', /messages\.csv/, /listed but not in the package/);
  });
});
