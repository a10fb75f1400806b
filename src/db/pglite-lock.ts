import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../domain/ferry-error.ts';

/**
 * PGlite is a database inside one process: two processes opening the same folder would
 * corrupt it. The first process takes `ferry.pid` in the folder; another one is refused
 * with a clear message. A lock left by a process that no longer runs is taken over.
 */
export function lockDataDir(dir: string): () => void {
  const file = path.join(dir, 'ferry.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(readFileSync(file, 'utf8').trim());
      if (owner && owner !== process.pid && isRunning(owner)) {
        throw new FerryError(
          'database_in_use',
          `the embedded database in ${dir} is in use by process ${owner} (ferry serve?): stop it first, or run Ferry on PostgreSQL (DATABASE_URL) to share one database`,
        );
      }
      rmSync(file, { force: true });
    }
  }
  throw new FerryError('database_in_use', `cannot lock the embedded database in ${dir}`);
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
