import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';
import { type Kysely, sql, type Transaction } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { instantText } from '../db/keyset.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import { receiptDb, type ReceiptTables } from './receipt-tables.ts';

/**
 * The Ed25519 keys that sign receipts. A key is created on first use; its private half
 * is stored sealed by the secret box (the keyring) and is only opened to sign. Rotation
 * retires the active key and creates a new one; retired public keys stay in the JWKS,
 * with the period they signed in, so every receipt ever issued still verifies.
 */

/** One public key of the JWKS (RFC 7517 / RFC 8037), with the period it signed receipts in. */
export interface ReceiptJwk {
  readonly kty: 'OKP';
  readonly crv: 'Ed25519';
  /** The raw public key, base64url. */
  readonly x: string;
  /** The RFC 7638 thumbprint of the key, base64url. */
  readonly kid: string;
  readonly use: 'sig';
  readonly alg: 'EdDSA';
  /** `active` signs new receipts; `retired` keys only verify old ones. */
  readonly status: 'active' | 'retired';
  /** When the key started signing (UTC, microseconds). */
  readonly valid_from: string;
  /** When it was retired; null while active. Receipts issued at or after it are not valid. */
  readonly valid_until: string | null;
}

export interface ReceiptJwks {
  readonly keys: readonly ReceiptJwk[];
}

/** The active key, ready to sign. */
export interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
}

type Trx = Transaction<DB & ReceiptTables>;

/** The raw 32-byte public key of an Ed25519 key, base64url (a JWK's `x`). */
function rawPublicKey(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string')
    throw new Error('not an Ed25519 key');
  return jwk.x;
}

/** RFC 7638 thumbprint of an Ed25519 public key: SHA-256 of its canonical JWK members, base64url. */
export function jwkThumbprint(x: string): string {
  return createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`).digest('base64url');
}

/** Creates a key and stores it as the active one, unless another process did first. */
async function insertNewKey(trx: Trx | ReturnType<typeof receiptDb>, secrets: SecretBox): Promise<void> {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const x = rawPublicKey(publicKey);
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' }).toString('base64');
  await trx
    .insertInto('receipt_signing_keys')
    .values({ kid: jwkThumbprint(x), public_key: x, private_key_sealed: await secrets.seal(pkcs8) })
    // The one-active index: a concurrent creator won; its key is used.
    .onConflict((oc) => oc.doNothing())
    .execute();
}

/**
 * Inside an issuer's transaction: the active key, created when there is none, held with
 * FOR SHARE so a rotation waits until the receipt it signs is committed. The caller has
 * called `secrets.ready()` before its transaction (see `Keyring.ready`).
 */
export async function activeSigningKey(trx: Trx, secrets: SecretBox): Promise<SigningKey> {
  const select = () =>
    trx
      .selectFrom('receipt_signing_keys')
      .select(['kid', 'private_key_sealed'])
      .where('retired_at', 'is', null)
      .forShare()
      .executeTakeFirst();
  let row = await select();
  if (!row) {
    await insertNewKey(trx, secrets);
    row = await select();
  }
  if (!row) throw new Error('no active receipt signing key after creating one');
  const der = Buffer.from(
    await secrets.open(row.private_key_sealed, { db: trx as unknown as Kysely<DB> }),
    'base64',
  );
  return { kid: row.kid, privateKey: createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }) };
}

/**
 * Retires the active key (if any) and makes a new one active, in one transaction.
 * Returns the new key id and the retired one's. Refuses (`secret_unreadable`) when the
 * active key does not open here (another key sealed it), unless `force`.
 */
export async function rotateReceiptKey(
  database: Database,
  secrets: SecretBox,
  options: { readonly force?: boolean } = {},
): Promise<{ kid: string; retired: string | null }> {
  await secrets.ready();
  return receiptDb(database)
    .transaction()
    .execute(async (trx) => {
      const current = await trx
        .selectFrom('receipt_signing_keys')
        .select(['kid', 'private_key_sealed'])
        .where('retired_at', 'is', null)
        .forUpdate()
        .executeTakeFirst();
      if (current) {
        // A key that does not open means the wrong key configuration: stop here, before
        // retiring a key this install could still use, unless the operator says the old key
        // is lost (`force`).
        if (!options.force)
          await secrets.open(current.private_key_sealed, { db: trx as unknown as Kysely<DB> });
        await trx
          .updateTable('receipt_signing_keys')
          .set({ retired_at: sql<Date>`clock_timestamp()` })
          .where('kid', '=', current.kid)
          .execute();
      }
      await insertNewKey(trx, secrets);
      const created = await trx
        .selectFrom('receipt_signing_keys')
        .select('kid')
        .where('retired_at', 'is', null)
        .executeTakeFirstOrThrow();
      return { kid: created.kid, retired: current?.kid ?? null };
    });
}

/** Every receipt signing key's public half, oldest first: the JWKS served at /.well-known/ferry-receipt-keys.json. */
export async function receiptJwks(database: Database): Promise<ReceiptJwks> {
  const rows = await receiptDb(database)
    .selectFrom('receipt_signing_keys')
    .select([
      'kid',
      'public_key',
      instantText('created_at').as('valid_from'),
      sql<string | null>`CASE WHEN retired_at IS NULL THEN NULL ELSE ${instantText('retired_at')} END`.as(
        'valid_until',
      ),
    ])
    .orderBy('created_at')
    .orderBy('kid')
    .execute();
  return {
    keys: rows.map((row) => ({
      kty: 'OKP',
      crv: 'Ed25519',
      x: row.public_key,
      kid: row.kid,
      use: 'sig',
      alg: 'EdDSA',
      status: row.valid_until === null ? 'active' : 'retired',
      valid_from: row.valid_from,
      valid_until: row.valid_until,
    })),
  };
}

/** The public key of a JWK, or a reason it cannot be one of Ferry's receipt keys. */
export function publicKeyFromJwk(jwk: unknown): KeyObject | string {
  if (typeof jwk !== 'object' || jwk === null) return 'the key is not a JSON object';
  const { kty, crv, x } = jwk as Record<string, unknown>;
  if (kty !== 'OKP' || crv !== 'Ed25519') return 'the key is not an Ed25519 key (kty OKP, crv Ed25519)';
  if (typeof x !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(x)) return 'the key has no 32-byte x value';
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
  } catch {
    return 'the key is not a valid Ed25519 public key';
  }
}
