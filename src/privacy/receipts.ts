import { createHash, randomUUID, sign, verify } from 'node:crypto';
import canonicalize from 'canonicalize';
import { sql, type Transaction } from 'kysely';
import { type Static, type TSchema, Type } from 'typebox';
import { Value } from 'typebox/value';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { instantText, utcInstantSql } from '../db/keyset.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { activeSigningKey, publicKeyFromJwk, type ReceiptJwks } from './receipt-keys.ts';
import { receiptDb, type ReceiptTables } from './receipt-tables.ts';

/**
 * Signed receipts of completed data subject requests (docs/receipts.md). A receipt is a
 * JSON object canonicalized per RFC 8785 (JCS) and signed with Ed25519; the document a
 * subject or auditor gets is `{ "receipt": {…}, "signature": { "alg", "kid", "value" } }`,
 * where `value` is the base64url signature of the JCS bytes of `receipt`. Each tenant's
 * receipts form a chain: every receipt holds the SHA-256 of the JCS bytes of the one
 * before, and a gapless sequence number.
 */

/** An ISO 8601 instant with an offset, up to microseconds: `2026-03-01T09:30:00.123456Z`. */
const INSTANT = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,6})?(Z|[+-]\\d{2}:\\d{2})$';
const Instant = Type.String({ pattern: INSTANT });
const DateOrInstant = Type.String({
  pattern: `^\\d{4}-\\d{2}-\\d{2}$|${INSTANT}`,
  description: 'a calendar date (YYYY-MM-DD) or an ISO 8601 instant',
});
const Text = Type.String({ minLength: 1, maxLength: 2000 });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Sha256Hex = Type.String({ pattern: '^[0-9a-f]{64}$' });
const Uuid = Type.String({
  pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
});

const strict = { additionalProperties: false } as const;

/** What erasure (or rectification) did in one dataset of one store. */
export const ReceiptStoreSchema = Type.Object(
  {
    /** Where the dataset lives: `database`, `object_store`, `knowledge_base`, … */
    store: Text,
    dataset: Text,
    deleted: Count,
    anonymized: Count,
    scrubbed: Count,
    retained: Count,
    /** Rectification: rows whose values were corrected. */
    rectified: Type.Optional(Count),
    /** The legal basis for the retained rows (e.g. tax law for invoices); null when none were retained. */
    retain_reason: Type.Union([Text, Type.Null()]),
  },
  strict,
);

export const ReceiptFilesSchema = Type.Object(
  {
    /** Stored export files that held the subject and were deleted (or replaced by a re-issued file). */
    deleted: Type.Array(Type.Object({ export_id: Text, file: Text }, strict)),
    /** Copies Ferry cannot reach: downloaded or delivered, with where and when they went. */
    out_of_reach: Type.Array(Type.Object({ export_id: Text, where: Text, when: Instant }, strict)),
  },
  strict,
);

export const ReceiptProcessorSchema = Type.Object(
  {
    processor: Text,
    /** How the deletion instruction went: `email` or `webhook`. */
    channel: Text,
    notified_at: Instant,
    acknowledged_at: Type.Union([Instant, Type.Null()]),
  },
  strict,
);

export const ReceiptHoldSchema = Type.Object(
  { hold_id: Text, reason: Text, datasets: Type.Array(Text) },
  strict,
);

/**
 * What the caller states about a completed request: exactly the receipt's content, and
 * never the subject's identifiers (only `subject_key`, see subject-key.ts). Timestamps
 * are ISO 8601 text, with microseconds where the database had them.
 */
export const ReceiptBodySchema = Type.Object(
  {
    request_id: Text,
    tenant_id: Uuid,
    type: Type.Union([
      Type.Literal('access'),
      Type.Literal('portability'),
      Type.Literal('erasure'),
      Type.Literal('rectification'),
      Type.Literal('restriction'),
      Type.Literal('opt_out'),
      Type.Literal('account_closure'),
      /** A tenant's selective deletion (docs/deletion.md): `subject_key` names the deletion, not a person. */
      Type.Literal('deletion'),
    ]),
    regulation: Type.Union([Type.Literal('gdpr'), Type.Literal('ccpa')]),
    /** The keyed hash of the subject (`subjectKey`), lowercase hex. */
    subject_key: Sha256Hex,
    received_at: Instant,
    verified_at: Type.Union([Instant, Type.Null()]),
    completed_at: Instant,
    stores: Type.Array(ReceiptStoreSchema),
    files: ReceiptFilesSchema,
    processors_notified: Type.Array(ReceiptProcessorSchema),
    holds: Type.Array(ReceiptHoldSchema),
    /** When the last backup that may hold the subject's data expires; null when none does. */
    backup_expiry: Type.Union([DateOrInstant, Type.Null()]),
  },
  strict,
);
export type ReceiptBody = Static<typeof ReceiptBodySchema>;

/** The receipt as signed: the body plus what issuing adds (its id, place in the chain, key and time). */
export const SignedReceiptSchema = Type.Object(
  {
    ...ReceiptBodySchema.properties,
    receipt_version: Type.Literal(1),
    receipt_id: Uuid,
    /** 1 for a tenant's first receipt, then without gaps. */
    sequence: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    /** SHA-256 (hex) of the JCS bytes of the tenant's previous receipt; null for the first. */
    previous_receipt_sha256: Type.Union([Sha256Hex, Type.Null()]),
    key_id: Text,
    issued_at: Instant,
  },
  strict,
);
export type SignedReceipt = Static<typeof SignedReceiptSchema>;

/** The document handed out and checked by `ferry receipts verify`. */
export interface ReceiptDocument {
  readonly receipt: SignedReceipt;
  readonly signature: { readonly alg: 'EdDSA'; readonly kid: string; readonly value: string };
}

/** A receipt as stored. */
export interface StoredReceipt {
  readonly id: string;
  readonly tenant_id: string;
  readonly request_id: string;
  readonly sequence: number;
  /** SHA-256 (hex) of the receipt's JCS bytes. */
  readonly sha256: string;
  readonly key_id: string;
  /** UTC, microseconds. */
  readonly issued_at: string;
  readonly document: ReceiptDocument;
}

/** The RFC 8785 canonical form of a JSON value, as UTF-8 bytes. */
export function canonicalBytes(value: unknown): Buffer {
  const text = canonicalize(value);
  if (text === undefined) throw new Error('the value has no JSON form');
  return Buffer.from(text, 'utf8');
}

/** SHA-256 (hex) of the JCS bytes of a receipt: what the next receipt of the chain names. */
export function receiptSha256(receipt: unknown): string {
  return createHash('sha256').update(canonicalBytes(receipt)).digest('hex');
}

/** The first problem of a value against a schema, as `path: message`. */
function firstError(schema: TSchema, value: unknown): string | undefined {
  for (const error of Value.Errors(schema, value)) {
    if (error.keyword === 'boolean') continue; // the additionalProperties entry below says it better
    const where = error.instancePath ? error.instancePath.slice(1).replaceAll('/', '.') : '(receipt)';
    const extra =
      error.keyword === 'additionalProperties'
        ? ` (${String((error.params as { additionalProperties?: string[] }).additionalProperties ?? [])})`
        : '';
    return `${where}: ${error.message}${extra}`;
  }
  return undefined;
}

/**
 * Issues the receipt of a completed request: appends it to its tenant's chain (the chain
 * head row is locked, so concurrent issuers get consecutive sequence numbers), signs the
 * JCS bytes with the active key (created on first use) and stores it. Issuing again for
 * the same request returns the receipt already issued.
 */
export async function issueReceipt(
  database: Database,
  secrets: SecretBox,
  body: ReceiptBody,
): Promise<StoredReceipt> {
  checkBody(body);
  await secrets.ready();
  return database.db.transaction().execute((trx) => issueReceiptInTransaction(trx, secrets, body));
}

/**
 * `issueReceipt` inside the caller's transaction, so that marking a request completed and
 * issuing its receipt commit together. The tenant's chain stays locked until that
 * transaction ends: keep it short. Call `secrets.ready()` before the transaction.
 */
export async function issueReceiptInTransaction(
  transaction: Transaction<DB>,
  secrets: SecretBox,
  body: ReceiptBody,
): Promise<StoredReceipt> {
  checkBody(body);
  const trx = transaction.withTables<ReceiptTables>();
  const tenant = await trx
    .selectFrom('tenants')
    .select('id')
    .where('id', '=', body.tenant_id)
    .executeTakeFirst();
  if (!tenant) throw new FerryError('not_found', `no tenant ${body.tenant_id}`);
  await trx
    .insertInto('receipt_chains')
    .values({ tenant_id: body.tenant_id })
    .onConflict((oc) => oc.column('tenant_id').doNothing())
    .execute();
  const head = await trx
    .selectFrom('receipt_chains')
    .select(['last_sequence', 'last_sha256'])
    .where('tenant_id', '=', body.tenant_id)
    .forUpdate()
    .executeTakeFirstOrThrow();
  const existing = await selectReceipts(trx)
    .where('tenant_id', '=', body.tenant_id)
    .where('request_id', '=', body.request_id)
    .executeTakeFirst();
  if (existing) return toStored(existing);

  const key = await activeSigningKey(trx, secrets);
  const clock = await sql<{
    now: string;
  }>`SELECT ${sql.raw(utcInstantSql('clock_timestamp()'))} AS now`.execute(trx);
  const receipt: SignedReceipt = {
    ...body,
    receipt_version: 1,
    receipt_id: randomUUID(),
    sequence: Number(head.last_sequence) + 1,
    previous_receipt_sha256: head.last_sha256,
    key_id: key.kid,
    issued_at: clock.rows[0]!.now,
  };
  const bytes = canonicalBytes(receipt);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const signature = sign(null, bytes, key.privateKey).toString('base64url');
  await trx
    .insertInto('dsar_receipts')
    .values({
      id: receipt.receipt_id,
      tenant_id: receipt.tenant_id,
      request_id: receipt.request_id,
      sequence: receipt.sequence,
      sha256,
      body: bytes.toString('utf8'),
      signature,
      key_id: key.kid,
      issued_at: receipt.issued_at,
    })
    .execute();
  await trx
    .updateTable('receipt_chains')
    .set({ last_sequence: receipt.sequence, last_sha256: sha256 })
    .where('tenant_id', '=', body.tenant_id)
    .execute();
  return {
    id: receipt.receipt_id,
    tenant_id: receipt.tenant_id,
    request_id: receipt.request_id,
    sequence: receipt.sequence,
    sha256,
    key_id: key.kid,
    issued_at: receipt.issued_at,
    document: { receipt, signature: { alg: 'EdDSA', kid: key.kid, value: signature } },
  };
}

function checkBody(body: ReceiptBody): void {
  const problem = firstError(ReceiptBodySchema, body);
  if (problem) throw invalid(`receipt.${problem.split(':')[0]}`, problem.slice(problem.indexOf(':') + 2));
}

function selectReceipts(db: ReturnType<typeof receiptDb>) {
  return db
    .selectFrom('dsar_receipts')
    .select(['id', 'tenant_id', 'request_id', 'sequence', 'sha256', 'body', 'signature', 'key_id'])
    .select(instantText('issued_at').as('issued_at'));
}

type ReceiptRow = Awaited<ReturnType<ReturnType<typeof selectReceipts>['executeTakeFirstOrThrow']>>;

function toStored(row: ReceiptRow): StoredReceipt {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    request_id: row.request_id,
    sequence: Number(row.sequence),
    sha256: row.sha256,
    key_id: row.key_id,
    issued_at: row.issued_at,
    document: {
      receipt: JSON.parse(row.body) as SignedReceipt,
      signature: { alg: 'EdDSA', kid: row.key_id, value: row.signature },
    },
  };
}

/** One receipt of a tenant, by its id or by the id of the request it answers; `not_found` otherwise. */
export async function getReceipt(
  database: Database,
  tenantId: string,
  which: { readonly receiptId: string } | { readonly requestId: string },
): Promise<StoredReceipt> {
  let query = selectReceipts(receiptDb(database)).where('tenant_id', '=', tenantId);
  if ('receiptId' in which) {
    // A malformed id matches nothing (and must not reach the uuid cast).
    if (!Value.Check(Uuid, which.receiptId))
      throw new FerryError('not_found', `no receipt ${JSON.stringify(which.receiptId)}`);
    query = query.where('id', '=', which.receiptId);
  } else query = query.where('request_id', '=', which.requestId);
  const row = await query.executeTakeFirst();
  if (!row)
    throw new FerryError(
      'not_found',
      'receiptId' in which ? `no receipt ${which.receiptId}` : `no receipt for request ${which.requestId}`,
    );
  return toStored(row);
}

/** The outcome of checking a receipt document; `keyId` is the signature's key when it names one. */
export type ReceiptVerification =
  | { readonly valid: true; readonly keyId: string; readonly receipt: SignedReceipt }
  | { readonly valid: false; readonly reason: string; readonly keyId: string | null };

/** Microseconds since the epoch of an ISO instant (Date keeps only milliseconds). */
function micros(instant: string): bigint | undefined {
  const match = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:\d{2})$/.exec(instant);
  if (!match) return undefined;
  const ms = Date.parse(`${match[1]}${match[3]}`);
  if (Number.isNaN(ms)) return undefined;
  return BigInt(ms) * 1000n + BigInt((match[2] ?? '').padEnd(6, '0'));
}

/**
 * Checks a receipt document against a JWKS, without any database: the signature over the
 * JCS bytes of `receipt` with the key the signature names, the receipt naming that same
 * key, its issue time inside the key's validity period (when the JWKS gives one) and its
 * shape. Pure.
 */
export function verifyReceipt(document: unknown, jwks: ReceiptJwks | unknown): ReceiptVerification {
  const fail = (reason: string, keyId: string | null = null): ReceiptVerification => ({
    valid: false,
    reason,
    keyId,
  });
  if (typeof document !== 'object' || document === null || Array.isArray(document))
    return fail('the document is not a JSON object with "receipt" and "signature"');
  const { receipt, signature } = document as Record<string, unknown>;
  if (typeof receipt !== 'object' || receipt === null || Array.isArray(receipt))
    return fail('the document has no "receipt" object');
  if (typeof signature !== 'object' || signature === null)
    return fail('the document has no "signature" object');
  const { alg, kid, value } = signature as Record<string, unknown>;
  if (typeof kid !== 'string' || kid === '') return fail('the signature names no key (kid)');
  if (alg !== 'EdDSA') return fail(`the signature algorithm is ${JSON.stringify(alg)}, not EdDSA`, kid);
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]{86}$/.test(value))
    return fail('the signature value is not a base64url Ed25519 signature (64 bytes)', kid);
  const keys = (jwks as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) return fail('the key set has no "keys" array', kid);
  const jwk = keys.find((k) => (k as { kid?: unknown } | null)?.kid === kid) as
    | Record<string, unknown>
    | undefined;
  if (!jwk) return fail(`the key ${kid} is not in the key set`, kid);
  const publicKey = publicKeyFromJwk(jwk);
  if (typeof publicKey === 'string') return fail(`key ${kid}: ${publicKey}`, kid);
  let bytes: Buffer;
  try {
    bytes = canonicalBytes(receipt);
  } catch (err) {
    return fail(`the receipt cannot be canonicalized: ${(err as Error).message}`, kid);
  }
  if (!verify(null, bytes, publicKey, Buffer.from(value, 'base64url')))
    return fail(`the signature does not match the receipt (altered, or not signed by key ${kid})`, kid);
  const shape = firstError(SignedReceiptSchema, receipt);
  if (shape) return fail(`not a Ferry receipt: ${shape}`, kid);
  const signed = receipt as SignedReceipt;
  if (signed.key_id !== kid)
    return fail(`the receipt names key ${signed.key_id} but is signed by ${kid}`, kid);
  const issued = micros(signed.issued_at);
  const from = typeof jwk.valid_from === 'string' ? micros(jwk.valid_from) : undefined;
  const until = typeof jwk.valid_until === 'string' ? micros(jwk.valid_until) : undefined;
  if (issued !== undefined && from !== undefined && issued < from)
    return fail(
      `the receipt was issued at ${signed.issued_at}, before key ${kid} existed (${jwk.valid_from})`,
      kid,
    );
  if (issued !== undefined && until !== undefined && issued >= until)
    return fail(
      `the receipt was issued at ${signed.issued_at}, after key ${kid} was retired (${jwk.valid_until})`,
      kid,
    );
  return { valid: true, keyId: kid, receipt: signed };
}

/**
 * Whether `next` directly follows `previous` in a tenant's chain: same tenant, the next
 * sequence number, and `previous_receipt_sha256` equal to the SHA-256 of the JCS bytes
 * of the previous receipt. Checks the link only; verify each signature with verifyReceipt.
 */
export function verifyReceiptLink(
  previous: ReceiptDocument,
  next: ReceiptDocument,
): { readonly valid: true } | { readonly valid: false; readonly reason: string } {
  const before = previous.receipt;
  const after = next.receipt;
  if (before.tenant_id !== after.tenant_id)
    return {
      valid: false,
      reason: `the receipts belong to different tenants (${before.tenant_id}, ${after.tenant_id})`,
    };
  const expected = receiptSha256(before);
  if (after.previous_receipt_sha256 !== expected)
    return {
      valid: false,
      reason: `broken chain: receipt ${after.receipt_id} names previous hash ${after.previous_receipt_sha256 ?? 'null'}, but receipt ${before.receipt_id} hashes to ${expected}`,
    };
  if (after.sequence !== before.sequence + 1)
    return {
      valid: false,
      reason: `broken chain: receipt ${after.receipt_id} has sequence ${after.sequence}, expected ${before.sequence + 1}`,
    };
  return { valid: true };
}
