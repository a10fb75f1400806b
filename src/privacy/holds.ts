import type { Database } from '../db/database.ts';

/** A legal hold: data of these datasets that no deletion may touch while it is active. */
export interface LegalHold {
  readonly id: string;
  readonly reason: string;
  readonly datasets: readonly string[];
}

/**
 * The tenant's active legal holds. Every deletion path (erasure, and later retention and
 * selective deletion) asks this one function; until legal holds can be placed, there are
 * none, and erasure says so on its receipt.
 */
export async function activeHolds(_database: Database, _tenantId: string): Promise<LegalHold[]> {
  return [];
}
