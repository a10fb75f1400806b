import { randomUUID } from 'node:crypto';
import { type Selectable, sql } from 'kysely';
import { type KeyRotationsTable, keyringDatabase } from '../crypto/keyring-tables.ts';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';

export type RotationKind = 'master' | 'data';

/** What a rotation counts; every count is install-wide except `tenants`. */
export interface RotationCounts {
  /** Keyring rows re-wrapped under the current master key. */
  keyring: number;
  /** Stored objects looked at, and re-encrypted under the active data key. */
  files_scanned: number;
  files: number;
  /** Sealed values re-sealed under the active data key. */
  secrets: number;
  /** Backup keys sealed again by the master key, and key files rewritten at destinations. */
  backup_keys: number;
  key_files: number;
  /** Items that could not be read (altered, or their key is gone): left as they are. */
  failed: number;
  /** Retired data keys destroyed. */
  destroyed: number;
  /** Items moved per tenant (files under the tenant's folders, the tenant's sealed rows). */
  tenants: Record<string, number>;
}

/** Where a run stands: phase cursors, failures by data key, when the scan began. */
export interface RotationCheckpoint {
  /** The last object key, or the last row key per sealed column (`table.column`), done. */
  files_after?: string;
  secrets_after?: Record<string, string>;
  backup_keys_after?: string;
  /** A few of the items that failed, for the operator (keys and row ids; never values). */
  failures?: string[];
  /** Failures per data key (a retired key with failures is not destroyed). */
  failed_keys?: Record<string, number>;
  /** When this run's scan of files and secrets began (ISO). */
  scan_started_at?: string;
}

export interface Rotation {
  readonly id: string;
  readonly kind: RotationKind;
  readonly status: 'running' | 'completed';
  readonly actor: string;
  phase: string;
  checkpoint: RotationCheckpoint;
  counts: RotationCounts;
  readonly masterKeyId: string | null;
  readonly dataKeyId: string | null;
  readonly startedAt: Date;
  readonly finishedAt: Date | null;
  readonly error: string | null;
}

/** How long a run holds its claim without renewing it (it renews at every checkpoint). */
export const ROTATION_LEASE_MS = 5 * 60_000;

const COMMAND: Record<RotationKind, string> = {
  master: 'ferry keys rotate-master',
  data: 'ferry keys rotate-data',
};

export function emptyCounts(): RotationCounts {
  return {
    keyring: 0,
    files_scanned: 0,
    files: 0,
    secrets: 0,
    backup_keys: 0,
    key_files: 0,
    failed: 0,
    destroyed: 0,
    tenants: {},
  };
}

type Row = Selectable<KeyRotationsTable>;

function json<T>(value: unknown): T {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

function fromRow(row: Row): Rotation {
  return {
    id: row.id,
    kind: row.kind,
    status: row.status,
    actor: row.actor,
    phase: row.phase,
    checkpoint: json<RotationCheckpoint>(row.checkpoint),
    counts: { ...emptyCounts(), ...json<Partial<RotationCounts>>(row.counts) },
    masterKeyId: row.master_key_id,
    dataKeyId: row.data_key_id,
    startedAt: new Date(row.started_at),
    finishedAt: row.finished_at ? new Date(row.finished_at) : null,
    error: row.error,
  };
}

/** The unfinished rotation, if there is one (at most one at a time, of either kind). */
export async function unfinishedRotation(database: Database): Promise<Rotation | null> {
  const row = await keyringDatabase(database)
    .selectFrom('key_rotations')
    .selectAll()
    .where('status', '=', 'running')
    .executeTakeFirst();
  return row ? fromRow(row as Row) : null;
}

/** Rotations, newest first. */
export async function listRotations(database: Database, limit = 20): Promise<Rotation[]> {
  const rows = await keyringDatabase(database)
    .selectFrom('key_rotations')
    .selectAll()
    .orderBy('started_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
  return rows.map((r) => fromRow(r as Row));
}

/**
 * A run's hold on the one unfinished rotation: a lease it renews at every checkpoint, so a
 * second process is told that one runs, and a run whose process died is taken over once its
 * lease ran out. Run again, the unfinished rotation continues where its checkpoint says.
 */
export class RotationLease {
  readonly #database: Database;
  readonly #now: () => Date;
  readonly owner = randomUUID();
  rotation: Rotation;

  private constructor(database: Database, now: () => Date, rotation: Rotation) {
    this.#database = database;
    this.#now = now;
    this.rotation = rotation;
  }

  /**
   * Resumes the unfinished rotation of `kind`, or starts one with `start` (the first phase,
   * the keys it moves to). An unfinished rotation of the other kind is a `conflict` that
   * names the command that finishes it; one held by a live process is a `conflict` too.
   */
  static async acquire(
    database: Database,
    kind: RotationKind,
    options: {
      readonly actor: string;
      readonly now: () => Date;
      readonly phase: string;
      readonly masterKeyId?: string | null;
      readonly dataKeyId?: string | null;
    },
  ): Promise<{ lease: RotationLease; resumed: boolean }> {
    const db = keyringDatabase(database);
    let current = await unfinishedRotation(database);
    let resumed = current !== null;
    if (current && current.kind !== kind)
      throw new FerryError(
        'conflict',
        `a ${current.kind}-key rotation started ${current.startedAt.toISOString()} is unfinished: run \`${COMMAND[current.kind]}\` to finish it first`,
      );
    if (!current) {
      const now = options.now();
      const id = randomUUID();
      await db
        .insertInto('key_rotations')
        .values({
          id,
          kind,
          status: 'running',
          actor: options.actor,
          phase: options.phase,
          checkpoint: JSON.stringify({}),
          counts: JSON.stringify(emptyCounts()),
          master_key_id: options.masterKeyId ?? null,
          data_key_id: options.dataKeyId ?? null,
          started_at: now,
          updated_at: now,
        })
        // The one-unfinished index: a rotation another process started at the same moment wins.
        .onConflict((oc) => oc.doNothing())
        .execute();
      current = await unfinishedRotation(database);
      if (!current) throw new Error('no unfinished key rotation after starting one');
      resumed = current.id !== id;
      if (current.kind !== kind)
        throw new FerryError('conflict', `a ${current.kind}-key rotation started meanwhile`);
    }
    const lease = new RotationLease(database, options.now, current);
    await lease.#claim();
    return { lease, resumed };
  }

  async #claim(): Promise<void> {
    const now = this.#now();
    const claimed = await keyringDatabase(this.#database)
      .updateTable('key_rotations')
      .set({ lease_owner: this.owner, lease_until: new Date(now.getTime() + ROTATION_LEASE_MS) })
      .where('id', '=', this.rotation.id)
      .where('status', '=', 'running')
      .where((eb) =>
        eb.or([
          eb('lease_until', 'is', null),
          eb('lease_until', '<', now),
          eb('lease_owner', '=', this.owner),
        ]),
      )
      .returning('lease_until')
      .executeTakeFirst();
    if (!claimed) {
      const row = await keyringDatabase(this.#database)
        .selectFrom('key_rotations')
        .select('lease_until')
        .where('id', '=', this.rotation.id)
        .executeTakeFirst();
      throw new FerryError(
        'conflict',
        `the ${this.rotation.kind}-key rotation ${this.rotation.id} is running in another process` +
          (row?.lease_until ? ` (its claim lasts until ${new Date(row.lease_until).toISOString()})` : '') +
          '; run the command again once it has finished or stopped',
      );
    }
  }

  /** Records the phase, checkpoint and counts, and renews the claim (lost: `conflict`). */
  async save(changes: { phase?: string; masterKeyId?: string; dataKeyId?: string } = {}): Promise<void> {
    const now = this.#now();
    if (changes.phase) this.rotation.phase = changes.phase;
    const updated = await keyringDatabase(this.#database)
      .updateTable('key_rotations')
      .set({
        phase: this.rotation.phase,
        checkpoint: JSON.stringify(this.rotation.checkpoint),
        counts: JSON.stringify(this.rotation.counts),
        updated_at: now,
        lease_until: new Date(now.getTime() + ROTATION_LEASE_MS),
        ...(changes.masterKeyId ? { master_key_id: changes.masterKeyId } : {}),
        ...(changes.dataKeyId ? { data_key_id: changes.dataKeyId } : {}),
      })
      .where('id', '=', this.rotation.id)
      .where('lease_owner', '=', this.owner)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1)
      throw new FerryError(
        'conflict',
        `the ${this.rotation.kind}-key rotation ${this.rotation.id} was taken over by another process`,
      );
    if (changes.masterKeyId) this.rotation = { ...this.rotation, masterKeyId: changes.masterKeyId };
    if (changes.dataKeyId) this.rotation = { ...this.rotation, dataKeyId: changes.dataKeyId };
  }

  /** Marks the rotation completed (with its final counts) and lets go of it. */
  async complete(): Promise<void> {
    await this.save({ phase: 'done' });
    const now = this.#now();
    await keyringDatabase(this.#database)
      .updateTable('key_rotations')
      .set({ status: 'completed', finished_at: now, error: null, lease_owner: null, lease_until: null })
      .where('id', '=', this.rotation.id)
      .where('lease_owner', '=', this.owner)
      .execute();
    this.rotation = { ...this.rotation, status: 'completed', finishedAt: now, error: null };
  }

  /** Records why the run stopped and lets go of the rotation, which stays unfinished. */
  async release(error?: unknown): Promise<void> {
    const message = error ? (error instanceof Error ? error.message : String(error)).slice(0, 2000) : null;
    await keyringDatabase(this.#database)
      .updateTable('key_rotations')
      .set({
        checkpoint: JSON.stringify(this.rotation.checkpoint),
        counts: JSON.stringify(this.rotation.counts),
        error: message,
        lease_owner: null,
        lease_until: null,
        updated_at: this.#now(),
      })
      .where('id', '=', this.rotation.id)
      .where('lease_owner', '=', this.owner)
      .execute();
  }
}

/** Adds to a tenant's count of moved items (object keys and rows that name a tenant). */
export function countTenant(counts: RotationCounts, tenantId: string | null | undefined, n = 1): void {
  if (!tenantId) return;
  counts.tenants[tenantId] = (counts.tenants[tenantId] ?? 0) + n;
}

/** Tenants whose audit trail records a rotation: every tenant not purged. */
export async function auditedTenants(database: Database): Promise<string[]> {
  const rows = await sql<{ id: string }>`
    SELECT id FROM tenants WHERE status <> 'purged' ORDER BY id`.execute(database.db);
  return rows.rows.map((r) => r.id);
}
