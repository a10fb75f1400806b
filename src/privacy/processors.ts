import type { Database } from '../db/database.ts';

/** A third party that processes the tenant's data and must be told of an erasure. */
export interface Processor {
  readonly id: string;
  readonly name: string;
  /** How the deletion instruction is sent: `email` or `webhook`. */
  readonly channel: 'email' | 'webhook';
}

/**
 * The tenant's registered processors. Erasure asks this one function; until processors
 * can be registered, there are none, and receipts list none notified.
 */
export async function tenantProcessors(_database: Database, _tenantId: string): Promise<Processor[]> {
  return [];
}
