import { type Kysely, sql } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { activeHolds } from '../privacy/holds.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { type BackupRow, listBackups, STALE_AFTER_MS } from './catalog.ts';
import { applyKeepPolicy, type ForgetDecision, isEmptyPolicy, type KeepPolicy } from './forget.ts';
import type { Manifest } from './manifest.ts';
import { listChunkIds, manifestObjectKey, readObject, repositoryPrefix } from './repository.ts';
import type { OpenedDestination } from './settings.ts';

export interface ForgetResult {
  readonly policy: KeepPolicy;
  readonly dry_run: boolean;
  readonly decisions: readonly (ForgetDecision & { readonly snapshot_at: string })[];
  readonly forgotten: readonly string[];
  /** Why nothing was forgotten although the policy would (a legal hold). */
  readonly held_by: readonly string[];
}

/**
 * Applies the keep policy (restic's `forget`) to the tenant's completed backups: the ones the
 * policy does not keep lose their manifest at every destination and become `forgotten` in the
 * catalog. Their chunks stay until `pruneBackups`. The newest backup is always kept, and
 * while a legal hold of the tenant is active, nothing is forgotten (a hold keeps every copy).
 */
export async function forgetBackups(
  database: Database,
  destinations: readonly OpenedDestination[],
  input: { tenantId: string; policy: KeepPolicy; timeZone: string; dryRun: boolean; now: Date },
): Promise<ForgetResult> {
  const db = database.db;
  const backups = await listBackups(db, input.tenantId);
  const decisions = applyKeepPolicy(
    // The time the backup was taken by Ferry's clock (the snapshot instant is the database's).
    backups.map((b) => ({ id: b.id, time: new Date(b.started_at) })),
    input.policy,
    input.timeZone,
  ).map((d) => ({ ...d, snapshot_at: backups.find((b) => b.id === d.id)!.snapshot_at ?? '' }));
  const heldBy = (await activeHolds(database, input.tenantId)).map((h) => h.id);
  const newest = backups[0]?.id;
  const drop =
    isEmptyPolicy(input.policy) || heldBy.length ? [] : decisions.filter((d) => !d.keep && d.id !== newest);
  if (!input.dryRun)
    for (const d of drop) {
      for (const dest of destinations) await dest.store.delete(manifestObjectKey(input.tenantId, d.id));
      await sql`UPDATE backups SET status = 'forgotten', forgotten_at = ${input.now}
        WHERE id = ${d.id} AND status = 'completed'`.execute(db);
    }
  return {
    policy: input.policy,
    dry_run: input.dryRun,
    decisions: decisions.map((d) => (drop.some((x) => x.id === d.id) || d.keep ? d : { ...d, keep: true })),
    forgotten: drop.map((d) => d.id),
    held_by: heldBy,
  };
}

export interface PruneResult {
  readonly destinations: readonly {
    readonly destination: string;
    readonly chunks_kept: number;
    readonly chunks_deleted: number;
    readonly bytes_freed: number;
    readonly manifests_deleted: number;
  }[];
}

/** How long a prune holds its lease at most (a crashed prune does not block backups longer). */
const LEASE_MS = 60 * 60 * 1000;

/**
 * Deletes the chunks no kept manifest lists, and manifests of backups that never completed
 * (a process stopped between writing the manifest and recording it). Safe against a
 * concurrent backup: the prune takes a lease on the tenant's settings row, which a backup
 * locks before it starts, and does not start while a backup is running; so no backup can
 * reuse a chunk while it is being deleted.
 */
export async function pruneBackups(
  db: Kysely<DB>,
  destinations: readonly OpenedDestination[],
  input: { tenantId: string; now: Date },
): Promise<PruneResult> {
  await db.transaction().execute(async (trx) => {
    await sql`INSERT INTO backup_settings (tenant_id) VALUES (${input.tenantId}) ON CONFLICT (tenant_id) DO NOTHING`.execute(
      trx,
    );
    const lease = await sql<{ prune_until: Date | null }>`
      SELECT prune_until FROM backup_settings WHERE tenant_id = ${input.tenantId} FOR UPDATE`.execute(trx);
    if (lease.rows[0]?.prune_until && lease.rows[0].prune_until > input.now)
      throw new FerryError('conflict', "a prune of this tenant's backups is already running");
    const running = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM backups WHERE tenant_id = ${input.tenantId} AND status = 'running'
        AND started_at >= ${new Date(input.now.getTime() - STALE_AFTER_MS)}`.execute(trx);
    if (Number(running.rows[0]?.n ?? 0) > 0)
      throw new FerryError('conflict', 'a backup of this tenant is running; prune when it has finished');
    await sql`UPDATE backup_settings SET prune_until = ${new Date(input.now.getTime() + LEASE_MS)}
      WHERE tenant_id = ${input.tenantId}`.execute(trx);
  });
  try {
    const kept = await listBackups(db, input.tenantId);
    const keptIds = new Set(kept.map((b) => b.id));
    const out: PruneResult['destinations'][number][] = [];
    for (const dest of destinations) {
      const referenced = await referencedChunks(dest.store, input.tenantId, kept);
      let manifests = 0;
      for await (const object of dest.store.list(`${repositoryPrefix(input.tenantId)}/manifests/`)) {
        const id = object.key.slice(object.key.lastIndexOf('/') + 1).replace(/\.json$/, '');
        if (!keptIds.has(id)) {
          await dest.store.delete(object.key);
          manifests++;
        }
      }
      const present = await listChunkIds(dest.store, input.tenantId);
      let deleted = 0;
      let freed = 0;
      for (const [id, bytes] of present) {
        if (referenced.has(id)) continue;
        await dest.store.delete(`${repositoryPrefix(input.tenantId)}/chunks/${id.slice(0, 2)}/${id}`);
        deleted++;
        freed += bytes;
      }
      out.push({
        destination: dest.name,
        chunks_kept: present.size - deleted,
        chunks_deleted: deleted,
        bytes_freed: freed,
        manifests_deleted: manifests,
      });
    }
    return { destinations: out };
  } finally {
    await sql`UPDATE backup_settings SET prune_until = NULL WHERE tenant_id = ${input.tenantId}`.execute(db);
  }
}

/**
 * The chunks the kept backups list. A kept backup whose manifest is there but unreadable
 * stops the prune: deleting chunks on a partial view could destroy what that backup needs.
 */
async function referencedChunks(
  store: ObjectStore,
  tenantId: string,
  kept: readonly BackupRow[],
): Promise<Set<string>> {
  const out = new Set<string>();
  for (const b of kept) {
    const bytes = await readObject(store, manifestObjectKey(tenantId, b.id));
    // Not at this destination (added after the backup was taken, or lost): nothing it lists is kept for it here.
    if (!bytes) continue;
    let manifest: Manifest;
    try {
      manifest = (JSON.parse(bytes.toString('utf8')) as { manifest: Manifest }).manifest;
    } catch {
      throw new FerryError(
        'backup_corrupt',
        `backup ${b.id}: its manifest is unreadable, so nothing was pruned`,
      );
    }
    for (const t of manifest.tables) for (const [id] of t.chunks) out.add(id);
    for (const f of manifest.files) for (const [id] of f.chunks ?? []) out.add(id);
  }
  return out;
}
