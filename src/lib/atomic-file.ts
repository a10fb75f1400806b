import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { invalid } from '../domain/ferry-error.ts';

/**
 * Writes a file under a temporary name in the same directory and renames it into
 * place only when `fn` succeeds, so a crash or an error never leaves a half file
 * under the final name.
 */
export async function writeFileAtomically<T>(target: string, fn: (out: Writable) => Promise<T>): Promise<T> {
  await mkdir(path.dirname(path.resolve(target)), { recursive: true });
  const temp = `${target}.partial-${process.pid}-${Date.now()}`;
  const out = createWriteStream(temp);
  try {
    const result = await fn(out);
    if (!out.writableFinished)
      await new Promise<void>((resolve, reject) => out.once('finish', resolve).once('error', reject));
    await rename(temp, target);
    return result;
  } catch (err) {
    out.destroy();
    await rm(temp, { force: true });
    throw err;
  }
}

/**
 * Writes one folder (`folder`, e.g. `dataset=messages`) inside the directory `target` and
 * swaps it into place only when `fn` succeeds. `fn` writes below the staging directory it
 * is given (a hidden `.ferry-partial-*` folder inside `target`, so the swap is a rename on
 * the same file system); files it does not put under `folder` are dropped.
 *
 * Nothing that was there before is deleted unless `overwrite` is set: a `target` that is
 * a file, or a directory that is not empty, is refused with an error naming `param`.
 * With `overwrite`, only `target/folder` is replaced (by two renames once the new one is
 * complete); everything else in `target` stays. On failure, what this call created goes
 * away and what was there before stays as it was.
 */
export async function replaceFolderAtomically<T>(
  target: string,
  folder: string,
  options: { overwrite: boolean; param: string },
  fn: (staging: string) => Promise<T>,
): Promise<T> {
  const dir = path.resolve(target);
  const existing = await stat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (existing && !existing.isDirectory())
    throw invalid(options.param, `${target} is a file; name a directory (it is created if missing)`);
  if (existing && !options.overwrite && (await readdir(dir)).length > 0)
    throw invalid(
      options.param,
      `${target} is not empty; choose another directory, or pass --overwrite to replace only its ${folder} folder`,
    );
  if (!existing) await mkdir(dir, { recursive: true });
  const staging = path.join(dir, `.ferry-partial-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(staging);
  try {
    const result = await fn(staging);
    const fresh = path.join(staging, folder);
    const final = path.join(dir, folder);
    const previous = path.join(staging, '.previous');
    const moved = await rename(final, previous).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return false;
        throw err;
      },
    );
    try {
      // No new folder (an export without rows) replaces the old one with nothing.
      await rename(fresh, final).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    } catch (err) {
      if (moved) await rename(previous, final);
      throw err;
    }
    return result;
  } finally {
    await rm(staging, { recursive: true, force: true });
    // A directory this call made and left empty goes too.
    if (!existing) await rmdir(dir).catch(() => {});
  }
}
