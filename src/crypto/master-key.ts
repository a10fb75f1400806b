import { hkdfSync, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config/config.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { masterKeyId } from './at-rest.ts';

/** The master keys for encryption at rest. */
export interface MasterKeys {
  /** Encrypts new files. */
  readonly current: Uint8Array;
  /** Every key that may have written a stored file, `current` first. */
  readonly all: readonly Uint8Array[];
  /** Where `current` came from (for logs and `ferry` diagnostics; never the key itself). */
  readonly source: 'FERRY_ENCRYPTION_KEY' | 'FERRY_SECRET_KEY' | 'key file';
}

export const KEY_FILE_NAME = 'storage.key';

/** The at-rest master key derived from FERRY_SECRET_KEY (HKDF-SHA256 under a label of its own). */
export function deriveMasterKey(secretKey: string): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', secretKey, 'ferry', 'ferry storage at-rest master key v1', 32));
}

/**
 * Resolves the master keys, in order of precedence:
 * 1. FERRY_ENCRYPTION_KEY (base64, 32 bytes; a comma-separated list when rotating,
 *    the first encrypts and all decrypt);
 * 2. a key derived from FERRY_SECRET_KEY;
 * 3. `<FERRY_DATA_DIR>/storage.key`, created with random bytes (mode 0600) on first use.
 * Keys of lower rank that exist are kept for decryption, so adding FERRY_ENCRYPTION_KEY
 * or FERRY_SECRET_KEY later does not strand files written under the key file.
 *
 * With FERRY_STORAGE=s3 no key file is created: each machine of a fleet would make
 * its own, and none could read the others' files.
 */
export async function resolveMasterKeys(
  config: Pick<Config, 'dataDir' | 'secretKey' | 'storage'>,
): Promise<MasterKeys>;
/** With `create: false`, resolves to undefined instead of creating a key file. */
export async function resolveMasterKeys(
  config: Pick<Config, 'dataDir' | 'secretKey' | 'storage'>,
  options: { create: false },
): Promise<MasterKeys | undefined>;
export async function resolveMasterKeys(
  config: Pick<Config, 'dataDir' | 'secretKey' | 'storage'>,
  options: { create?: boolean } = {},
): Promise<MasterKeys | undefined> {
  const explicit = config.storage.encryptionKeys;
  const derived = config.secretKey ? deriveMasterKey(config.secretKey) : undefined;
  const file = path.join(config.dataDir, KEY_FILE_NAME);
  let fromFile = await readKeyFile(file);
  let source: MasterKeys['source'];
  let current: Uint8Array;
  if (explicit[0]) {
    current = explicit[0];
    source = 'FERRY_ENCRYPTION_KEY';
  } else if (derived) {
    current = derived;
    source = 'FERRY_SECRET_KEY';
  } else {
    if (!fromFile && options.create === false) return undefined;
    if (!fromFile && config.storage.kind === 's3')
      throw new FerryError(
        'invalid_parameter',
        'FERRY_ENCRYPTION_KEY: encryption at rest with FERRY_STORAGE=s3 needs FERRY_ENCRYPTION_KEY or ' +
          'FERRY_SECRET_KEY, shared by every Ferry process (a per-machine key file would differ)',
        { parameter: 'FERRY_ENCRYPTION_KEY' },
      );
    fromFile ??= await createKeyFile(file);
    current = fromFile;
    source = 'key file';
  }
  const all: Uint8Array[] = [];
  const seen = new Set<string>();
  for (const key of [current, ...explicit, derived, fromFile]) {
    if (!key) continue;
    const id = masterKeyId(key).toString('hex');
    if (seen.has(id)) continue;
    seen.add(id);
    all.push(key);
  }
  return Object.freeze({ current, all: Object.freeze(all), source });
}

async function readKeyFile(file: string): Promise<Uint8Array | undefined> {
  let text: string;
  try {
    text = (await readFile(file, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const key = Buffer.from(text, 'base64');
  if (key.length !== 32 || !/^[A-Za-z0-9+/_-]{43}=?$/.test(text))
    throw new FerryError('invalid_parameter', `${file} must hold one base64 key of 32 bytes`);
  return new Uint8Array(key);
}

async function createKeyFile(file: string): Promise<Uint8Array> {
  await mkdir(path.dirname(file), { recursive: true });
  const key = randomBytes(32);
  try {
    // `wx` fails when another process created the file first; then its key wins.
    await writeFile(file, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
    return new Uint8Array(key);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readKeyFile(file))!;
  }
}
