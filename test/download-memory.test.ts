import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bindApiKeyPepper, createApiKey } from '../src/auth/keys.ts';
import { loadConfig } from '../src/config/config.ts';
import { seed } from '../src/seed/seed.ts';
import { createPlainObjectStore } from '../src/store/create-object-store.ts';
import { createTestDatabase, dropJobsSchema, type TestDatabase, testsDialect } from './support/databases.ts';
import { storedExport } from './support/stored-export.ts';
import { until } from './support/wait.ts';
import { testAdapters } from './support/keyring.ts';

const BIN = path.resolve('bin/ferry.js');
/** The file served: far larger than what the server may hold while it serves it. */
const SIZE = 300_000_000;
const CHUNK = 65_536;
/**
 * Most the server's resident memory may grow while it serves one download. Streaming
 * holds a few 64 KiB buffers at a time, but buffers already sent are freed only by the next
 * garbage collection, which V8 starts once about 64 MiB of such memory has piled up
 * (measured: 60 MiB for the whole file, 5 to 26 MiB for a 100 MB range). A server that
 * held the file would grow by all 300 MB.
 */
const BOUND = 128 * 1024 * 1024;

/** Block `n` of the file: 64 KiB of one 32-byte digest repeated, so any range can be rebuilt. */
function block(n: number): Buffer {
  return Buffer.alloc(CHUNK, createHash('sha256').update(`block ${n}`).digest());
}

/** The file's bytes from `start` to `end` (inclusive), generated as they are read. */
function content(start = 0, end = SIZE - 1): Readable {
  return Readable.from(
    (function* () {
      for (let n = Math.floor(start / CHUNK); n * CHUNK <= end; n++) {
        const from = Math.max(start - n * CHUNK, 0);
        const to = Math.min(end - n * CHUNK + 1, CHUNK, SIZE - n * CHUNK);
        yield block(n).subarray(from, to);
      }
    })(),
  );
}

async function digest(stream: AsyncIterable<Uint8Array>): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { bytes, sha256: hash.digest('hex') };
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

/** A field of /proc/<pid>/status in bytes (VmRSS: resident now; VmHWM: the peak since the last reset). */
async function procBytes(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/**
 * The signed download route serves a 300 MB file from local disk, plaintext and encrypted
 * at rest, whole and by range, while a separate server process (`ferry serve`) is measured:
 * its resident memory may grow by a small bound, far below the file's size. A server that
 * read the file into its heap (or buffered the response) would grow by the file.
 */
describe.skipIf(!testsDialect('postgres') || !existsSync('/proc/self/status'))(
  'downloads stream from the store in bounded memory',
  () => {
    let t: TestDatabase;
    let env: NodeJS.ProcessEnv;
    let dataDir: string;
    let server: ChildProcess;
    let base: string;
    let key: string;
    const files: Record<'plain' | 'encrypted', { exportId: string; sha256: string }> = {} as never;

    beforeAll(async () => {
      t = await createTestDatabase('postgres');
      const secretKey = randomBytes(32).toString('base64url');
      // Seeded under the server's keys: its keyring's data key opens with the server's master key.
      const summary = await seed(t.database, {
        secretKey,
        tenants: 1,
        conversations: 2,
        messagesPerConversation: 2,
        seed: 1,
        since: new Date('2026-08-01T00:00:00Z'),
        until: new Date('2026-09-01T00:00:00Z'),
      });
      const tenantId = summary.tenants[0]!.id;
      dataDir = await mkdtemp(path.join(tmpdir(), 'ferry-download-memory-'));
      const port = await freePort();
      base = `http://127.0.0.1:${port}`;
      env = {
        ...process.env,
        ...t.env,
        FERRY_DATA_DIR: dataDir,
        FERRY_SECRET_KEY: secretKey,
        FERRY_DEMO: 'off',
        LOG_LEVEL: 'silent',
        PORT: String(port),
      };
      const config = loadConfig(env);
      // Local disk encrypts at rest by default; the plain store writes a file as it is.
      const { store: encrypted } = await testAdapters(t.database, config);
      const plain = createPlainObjectStore(config);
      for (const [name, store] of [
        ['plain', plain],
        ['encrypted', encrypted],
      ] as const) {
        const stored = await storedExport(t.database, store, tenantId, {
          name: `${name}.bin`,
          contentType: 'application/octet-stream',
          source: content(),
        });
        expect(stored.bytes).toBe(SIZE);
        files[name] = stored;
      }
      // Hashed under the server's secret, so the server knows the key.
      bindApiKeyPepper(t.database, () => env.FERRY_SECRET_KEY!);
      key = (await createApiKey(t.database, { tenantId, role: 'admin' })).key;
      server = spawn(process.execPath, [BIN, 'serve', '--port', String(port), '--no-worker'], {
        env,
        stdio: 'ignore',
      });
      await until(
        'the server',
        async () => ((await fetch(`${base}/healthz`).catch(() => null))?.ok ? true : undefined),
        { timeoutMs: 60_000 },
      );
    }, 240_000);

    afterAll(async () => {
      if (server && server.exitCode === null) {
        const exited = new Promise((resolve) => server.once('exit', resolve));
        server.kill('SIGTERM');
        await exited;
      }
      await t?.drop();
      if (env) await dropJobsSchema(loadConfig(env));
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    });

    async function linkOf(exportId: string): Promise<string> {
      const res = await fetch(`${base}/api/v1/exports/${exportId}/download`, {
        headers: { authorization: `Bearer ${key}` },
      });
      expect(res.status).toBe(200);
      const link = (await res.json()) as { url: string; method: string };
      expect(link.method).toBe('signed');
      return link.url;
    }

    /** Downloads `url` (with `range`), and measures how far the server's resident memory rose meanwhile. */
    async function measured(url: string, range?: string) {
      const pid = server.pid!;
      // Warm: the route, the store and the decryption have run once before the measure.
      await (await fetch(url, { headers: { range: 'bytes=0-1048575' } })).arrayBuffer();
      const before = await procBytes(pid, 'VmRSS');
      // Resets VmHWM to the current resident size (Linux clear_refs); sampling covers a kernel without it.
      const reset = await writeFile(`/proc/${pid}/clear_refs`, '5').then(
        () => true,
        () => false,
      );
      let sampled = before;
      const sampler = setInterval(() => {
        void procBytes(pid, 'VmRSS').then(
          (rss) => {
            sampled = Math.max(sampled, rss);
          },
          () => {},
        );
      }, 20);
      try {
        const res = await fetch(url, range ? { headers: { range } } : {});
        const body = await digest(res.body as unknown as AsyncIterable<Uint8Array>);
        const peak = Math.max(sampled, reset ? await procBytes(pid, 'VmHWM') : 0);
        return { res, body, growth: peak - before };
      } finally {
        clearInterval(sampler);
      }
    }

    for (const name of ['plain', 'encrypted'] as const) {
      it(`serves a ${SIZE / 1e6} MB file ${name === 'plain' ? 'as stored' : 'encrypted at rest'} without holding it`, async () => {
        const url = await linkOf(files[name].exportId);
        const { res, body, growth } = await measured(url);
        expect(res.status).toBe(200);
        expect(res.headers.get('content-length')).toBe(String(SIZE));
        expect(body).toEqual({ bytes: SIZE, sha256: files[name].sha256 });
        expect(growth, `the server grew by ${(growth / 1048576).toFixed(1)} MiB`).toBeLessThan(BOUND);
      }, 120_000);

      it(`serves a 100 MB range of the ${name} file, and 416 outside it`, async () => {
        const url = await linkOf(files[name].exportId);
        const start = 123_456_789;
        const end = start + 100_000_000 - 1;
        const { res, body, growth } = await measured(url, `bytes=${start}-${end}`);
        expect(res.status).toBe(206);
        expect(res.headers.get('content-range')).toBe(`bytes ${start}-${end}/${SIZE}`);
        expect(body).toEqual(await digest(content(start, end)));
        expect(growth, `the server grew by ${(growth / 1048576).toFixed(1)} MiB`).toBeLessThan(BOUND);

        const outside = await fetch(url, { headers: { range: `bytes=${SIZE}-` } });
        expect(outside.status).toBe(416);
        expect(outside.headers.get('content-type')).toBe('application/problem+json; charset=utf-8');
        expect(outside.headers.get('content-range')).toBe(`bytes */${SIZE}`);
        expect(await outside.json()).toMatchObject({ code: 'range_not_satisfiable' });
      }, 120_000);
    }
  },
);
