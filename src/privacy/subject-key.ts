import { createHash, createHmac } from 'node:crypto';

/**
 * A keyed hash of a data subject's identifier within a tenant: what the request register,
 * the audit trail, receipts and the erasure ledger keep instead of the identifier.
 */
export function subjectKey(secretKey: string, tenantId: string, normalizedIdentifier: string): string {
  const key = createHash('sha256').update('ferry:subject-key:v1\0').update(secretKey).digest();
  return createHmac('sha256', key).update(`${tenantId}\n${normalizedIdentifier}`).digest('hex');
}
