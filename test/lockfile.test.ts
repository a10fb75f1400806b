/**
 * package-lock.json is complete: a fresh clone installs exactly the locked tree. `npm ci`
 * accepts it, and `npm install` finds nothing to add, on any platform: every platform's
 * optional packages (esbuild, Biome, DuckDB binaries) are in the lock. npm runs offline on
 * copies of the two files in a folder of their own, with an empty cache and no user
 * configuration, so this needs neither the network nor node_modules.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const exec = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, '..');

describe('package-lock.json', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-lock-'));
    for (const file of ['package.json', 'package-lock.json'])
      copyFileSync(path.join(REPO, file), path.join(dir, file));
    writeFileSync(path.join(dir, 'empty.npmrc'), '');
    env = {
      ...process.env,
      npm_config_userconfig: path.join(dir, 'empty.npmrc'),
      npm_config_cache: path.join(dir, 'cache'),
      npm_config_update_notifier: 'false',
    };
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const npm = (...args: string[]) =>
    exec('npm', [...args, '--ignore-scripts', '--offline', '--no-audit', '--no-fund'], {
      cwd: dir,
      env,
      timeout: 60_000,
    });

  it('is accepted by npm ci', async () => {
    await expect(npm('ci', '--dry-run')).resolves.toBeDefined();
  });

  it('locks every dependency of every locked package, optional platform packages included', () => {
    // What `npm install` would otherwise add to the lock (and `npm ci` refuse): a package
    // named in a locked package's dependencies that has no entry where Node would find it.
    const lock = JSON.parse(readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, LockedPackage>;
    };
    const missing: string[] = [];
    for (const [at, entry] of Object.entries(lock.packages)) {
      const wanted = {
        ...entry.dependencies,
        ...entry.optionalDependencies,
        ...(at === '' ? entry.devDependencies : {}),
      };
      for (const name of Object.keys(wanted))
        if (!resolves(lock.packages, at, name)) missing.push(`${name} (wanted by ${at || 'ferry'})`);
    }
    expect(missing).toEqual([]);
  });
});

interface LockedPackage {
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

/** Whether Node's lookup from the package at `at` finds `name` among the locked paths. */
function resolves(packages: Record<string, unknown>, at: string, name: string): boolean {
  for (let dir = at; ; ) {
    if (`${dir ? `${dir}/` : ''}node_modules/${name}` in packages) return true;
    if (dir === '') return false;
    const up = dir.lastIndexOf('/node_modules/');
    dir = up === -1 ? '' : dir.slice(0, up);
  }
}
