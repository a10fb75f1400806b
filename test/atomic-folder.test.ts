import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { replaceFolderAtomically } from '../src/lib/atomic-file.ts';

/** What a partitioned export does in its target folder: never delete what it did not create. */
describe('replaceFolderAtomically', () => {
  let work: string;
  beforeEach(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'ferry-folder-'));
  });
  afterEach(() => rm(work, { recursive: true, force: true }));

  const FOLDER = 'dataset=messages';
  const write = (files: Record<string, string>) => async (staging: string) => {
    for (const [name, text] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(staging, name)), { recursive: true });
      await writeFile(path.join(staging, name), text);
    }
    return Object.keys(files).length;
  };

  async function tree(dir: string): Promise<string[]> {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries
      .filter((e) => e.isFile())
      .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
      .sort();
  }

  it('creates a new target, also one named with a trailing slash', async () => {
    const target = `${path.join(work, 'lake')}/`;
    const written = await replaceFolderAtomically(
      target,
      FOLDER,
      { overwrite: false, param: '--out' },
      write({ 'dataset=messages/date=2025-09-01/part-0.parquet': 'a' }),
    );
    expect(written).toBe(1);
    expect(await tree(target)).toEqual(['dataset=messages/date=2025-09-01/part-0.parquet']);
  });

  it('writes into an existing empty folder', async () => {
    const target = path.join(work, 'empty');
    await mkdir(target);
    await replaceFolderAtomically(
      target,
      FOLDER,
      { overwrite: false, param: '--out' },
      write({ [`${FOLDER}/x`]: 'x' }),
    );
    expect(await tree(target)).toEqual([`${FOLDER}/x`]);
  });

  it('refuses a folder that is not empty, and a file, touching nothing', async () => {
    const target = path.join(work, 'lake');
    await mkdir(path.join(target, FOLDER), { recursive: true });
    await writeFile(path.join(target, FOLDER, 'old'), 'old');
    let called = false;
    await expect(
      replaceFolderAtomically(target, FOLDER, { overwrite: false, param: '--out' }, async () => {
        called = true;
      }),
    ).rejects.toThrow(`--out: ${target} is not empty; choose another directory, or pass --overwrite`);
    expect(called).toBe(false);
    expect(await tree(target)).toEqual([`${FOLDER}/old`]);

    const file = path.join(work, 'file.parquet');
    await writeFile(file, 'mine');
    await expect(
      replaceFolderAtomically(file, FOLDER, { overwrite: true, param: '--out' }, write({})),
    ).rejects.toThrow(`--out: ${file} is a file`);
    expect(await readFile(file, 'utf8')).toBe('mine');
  });

  it('with overwrite replaces only its folder; other files and folders stay', async () => {
    const target = path.join(work, 'lake');
    await mkdir(path.join(target, FOLDER, 'date=2020-01-01'), { recursive: true });
    await writeFile(path.join(target, FOLDER, 'date=2020-01-01', 'part-0.parquet'), 'stale');
    await mkdir(path.join(target, 'dataset=conversations'));
    await writeFile(path.join(target, 'dataset=conversations', 'part-0.parquet'), 'other');
    await writeFile(path.join(target, 'README'), 'mine');
    await replaceFolderAtomically(
      target,
      FOLDER,
      { overwrite: true, param: '--out' },
      write({ [`${FOLDER}/date=2025-09-01/part-0.parquet`]: 'new', 'stray-file': 'not in the folder' }),
    );
    expect(await tree(target)).toEqual([
      'README',
      'dataset=conversations/part-0.parquet',
      `${FOLDER}/date=2025-09-01/part-0.parquet`,
    ]);
    // An export without rows replaces the folder with nothing.
    await replaceFolderAtomically(target, FOLDER, { overwrite: true, param: '--out' }, write({}));
    expect(await tree(target)).toEqual(['README', 'dataset=conversations/part-0.parquet']);
  });

  it('leaves everything as it was when writing fails', async () => {
    const target = path.join(work, 'lake');
    await mkdir(path.join(target, FOLDER), { recursive: true });
    await writeFile(path.join(target, FOLDER, 'old'), 'old');
    const failing = async (staging: string) => {
      await write({ [`${FOLDER}/half`]: 'half' })(staging);
      throw new Error('disk full');
    };
    await expect(
      replaceFolderAtomically(target, FOLDER, { overwrite: true, param: '--out' }, failing),
    ).rejects.toThrow('disk full');
    expect(await tree(target)).toEqual([`${FOLDER}/old`]);
    expect(await readdir(target)).toEqual([FOLDER]);

    // A target the call created goes away again.
    const fresh = path.join(work, 'fresh');
    await expect(
      replaceFolderAtomically(fresh, FOLDER, { overwrite: false, param: '--out' }, failing),
    ).rejects.toThrow('disk full');
    expect(await readdir(work)).toEqual(['lake']);
  });
});
