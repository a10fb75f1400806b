import { randomUUID } from 'node:crypto';
import type { Database } from '../db/database.ts';
import { deliveryDb } from './tables.ts';
import type { DeliveryResult } from './types.ts';

/** Stores what `deliverAll` reported for one export: a row per target. */
export async function recordDeliveries(
  database: Database,
  input: {
    readonly tenantId: string;
    readonly exportId: string;
    readonly scheduleId?: string | null;
    readonly results: readonly DeliveryResult[];
    readonly at?: Date;
  },
): Promise<void> {
  if (input.results.length === 0) return;
  const at = input.at ?? new Date();
  await deliveryDb(database)
    .insertInto('deliveries')
    .values(
      input.results.map((r) => ({
        id: randomUUID(),
        tenant_id: input.tenantId,
        export_id: input.exportId,
        schedule_id: input.scheduleId ?? null,
        target_type: r.target.type,
        target_name: r.target.name,
        target_label: r.target.label,
        status: r.status,
        attempts: r.attempts,
        location: r.location,
        error: r.error ?? null,
        error_code: r.errorCode ?? null,
        bytes_sent: r.bytesSent,
        checksum_verified: r.checksumVerified,
        created_at: at,
      })),
    )
    .execute();
}

/** The recorded results of an export's deliveries, oldest first (then by target label). */
export async function listDeliveryResults(
  database: Database,
  tenantId: string,
  exportId: string,
): Promise<(DeliveryResult & { readonly at: Date; readonly scheduleId: string | null })[]> {
  const rows = await deliveryDb(database)
    .selectFrom('deliveries')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('export_id', '=', exportId)
    .orderBy('created_at')
    .orderBy('target_label')
    .execute();
  return rows.map((row) => ({
    target: { type: row.target_type, name: row.target_name, label: row.target_label },
    status: row.status,
    attempts: row.attempts,
    location: row.location,
    ...(row.error !== null ? { error: row.error } : {}),
    ...(row.error_code !== null ? { errorCode: row.error_code } : {}),
    bytesSent: Number(row.bytes_sent),
    checksumVerified: row.checksum_verified,
    at: new Date(row.created_at),
    scheduleId: row.schedule_id,
  }));
}
