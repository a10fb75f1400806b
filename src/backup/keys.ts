import { Decrypter, Encrypter, armor } from 'age-encryption';
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import { validateRecipients } from '../crypto/age.ts';
import type { DB } from '../db/schema.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { Keyring } from '../crypto/keyring.ts';
import type { SecretBox } from '../crypto/secret-box.ts';

/**
 * A tenant's backup data key. Chunks are encrypted, named and manifests authenticated under
 * keys derived from it (HKDF-SHA256, one label per use), so one 32-byte secret stands for
 * every backup written under it, and destroying it makes them all unreadable.
 */
export interface DataKey {
  readonly id: string;
  readonly tenantId: string;
  /** AES-256-GCM key of chunks. */
  readonly chunkKey: Buffer;
  /** HMAC-SHA256 key naming chunks (a keyed hash: names reveal nothing about content). */
  readonly idKey: Buffer;
  /** HMAC-SHA256 key authenticating manifests. */
  readonly manifestKey: Buffer;
  /** AES-256-GCM key of the keyring data keys a manifest carries. */
  readonly keyringKey: Buffer;
}

/**
 * The key file kept beside the backups at every destination: the data key sealed by the
 * operator's master key (`m1:`, src/crypto/secret-box.ts; files written before the keyring
 * hold `v1:`, sealed by FERRY_SECRET_KEY) and, when the tenant named age recipients, encrypted
 * to them as well. With it and either secret, a destination alone restores, without the
 * database; without both, nothing does. A master-key rotation seals it again and rewrites it
 * at the tenant's destinations.
 */
export interface KeyFile {
  readonly format: 'ferry-backup-key/1';
  readonly key_id: string;
  readonly tenant_id: string;
  readonly created_at: string;
  readonly sealed: string | null;
  readonly age: string | null;
  readonly recipients: readonly string[];
}

function derive(secret: Buffer, tenantId: string, keyId: string): DataKey {
  const sub = (label: string) =>
    Buffer.from(hkdfSync('sha256', secret, Buffer.from(keyId), `ferry backup ${label} v1`, 32));
  return {
    id: keyId,
    tenantId,
    chunkKey: sub('chunk'),
    idKey: sub('chunk id'),
    manifestKey: sub('manifest'),
    keyringKey: sub('keyring'),
  };
}

/** A row of `backup_keys`. */
export interface KeyRow {
  id: string;
  tenant_id: string;
  sealed: string | null;
  age_armor: string | null;
  recipients: string[];
  created_at: Date;
  destroyed_at: Date | null;
}

/** The key file of a catalog row. */
export function keyFileOf(row: KeyRow): KeyFile {
  return {
    format: 'ferry-backup-key/1',
    key_id: row.id,
    tenant_id: row.tenant_id,
    created_at: row.created_at.toISOString(),
    sealed: row.sealed,
    age: row.age_armor,
    recipients: row.recipients,
  };
}

const sameSet = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && [...a].sort().every((v, i) => v === [...b].sort()[i]);

/**
 * The tenant's current data key and its key file: the newest live key whose age recipients
 * are the ones asked for, or a new key (a change of recipients starts a new key, so an
 * earlier recipient cannot read backups written after it was removed).
 */
export async function currentDataKey(
  db: Kysely<DB>,
  tenantId: string,
  secrets: SecretBox,
  recipients: readonly string[],
): Promise<{ key: DataKey; file: KeyFile }> {
  const wanted = recipients.length ? validateRecipients(recipients) : [];
  const rows = await sql<KeyRow>`
    SELECT id, tenant_id, sealed, age_armor, recipients, created_at, destroyed_at FROM backup_keys
    WHERE tenant_id = ${tenantId} AND destroyed_at IS NULL ORDER BY created_at DESC LIMIT 1`.execute(db);
  const row = rows.rows[0];
  if (row && sameSet(row.recipients, wanted)) {
    const file = keyFileOf(row);
    return { key: await openKeyFile(file, { secrets }), file };
  }
  const secret = randomBytes(32);
  let ageArmor: string | null = null;
  if (wanted.length) {
    const encrypter = new Encrypter();
    for (const r of wanted) encrypter.addRecipient(r);
    ageArmor = armor.encode(await encrypter.encrypt(secret));
  }
  const id = randomUUID();
  const fresh: KeyRow = {
    id,
    tenant_id: tenantId,
    sealed: secrets.sealWithMaster(secret.toString('base64'), backupKeyContext(id)),
    age_armor: ageArmor,
    recipients: wanted,
    created_at: new Date(),
    destroyed_at: null,
  };
  await sql`INSERT INTO backup_keys (id, tenant_id, sealed, age_armor, recipients, created_at)
    VALUES (${fresh.id}, ${tenantId}, ${fresh.sealed}, ${ageArmor},
      ${wanted}::text[],
      ${fresh.created_at})`.execute(db);
  return { key: derive(secret, tenantId, fresh.id), file: keyFileOf(fresh) };
}

/** What a backup key's `m1:` seal is bound to. */
export function backupKeyContext(keyId: string): string {
  return `backup key ${keyId}`;
}

/** The backup key of a key file's seal (`m1:` by the master key, or `v1:` by the secret key). */
export async function openSealedBackupKey(
  secrets: SecretBox,
  keyId: string,
  sealed: string,
): Promise<string> {
  return sealed.startsWith('m1:')
    ? secrets.openWithMaster(sealed, backupKeyContext(keyId))
    : secrets.open(sealed);
}

/** What opens a key file: the operator's master key (the secret box), or the tenant's age identities. */
export interface KeySecrets {
  readonly secrets?: SecretBox | undefined;
  readonly identities?: readonly string[] | undefined;
}

/** The data key of a key file; `backup_key_unavailable` when neither secret opens it. */
export async function openKeyFile(file: KeyFile, secrets: KeySecrets): Promise<DataKey> {
  if (file.format !== 'ferry-backup-key/1' || typeof file.key_id !== 'string')
    throw new FerryError(
      'backup_corrupt',
      `the key file of key ${String(file.key_id)} is not a Ferry backup key file`,
    );
  if (secrets.secrets && file.sealed) {
    let text: string;
    try {
      text = await openSealedBackupKey(secrets.secrets, file.key_id, file.sealed);
    } catch {
      throw new FerryError(
        'backup_key_unavailable',
        `backup key ${file.key_id} does not open with this installation's master key (it was altered, or another key sealed it)`,
      );
    }
    const secret = Buffer.from(text, 'base64');
    if (secret.length !== 32)
      throw new FerryError('backup_corrupt', `backup key ${file.key_id} is malformed`);
    return derive(secret, file.tenant_id, file.key_id);
  }
  throw new FerryError(
    'backup_key_unavailable',
    file.sealed === null && file.age === null
      ? `backup key ${file.key_id} was destroyed: its backups cannot be read`
      : `backup key ${file.key_id} needs the operator's master key or one of the tenant's age identities`,
  );
}

/** The data key from its age-encrypted copy, with the tenant's own identities. */
export async function openKeyFileWithAge(file: KeyFile, identities: readonly string[]): Promise<DataKey> {
  if (!file.age)
    throw new FerryError(
      'backup_key_unavailable',
      `backup key ${file.key_id} was not encrypted to any age recipient`,
    );
  const decrypter = new Decrypter();
  for (const identity of identities) decrypter.addIdentity(identity);
  let secret: Uint8Array;
  try {
    secret = await decrypter.decrypt(armor.decode(file.age));
  } catch {
    throw new FerryError(
      'backup_key_unavailable',
      `backup key ${file.key_id} does not open with the age identities given (wrong identity, or the key file was altered)`,
    );
  }
  if (secret.length !== 32) throw new FerryError('backup_corrupt', `backup key ${file.key_id} is malformed`);
  return derive(Buffer.from(secret), file.tenant_id, file.key_id);
}

/** Opens a key file with whichever secret is given: age identities first (a tenant restoring alone). */
export async function openKey(file: KeyFile, secrets: KeySecrets): Promise<DataKey> {
  if (secrets.identities?.length) return openKeyFileWithAge(file, secrets.identities);
  return openKeyFile(file, secrets);
}

/** The key file of a key from the catalog (null when destroyed or unknown). */
export async function keyFileFromCatalog(db: Kysely<DB>, keyId: string): Promise<KeyFile | null> {
  const r = await sql<KeyRow>`
    SELECT id, tenant_id, sealed, age_armor, recipients, created_at, destroyed_at FROM backup_keys WHERE id = ${keyId}`.execute(
    db,
  );
  const row = r.rows[0];
  return row && !row.destroyed_at ? keyFileOf(row) : null;
}

/**
 * Destroys every backup key of a tenant: the sealed and age-encrypted copies are cleared in
 * the catalog (the caller deletes the key files at the destinations). Returns the key ids.
 */
export async function destroyTenantKeys(db: Kysely<DB>, tenantId: string, now: Date): Promise<string[]> {
  const r = await sql<{ id: string }>`
    UPDATE backup_keys SET sealed = NULL, age_armor = NULL, destroyed_at = ${now}
    WHERE tenant_id = ${tenantId} AND destroyed_at IS NULL RETURNING id`.execute(db);
  return r.rows.map((row) => row.id);
}

/**
 * A keyring data key as a manifest carries it: wrapped by the operator's master key (as in
 * the keyring), then encrypted under the backup's data key. A restore needs both keys, so a
 * tenant restoring with its own age identity gets nothing it could open.
 */
export interface CarriedDataKey {
  readonly id: string;
  /** base64(nonce ‖ AES-256-GCM ciphertext ‖ tag) of `<master key id>:<wrapped key>`, the additional data binding the id. */
  readonly sealed: string;
}

const carriedAad = (id: string) => Buffer.from(`ferry backup data key v1\0${id}`);

/**
 * The keyring data keys `ids` (those the tenant's sealed values use), for the manifest, so a
 * restore into a database that lacks them (or destroyed them since) still opens the restored
 * secrets. A key the keyring no longer has is left out.
 */
export async function carryDataKeys(
  keyring: Keyring,
  key: DataKey,
  ids: readonly string[],
): Promise<CarriedDataKey[]> {
  const out: CarriedDataKey[] = [];
  for (const id of ids) {
    let copy: { wrapped: string; master_key_id: string };
    try {
      copy = await keyring.wrappedCopy(id);
    } catch (err) {
      // Destroyed or from elsewhere: what it sealed is unreadable here as well.
      if (err instanceof FerryError) continue;
      throw err;
    }
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key.keyringKey, nonce);
    cipher.setAAD(carriedAad(id));
    const body = Buffer.concat([
      cipher.update(`${copy.master_key_id}:${copy.wrapped}`, 'utf8'),
      cipher.final(),
      cipher.getAuthTag(),
    ]);
    out.push({ id, sealed: Buffer.concat([nonce, body]).toString('base64') });
  }
  return out;
}

/** The wrapped data keys a manifest carries; `backup_corrupt` when one does not open. */
export function openCarriedDataKeys(
  key: DataKey,
  carried: readonly CarriedDataKey[],
  where: string,
): { id: string; wrapped: string; master_key_id: string }[] {
  return carried.map(({ id, sealed }) => {
    const bytes = Buffer.from(sealed, 'base64');
    let text: string;
    try {
      if (bytes.length < 12 + 16) throw new Error('size');
      const decipher = createDecipheriv('aes-256-gcm', key.keyringKey, bytes.subarray(0, 12));
      decipher.setAAD(carriedAad(id));
      decipher.setAuthTag(bytes.subarray(bytes.length - 16));
      text = Buffer.concat([
        decipher.update(bytes.subarray(12, bytes.length - 16)),
        decipher.final(),
      ]).toString('utf8');
    } catch {
      throw new FerryError('backup_corrupt', `${where}: data key ${id} in the manifest does not open`);
    }
    const [masterKeyId, wrapped] = text.split(':');
    if (!masterKeyId || !wrapped)
      throw new FerryError('backup_corrupt', `${where}: data key ${id} in the manifest is malformed`);
    return { id, master_key_id: masterKeyId, wrapped };
  });
}
