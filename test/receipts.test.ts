import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/db/database.ts';
import { receiptJwks, rotateReceiptKey } from '../src/privacy/receipt-keys.ts';
import {
  canonicalBytes,
  getReceipt,
  issueReceipt,
  type ReceiptBody,
  type ReceiptDocument,
  receiptSha256,
  verifyReceipt,
  verifyReceiptLink,
} from '../src/privacy/receipts.ts';
import { subjectKey } from '../src/privacy/subject-key.ts';
import { createTenant } from './support/fixtures/auth.ts';
import { EMAIL, PHONE, SECRET, sampleBody } from './support/fixtures/receipts.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

/** A copy of a document with one change. */
function tampered(document: ReceiptDocument, change: (receipt: Record<string, unknown>) => void): unknown {
  const copy = structuredClone(document) as unknown as { receipt: Record<string, unknown> };
  change(copy.receipt);
  return copy;
}

describe('RFC 8785 canonical form', () => {
  it('matches the RFC test vectors for numbers, strings and key order', () => {
    // RFC 8785 section 3.2.2 (the sample input) and 3.2.3 (sorting by UTF-16 code units).
    const input = JSON.parse(
      '{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],' +
        '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals":[null,true,false]}',
    );
    expect(canonicalBytes(input).toString('utf8')).toBe(
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],' +
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
    const sorted = JSON.parse(
      '{"\\u20ac":"Euro Sign","\\r":"Carriage Return","\\ufb33":"Hebrew Letter Dalet With Dagesh",' +
        '"1":"One","\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control",' +
        '"\\u00f6":"Latin Small Letter O With Diaeresis"}',
    );
    expect(canonicalBytes(sorted).toString('utf8')).toBe(
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","ö":"Latin Small Letter O With Diaeresis",' +
        '"€":"Euro Sign","😀":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    );
    // Appendix B: IEEE 754 doubles (given by their bits) and their canonical text.
    const vectors: [string, string][] = [
      ['0000000000000000', '0'],
      ['8000000000000000', '0'],
      ['0000000000000001', '5e-324'],
      ['8000000000000001', '-5e-324'],
      ['7fefffffffffffff', '1.7976931348623157e+308'],
      ['ffefffffffffffff', '-1.7976931348623157e+308'],
      ['4340000000000000', '9007199254740992'],
      ['c340000000000000', '-9007199254740992'],
      ['4430000000000000', '295147905179352830000'],
      ['44b52d02c7e14af5', '9.999999999999997e+22'],
      ['44b52d02c7e14af6', '1e+23'],
      ['44b52d02c7e14af7', '1.0000000000000001e+23'],
      ['444b1ae4d6e2ef4e', '999999999999999700000'],
      ['444b1ae4d6e2ef4f', '999999999999999900000'],
      ['444b1ae4d6e2ef50', '1e+21'],
      ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7'],
      ['3eb0c6f7a0b5ed8d', '0.000001'],
      ['41b3de4355555553', '333333333.3333332'],
      ['41b3de4355555554', '333333333.33333325'],
      ['41b3de4355555555', '333333333.3333333'],
      ['41b3de4355555556', '333333333.3333334'],
      ['41b3de4355555557', '333333333.33333343'],
      ['becbf647612f3696', '-0.0000033333333333333333'],
      ['43143ff3c1cb0959', '1424953923781206.2'],
    ];
    for (const [bits, text] of vectors) {
      const value = Buffer.from(bits, 'hex').readDoubleBE(0);
      expect(canonicalBytes([value]).toString('utf8'), bits).toBe(`[${text}]`);
    }
    for (const bad of ['7fffffffffffffff', '7ff0000000000000'])
      expect(() => canonicalBytes([Buffer.from(bad, 'hex').readDoubleBE(0)])).toThrow();
  });
});

describe('subjectKey', () => {
  it('is a keyed, per-tenant hash that does not reveal the identifier', () => {
    const tenant = randomUUID();
    const key = subjectKey(SECRET, tenant, EMAIL.toLowerCase());
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(subjectKey(SECRET, tenant, EMAIL.toLowerCase())).toBe(key);
    expect(subjectKey(SECRET, randomUUID(), EMAIL.toLowerCase())).not.toBe(key);
    expect(subjectKey(`${SECRET}-other`, tenant, EMAIL.toLowerCase())).not.toBe(key);
    expect(subjectKey(SECRET, tenant, PHONE)).not.toBe(key);
  });
});

for (const dialect of DIALECTS) {
  describe(`receipts (${dialect})`, () => {
    let t: TestDatabase;
    let database: Database;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      database = t.database;
    });
    afterAll(async () => {
      await t?.drop();
    });

    it('issues a receipt that verifies against the JWKS, and any changed field breaks it', async () => {
      const tenant = await createTenant(database);
      const body = sampleBody(tenant.id);
      const stored = await issueReceipt(database, SECRET, body);
      const jwks = await receiptJwks(database);
      expect(jwks.keys).toHaveLength(1);
      expect(jwks.keys[0]).toMatchObject({
        kty: 'OKP',
        crv: 'Ed25519',
        kid: stored.key_id,
        use: 'sig',
        alg: 'EdDSA',
        status: 'active',
        valid_until: null,
      });
      expect(jwks.keys[0]!.valid_from).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);

      // The document survives a trip through a file: JSON text, parsed again.
      const document = JSON.parse(JSON.stringify(stored.document)) as ReceiptDocument;
      const verdict = verifyReceipt(document, JSON.parse(JSON.stringify(jwks)));
      expect(verdict).toMatchObject({ valid: true, keyId: stored.key_id });
      expect(document.receipt).toMatchObject({ ...body, sequence: 1, previous_receipt_sha256: null });
      expect(document.receipt.issued_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
      expect(document.receipt.receipt_id).toBe(stored.id);
      expect(document.signature).toEqual({ alg: 'EdDSA', kid: stored.key_id, value: expect.any(String) });

      const changes: [string, (r: Record<string, unknown>) => void][] = [
        ['request_id', (r) => (r.request_id = randomUUID())],
        ['tenant_id', (r) => (r.tenant_id = randomUUID())],
        ['type', (r) => (r.type = 'access')],
        ['regulation', (r) => (r.regulation = 'ccpa')],
        ['subject_key', (r) => (r.subject_key = '0'.repeat(64))],
        ['received_at', (r) => (r.received_at = '2026-01-31T23:59:59.123457Z')],
        ['verified_at', (r) => (r.verified_at = null)],
        ['completed_at', (r) => (r.completed_at = '2026-02-03T17:45:12.987655Z')],
        ['stores.deleted', (r) => ((r.stores as { deleted: number }[])[0]!.deleted = 1)],
        ['stores.retain_reason', (r) => ((r.stores as { retain_reason: string }[])[1]!.retain_reason += ' ')],
        ['files.deleted', (r) => ((r.files as { deleted: unknown[] }).deleted = [])],
        [
          'files.out_of_reach',
          (r) => ((r.files as { out_of_reach: { where: string }[] }).out_of_reach[0]!.where = 'x'),
        ],
        ['processors_notified', (r) => (r.processors_notified = [])],
        ['holds', (r) => (r.holds = [])],
        ['backup_expiry', (r) => (r.backup_expiry = '2027-03-05')],
        ['previous_receipt_sha256', (r) => (r.previous_receipt_sha256 = 'a'.repeat(64))],
        ['sequence', (r) => (r.sequence = 2)],
        ['issued_at', (r) => (r.issued_at = '2030-01-01T00:00:00.000000Z')],
        ['an added field', (r) => (r.email = EMAIL)],
        ['a removed field', (r) => delete r.holds],
      ];
      for (const [field, change] of changes) {
        const result = verifyReceipt(tampered(document, change), jwks);
        expect(result.valid, field).toBe(false);
        expect(!result.valid && result.reason, field).toMatch(/signature does not match/);
      }
      // A signature of other bytes, a missing key, a wrong algorithm: each refused with its reason.
      const otherSignature = { ...document, signature: { ...document.signature, value: 'A'.repeat(86) } };
      expect(verifyReceipt(otherSignature, jwks)).toMatchObject({
        valid: false,
        reason: expect.stringMatching(/does not match/),
      });
      expect(verifyReceipt(document, { keys: [] })).toMatchObject({
        valid: false,
        reason: `the key ${stored.key_id} is not in the key set`,
      });
      expect(
        verifyReceipt({ ...document, signature: { ...document.signature, alg: 'none' } }, jwks),
      ).toMatchObject({
        valid: false,
        reason: expect.stringMatching(/not EdDSA/),
      });
      for (const junk of [null, [], 'x', 42, {}, { receipt: {} }, { receipt: [], signature: {} }])
        expect(verifyReceipt(junk, jwks).valid).toBe(false);

      // Issuing again for the same request answers the receipt already issued.
      const again = await issueReceipt(database, SECRET, {
        ...body,
        completed_at: '2026-02-04T00:00:00.000000Z',
      });
      expect(again.id).toBe(stored.id);
      expect(again.document).toEqual(stored.document);
      expect(await getReceipt(database, tenant.id, { requestId: body.request_id })).toEqual(stored);
      expect(await getReceipt(database, tenant.id, { receiptId: stored.id })).toEqual(stored);
      await expect(getReceipt(database, randomUUID(), { receiptId: stored.id })).rejects.toMatchObject({
        code: 'not_found',
      });
      await expect(getReceipt(database, tenant.id, { receiptId: 'not-a-uuid' })).rejects.toMatchObject({
        code: 'not_found',
      });
    });

    it('refuses a body with identifiers or a wrong shape, naming the field', async () => {
      const tenant = await createTenant(database);
      const withEmail = { ...sampleBody(tenant.id), email: EMAIL } as ReceiptBody;
      await expect(issueReceipt(database, SECRET, withEmail)).rejects.toMatchObject({
        code: 'invalid_parameter',
        message: expect.stringMatching(/email/),
      });
      const badCount = sampleBody(tenant.id);
      (badCount.stores[0] as { deleted: number }).deleted = -1;
      await expect(issueReceipt(database, SECRET, badCount)).rejects.toMatchObject({
        code: 'invalid_parameter',
        message: expect.stringMatching(/stores\.0\.deleted/),
      });
      await expect(
        issueReceipt(database, SECRET, sampleBody(tenant.id, { received_at: '31/01/2026' })),
      ).rejects.toMatchObject({ code: 'invalid_parameter', message: expect.stringMatching(/received_at/) });
      await expect(issueReceipt(database, SECRET, sampleBody(randomUUID()))).rejects.toMatchObject({
        code: 'not_found',
      });
    });

    it("chains a tenant's receipts, gapless under concurrent issuers", async () => {
      const tenant = await createTenant(database);
      const other = await createTenant(database);
      const first = await issueReceipt(database, SECRET, sampleBody(tenant.id));
      const second = await issueReceipt(
        database,
        SECRET,
        sampleBody(tenant.id, { type: 'access', stores: [] }),
      );
      const third = await issueReceipt(database, SECRET, sampleBody(tenant.id, { type: 'rectification' }));
      const elsewhere = await issueReceipt(database, SECRET, sampleBody(other.id));
      expect([first, second, third].map((r) => r.sequence)).toEqual([1, 2, 3]);
      expect(elsewhere.sequence).toBe(1);
      expect(elsewhere.document.receipt.previous_receipt_sha256).toBeNull();
      expect(first.document.receipt.previous_receipt_sha256).toBeNull();
      expect(second.document.receipt.previous_receipt_sha256).toBe(receiptSha256(first.document.receipt));
      expect(second.document.receipt.previous_receipt_sha256).toBe(first.sha256);
      expect(third.document.receipt.previous_receipt_sha256).toBe(second.sha256);
      expect(verifyReceiptLink(first.document, second.document)).toEqual({ valid: true });
      expect(verifyReceiptLink(second.document, third.document)).toEqual({ valid: true });
      expect(verifyReceiptLink(first.document, third.document)).toMatchObject({
        valid: false,
        reason: expect.stringMatching(/broken chain/),
      });
      expect(verifyReceiptLink(first.document, elsewhere.document)).toMatchObject({
        valid: false,
        reason: expect.stringMatching(/different tenants/),
      });

      // Twelve issuers at once: every receipt gets its own number, each names the one before.
      const concurrent = await Promise.all(
        Array.from({ length: 12 }, () => issueReceipt(database, SECRET, sampleBody(tenant.id))),
      );
      const all = [third, ...concurrent].sort((a, b) => a.sequence - b.sequence);
      expect(all.map((r) => r.sequence)).toEqual(Array.from({ length: 13 }, (_, i) => i + 3));
      for (let i = 1; i < all.length; i++)
        expect(verifyReceiptLink(all[i - 1]!.document, all[i]!.document), `link ${i}`).toEqual({
          valid: true,
        });
      const jwks = await receiptJwks(database);
      for (const receipt of all) expect(verifyReceipt(receipt.document, jwks).valid).toBe(true);
    });

    it('rotates keys: old receipts still verify, new ones use the new key, a retired key signs nothing new', async () => {
      const tenant = await createTenant(database);
      const before = await issueReceipt(database, SECRET, sampleBody(tenant.id));
      const rotated = await rotateReceiptKey(database, SECRET);
      expect(rotated.retired).toBe(before.key_id);
      expect(rotated.kid).not.toBe(before.key_id);
      const after = await issueReceipt(database, SECRET, sampleBody(tenant.id));
      expect(after.key_id).toBe(rotated.kid);
      expect(verifyReceiptLink(before.document, after.document)).toEqual({ valid: true });

      const jwks = await receiptJwks(database);
      const old = jwks.keys.find((k) => k.kid === before.key_id)!;
      expect(old.status).toBe('retired');
      expect(old.valid_until).toMatch(/\.\d{6}Z$/);
      expect(jwks.keys.filter((k) => k.status === 'active').map((k) => k.kid)).toEqual([rotated.kid]);
      expect(verifyReceipt(before.document, jwks)).toMatchObject({ valid: true, keyId: before.key_id });
      expect(verifyReceipt(after.document, jwks)).toMatchObject({ valid: true, keyId: rotated.kid });

      // A receipt claiming an issue time after its key was retired is refused, even if well signed
      // (which only someone holding the retired private key could do).
      const late = verifyReceipt(before.document, {
        keys: [{ ...old, valid_until: before.document.receipt.issued_at }],
      });
      expect(late).toMatchObject({ valid: false, reason: expect.stringMatching(/after key .* was retired/) });

      // The wrong secret key cannot open the active key: nothing is rotated.
      await expect(rotateReceiptKey(database, `${SECRET}-wrong`)).rejects.toMatchObject({
        code: 'secret_unreadable',
      });
      expect((await receiptJwks(database)).keys).toHaveLength(jwks.keys.length);
    });

    it('stores neither the private key nor the identifiers in any row or receipt', async () => {
      const tenant = await createTenant(database);
      const stored = await issueReceipt(database, SECRET, sampleBody(tenant.id));
      const rows = await database.db
        .withTables<{
          dsar_receipts: Record<string, unknown>;
          receipt_signing_keys: Record<string, unknown>;
          receipt_chains: Record<string, unknown>;
        }>()
        .selectFrom('dsar_receipts')
        .selectAll()
        .execute();
      const keys = await database.db
        .withTables<{ receipt_signing_keys: Record<string, unknown> }>()
        .selectFrom('receipt_signing_keys')
        .selectAll()
        .execute();
      const everything = JSON.stringify({ rows, keys, document: stored.document });
      for (const secret of [
        EMAIL,
        EMAIL.toLowerCase(),
        PHONE,
        SECRET,
        'PRIVATE KEY',
        'MC4CAQAwBQYDK2VwBCIEI',
      ])
        expect(everything).not.toContain(secret);
      // The sealed private key is present, and only sealed.
      expect(keys.every((k) => String(k.private_key_sealed).startsWith('v1:'))).toBe(true);
      const jwksText = JSON.stringify(await receiptJwks(database));
      expect(jwksText).not.toMatch(/"d"|private|sealed/);
    });
  });
}
