import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ArchiveKind } from '../src/domain/package-kind.ts';
import { createPackageWriter, type PackageWriter } from '../src/packaging/archive.ts';
import { parseChecksumsFile } from '../src/packaging/checksums.ts';

const ROOT = 'company-export-2026-11-22';
const MTIME = new Date('2026-11-22T09:30:00Z');

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ferry-packaging-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function run(cmd: string, args: string[], cwd?: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/** A stream that arrives in several chunks, like a database COPY. */
function chunked(text: string, size = 7): Readable {
  const parts: Buffer[] = [];
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += size) parts.push(bytes.subarray(i, i + size));
  return Readable.from(parts);
}

const LONG_PATH = `knowledge/${'a-rather-long-folder-name/'.repeat(5)}article-with-a-long-name.md`;
const SAMPLE: Record<string, string> = {
  'metadata.json': '{"export_version":"1.0","tenant":"Acme"}\n',
  'messages.csv': 'id,conversation_id,content\r\n1,c1,"Hello, ""world"""\r\n2,c1,=1+1\r\n',
  'conversations/index.json': '{"data":[{"id":"c1"}]}\n',
  'conversations/c1.json': `{"id":"c1","messages":[${'{"text":"hi"},'.repeat(200)}{"text":"bye"}]}\n`,
  'knowledge/café-menü.md': '# Café\n\nÜmlauts, emoji 🚀 and 4-byte UTF-8 𝄞.\n',
  [LONG_PATH]: 'long path content\n',
  'empty.txt': '',
  'analytics/data.parquet': 'PAR1 pretend-compressed-bytes PAR1',
};

async function writeSample(writer: PackageWriter) {
  const paths = Object.keys(SAMPLE);
  for (const [i, path] of paths.entries()) {
    const text = SAMPLE[path]!;
    // Exercise every source type: string, Buffer and a chunked stream.
    const source = i % 3 === 0 ? text : i % 3 === 1 ? Buffer.from(text) : chunked(text);
    const result = await writer.add(path, source);
    expect(result).toEqual({ path, bytes: Buffer.byteLength(text), sha256: sha256(text) });
  }
  return writer.finish();
}

async function buildArchive(kind: 'zip' | 'tar.gz', file: string) {
  const out = createWriteStream(file);
  const result = await writeSample(createPackageWriter(kind, out, { root: ROOT, mtime: MTIME }));
  await finished(out);
  return result;
}

async function extract(kind: ArchiveKind, file: string, into: string) {
  await mkdir(into, { recursive: true });
  const { code, output } =
    kind === 'zip'
      ? await run('unzip', ['-q', file, '-d', into])
      : await run('tar', ['xzf', file, '-C', into]);
  expect(output).toBe('');
  expect(code).toBe(0);
}

/** Every file under a folder, as paths relative to it. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

for (const kind of ['zip', 'tar.gz'] as const) {
  describe(`${kind} package`, () => {
    it('extracts with the system tool and passes sha256sum -c from inside the root folder', async () => {
      const file = join(work, `sample.${kind}`);
      const result = await buildArchive(kind, file);
      expect(result.bytes).toBe((await stat(file)).size);

      const into = join(work, `extract-${kind}`);
      await extract(kind, file, into);
      expect(await readdir(into)).toEqual([ROOT]);
      const root = join(into, ROOT);
      expect(await listFiles(root)).toEqual([...Object.keys(SAMPLE), 'checksums.sha256'].sort());
      for (const [path, text] of Object.entries(SAMPLE)) {
        expect(await readFile(join(root, path), 'utf8')).toBe(text);
      }

      const check = await run('sha256sum', ['-c', '--strict', 'checksums.sha256'], root);
      expect(check.code).toBe(0);
      expect(check.output.trim().split('\n')).toHaveLength(Object.keys(SAMPLE).length);

      // The manifest covers every entry but itself, sorted by path; finish() reports the same.
      const manifest = parseChecksumsFile(await readFile(join(root, 'checksums.sha256'), 'utf8'));
      const paths = manifest.map((e) => e.path);
      expect(paths).toEqual([...paths].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
      expect(new Set(paths)).toEqual(new Set(Object.keys(SAMPLE)));
      expect(result.files).toBe(Object.keys(SAMPLE).length + 1);
      expect(result.checksums.path).toBe('checksums.sha256');
      expect(result.checksums.sha256).toBe(sha256(await readFile(join(root, 'checksums.sha256'))));
    });

    it('a tampered or missing file makes sha256sum -c fail', async () => {
      const into = join(work, `tamper-${kind}`);
      await extract(kind, join(work, `sample.${kind}`), into);
      const root = join(into, ROOT);
      await appendFile(join(root, 'messages.csv'), '3,c1,"added later"\r\n');
      const check = await run('sha256sum', ['-c', 'checksums.sha256'], root);
      expect(check.code).not.toBe(0);
      expect(check.output).toContain('messages.csv: FAILED');

      await rm(join(root, 'metadata.json'));
      const missing = await run('sha256sum', ['-c', 'checksums.sha256'], root);
      expect(missing.output).toMatch(/metadata\.json: FAILED open or read/);
    });

    it('gives the same bytes for the same export (fixed mtime, modes and owners)', async () => {
      const again = join(work, `again.${kind}`);
      await buildArchive(kind, again);
      expect(sha256(await readFile(again))).toBe(sha256(await readFile(join(work, `sample.${kind}`))));
      const listing =
        kind === 'zip' ? await run('zipinfo', ['-T', again]) : await run('tar', ['--utc', '-tzvf', again]);
      expect(listing.code).toBe(0);
      // Every entry carries the export time.
      expect(listing.output).toContain(kind === 'zip' ? '20261122.0930' : '2026-11-22 09:30');
    });

    it('streams a 50 MB entry with flat memory', async () => {
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc') as () => void;
      const total = 50 * 1024 * 1024;
      const chunkSize = 64 * 1024;
      const hash = createHash('sha256');
      gc();
      const before = process.memoryUsage();
      let peak = 0;
      async function* generate() {
        for (let sent = 0, n = 0; sent < total; sent += chunkSize, n++) {
          const chunk = Buffer.alloc(chunkSize, `row ${n},generated text that compresses somewhat\n`);
          hash.update(chunk);
          yield chunk;
          if (n % 64 === 63) {
            gc();
            const now = process.memoryUsage();
            const used = now.heapUsed + now.arrayBuffers - before.heapUsed - before.arrayBuffers;
            peak = Math.max(peak, used);
          }
        }
      }
      const file = join(work, `large.${kind}`);
      const out = createWriteStream(file);
      const writer = createPackageWriter(kind, out, { root: ROOT, mtime: MTIME, tmpDir: work });
      const entry = await writer.add('activity_logs/large.csv', Readable.from(generate()));
      await writer.finish();
      await finished(out);
      expect(entry.bytes).toBe(total);
      expect(entry.sha256).toBe(hash.digest('hex'));
      // Buffering the entry would hold at least its 50 MB; streaming holds a few buffers.
      expect(peak).toBeLessThan(20 * 1024 * 1024);

      const into = join(work, `large-${kind}`);
      await extract(kind, file, into);
      const check = await run('sha256sum', ['-c', 'checksums.sha256'], join(into, ROOT));
      expect(check.output).toContain('activity_logs/large.csv: OK');
      await rm(into, { recursive: true });
      // The tar spool file is gone once the entry is in.
      expect((await readdir(work)).filter((f) => f.startsWith('ferry-package-'))).toEqual([]);
    });

    it('a source that fails mid-way aborts the package and destroys the output', async () => {
      const out = new PassThrough();
      out.resume();
      const writer = createPackageWriter(kind, out, { root: ROOT, mtime: MTIME, tmpDir: work });
      await writer.add('metadata.json', '{}');
      const failing = new Readable({ read() {} });
      failing.push('id,text\n1,partial');
      setImmediate(() => failing.destroy(new Error('connection to the database was lost')));
      await expect(writer.add('messages.csv', failing)).rejects.toThrow(
        'connection to the database was lost',
      );
      await expect(writer.add('more.csv', 'x')).rejects.toThrow('connection to the database was lost');
      await expect(writer.finish()).rejects.toThrow('connection to the database was lost');
      expect(out.destroyed).toBe(true);
    });

    it('a source that fails while waiting for its turn fails its entry, not the process', async () => {
      const out = new PassThrough();
      out.resume();
      const writer = createPackageWriter(kind, out, { root: ROOT, mtime: MTIME, tmpDir: work });
      const slow = new PassThrough();
      const first = writer.add('first.csv', slow);
      const queued = new Readable({ read() {} });
      const second = writer.add('second.csv', queued);
      queued.destroy(new Error('query cancelled'));
      slow.end('id\n1\n');
      await first;
      await expect(second).rejects.toThrow('query cancelled');
      await expect(writer.finish()).rejects.toThrow('query cancelled');
    });

    it('an output that fails (disk full) rejects the pending add and finish', async () => {
      let written = 0;
      const out = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          written += chunk.length;
          callback(written > 4096 ? new Error('ENOSPC: no space left on device') : null);
        },
      });
      const writer = createPackageWriter(kind, out, { root: ROOT, mtime: MTIME, tmpDir: work });
      const big = Readable.from(
        (function* () {
          for (let i = 0; i < 2000; i++)
            yield Buffer.from(createHash('sha256').update(String(i)).digest('hex'));
        })(),
      );
      // Bytes still inside the compressor when the output fails may let this add() resolve first;
      // the package as a whole must fail either way.
      await writer.add('big.csv', big).catch((err: Error) => expect(err.message).toContain('ENOSPC'));
      await expect(writer.finish()).rejects.toThrow('ENOSPC');
      await expect(writer.add('after.csv', 'x')).rejects.toThrow('ENOSPC');
    });
  });
}

describe('zip package with many entries', () => {
  // 4 KB of central directory in memory: the rest of its 3,000 records goes through a temp file.
  for (const [label, zipCentralInMemory] of [
    ['in memory', undefined],
    ['spooled to a temp file', 4096],
  ] as const) {
    it(`keeps every entry in order in the central directory (${label})`, async () => {
      const file = join(work, 'many.zip');
      const out = createWriteStream(file);
      const spool = join(work, 'zip-spool');
      await mkdir(spool, { recursive: true });
      const writer = createPackageWriter('zip', out, {
        root: ROOT,
        mtime: MTIME,
        tmpDir: spool,
        ...(zipCentralInMemory ? { zipCentralInMemory } : {}),
      });
      const count = 3000;
      for (let i = 0; i < count; i++) {
        const text = `{"n":${i}}`;
        // Every tenth file arrives as a stream: its sizes follow its data in a data descriptor.
        await writer.add(
          `conversations/${String(i).padStart(5, '0')}.json`,
          i % 10 === 0 ? Readable.from([Buffer.from(text)]) : text,
        );
      }
      const result = await writer.finish();
      await finished(out);
      expect(result.files).toBe(count + 1);
      expect(result.bytes).toBe((await stat(file)).size);
      // The spooled central directory is gone once the archive is written.
      expect(await readdir(spool)).toEqual([]);
      const test = await run('unzip', ['-t', file]);
      expect(test.output).toContain('No errors detected');
      const names = (await run('zipinfo', ['-1', file])).output.trim().split('\n');
      // The root folder, conversations/, every file, then checksums.sha256.
      expect(names).toHaveLength(count + 3);
      expect(names.slice(0, 3)).toEqual([
        `${ROOT}/`,
        `${ROOT}/conversations/`,
        `${ROOT}/conversations/00000.json`,
      ]);
      expect(names.at(-2)).toBe(`${ROOT}/conversations/02999.json`);
      expect(names.at(-1)).toBe(`${ROOT}/checksums.sha256`);
      const into = join(work, 'many');
      await extract('zip', file, into);
      expect((await run('sha256sum', ['-c', '--quiet', 'checksums.sha256'], join(into, ROOT))).code).toBe(0);
      expect(await readFile(join(into, ROOT, 'conversations/00010.json'), 'utf8')).toBe('{"n":10}');
      await rm(into, { recursive: true });
    });
  }
});

describe('directory package', () => {
  it('writes the files under <dir>/<root> and passes sha256sum -c', async () => {
    const dir = join(work, 'folder-out');
    const result = await writeSample(createPackageWriter('directory', { dir }, { root: ROOT, mtime: MTIME }));
    const root = join(dir, ROOT);
    expect(await listFiles(root)).toEqual([...Object.keys(SAMPLE), 'checksums.sha256'].sort());
    expect((await run('sha256sum', ['-c', '--strict', 'checksums.sha256'], root)).code).toBe(0);
    // The size of a folder package is the sum of its files, checksums.sha256 included.
    const manifest = (await stat(join(root, 'checksums.sha256'))).size;
    const data = Object.values(SAMPLE).reduce((n, text) => n + Buffer.byteLength(text), 0);
    expect(result.bytes).toBe(data + manifest);
    expect((await stat(join(root, 'metadata.json'))).mtime.toISOString()).toBe(MTIME.toISOString());
  });

  it('refuses to write into an existing package folder', async () => {
    const dir = join(work, 'folder-out');
    const writer = createPackageWriter('directory', { dir }, { root: ROOT, mtime: MTIME });
    await expect(writer.add('metadata.json', '{}')).rejects.toMatchObject({ code: 'package_exists' });
    // The existing package is untouched.
    expect((await run('sha256sum', ['-c', '--quiet', 'checksums.sha256'], join(dir, ROOT))).code).toBe(0);
  });

  it('abort removes the half-written folder', async () => {
    const dir = join(work, 'aborted-out');
    const writer = createPackageWriter('directory', { dir }, { root: ROOT, mtime: MTIME });
    await writer.add('metadata.json', '{}');
    await writer.add('conversations/c1.json', '{}');
    writer.abort(new Error('cancelled by the user'));
    await expect(writer.finish()).rejects.toThrow('cancelled by the user');
    await expect.poll(() => readdir(dir)).toEqual([]);
  });
});

describe('entry paths', () => {
  const UNSAFE = [
    '../evil.txt',
    'conversations/../../evil.txt',
    '/etc/passwd',
    'a\\b.txt',
    'C:/windows.txt',
    'a//b.txt',
    './a.txt',
    'a/./b.txt',
    'folder/',
    '',
    'line\nbreak.txt',
    'nul\u0000.txt',
    'trailing-dot.',
    'checksums.sha256',
  ];

  for (const kind of ['zip', 'tar.gz', 'directory'] as const) {
    it(`${kind}: rejects unsafe paths without harming the package`, async () => {
      const chunks: Buffer[] = [];
      const out =
        kind === 'directory'
          ? { dir: join(work, 'paths-dir') }
          : new Writable({
              write(chunk: Buffer, _encoding, callback) {
                chunks.push(chunk);
                callback();
              },
            });
      const writer = createPackageWriter(kind, out, { root: ROOT, mtime: MTIME, tmpDir: work });
      await writer.add('ok.txt', 'fine');
      for (const path of UNSAFE) {
        const source = Readable.from(['never read']);
        await expect(writer.add(path, source), JSON.stringify(path)).rejects.toMatchObject({
          code: 'invalid_parameter',
        });
        // The writer owns a rejected stream and releases it.
        expect(source.destroyed).toBe(true);
      }
      await expect(writer.add('ok.txt', 'twice')).rejects.toThrow('already added');
      const result = await writer.finish();
      expect(result.files).toBe(2);
      expect(result.checksums.bytes).toBe(`${sha256(Buffer.from('fine'))}  ok.txt\n`.length);
      await expect(writer.add('late.txt', 'x')).rejects.toMatchObject({ code: 'package_closed' });
      if (kind === 'directory') {
        expect(await listFiles(join(work, 'paths-dir', ROOT))).toEqual(['checksums.sha256', 'ok.txt']);
      }
    });
  }

  it('rejects a root that is not a single safe folder name', () => {
    const out = new PassThrough();
    for (const root of ['', '../up', 'a/b', '/abs']) {
      expect(() => createPackageWriter('zip', out, { root, mtime: MTIME }), root).toThrow(/root/);
    }
    expect(() => createPackageWriter('zip', { dir: work }, { root: ROOT, mtime: MTIME })).toThrow(/stream/);
    expect(() => createPackageWriter('directory', out, { root: ROOT, mtime: MTIME })).toThrow(/dir/);
    expect(() => createPackageWriter('zip', out, { root: ROOT, mtime: new Date('nope') })).toThrow(/mtime/);
  });
});
