import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../domain/ferry-error.ts';

/**
 * AES-256-GCM for small secrets (integration credentials). The sealed text is
 * versioned, `v1:<iv>:<tag>:<ciphertext>` in base64, so the scheme can change
 * later without guessing. The key is any text of at least 32 characters (the
 * configured FERRY_SECRET_KEY or the per-install key file); the AES key is its
 * SHA-256 under a domain label, so one configured key can serve several purposes.
 */
const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;

function aesKey(key: string): Buffer {
  if (key.length < 32)
    throw new FerryError('secret_key_invalid', 'the secret key must be at least 32 characters');
  return createHash('sha256').update('ferry:secret-box:v1\0').update(key).digest();
}

export function sealSecret(plaintext: string, key: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', aesKey(key), iv);
  cipher.setAAD(Buffer.from(VERSION));
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  const tag = cipher.getAuthTag();
  return `${VERSION}:${iv.toString('base64')}:${tag.toString('base64')}:${ciphertext.toString('base64')}`;
}

export function openSecret(sealed: string, key: string): string {
  const parts = sealed.split(':');
  const unreadable = (why: string) =>
    new FerryError('secret_unreadable', `cannot decrypt the stored secret: ${why}`);
  if (parts.length !== 4 || parts[0] !== VERSION) throw unreadable('unknown format or version');
  const iv = Buffer.from(parts[1]!, 'base64');
  const tag = Buffer.from(parts[2]!, 'base64');
  const ciphertext = Buffer.from(parts[3]!, 'base64');
  if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw unreadable('malformed value');
  try {
    const decipher = createDecipheriv('aes-256-gcm', aesKey(key), iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(VERSION));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
  } catch {
    // The cause names neither key nor plaintext, but says nothing useful either.
    throw unreadable('wrong key or the value was altered');
  }
}

/** "••••" followed by the last four characters (fewer when the secret is short). */
export function maskSecret(plaintext: string): string {
  const chars = [...plaintext];
  const shown = chars.length >= 12 ? 4 : chars.length >= 6 ? 2 : 0;
  return `••••${chars.slice(chars.length - shown).join('')}`;
}

/**
 * The key for sealing secrets: FERRY_SECRET_KEY when configured, otherwise a
 * per-install key kept in `<FERRY_DATA_DIR>/secret.key`, created with random
 * bytes on first use (mode 0600). Losing that file makes stored secrets unreadable.
 */
export function loadOrCreateSecretKey(config: {
  readonly secretKey?: string | undefined;
  readonly dataDir: string;
}): string {
  if (config.secretKey) return config.secretKey;
  const file = path.join(config.dataDir, 'secret.key');
  try {
    const existing = readFileSync(file, 'utf8').trim();
    if (existing.length >= 32) return existing;
    throw new FerryError('secret_key_invalid', `${file} holds fewer than 32 characters`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(config.dataDir, { recursive: true });
  const key = randomBytes(32).toString('base64url');
  try {
    // `wx` fails when another process created the file first; then its key wins.
    writeFileSync(file, `${key}\n`, { mode: 0o600, flag: 'wx' });
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return readFileSync(file, 'utf8').trim();
  }
}
