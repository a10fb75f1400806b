import { execFile } from 'node:child_process';
import { hkdfSync, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config/config.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { masterKeyId } from './at-rest.ts';

/** Where the current master key came from (for logs and `ferry` output; never the key itself). */
export type MasterKeySource =
  | 'FERRY_ENCRYPTION_KEY'
  | 'FERRY_ENCRYPTION_KEY_FILE'
  | 'FERRY_ENCRYPTION_KEY_COMMAND'
  | 'FERRY_SECRET_KEY'
  | 'key file';

/**
 * The master keys: they wrap the keyring's data keys (and, for files written before the
 * keyring, each file's own data key), never data itself.
 */
export interface MasterKeys {
  /** Wraps data keys from now on. */
  readonly current: Uint8Array;
  /** Every key that may have wrapped a data key, `current` first. */
  readonly all: readonly Uint8Array[];
  readonly source: MasterKeySource;
}

export const KEY_FILE_NAME = 'storage.key';

/** How long FERRY_ENCRYPTION_KEY_COMMAND may run. */
export const KEY_COMMAND_TIMEOUT_MS = 10_000;
/** The most output the command may print (a few keys fit many times over). */
const KEY_COMMAND_MAX_BYTES = 64 * 1024;

/** The at-rest master key derived from FERRY_SECRET_KEY (HKDF-SHA256 under a label of its own). */
export function deriveMasterKey(secretKey: string): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', secretKey, 'ferry', 'ferry storage at-rest master key v1', 32));
}

type MasterKeyConfig = Pick<Config, 'dataDir' | 'secretKey' | 'storage'> &
  Partial<Pick<Config, 'previousSecretKeys'>>;

/**
 * Resolves the master keys, in order of precedence:
 * 1. one explicit source (config.ts refuses two): FERRY_ENCRYPTION_KEY (a comma-separated
 *    list), FERRY_ENCRYPTION_KEY_FILE (a file of keys, one a line) or
 *    FERRY_ENCRYPTION_KEY_COMMAND (a command that prints them the same way); each key is
 *    base64 of 32 bytes, the first is current and the others only unwrap (rotation);
 * 2. a key derived from FERRY_SECRET_KEY;
 * 3. `<FERRY_DATA_DIR>/storage.key`, created with random bytes (mode 0600) on first use.
 * Keys of lower rank that exist are kept for unwrapping, so adding an explicit key or
 * FERRY_SECRET_KEY later does not strand what was wrapped under the key file. So are the
 * keys derived from FERRY_PREVIOUS_SECRET_KEYS: after FERRY_SECRET_KEY changes, the keyring
 * still opens, and `ferry keys rotate-master` wraps it under the new key.
 */
export async function resolveMasterKeys(config: MasterKeyConfig): Promise<MasterKeys>;
/** With `create: false`, resolves to undefined instead of creating a key file. */
export async function resolveMasterKeys(
  config: MasterKeyConfig,
  options: { create: false },
): Promise<MasterKeys | undefined>;
export async function resolveMasterKeys(
  config: MasterKeyConfig,
  options: { create?: boolean } = {},
): Promise<MasterKeys | undefined> {
  const explicit = await explicitKeys(config.storage);
  const derived = config.secretKey ? deriveMasterKey(config.secretKey) : undefined;
  const file = path.join(config.dataDir, KEY_FILE_NAME);
  let fromFile = await readKeyFile(file);
  let source: MasterKeySource;
  let current: Uint8Array;
  if (explicit) {
    current = explicit.keys[0]!;
    source = explicit.source;
  } else if (derived) {
    current = derived;
    source = 'FERRY_SECRET_KEY';
  } else {
    if (!fromFile && options.create === false) return undefined;
    fromFile ??= await createKeyFile(file);
    current = fromFile;
    source = 'key file';
  }
  const all: Uint8Array[] = [];
  const seen = new Set<string>();
  const previous = (config.previousSecretKeys ?? []).map((secret) => deriveMasterKey(secret));
  for (const key of [current, ...(explicit?.keys ?? []), derived, ...previous, fromFile]) {
    if (!key) continue;
    const id = masterKeyId(key).toString('hex');
    if (seen.has(id)) continue;
    seen.add(id);
    all.push(key);
  }
  return Object.freeze({ current, all: Object.freeze(all), source });
}

/** The keys of the one explicit source, or undefined when none is set. */
async function explicitKeys(
  storage: MasterKeyConfig['storage'],
): Promise<{ keys: Uint8Array[]; source: MasterKeySource } | undefined> {
  if (storage.encryptionKeys.length)
    return { keys: [...storage.encryptionKeys], source: 'FERRY_ENCRYPTION_KEY' };
  if (storage.encryptionKeyFile) {
    let text: string;
    try {
      text = await readFile(storage.encryptionKeyFile, 'utf8');
    } catch (err) {
      throw unavailable(
        'FERRY_ENCRYPTION_KEY_FILE',
        `cannot read ${storage.encryptionKeyFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
    return { keys: parseKeyList(text, 'FERRY_ENCRYPTION_KEY_FILE'), source: 'FERRY_ENCRYPTION_KEY_FILE' };
  }
  if (storage.encryptionKeyCommand) {
    const text = await runKeyCommand(storage.encryptionKeyCommand);
    return {
      keys: parseKeyList(text, 'FERRY_ENCRYPTION_KEY_COMMAND'),
      source: 'FERRY_ENCRYPTION_KEY_COMMAND',
    };
  }
  return undefined;
}

function unavailable(source: string, why: string): FerryError {
  return new FerryError('master_key_unavailable', `${source}: ${why}`, { parameter: source });
}

const BASE64_KEY = /^[A-Za-z0-9+/_-]{43}=?$/;

/**
 * Keys as a file or command gives them: base64 of 32 bytes, one a line; blank lines and
 * lines starting with `#` are skipped. Errors say which line is wrong, never what it holds.
 */
export function parseKeyList(text: string, source: string): Uint8Array[] {
  const keys: Uint8Array[] = [];
  const lines = text.split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const key = Buffer.from(line, 'base64');
    if (!BASE64_KEY.test(line) || key.length !== 32)
      throw unavailable(source, `line ${index + 1} is not a base64 key of 32 bytes`);
    keys.push(new Uint8Array(key));
  }
  if (!keys.length) throw unavailable(source, 'no key found (expected base64 keys of 32 bytes, one a line)');
  return keys;
}

/**
 * Runs the operator's key command through `/bin/sh -c` and returns what it printed. A
 * failure names the exit code or signal and nothing else: neither its output (which may
 * hold a key) nor its error output (which may echo one) is repeated.
 */
export function runKeyCommand(command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      '/bin/sh',
      ['-c', command],
      {
        timeout: KEY_COMMAND_TIMEOUT_MS,
        maxBuffer: KEY_COMMAND_MAX_BYTES,
        encoding: 'utf8',
        windowsHide: true,
      },
      (err, stdout) => {
        if (!err) {
          resolve(stdout);
          return;
        }
        const failed = err as NodeJS.ErrnoException & {
          code?: number | string;
          killed?: boolean;
          signal?: NodeJS.Signals | null;
        };
        let why: string;
        if (failed.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') why = 'the command printed too much';
        else if (failed.killed && failed.signal === 'SIGTERM')
          why = `the command did not finish within ${KEY_COMMAND_TIMEOUT_MS / 1000} s`;
        else if (typeof failed.code === 'number') why = `the command exited with status ${failed.code}`;
        else if (failed.signal) why = `the command was stopped by ${failed.signal}`;
        else why = `the command could not be run (${String(failed.code ?? 'error')})`;
        reject(unavailable('FERRY_ENCRYPTION_KEY_COMMAND', why));
      },
    );
  });
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
  if (key.length !== 32 || !BASE64_KEY.test(text))
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
