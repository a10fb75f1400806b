import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { DB } from '../db/schema.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { openSecret } from '../lib/secret-box.ts';
import type { Keyring } from './keyring.ts';
import { masterKeyHex } from './keyring.ts';

/*
 * Small secrets (delivery credentials, webhook signing secrets, TOTP secrets, receipt
 * signing keys, integration credentials) sealed with AES-256-GCM. Three forms:
 *
 *   v2:<data key id>:<iv>:<tag>:<ciphertext>     sealed today, under a keyring data key
 *       AES key = HKDF-SHA256(data key, no salt, "ferry secret-box v2"), AAD = "v2:<data key id>"
 *   m1:<master key id>:<iv>:<tag>:<ciphertext>   sealed directly by the master key, for copies
 *       that must open without the database (backup key files beside the backups)
 *       AES key = the master key, AAD = "m1:<master key id>:<context>"
 *   v1:<iv>:<tag>:<ciphertext>                    sealed before the keyring, under
 *       FERRY_SECRET_KEY or `<FERRY_DATA_DIR>/secret.key` (src/lib/secret-box.ts); still
 *       opened, and re-sealed as v2 by a key rotation
 *
 * iv, tag and ciphertext are base64. Nothing here logs or shows a key or a plaintext.
 */

const IV_BYTES = 12;
const TAG_BYTES = 16;
const V2_LABEL = 'ferry secret-box v2';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function unreadable(why: string): FerryError {
  return new FerryError('secret_unreadable', `cannot decrypt the stored secret: ${why}`);
}

/** Which key a sealed value needs (not secret); null when it is not a sealed value. */
export type SealedRef =
  | { readonly format: 'v1' }
  | { readonly format: 'v2'; readonly dataKeyId: string }
  | { readonly format: 'm1'; readonly masterKeyId: string };

export function sealedRef(sealed: string): SealedRef | null {
  const parts = sealed.split(':');
  if (parts[0] === 'v1' && parts.length === 4) return { format: 'v1' };
  if (parts[0] === 'v2' && parts.length === 5 && UUID.test(parts[1]!))
    return { format: 'v2', dataKeyId: parts[1]! };
  if (parts[0] === 'm1' && parts.length === 5 && /^[0-9a-f]{16}$/.test(parts[1]!))
    return { format: 'm1', masterKeyId: parts[1]! };
  return null;
}

function gcmSeal(key: Uint8Array, aad: string, plaintext: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return `${iv.toString('base64')}:${cipher.getAuthTag().toString('base64')}:${ciphertext.toString('base64')}`;
}

function gcmOpen(key: Uint8Array, aad: string, iv64: string, tag64: string, ct64: string): string {
  const iv = Buffer.from(iv64, 'base64');
  const tag = Buffer.from(tag64, 'base64');
  if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw unreadable('malformed value');
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(Buffer.from(ct64, 'base64')), decipher.final()]).toString('utf8');
  } catch {
    throw unreadable('wrong key or the value was altered');
  }
}

/**
 * Seals and opens small secrets with the keyring. One per process, built by the
 * composition root beside the keyring it uses; services get it through their deps.
 */
export class SecretBox {
  readonly keyring: Keyring;
  readonly #legacyKeys: () => readonly string[];
  /** Derived keys by the keyring's data key object: forgotten with it when a key is destroyed. */
  readonly #keys = new WeakMap<Uint8Array, Buffer>();

  /**
   * `legacyKeys` open v1 values: FERRY_SECRET_KEY or the install's key file
   * (`loadOrCreateSecretKey`), then FERRY_PREVIOUS_SECRET_KEYS, tried in that order.
   */
  constructor(keyring: Keyring, legacyKeys: () => string | readonly string[]) {
    this.keyring = keyring;
    this.#legacyKeys = () => {
      const keys = legacyKeys();
      return typeof keys === 'string' ? [keys] : keys;
    };
  }

  /** Loads the keyring (see `Keyring.ready`): call before sealing inside a transaction. */
  ready(): Promise<void> {
    return this.keyring.ready();
  }

  async #aesKey(dataKeyId: string, db?: Kysely<DB>): Promise<Buffer> {
    let dataKey: Uint8Array;
    try {
      dataKey = await this.keyring.dataKey(dataKeyId, db);
    } catch (err) {
      if (err instanceof FerryError) throw unreadable(err.message.replace(/^cannot open data key: /, ''));
      throw err;
    }
    let key = this.#keys.get(dataKey);
    if (!key) {
      key = Buffer.from(hkdfSync('sha256', dataKey, Buffer.alloc(0), V2_LABEL, 32));
      this.#keys.set(dataKey, key);
    }
    return key;
  }

  /** Seals under the keyring's active data key (`v2:`). */
  async seal(plaintext: string): Promise<string> {
    const id = await this.keyring.activeId();
    const key = await this.#aesKey(id);
    return `v2:${id}:${gcmSeal(key, `v2:${id}`, plaintext)}`;
  }

  /**
   * A synchronous sealer bound to the active data key, for sealing many values in a row
   * (bulk loads): what it seals is what `seal` would have sealed at the moment it was made.
   */
  async sealer(): Promise<(plaintext: string) => string> {
    const id = await this.keyring.activeId();
    const key = await this.#aesKey(id);
    return (plaintext) => `v2:${id}:${gcmSeal(key, `v2:${id}`, plaintext)}`;
  }

  /**
   * Opens a `v2:` or `v1:` value; `secret_unreadable` when its key is not to be had or it was
   * altered. Inside a transaction, pass it as `db` (see `Keyring.dataKey`).
   */
  async open(sealed: string, options: { db?: Kysely<DB> } = {}): Promise<string> {
    const ref = sealedRef(sealed);
    if (!ref || ref.format === 'm1') throw unreadable('unknown format or version');
    if (ref.format === 'v1') {
      const [current, ...previous] = this.#legacyKeys();
      try {
        return openSecret(sealed, current!);
      } catch (err) {
        for (const key of previous)
          try {
            return openSecret(sealed, key);
          } catch {
            // Not sealed under this earlier secret either: the current secret's error stands.
          }
        throw err;
      }
    }
    const [, id, iv, tag, ct] = sealed.split(':') as [string, string, string, string, string];
    return gcmOpen(await this.#aesKey(id, options.db), `v2:${id}`, iv, tag, ct);
  }

  /** Whether a value is sealed the way `seal` seals today (under the active data key). */
  async isCurrent(sealed: string): Promise<boolean> {
    const ref = sealedRef(sealed);
    return ref?.format === 'v2' && ref.dataKeyId === (await this.keyring.activeId());
  }

  /**
   * Seals directly under the current master key (`m1:`), bound to `context` (what the value
   * is, e.g. `backup key <id>`): for copies that must open with the master key alone.
   */
  sealWithMaster(plaintext: string, context: string): string {
    const master = this.keyring.master.current;
    const id = masterKeyHex(master);
    return `m1:${id}:${gcmSeal(master, `m1:${id}:${context}`, plaintext)}`;
  }

  /** Opens an `m1:` value sealed for `context` with whichever configured master key sealed it. */
  openWithMaster(sealed: string, context: string): string {
    const ref = sealedRef(sealed);
    if (ref?.format !== 'm1') throw unreadable('unknown format or version');
    const master = this.keyring.master.all.find((key) => masterKeyHex(key) === ref.masterKeyId);
    if (!master) throw unreadable(`it was sealed by master key ${ref.masterKeyId}, which is not configured`);
    const [, id, iv, tag, ct] = sealed.split(':') as [string, string, string, string, string];
    return gcmOpen(master, `m1:${id}:${context}`, iv, tag, ct);
  }

  /** Whether an `m1:` value is sealed by the current master key. */
  sealedByCurrentMaster(sealed: string): boolean {
    const ref = sealedRef(sealed);
    return ref?.format === 'm1' && ref.masterKeyId === masterKeyHex(this.keyring.master.current);
  }
}
