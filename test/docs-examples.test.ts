import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { loadConfig } from '../src/config/config.ts';
import { dropJobsSchema, TEST_DATABASE_URL, testsDialect } from './support/databases.ts';
import { until } from './support/wait.ts';

/**
 * Every shell example in README.md and docs/*.md runs, as written, against a real server
 * on a seeded database — or is listed in SKIP with the reason it cannot run here. A new
 * example that is neither fails this test (add it to SKIP, with a reason, only when it
 * truly cannot run: an external host, the test suite itself); an entry of SKIP that no
 * longer matches an example fails too. The docs' placeholders (the tenant `acme`, a key
 * `fy_live_…`, an export id, `localhost:8080`) are replaced by live values (SUBSTITUTE),
 * and `curl` fails on an HTTP error, so an example that answers 4xx fails the test.
 */

const REPO = new URL('..', import.meta.url).pathname;
const exec = promisify(execFile);

/** Examples that cannot run here, by `file: first command line`, with the reason. */
const SKIP: Record<string, string> = {
  'docs/backup.md: ferry backup restore <backup-id> --from ./copy --tenant-id <tenant-uuid> \\':
    "needs a copy of a destination and the tenant's identity file; test/backup.test.ts restores with an age identity alone",
  'docs/dashboard.md: npm run screenshots': 'runs the browser test suite, which this suite is part of',
  'README.md: npm install': 'installs the project and starts a server: the harness has done both',
  'README.md: npm test': 'runs this very test suite',
  'README.md: KEY=$(npx ferry keys create --tenant <slug> --role admin --name laptop | awk \'$1 == "key" {print $2}\')':
    'starts a second server on port 8080 in the background (`npm start &`)',
  'README.md: npm run typecheck    # tsc --noEmit (TypeScript strict)':
    'the CI steps and the benchmarks: CI runs them itself',
  'docs/api.md: npx ferry seed                      # or let `npm start` create a demo tenant':
    'starts the server the harness already runs (`ferry serve --port 8080`)',
  'docs/api.md: age-keygen -o key.txt                     # prints the public key: age1…':
    'the recipient and file name are placeholders the reader fills in from earlier output',
  'docs/benchmarks.md: npm run bench                                     # every benchmark':
    'benchmarks run for many minutes on millions of rows',
  'docs/benchmarks.md: npx node bench/api.ts': 'a load test of several minutes',
  'docs/benchmarks.md: BENCH_ONLY=retention npm run bench':
    'seeds a million messages and sweeps half of them: minutes of work',
  'docs/benchmarks.md: BENCH_ONLY=backup npm run bench':
    'seeds a million messages and times backups and restores against pg_dump and pg_restore for minutes',
  'docs/benchmarks.md: BENCH_ONLY=dashboard npm run bench':
    'seeds a million messages and runs the page benchmark for minutes',
  'docs/destinations.md: aws s3api head-object --bucket acme-exports --key daily-exports/2026-11-22/conversations-2026-11-22.csv.gz \\':
    "reads the reader's own S3 bucket",
  'docs/destinations.md: ssh-keyscan -t ed25519 sftp.acme.example 2>/dev/null | ssh-keygen -lf -':
    "reads the host key of the reader's own SFTP server",
  'docs/dsar.md: curl -sS -X POST http://localhost:8080/api/v1/dsar/0f6d…/verify \\':
    'the one-time code arrives in the subject’s mailbox',
  'docs/dsar.md: curl -sS -X POST -H "Authorization: Bearer $KEY" http://localhost:8080/api/v1/dsar/0f6d…/approve':
    'approves the erasure of the walkthrough once it is verified with the emailed code',
  'docs/exports.md: ferry export --tenant ID|SLUG --dataset NAME --format csv|json|ndjson|xml|parquet \\':
    'a synopsis of the options, not a command',
  'docs/getting-started.md: npm install':
    'installs the project and starts a server: the harness has done both',
  'docs/getting-started.md: createdb ferry': 'creates a database and starts a server on port 8080',
  'docs/getting-started.md: npm test': 'runs this very test suite',
  'docs/package.md: cd company-export-2026-11-22': 'runs inside a package the reader unpacked',
  'docs/receipts.md: python3 verify_receipt.py receipt.json keys.json':
    'runs the Python script of the block above it (test/receipts.test.ts runs both)',
  'docs/receipts.md: python3 receipt_parts.py previous.json keys.json':
    "needs the previous receipt of the reader's chain (test/receipts.test.ts checks the chain)",
  'docs/schedules.md: KEY=fy_live_...   # an admin, manager or analyst key (schedules:manage)':
    'creates an S3 target on AWS, which this machine cannot reach',
  'docs/schedules.md: curl -sS -X POST http://localhost:8080/api/v1/schedules \\':
    'creates an S3 target on AWS, which this machine cannot reach',
  'docs/schedules.md: ferry schedules list --tenant acme': 'reads backup.json, a body the reader writes',
  'docs/storage.md: age -d -i ferry-export.key -o export.zip export.zip.age':
    'decrypts a file the reader downloaded',
  'docs/webhooks.md: curl -s https://ferry.example.com/api/v1/webhooks \\':
    'registers a public https endpoint, which this machine cannot resolve',
};

interface Example {
  readonly file: string;
  readonly code: string;
  readonly key: string;
}

/** The ```sh and ```bash blocks of README.md and every docs/*.md, in order. */
function examples(): Example[] {
  const files = [
    'README.md',
    ...readdirSync(path.join(REPO, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .sort()
      .map((f) => `docs/${f}`),
  ];
  const out: Example[] = [];
  for (const file of files) {
    const text = readFileSync(path.join(REPO, file), 'utf8');
    for (const m of text.matchAll(/```(?:sh|bash)\n([\s\S]*?)```/g)) {
      const code = m[1]!;
      const first =
        code.split('\n').find((l) => l.trim() && !l.trim().startsWith('#')) ?? code.split('\n')[0]!;
      out.push({ file, code, key: `${file}: ${first}` });
    }
  }
  return out;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

describe.skipIf(!testsDialect('postgres'))('the shell examples of README.md and docs/', () => {
  const all = examples();
  let work: string;
  let schema: string;
  let env: NodeJS.ProcessEnv;
  let server: ChildProcess | undefined;
  let base: string;
  const live: Record<string, string> = {};

  const ferry = async (...args: string[]) =>
    (await exec(process.execPath, [path.join(REPO, 'bin/ferry.js'), ...args], { env, maxBuffer: 64 << 20 }))
      .stdout;
  const api = async (method: string, url: string, body?: unknown) => {
    const res = await fetch(`${base}${url}`, {
      method,
      headers: {
        authorization: `Bearer ${live.key}`,
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const json = (await res.json()) as Record<string, unknown>;
    if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };

  beforeAll(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'ferry-docs-'));
    schema = `ferry_cli_docs_${process.pid}_${Date.now()}`;
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    env = {
      ...process.env,
      DATABASE_URL: TEST_DATABASE_URL,
      DATABASE_SCHEMA: schema,
      FERRY_DATA_DIR: path.join(work, 'data'),
      FERRY_SECRET_KEY: 'docs-examples-test-secret-0123456789abcdef',
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'silent',
      PORT: String(port),
    };
    await ferry('seed', '--tenants', '1', '--conversations', '40', '--seed', '3');
    const [tenant] = JSON.parse(await ferry('tenants', '--json')) as { id: string; slug: string }[];
    live.slug = tenant!.slug;
    live.tenantId = tenant!.id;
    live.key = (
      JSON.parse(
        await ferry('keys', 'create', '--tenant', live.slug, '--role', 'admin', '--name', 'docs', '--json'),
      ) as { key: string }
    ).key;
    server = spawn(process.execPath, [path.join(REPO, 'bin/ferry.js'), 'serve', '--port', String(port)], {
      env,
      stdio: 'ignore',
    });
    await until(
      'the server',
      async () => ((await fetch(`${base}/healthz`).catch(() => null))?.ok ? true : undefined),
      {
        timeoutMs: 60_000,
      },
    );
    // The ids the examples show, as live ones.
    const exported = await api('POST', '/api/v1/exports', {
      datasets: ['conversations'],
      format: 'csv',
      compression: 'gzip',
    });
    live.exportId = String(exported.id);
    await until('the example export', async () =>
      (await api('GET', `/api/v1/exports/${live.exportId}`)).status === 'completed' ? true : undefined,
    );
    const sites = (await api('GET', '/api/v1/export/sites?format=json')).data as { site_url: string }[];
    const members = (await api('GET', '/api/v1/export/team_members?format=json')).data as {
      team_member_id: string;
      role: string;
    }[];
    const rows = sites.map((r) => ({ url: r.site_url })).sort((a, b) => a.url.localeCompare(b.url));
    const agent = members.find((m) => m.role === 'agent');
    live.siteA = rows[0]!.url;
    live.siteB = (rows[1] ?? rows[0])!.url;
    live.agent = agent?.team_member_id ?? '';
    const key = await api('POST', '/api/v1/api-keys', { role: 'analyst', name: 'to revoke' });
    live.keyId = String(key.id);
    const dsar = await api('POST', '/api/v1/dsar', {
      type: 'access',
      regulation: 'gdpr',
      source: 'api',
      subject: { email: 'ana.souza@example.com' },
    });
    live.dsarId = String(dsar.id);
    // A receipt for docs/receipts.md to verify.
    const erasure = JSON.parse(
      await ferry(
        'dsar',
        'create',
        '--tenant',
        live.slug,
        '--type',
        'erasure',
        '--email',
        'kim.lee@example.com',
        '--json',
      ),
    ) as { id: string };
    await ferry('dsar', 'verify', '--tenant', live.slug, erasure.id, '--reason', 'checked by phone');
    await ferry('dsar', 'approve', '--tenant', live.slug, erasure.id);
    await until('the example erasure', async () =>
      (await api('GET', `/api/v1/dsar/${erasure.id}`)).status === 'completed' ? true : undefined,
    );
    mkdirSync(path.join(work, 'docs-receipts.md'), { recursive: true });
    await ferry(
      'dsar',
      'receipt',
      '--tenant',
      live.slug,
      erasure.id,
      '--out',
      path.join(work, 'docs-receipts.md', 'receipt.json'),
    );
  }, 240_000);

  afterAll(async () => {
    server?.kill('SIGTERM');
    await new Promise((resolve) => (server ? server.once('exit', resolve) : resolve(undefined)));
    const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
    await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.close();
    await dropJobsSchema(loadConfig(env));
    rmSync(work, { recursive: true, force: true });
  });

  /** The docs' placeholders and sizes, replaced by live values and a small seed. */
  function substitute(code: string): string {
    return code
      .replaceAll('http://localhost:8080', base)
      .replaceAll('http://127.0.0.1:8080', base)
      .replaceAll('https://ferry.example.com', base)
      .replace(/fy_live_(?:\.\.\.|…|[A-Za-z0-9]{20,})/g, live.key!)
      .replaceAll('edc1e008-0e08-4924-87f8-33c2049baf02', live.exportId!)
      .replaceAll('0f6d…', live.dsarId!)
      .replaceAll('1b9e…', live.keyId!)
      .replaceAll('<id>', live.keyId!)
      .replaceAll('6f1c…', live.agent!)
      .replaceAll('<slug>', live.slug!)
      .replaceAll('--tenant acme', `--tenant ${live.slug}`)
      .replaceAll('--tenant wyludda-42-1', `--tenant ${live.slug}`)
      .replaceAll('https://shop.acme.example', live.siteA!)
      .replaceAll('https://shop.example', live.siteA!)
      .replaceAll('https://help.example', live.siteB!)
      .replace(/--conversations 20000/g, '--conversations 30');
  }

  /** Runs `ferry` and `npx ferry` from this checkout; curl fails on an HTTP error. */
  const PRELUDE = `set -e -o pipefail
ferry() { "${process.execPath}" "${REPO}bin/ferry.js" "$@"; }
npx() { if [ "$1" = ferry ]; then shift; ferry "$@"; else command npx "$@"; fi; }
curl() { case " $* " in *" -f "*|*" -sf "*|*" -fs "*|*" --fail "*) command curl "$@" ;; *) command curl --fail-with-body "$@" ;; esac; }
export FERRY_ADMIN_KEY="$KEY"
`;

  it('lists only examples that exist in SKIP', () => {
    const keys = new Set(all.map((e) => e.key));
    const stale = Object.keys(SKIP).filter((k) => !keys.has(k));
    expect(stale, 'SKIP names examples that are no longer in the docs: remove them').toEqual([]);
  });

  for (const example of all) {
    const reason = SKIP[example.key];
    it.skipIf(reason !== undefined)(`runs ${example.key.slice(0, 140)}`, { timeout: 180_000 }, async () => {
      const cwd = path.join(work, example.file.replace('/', '-'));
      mkdirSync(cwd, { recursive: true });
      const script = `${PRELUDE}\nKEY="${live.key}"\n${substitute(example.code)}`;
      try {
        await exec('bash', ['-c', script], {
          cwd,
          env: { ...env, KEY: live.key, FERRY: base },
          maxBuffer: 64 << 20,
          timeout: 170_000,
        });
      } catch (err) {
        const e = err as { code: number; stdout: string; stderr: string };
        throw new Error(
          `${example.key} failed (exit ${e.code}): fix the example, or list it in SKIP with the reason it cannot run here\n` +
            `--- stderr\n${e.stderr?.slice(-2000)}\n--- stdout\n${e.stdout?.slice(-1000)}`,
        );
      }
    });
  }
});
