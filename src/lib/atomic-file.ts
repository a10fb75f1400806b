import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Writable } from 'node:stream';

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
    if (!out.writableFinished) await new Promise<void>((resolve, reject) => out.once('finish', resolve).once('error', reject));
    await rename(temp, target);
    return result;
  } catch (err) {
    out.destroy();
    await rm(temp, { force: true });
    throw err;
  }
}
