import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { decryptWithIdentities } from '../src/crypto/age.ts';
import type { Database } from '../src/db/database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { exportCompanyPackage, writeCompanyPackage } from '../src/pipeline/company-package.ts';
import { seed } from '../src/seed/seed.ts';
import { bearer } from './support/fixtures/auth.ts';
import {
  type ExportHarness,
  type ExportJson,
  exportHarness,
  requestExport,
} from './support/fixtures/export-jobs.ts';
import { runFerry } from './support/cli.ts';
import {
  createTestDatabase,
  preferDialect,
  TEST_DATABASE_URL,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';

const exec = promisify(execFile);
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const MiB = 1_048_576;

/**
 * Messages of random hex text (about 10 KB each), so a package of the harness's small
 * tenant is a few MB even compressed: several parts at the smallest part size, 1 MiB.
 */
async function inflate(database: Database, tenantId: string): Promise<void> {
  await sql`UPDATE messages m SET content = (
      SELECT string_agg(md5(random()::text || m.id::text || g::text), '') FROM generate_series(1, 300) g)
    WHERE tenant_id = ${tenantId}`.execute(database.db);
}

interface SplitFile {
  id: string;
  name: string;
  bytes: number;
  sha256: string;
  download?: string;
}
interface SplitJson {
  size: number;
  parts: (SplitFile & { part: number; records: number })[];
  manifest: SplitFile | null;
  checksums: SplitFile | null;
}
interface Manifest {
  format: string;
  package: string;
  kind: string;
  split_size: number;
  part_count: number;
  bytes: number;
  parts: {
    part: number;
    name: string;
    bytes: number;
    sha256: string;
    exceeds_split_size: boolean;
    files: { path: string; bytes: number; sha256: string }[];
  }[];
}

async function run(cmd: string, args: string[], cwd?: string) {
  try {
    const { stdout, stderr } = await exec(cmd, args, { cwd, maxBuffer: 64 << 20 });
    return { code: 0, output: `${stdout}${stderr}` };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, output: `${e.stdout}${e.stderr}` };
  }
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

/** Extracts every archive into `into` and returns the package's root folder there. */
async function extractAll(kind: 'zip' | 'tar.gz', files: string[], into: string): Promise<string> {
  await mkdir(into, { recursive: true });
  for (const file of files) {
    const { code, output } =
      kind === 'zip'
        ? await run('unzip', ['-qo', file, '-d', into])
        : await run('tar', ['xzf', file, '-C', into]);
    expect(code, output).toBe(0);
  }
  const [root] = await readdir(into);
  return path.join(into, root!);
}

/** Checks the parts of a split package in `dir` as a reader would, and returns the extracted root. */
async function checkParts(kind: 'zip' | 'tar.gz', dir: string, manifest: Manifest, checksums: string) {
  // sha256sum -c checks every part and the manifest.
  const check = await run('sha256sum', ['-c', '--strict', checksums], dir);
  expect(check.code, check.output).toBe(0);
  expect(check.output.trim().split('\n')).toHaveLength(manifest.parts.length + 1);
  const seen = new Map<string, number>();
  for (const part of manifest.parts) {
    const file = path.join(dir, part.name);
    const test = kind === 'zip' ? await run('unzip', ['-tq', file]) : await run('tar', ['-tzf', file]);
    expect(test.code, test.output).toBe(0);
    if (part.exceeds_split_size) expect(part.files).toHaveLength(1);
    else expect(part.bytes).toBeLessThanOrEqual(manifest.split_size);
    for (const f of part.files) seen.set(f.path, (seen.get(f.path) ?? 0) + 1);
  }
  // No file in two parts.
  expect([...seen.entries()].filter(([, n]) => n > 1)).toEqual([]);
  const root = await extractAll(
    kind,
    manifest.parts.map((p) => path.join(dir, p.name)),
    path.join(dir, 'extracted'),
  );
  expect(await listFiles(root)).toEqual([...seen.keys()].sort());
  const inside = await run('sha256sum', ['-c', '--strict', 'checksums.sha256'], root);
  expect(inside.code, inside.output).toBe(0);
  return root;
}

describe('split company package: parts hold the same files as the package', () => {
  let t: TestDatabase;
  let tenantId: string;
  let work: string;

  beforeAll(async () => {
    t = await createTestDatabase(preferDialect('pglite'));
    const summary = await seed(t.database, {
      tenants: 1,
      conversations: 30,
      messagesPerConversation: 5,
      seed: 7,
      since: new Date('2026-08-01T00:00:00Z'),
      until: new Date('2026-10-01T00:00:00Z'),
    });
    tenantId = summary.tenants[0]!.id;
    await inflate(t.database, tenantId);
    work = await mkdtemp(path.join(tmpdir(), 'ferry-split-package-'));
  }, 120_000);
  afterAll(async () => {
    vi.useRealTimers();
    await t?.drop();
    await rm(work, { recursive: true, force: true });
  });

  for (const kind of ['zip', 'tar.gz'] as const) {
    it(`${kind}: the union of the parts is the unsplit package, byte for byte`, async () => {
      // The same export time and id for both, so metadata.json and index.html match too.
      vi.useFakeTimers({ toFake: ['Date'], now: new Date('2026-11-22T09:30:00Z') });
      const request = { tenantId, kind, pii: 'full' as const };
      const whole = path.join(work, `whole.${kind}`);
      const out = createWriteStream(whole);
      await exportCompanyPackage(t.database, request, out, { exportId: 'same-export' });
      await finished(out);
      const dir = path.join(work, `parts-${kind}`);
      await mkdir(dir);
      const names: string[] = [];
      const streams: Writable[] = [];
      const split = await writeCompanyPackage(
        t.database,
        request,
        {
          partSize: 500_000,
          openPart(number) {
            names.push(path.join(dir, `p${number}.${kind}`));
            const stream = createWriteStream(names.at(-1)!);
            streams.push(stream);
            return stream;
          },
        },
        { exportId: 'same-export' },
      );
      await Promise.all(streams.map((s) => finished(s)));
      vi.useRealTimers();
      expect(split.parts!.length).toBeGreaterThan(3);
      expect(split.bytes).toBe(split.parts!.reduce((n, p) => n + p.bytes, 0));
      const parts = await extractAll(kind, names, path.join(dir, 'x'));
      const unsplit = await extractAll(kind, [whole], path.join(work, `whole-${kind}`));
      const files = await listFiles(unsplit);
      expect(await listFiles(parts)).toEqual(files);
      for (const file of files)
        expect(sha256(await readFile(path.join(parts, file))), file).toBe(
          sha256(await readFile(path.join(unsplit, file))),
        );
      // Every file is in exactly one part, as the layout says.
      const listed = split.parts!.flatMap((p) => p.files.map((f) => f.path)).sort();
      expect(listed).toEqual(files);
    }, 120_000);
  }
});

/** Downloads a file of an export through the API's link (signed or presigned) into `dir`. */
async function download(h: ExportHarness, file: SplitFile, dir: string): Promise<Buffer> {
  const res = await h.app.inject({ method: 'GET', url: file.download!, headers: bearer(h.keys.admin) });
  expect(res.statusCode, res.body).toBe(200);
  const link = res.json() as { url: string; method: string; file: { name: string } };
  expect(link.file.name).toBe(file.name);
  let bytes: Buffer;
  if (link.method === 'presigned') bytes = Buffer.from(await (await fetch(link.url)).arrayBuffer());
  else {
    const got = await h.app.inject({ method: 'GET', url: link.url.slice(link.url.indexOf('/api/')) });
    expect(got.statusCode).toBe(200);
    bytes = got.rawPayload;
  }
  expect(bytes.length).toBe(file.bytes);
  expect(sha256(bytes)).toBe(file.sha256);
  await writeFile(path.join(dir, file.name), bytes);
  return bytes;
}

/** Requests a split export, waits for it and downloads every file of it into a new folder. */
async function splitExport(h: ExportHarness, body: Record<string, unknown>, work: string) {
  const created = await requestExport(h.app, h.keys.admin, body);
  expect(created.request).toMatchObject({ split_size: body.split_size === '1GB' ? 1e9 : MiB });
  const done = await h.waitForExport(created.id, ['completed', 'failed'], { timeoutMs: 180_000 });
  expect(done.status, JSON.stringify(done.error)).toBe('completed');
  const split = done.split as SplitJson;
  const dir = await mkdtemp(path.join(work, 'download-'));
  for (const file of [...split.parts, split.manifest!, split.checksums!]) await download(h, file, dir);
  return { done, split, dir };
}

describe('split exports through the API, on local disk', () => {
  let h: ExportHarness;
  let work: string;

  beforeAll(async () => {
    h = await exportHarness(preferDialect('pglite'), { workers: true, conversations: 30 });
    await inflate(h.database, h.tenant.id);
    work = await mkdtemp(path.join(tmpdir(), 'ferry-split-api-'));
  }, 120_000);
  afterAll(async () => {
    await h?.close();
    await rm(work, { recursive: true, force: true });
  });

  it('stores the parts, the manifest and the checksums; each downloads and checks', async () => {
    const { done, split, dir } = await splitExport(
      h,
      {
        datasets: ['account', 'conversations', 'messages', 'customers'],
        package: 'zip',
        pii: 'full',
        split_size: MiB,
      },
      work,
    );
    expect(split.size).toBe(MiB);
    expect(split.parts.length).toBeGreaterThanOrEqual(3);
    expect(split.parts.map((p) => p.part)).toEqual(split.parts.map((_, i) => i + 1));
    expect(split.parts[0]!.name).toMatch(/^company-export-\d{8}T\d{6}Z\.part001\.zip$/);
    expect(split.manifest!.name).toMatch(/^company-export-\d{8}T\d{6}Z\.parts\.json$/);
    expect(split.checksums!.name).toMatch(/^company-export-\d{8}T\d{6}Z\.parts\.sha256$/);
    // The export's files are the parts, the manifest and the checksums.
    expect(done.files.map((f) => f.name).sort()).toEqual(
      [...split.parts.map((p) => p.name), split.manifest!.name, split.checksums!.name].sort(),
    );
    // Its records and bytes are the parts'.
    expect(done.progress.records).toBe(split.parts.reduce((n, p) => n + p.records, 0));
    expect(done.progress.bytes).toBe(split.parts.reduce((n, p) => n + p.bytes, 0));

    const manifest = JSON.parse(await readFile(path.join(dir, split.manifest!.name), 'utf8')) as Manifest;
    expect(manifest).toMatchObject({ format: 'ferry.split-package/1', kind: 'zip', split_size: MiB });
    expect(manifest.parts.map((p) => [p.name, p.bytes, p.sha256])).toEqual(
      split.parts.map((p) => [p.name, p.bytes, p.sha256]),
    );
    const root = await checkParts('zip', dir, manifest, split.checksums!.name);
    expect(path.basename(root)).toBe(manifest.package);
    for (const file of [
      'metadata.json',
      'datapackage.json',
      'messages.csv',
      'index.html',
      'checksums.sha256',
    ])
      expect(await listFiles(root)).toContain(file);

    // The same request unsplit holds the same files, the data files byte for byte.
    const whole = await requestExport(h.app, h.keys.admin, {
      datasets: ['account', 'conversations', 'messages', 'customers'],
      package: 'zip',
      pii: 'full',
    });
    const wholeDone = await h.waitForExport(whole.id, ['completed'], { timeoutMs: 180_000 });
    expect(wholeDone.split).toBeNull();
    expect(wholeDone.request).toMatchObject({ split_size: null });
    const res = await h.app.inject({
      method: 'GET',
      url: `/api/v1/exports/${whole.id}/download?redirect=true`,
      headers: bearer(h.keys.admin),
    });
    const zip = await h.app.inject({
      method: 'GET',
      url: String(res.headers.location).slice(String(res.headers.location).indexOf('/api/')),
    });
    await writeFile(path.join(work, 'whole.zip'), zip.rawPayload);
    const unsplit = await extractAll('zip', [path.join(work, 'whole.zip')], path.join(work, 'whole'));
    const files = await listFiles(unsplit);
    expect(await listFiles(root)).toEqual(files);
    // Files that carry the export's own id and time differ between two exports.
    const stamped = new Set(['metadata.json', 'index.html', 'datapackage.json', 'checksums.sha256']);
    for (const file of files.filter((f) => !stamped.has(f)))
      expect(sha256(await readFile(path.join(root, file))), file).toBe(
        sha256(await readFile(path.join(unsplit, file))),
      );
  }, 240_000);

  it('encrypts the parts and the manifest for age recipients; the checksums stay readable', async () => {
    const identity = await generateIdentity();
    const { split, dir } = await splitExport(
      h,
      {
        datasets: ['conversations', 'messages'],
        package: 'tar.gz',
        pii: 'full',
        split_size: String(MiB),
        encryption: { recipients: [await identityToRecipient(identity)] },
      },
      work,
    );
    expect(split.parts[0]!.name).toMatch(/\.part001\.tar\.gz\.age$/);
    expect(split.manifest!.name).toMatch(/\.parts\.json\.age$/);
    expect(split.checksums!.name).toMatch(/\.parts\.sha256$/);
    // sha256sum -c checks the encrypted files as downloaded.
    const check = await run('sha256sum', ['-c', '--strict', split.checksums!.name], dir);
    expect(check.code, check.output).toBe(0);
    const decrypt = async (name: string) => {
      const plain = name.replace(/\.age$/, '');
      await pipeline(
        Readable.from([await readFile(path.join(dir, name))]),
        decryptWithIdentities([identity]),
        createWriteStream(path.join(dir, plain)),
      );
      return plain;
    };
    const manifest = JSON.parse(
      await readFile(path.join(dir, await decrypt(split.manifest!.name)), 'utf8'),
    ) as Manifest;
    const plainDir = path.join(dir, 'plain');
    await mkdir(plainDir);
    const plainParts: Manifest['parts'] = [];
    for (const part of manifest.parts) {
      const plain = await decrypt(part.name);
      await rm(path.join(dir, part.name));
      const bytes = await readFile(path.join(dir, plain));
      await writeFile(path.join(plainDir, plain), bytes);
      plainParts.push({ ...part, name: plain, bytes: bytes.length, sha256: sha256(bytes) });
    }
    const checks = plainParts.map((p) => `${p.sha256}  ${p.name}\n`).join('');
    await writeFile(
      path.join(plainDir, 'plain.sha256'),
      `${checks}${sha256(Buffer.from(JSON.stringify(manifest)))}  m.json\n`,
    );
    await writeFile(path.join(plainDir, 'm.json'), JSON.stringify(manifest));
    // The stored sizes are the encrypted ones; in plaintext every part keeps to the size.
    await checkParts('tar.gz', plainDir, { ...manifest, parts: plainParts }, 'plain.sha256');
  }, 240_000);

  it('refuses a split size it does not know, or one for a single file, naming the field and the accepted values', async () => {
    for (const split_size of ['3GB', '2 GB', 1_000, 60_000_000_000, 1.5, true, '']) {
      const res = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: bearer(h.keys.admin),
        payload: { datasets: ['messages', 'customers'], split_size },
      });
      expect(res.statusCode, JSON.stringify(split_size)).toBe(400);
      expect(res.headers['content-type']).toBe('application/problem+json; charset=utf-8');
      const problem = res.json();
      expect(problem.code).toBe('invalid_parameter');
      expect(problem.errors.map((e: { parameter: string }) => e.parameter)).toContain('split_size');
      if (typeof split_size !== 'boolean' && split_size !== 1.5)
        expect(problem.detail).toMatch(
          /accepted: 1GB, 2GB, 4GB, 10GB, 50GB, an integer byte count from 1048576/,
        );
    }
    const single = await h.app.inject({
      method: 'POST',
      url: '/api/v1/exports',
      headers: bearer(h.keys.admin),
      payload: { datasets: ['messages'], split_size: '2GB' },
    });
    expect(single.statusCode).toBe(400);
    expect(single.json()).toMatchObject({ code: 'invalid_parameter', errors: [{ parameter: 'split_size' }] });
    // The estimate checks it the same way, and takes a valid one.
    const estimate = await h.app.inject({
      method: 'POST',
      url: '/api/v1/exports/estimate',
      headers: bearer(h.keys.admin),
      payload: { datasets: ['messages', 'customers'], split_size: '4GB' },
    });
    expect(estimate.statusCode, estimate.body).toBe(200);
  });

  it('repeats a split export as a split export', async () => {
    const source = (
      await h.app.inject({
        method: 'GET',
        url: '/api/v1/exports?status=completed&limit=100',
        headers: bearer(h.keys.admin),
      })
    ).json() as { data: ExportJson[] };
    const splitOne = source.data.find(
      (e) => (e.request as { split_size: number | null }).split_size === MiB,
    )!;
    const res = await h.app.inject({
      method: 'POST',
      url: `/api/v1/exports/${splitOne.id}/repeat`,
      headers: bearer(h.keys.admin),
    });
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json().request.split_size).toBe(MiB);
    const done = await h.waitForExport(res.json().id, ['completed', 'failed'], { timeoutMs: 180_000 });
    expect(done.status).toBe('completed');
    expect((done.split as SplitJson).parts.length).toBeGreaterThan(1);
    // Deleting it removes every part.
    const deleted = await h.app.inject({
      method: 'DELETE',
      url: `/api/v1/exports/${done.id}`,
      headers: bearer(h.keys.admin),
    });
    expect(deleted.json()).toMatchObject({ status: 'expired', files: [] });
    const left = [];
    for await (const o of h.store.list(`exports/${h.tenant.id}/${done.id}/`)) left.push(o);
    expect(left).toEqual([]);
  }, 240_000);
});

describe('split exports on S3 storage', () => {
  let s3: TestS3Server;
  let work: string;

  beforeAll(async () => {
    s3 = await startS3Server();
    work = await mkdtemp(path.join(tmpdir(), 'ferry-split-s3-'));
  });
  afterAll(async () => {
    await s3?.stop();
    await rm(work, { recursive: true, force: true });
  });

  for (const encryption of ['off', 'on'] as const) {
    it(`stores each part as an object of its own (encryption at rest ${encryption})`, async () => {
      const h = await exportHarness(preferDialect('postgres'), {
        workers: true,
        conversations: 30,
        env: {
          FERRY_STORAGE: 's3',
          FERRY_S3_BUCKET: s3.bucket,
          FERRY_S3_ENDPOINT: s3.endpoint,
          FERRY_S3_REGION: s3.region,
          FERRY_S3_ACCESS_KEY_ID: s3.accessKeyId,
          FERRY_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
          FERRY_STORAGE_ENCRYPTION: encryption,
        },
      });
      try {
        await inflate(h.database, h.tenant.id);
        const { done, split, dir } = await splitExport(
          h,
          { datasets: ['conversations', 'messages'], package: 'tar.gz', pii: 'full', split_size: MiB },
          work,
        );
        expect(split.parts.length).toBeGreaterThanOrEqual(2);
        const manifest = JSON.parse(await readFile(path.join(dir, split.manifest!.name), 'utf8')) as Manifest;
        await checkParts('tar.gz', dir, manifest, split.checksums!.name);
        const stored: string[] = [];
        for await (const o of h.store.list(`exports/${h.tenant.id}/${done.id}/`))
          stored.push(o.key.split('/').at(-1)!);
        expect(stored.sort()).toEqual(done.files.map((f) => f.name).sort());
        expect(await s3.incompleteUploads()).toBe(0);
      } finally {
        await h.close();
      }
    }, 240_000);
  }
});

describe.skipIf(!testsDialect('postgres'))('ferry export --split-size', () => {
  let env: NodeJS.ProcessEnv;
  let work: string;
  let schema: string;
  let slug: string;
  const ferry = (...args: string[]) => runFerry(args, { env });

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'ferry-split-cli-'));
    schema = `ferry_split_cli_${process.pid}_${Date.now()}`;
    env = {
      ...process.env,
      DATABASE_URL: TEST_DATABASE_URL,
      DATABASE_SCHEMA: schema,
      FERRY_DATA_DIR: work,
      LOG_LEVEL: 'silent',
    };
    expect((await ferry('migrate')).code).toBe(0);
    expect((await ferry('seed', '--tenants', '1', '--conversations', '30', '--seed', '4')).code).toBe(0);
    const [tenant] = JSON.parse((await ferry('tenants', '--json')).stdout) as { id: string; slug: string }[];
    slug = tenant!.slug;
    const database = postgresDatabase({ connectionString: TEST_DATABASE_URL, schema, max: 1 });
    await inflate(database, tenant!.id);
    await database.close();
  }, 120_000);
  afterAll(async () => {
    const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
    await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.close();
    await rm(work, { recursive: true, force: true });
  });

  it('writes the parts beside --out with the manifest and checksums, and records them', async () => {
    const out = path.join(work, 'out', 'acme.zip');
    const res = await ferry(
      'export',
      '--tenant',
      slug,
      '--package',
      'zip',
      '--pii',
      'full',
      '--split-size',
      String(MiB),
      '--out',
      out,
    );
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(
      /in \d+ parts to .*; manifest acme\.parts\.json \(sha256 [0-9a-f]{64}\), check with: sha256sum -c acme\.parts\.sha256/,
    );
    const dir = path.dirname(out);
    const names = (await readdir(dir)).sort();
    expect(names).toContain('acme.part001.zip');
    expect(names).toContain('acme.parts.json');
    expect(names).toContain('acme.parts.sha256');
    expect(names.some((n) => n.includes('.partial-'))).toBe(false);
    const manifest = JSON.parse(await readFile(path.join(dir, 'acme.parts.json'), 'utf8')) as Manifest;
    expect(names.filter((n) => /\.part\d+\.zip$/.test(n))).toEqual(manifest.parts.map((p) => p.name));
    await checkParts('zip', dir, manifest, 'acme.parts.sha256');

    // Recorded like any CLI export: every file, no download link.
    const database = postgresDatabase({ connectionString: TEST_DATABASE_URL, schema, max: 1 });
    try {
      const files = await database.db
        .selectFrom('export_files' as never)
        .select(['name' as never, 'sha256' as never])
        .execute();
      const recorded = files as unknown as { name: string; sha256: string }[];
      expect(recorded.map((f) => f.name).sort()).toEqual(names.filter((n) => n.startsWith('acme.')).sort());
    } finally {
      await database.close();
    }

    // Never written over, unless asked; a smaller package then leaves no stale parts.
    const again = await ferry(
      'export',
      '--tenant',
      slug,
      '--package',
      'zip',
      '--split-size',
      String(MiB),
      '--out',
      out,
    );
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/acme\.part001\.zip already exists/);
    const smaller = await ferry(
      'export',
      '--tenant',
      slug,
      '--package',
      'zip',
      '--datasets',
      'customers',
      '--split-size',
      '2GB',
      '--out',
      out,
      '--overwrite',
    );
    expect(smaller.code, smaller.stderr).toBe(0);
    expect((await readdir(dir)).filter((n) => n.startsWith('acme.')).sort()).toEqual([
      'acme.part001.zip',
      'acme.parts.json',
      'acme.parts.sha256',
    ]);
  }, 180_000);

  it('refuses --split-size where it cannot apply', async () => {
    const cases: [string[], RegExp][] = [
      [
        ['--package', 'zip', '--split-size', '3GB', '--out', path.join(work, 'x.zip')],
        /--split-size: "3GB" is not a part size \(accepted: 1GB, 2GB/,
      ],
      [['--package', 'zip', '--split-size', '2GB'], /--out: a split package needs --out FILE/],
      [
        ['--package', 'directory', '--split-size', '2GB', '--out', path.join(work, 'd')],
        /--split-size: splits a zip or tar.gz package/,
      ],
      [
        ['--dataset', 'messages', '--split-size', '2GB', '--out', path.join(work, 'm.csv')],
        /--split-size: splits a company package/,
      ],
    ];
    for (const [args, message] of cases) {
      const res = await ferry('export', '--tenant', slug, ...args);
      expect(res.code, args.join(' ')).toBe(1);
      expect(res.stderr).toMatch(message);
    }
  });
});
