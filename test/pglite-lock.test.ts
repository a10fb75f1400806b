import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/open.ts';

describe('the embedded database folder lock', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const config = () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-lock-'));
    dirs.push(dataDir);
    return { databaseUrl: undefined, databaseSchema: undefined, dataDir };
  };

  it('refuses a folder another running process holds, naming it', async () => {
    const c = config();
    const other = spawn('sleep', ['30']);
    try {
      writeFileSync(path.join(c.dataDir, 'ferry.pid'), String(other.pid));
      await expect(openDatabase(c, { migrate: false })).rejects.toThrow(
        `the embedded database in ${c.dataDir} is in use by process ${other.pid}`,
      );
    } finally {
      other.kill();
    }
  });

  it('takes over a lock left by a process that is gone, and releases it on close', async () => {
    const c = config();
    const gone = spawn('true');
    await new Promise((resolve) => gone.once('exit', resolve));
    writeFileSync(path.join(c.dataDir, 'ferry.pid'), String(gone.pid));
    const database = await openDatabase(c, { migrate: false });
    expect(existsSync(path.join(c.dataDir, 'ferry.pid'))).toBe(true);
    await database.close();
    expect(existsSync(path.join(c.dataDir, 'ferry.pid'))).toBe(false);
  });
});
