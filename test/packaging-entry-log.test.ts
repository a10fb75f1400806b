import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { finished as streamFinished } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPackageWriter } from '../src/packaging/archive.ts';
import { type ChecksumEntry, checksumsFile } from '../src/packaging/checksums.ts';
import { PackageEntryLog } from '../src/packaging/entry-log.ts';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ferry-entry-log-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const sha256 = (data: string) => createHash('sha256').update(data).digest('hex');

/**
 * Paths whose UTF-8 byte order differs from JavaScript's string order: an astral emoji is a
 * surrogate pair (0xD83D…) and sorts before U+E000 and U+FF01 in UTF-16 units, but after them
 * in UTF-8 bytes, so a merge that compared strings would be caught.
 */
function paths(count: number, seed: number): string[] {
  const pieces = ['a', 'Z', '0', 'é', '\u{e000}', '\u{ff01}', '😀', '-', '_', ' ', 'ß', '中'];
  // mulberry32: a small seeded generator, so a failure repeats.
  let state = seed;
  const random = () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Set<string>();
  while (out.size < count) {
    const length = 1 + Math.floor(random() * 6);
    let name = '';
    for (let i = 0; i < length; i++) name += pieces[Math.floor(random() * pieces.length)];
    out.add(random() < 0.5 ? `conversations/${name}.json` : `${name}.csv`);
  }
  return [...out];
}

describe('the package entry log', () => {
  it('merges runs on disk into the same manifest as an in-memory sort, and knows every path it holds', async () => {
    const spool = join(work, 'log');
    await mkdir(spool);
    const log = new PackageEntryLog({ tmpDir: spool, runEntries: 97 });
    const all = paths(2_000, 7);
    const entries: ChecksumEntry[] = all.map((path) => ({ path, sha256: sha256(path) }));
    const recorded = entries.slice(0, 1_500);
    for (const entry of recorded) {
      expect(log.claim(entry.path)).toBe(false);
      await log.record(entry);
    }
    expect(log.count).toBe(1_500);
    // 15 runs of 97 went to disk; the rest is in memory.
    const [runs] = await readdir(spool);
    expect((await readdir(join(spool, runs!))).length).toBe(Math.floor(1_500 / 97));
    // A path taken before is flagged, and confirmed from the runs or from memory.
    for (const entry of [recorded[0]!, recorded[700]!, recorded.at(-1)!]) {
      expect(log.claim(entry.path)).toBe(true);
      expect(await log.isRecorded(entry.path)).toBe(true);
    }
    // A path never recorded is not, even when asked directly.
    for (const entry of entries.slice(1_500, 1_520)) expect(await log.isRecorded(entry.path)).toBe(false);

    const manifest = await text(log.manifest());
    expect(manifest).toBe(checksumsFile(recorded).toString());
    await log.dispose();
    expect(await readdir(spool)).toEqual([]);
  });

  it('writes an empty manifest for no entries', async () => {
    const log = new PackageEntryLog({ tmpDir: work, runEntries: 3 });
    expect(await text(log.manifest())).toBe('');
    await log.dispose();
  });
});

describe('a package with more files than it keeps in memory', () => {
  it('verifies with sha256sum, rejects a repeated path without harm, and leaves no temporary file', async () => {
    const file = join(work, 'many.zip');
    const out = createWriteStream(file);
    const spool = join(work, 'zip-spool');
    await mkdir(spool);
    const writer = createPackageWriter('zip', out, {
      root: 'pkg',
      mtime: new Date('2026-11-22T10:00:00Z'),
      tmpDir: spool,
      entriesInMemory: 150,
    });
    const all = paths(1_200, 11);
    for (const [i, path] of all.entries()) {
      await writer.add(path, i % 7 === 0 ? Readable.from([Buffer.from(path)]) : path);
      // A path added long before (its entry now in a run on disk) is refused; the package goes on.
      if (i === 900) {
        const again = Readable.from(['never read']);
        await expect(writer.add(all[3]!, again)).rejects.toThrow('already added');
        expect(again.destroyed).toBe(true);
      }
    }
    const result = await writer.finish();
    await streamFinished(out);
    expect(result.files).toBe(all.length + 1);
    expect(await readdir(spool)).toEqual([]);

    const into = join(work, 'many');
    await mkdir(into);
    await new Promise<void>((resolve, reject) =>
      execFile('unzip', ['-q', file, '-d', into], (err) => (err ? reject(err) : resolve())),
    );
    const manifest = await readFile(join(into, 'pkg', 'checksums.sha256'), 'utf8');
    expect(manifest).toBe(checksumsFile(all.map((path) => ({ path, sha256: sha256(path) }))).toString());
    const check = await new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile(
        'sha256sum',
        ['-c', '--quiet', 'checksums.sha256'],
        { cwd: join(into, 'pkg') },
        (err, stdout) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout }),
      ),
    );
    expect(check).toEqual({ code: 0, stdout: '' });
  });
});
