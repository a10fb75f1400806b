import { createHmac, sign, timingSafeEqual, verify } from 'node:crypto';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { activeSigningKey, publicKeyFromJwk, receiptJwks } from '../privacy/receipt-keys.ts';
import type { ReceiptTables } from '../privacy/receipt-tables.ts';
import { canonicalBytes } from '../privacy/receipts.ts';
import type { CarriedDataKey, DataKey } from './keys.ts';

/** One chunk of a stream: its id, plain size and stored (compressed, encrypted) size. */
export type ChunkRef = [id: string, plainBytes: number, storedBytes: number];

export interface ManifestTable {
  readonly name: string;
  readonly columns: readonly string[];
  /** Columns written as a fixed value instead of their own (hashes a backup never holds). */
  readonly withheld: readonly string[];
  readonly order: readonly string[];
  readonly rows: number;
  readonly bytes: number;
  /** SHA-256 of the plain COPY text stream of the table. */
  readonly sha256: string;
  readonly chunks: readonly ChunkRef[];
}

export interface ManifestFile {
  readonly export_id: string;
  readonly name: string;
  readonly storage_key: string;
  readonly bytes: number;
  readonly sha256: string;
  /** Present when stored files are backed up by content. */
  readonly chunks?: readonly ChunkRef[];
}

/** What a backup holds; signed, stored as `manifests/<id>.json` at each destination. */
export interface Manifest {
  readonly format: 'ferry-backup/1';
  readonly backup_id: string;
  readonly tenant_id: string;
  readonly tenant_slug: string;
  readonly kind: 'full' | 'incremental';
  readonly parent_id: string | null;
  readonly key_id: string;
  /** The instant of the snapshot every table was read in (the database's clock). */
  readonly snapshot_at: string;
  readonly created_at: string;
  /** The last database migration applied when the backup was taken. */
  readonly schema_version: string;
  readonly ferry_version: string;
  readonly chunking: {
    readonly algorithm: 'fastcdc-2020';
    readonly min: number;
    readonly avg: number;
    readonly max: number;
  };
  readonly compression: 'zstd';
  readonly encryption: 'aes-256-gcm';
  readonly stored_files: 'reference' | 'content';
  readonly tables: readonly ManifestTable[];
  readonly files: readonly ManifestFile[];
  /**
   * The tenant's erasure ledger at the snapshot (request, keyed hash, time: never an
   * identifier), so a restore without the database still erases those people again.
   */
  readonly erasure_ledger: readonly { request_id: string; subject_key: string; erased_at: string }[];
  /**
   * The public halves of the keys that signed the tenant's receipts, so receipts restored into
   * another database still verify there (the private halves never leave).
   */
  readonly signing_keys?: readonly SigningKeyRef[];
  /**
   * The keyring data keys the tenant's sealed secrets (webhook, delivery, integration
   * credentials) are sealed under, encrypted under this backup's data key: a restore adds the
   * ones the database lacks to its keyring, so the restored secrets open.
   */
  readonly data_keys?: readonly CarriedDataKey[];
}

export interface SigningKeyRef {
  readonly kid: string;
  readonly public_key: string;
  readonly created_at: string;
  readonly retired_at: string | null;
}

/** The stored form: the manifest, its MAC under the data key, and Ferry's Ed25519 signature. */
export interface SignedManifest {
  readonly manifest: Manifest;
  /** HMAC-SHA256 of the canonical manifest (RFC 8785) under the data key's manifest key. */
  readonly mac: string;
  /** Ed25519 over the same bytes with the receipt signing key (`/.well-known/ferry-receipt-keys.json`). */
  readonly signature: { readonly alg: 'EdDSA'; readonly kid: string; readonly value: string };
}

function macOf(key: DataKey, manifest: Manifest): string {
  return createHmac('sha256', key.manifestKey).update(canonicalBytes(manifest)).digest('hex');
}

export async function signManifest(
  database: Database,
  secrets: SecretBox,
  key: DataKey,
  manifest: Manifest,
): Promise<SignedManifest> {
  await secrets.ready();
  const signing = await database.db
    .transaction()
    .execute((trx) => activeSigningKey(trx.withTables<ReceiptTables>(), secrets));
  const value = sign(null, canonicalBytes(manifest), signing.privateKey).toString('base64url');
  return { manifest, mac: macOf(key, manifest), signature: { alg: 'EdDSA', kid: signing.kid, value } };
}

/** Parses a stored manifest; `backup_corrupt` names the backup and destination when it is not one. */
export function parseManifest(bytes: Buffer, where: string): SignedManifest {
  let value: SignedManifest;
  try {
    value = JSON.parse(bytes.toString('utf8')) as SignedManifest;
  } catch {
    throw new FerryError('backup_corrupt', `${where}: the manifest is not valid JSON (altered or truncated)`);
  }
  if (
    !value ||
    typeof value !== 'object' ||
    value.manifest?.format !== 'ferry-backup/1' ||
    typeof value.mac !== 'string' ||
    !Array.isArray(value.manifest.tables)
  )
    throw new FerryError('backup_corrupt', `${where}: the manifest is not a Ferry backup manifest`);
  return value;
}

/** Checks the MAC (always) and the Ed25519 signature (when this database knows the signing key). */
export async function checkManifest(
  database: Database | null,
  key: DataKey,
  signed: SignedManifest,
  where: string,
): Promise<{ signature: 'valid' | 'unknown_key' }> {
  const expected = Buffer.from(macOf(key, signed.manifest), 'hex');
  const given = Buffer.from(signed.mac, 'hex');
  if (expected.length !== given.length || !timingSafeEqual(expected, given))
    throw new FerryError('backup_corrupt', `${where}: the manifest does not match its MAC (it was altered)`);
  if (!database) return { signature: 'unknown_key' };
  const jwks = await receiptJwks(database);
  const jwk = jwks.keys.find((k) => k.kid === signed.signature?.kid);
  if (!jwk) return { signature: 'unknown_key' };
  const publicKey = publicKeyFromJwk(jwk);
  if (typeof publicKey === 'string') return { signature: 'unknown_key' };
  const ok = verify(
    null,
    canonicalBytes(signed.manifest),
    publicKey,
    Buffer.from(String(signed.signature.value), 'base64url'),
  );
  if (!ok) throw new FerryError('backup_corrupt', `${where}: the manifest signature does not verify`);
  return { signature: 'valid' };
}
