import { createHmac, hkdfSync } from 'node:crypto';

/** The domain label the subject-key HMAC key is derived under; a new label makes new keys. */
const SUBJECT_KEY_LABEL = 'ferry dsar subject key v1';

/**
 * The keyed hash that stands for a data subject wherever Ferry must name them without
 * their identifiers (receipts, the erasure ledger, the audit record of an erasure):
 * HMAC-SHA256, keyed with a key derived (HKDF-SHA256) from the install's secret key under
 * a label of its own, over the tenant id and the normalized identifier; lowercase hex.
 *
 * The same identifier gives the same key within a tenant and different keys in different
 * tenants; without the secret key nobody can test a guess. `normalizedIdentifier` is the
 * caller's normalized form (e.g. a lowercased email, an E.164 phone number, `customer:<id>`).
 */
export function subjectKey(secretKey: string, tenantId: string, normalizedIdentifier: string): string {
  const key = Buffer.from(hkdfSync('sha256', secretKey, 'ferry', SUBJECT_KEY_LABEL, 32));
  return createHmac('sha256', key).update(tenantId).update('\0').update(normalizedIdentifier).digest('hex');
}
