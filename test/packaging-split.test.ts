import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, type Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32Combine } from '../src/lib/crc32.ts';
import { createPackageWriter, type SplitPart } from '../src/packaging/archive.ts';

const ROOT = 'company-export-2026-11-22';
const MTIME = new Date('2026-11-22T09:30:00Z');

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ferry-split-test-'));
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

/** Incompressible bytes, so a file's size in the archive is about its own size. */
const noise = (bytes: number) => randomBytes(bytes);

/** Package files of several sizes: small text, mid-sized noise, one larger than a part, a long path. */
function sample(partSize: number): Record<string, Buffer> {
  return {
    'metadata.json': Buffer.from('{"export_version":"1.0"}\n'),
    'messages.csv': Buffer.from('id,text\r\n'.concat('1,"hello, world"\r\n'.repeat(4000))),
    'conversations/index.json': Buffer.from('[]\n'),
    'conversations/a.json': noise(Math.floor(partSize * 0.4)),
    'conversations/b.json': noise(Math.floor(partSize * 0.4)),
    'conversations/c.json': noise(Math.floor(partSize * 0.3)),
    'analytics/daily.parquet': noise(Math.floor(partSize * 0.2)),
    'activity_logs/big.csv': noise(Math.floor(partSize * 1.5)),
    'knowledge/café-menü.md': Buffer.from('# Café\n\nÜmlauts 🚀\n'),
    [`knowledge/${'a-long-folder-name/'.repeat(8)}page.md`]: Buffer.from('long path\n'),
    'empty.txt': Buffer.alloc(0),
  };
}

/** A split package of `files` in `dir` (part-001.zip, …), its parts and entries. */
async function writeSplit(
  kind: 'zip' | 'tar.gz',
  files: Record<string, Buffer>,
  partSize: number,
  dir: string,
) {
  await mkdir(dir, { recursive: true });
  const streams: Writable[] = [];
  const names: string[] = [];
  const writer = createPackageWriter(
    kind,
    {
      partSize,
      openPart(number) {
        const name = `part-${String(number).padStart(3, '0')}.${kind}`;
        names.push(name);
        const out = createWriteStream(join(dir, name));
        streams.push(out);
        return out;
      },
    },
    { root: ROOT, mtime: MTIME, tmpDir: work },
  );
  for (const [i, [path, data]] of Object.entries(files).entries()) {
    // Every source type: a string, a Buffer, a chunked stream.
    const source =
      i % 3 === 0 && data.length < 100_000
        ? data
        : Readable.from(
            Array.from({ length: Math.ceil(data.length / 7_000) }, (_, n) =>
              data.subarray(n * 7_000, (n + 1) * 7_000),
            ),
          );
    await writer.add(path, source);
  }
  const done = await writer.finish();
  await Promise.all(streams.map((s) => finished(s)));
  return { ...done, parts: done.parts as SplitPart[], names };
}

async function listing(kind: 'zip' | 'tar.gz', file: string): Promise<string[]> {
  const { code, output } =
    kind === 'zip' ? await run('unzip', ['-Z1', file]) : await run('tar', ['-tzf', file]);
  expect(code, output).toBe(0);
  return output
    .trim()
    .split('\n')
    .filter((line) => line && !line.endsWith('/'))
    .map((line) => line.slice(ROOT.length + 1));
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

describe('crc32Combine', () => {
  it('gives the CRC-32 of two runs joined', () => {
    for (const [a, b] of [
      [0, 0],
      [3, 0],
      [0, 9],
      [1_000, 70_000],
      [17, 1 << 20],
    ] as const) {
      const x = randomBytes(a);
      const y = randomBytes(b);
      expect(crc32Combine(zlib.crc32(x), zlib.crc32(y), b)).toBe(zlib.crc32(Buffer.concat([x, y])));
    }
  });
});

for (const kind of ['zip', 'tar.gz'] as const) {
  describe(`${kind} package in parts`, () => {
    const PART = 200_000;

    it('writes parts of whole files, each a valid archive within the part size, that together are the package', async () => {
      const files = sample(PART);
      const dir = join(work, `split-${kind}`);
      const split = await writeSplit(kind, files, PART, dir);
      expect(split.parts.length).toBeGreaterThanOrEqual(3);
      expect(split.parts.map((p) => p.number)).toEqual(split.parts.map((_, i) => i + 1));
      expect(split.bytes).toBe(split.parts.reduce((n, p) => n + p.bytes, 0));

      const seen = new Map<string, number>();
      for (const [i, part] of split.parts.entries()) {
        const file = join(dir, split.names[i]!);
        // The layout is exact: the part has the size it was planned with.
        expect((await stat(file)).size).toBe(part.bytes);
        if (part.oversize) {
          expect(part.files.map((f) => f.path)).toEqual(['activity_logs/big.csv']);
          expect(part.bytes).toBeGreaterThan(PART);
        } else expect(part.bytes).toBeLessThanOrEqual(PART);
        const test = kind === 'zip' ? await run('unzip', ['-tq', file]) : await run('gzip', ['-t', file]);
        expect(test.code, test.output).toBe(0);
        const held = await listing(kind, file);
        expect(held).toEqual(part.files.map((f) => f.path));
        for (const path of held) seen.set(path, (seen.get(path) ?? 0) + 1);
      }
      // No file in two parts, and every file (checksums.sha256 last, in the last part) in one.
      expect([...seen.values()].every((n) => n === 1)).toBe(true);
      expect([...seen.keys()].sort()).toEqual([...Object.keys(files), 'checksums.sha256'].sort());
      expect(split.parts.at(-1)!.files.at(-1)!.path).toBe('checksums.sha256');
      // Extracted into one folder, the parts are the package: sha256sum -c passes.
      const into = join(dir, 'extracted');
      await mkdir(into);
      for (const name of split.names) {
        const { code, output } =
          kind === 'zip'
            ? await run('unzip', ['-qo', join(dir, name), '-d', into])
            : await run('tar', ['xzf', join(dir, name), '-C', into]);
        expect(code, output).toBe(0);
      }
      const root = join(into, ROOT);
      const check = await run('sha256sum', ['-c', '--strict', 'checksums.sha256'], root);
      expect(check.code, check.output).toBe(0);
      for (const [path, data] of Object.entries(files))
        expect(sha256(await readFile(join(root, path)))).toBe(sha256(data));

      // The same files as the unsplit package, byte for byte.
      const whole = join(dir, `whole.${kind}`);
      const out = createWriteStream(whole);
      const writer = createPackageWriter(kind, out, { root: ROOT, mtime: MTIME, tmpDir: work });
      for (const [path, data] of Object.entries(files)) await writer.add(path, data);
      await writer.finish();
      await finished(out);
      const wholeInto = join(dir, 'whole');
      await mkdir(wholeInto);
      const unpacked =
        kind === 'zip'
          ? await run('unzip', ['-q', whole, '-d', wholeInto])
          : await run('tar', ['xzf', whole, '-C', wholeInto]);
      expect(unpacked.code).toBe(0);
      const wholeRoot = join(wholeInto, ROOT);
      expect(await listFiles(root)).toEqual(await listFiles(wholeRoot));
      for (const path of await listFiles(wholeRoot))
        expect(sha256(await readFile(join(root, path))), path).toBe(
          sha256(await readFile(join(wholeRoot, path))),
        );
      // The spool files are gone.
      expect((await readdir(work)).filter((f) => f.startsWith('ferry-split-'))).toEqual([]);
    });

    it('keeps to the part size exactly, one byte at a time', async () => {
      // Parts sized to the byte: each part as written is the largest that fits the limit.
      const files = { 'a.bin': noise(5_000), 'b.bin': noise(5_000), 'c.bin': noise(5_000) };
      const first = await writeSplit(kind, files, 1_000_000, join(work, `fit-${kind}`));
      expect(first.parts).toHaveLength(1);
      const whole = first.parts[0]!.bytes;
      const exact = await writeSplit(kind, files, whole, join(work, `exact-${kind}`));
      expect(exact.parts.map((p) => p.bytes)).toEqual([whole]);
      const less = await writeSplit(kind, files, whole - 1, join(work, `less-${kind}`));
      expect(less.parts.length).toBe(2);
      expect(less.parts.every((p) => p.bytes <= whole - 1)).toBe(true);
    });

    it('puts a file larger than a part alone in a part of its own, flagged', async () => {
      const dir = join(work, `alone-${kind}`);
      const split = await writeSplit(
        kind,
        { 'small.txt': Buffer.from('x'), 'huge.bin': noise(50_000), 'after.txt': Buffer.from('y') },
        20_000,
        dir,
      );
      expect(split.parts.map((p) => [p.files.map((f) => f.path), p.oversize])).toEqual([
        [['small.txt'], false],
        [['huge.bin'], true],
        [['after.txt', 'checksums.sha256'], false],
      ]);
    });

    it('aborts when a part cannot be written, and removes its spool files', async () => {
      const writer = createPackageWriter(
        kind,
        {
          partSize: 10_000,
          openPart(number) {
            const out = new PassThrough();
            if (number === 1) out.resume();
            else setImmediate(() => out.destroy(new Error('the disk is full')));
            return out;
          },
        },
        { root: ROOT, mtime: MTIME, tmpDir: work },
      );
      await writer.add('one.bin', noise(8_000));
      await expect(
        (async () => {
          for (let i = 0; i < 5; i++) await writer.add(`more-${i}.bin`, noise(8_000));
        })(),
      ).rejects.toThrow(/disk is full|aborted|premature/);
      await expect(writer.finish()).rejects.toThrow();
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect((await readdir(work)).filter((f) => f.startsWith('ferry-split-'))).toEqual([]);
    });
  });
}

it('refuses to split a folder package', () => {
  expect(() =>
    createPackageWriter(
      'directory',
      { partSize: 1_000, openPart: () => new PassThrough() },
      { root: ROOT, mtime: MTIME },
    ),
  ).toThrow(/cannot be split/);
});
