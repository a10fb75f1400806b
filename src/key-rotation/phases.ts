import { sql } from 'kysely';
import { getBackupSettings } from '../backup/settings.ts';
import { backupKeyContext, type KeyRow, keyFileOf, openSealedBackupKey } from '../backup/keys.ts';
import { keyObjectKey, writeKeyFile } from '../backup/repository.ts';
import { type BackupContext, openDestinations } from '../backup/service.ts';
import type { HeaderKeyRef } from '../crypto/at-rest.ts';
import type { Keyring } from '../crypto/keyring.ts';
import { masterKeyHex } from '../crypto/keyring.ts';
import { presentSealedColumns, type SealedColumn } from '../crypto/sealed-columns.ts';
import { type SealedRef, type SecretBox, sealedRef } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { Logger } from '../lib/logger.ts';
import type { EncryptedObjectStore } from '../store/encrypted-object-store.ts';
import { countTenant, type RotationLease } from './record.ts';

/** What a key rotation works with; the composition root (or the CLI) builds it. */
export interface RotationDeps {
  readonly database: Database;
  readonly keyring: Keyring;
  readonly secrets: SecretBox;
  /** The store of export files, encrypted at rest. */
  readonly files: EncryptedObjectStore;
  /** Opens the tenants' backup destinations, where backup key files are rewritten. */
  readonly backups: BackupContext;
  readonly now: () => Date;
  readonly logger?: Logger | undefined;
  /** Rows per batch of sealed values; objects between checkpoints. */
  readonly batchSize?: number;
  /** Called after each item a phase moves (tests stop a run there to prove it resumes). */
  readonly onItem?: ((phase: string) => void | Promise<void>) | undefined;
}

const DEFAULT_BATCH = 200;
/** Where backup repositories live in the file store: their chunks are sealed by backup keys, not at rest. */
const BACKUP_PREFIX = 'backups/';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Failed items named in the rotation record (the count has them all). */
const MAX_NAMED_FAILURES = 20;

/** The tenant of an object key such as `exports/<tenant>/…`, when it names one. */
function tenantOfObject(key: string): string | null {
  const segment = key.split('/')[1];
  return segment && UUID.test(segment) ? segment : null;
}

function recordFailure(lease: RotationLease, item: string, dataKeyId: string | null): void {
  const { counts, checkpoint } = lease.rotation;
  counts.failed += 1;
  checkpoint.failures ??= [];
  if (checkpoint.failures.length < MAX_NAMED_FAILURES) checkpoint.failures.push(item);
  if (dataKeyId) {
    checkpoint.failed_keys ??= {};
    checkpoint.failed_keys[dataKeyId] = (checkpoint.failed_keys[dataKeyId] ?? 0) + 1;
  }
}

/**
 * Re-encrypts every stored object whose header `stale` says is under a key being replaced,
 * under the active data key. A format-1 file under a master key that is not configured stops
 * the run (the operator listed the keys wrong; nothing is lost by stopping): other unreadable
 * objects are counted as failed and left as they are.
 */
export async function reencryptFiles(
  deps: RotationDeps,
  lease: RotationLease,
  stale: (ref: HeaderKeyRef) => boolean,
): Promise<void> {
  const { counts, checkpoint } = lease.rotation;
  const configured = new Set(deps.keyring.master.all.map(masterKeyHex));
  const every = deps.batchSize ?? DEFAULT_BATCH;
  let since = 0;
  // Every object is looked at again on a rerun (a store need not list in key order); those
  // already moved are only read for their header.
  for await (const object of deps.files.list('')) {
    if (object.key.startsWith(BACKUP_PREFIX)) continue;
    counts.files_scanned += 1;
    let seen: HeaderKeyRef | undefined;
    try {
      const outcome = await deps.files.reencrypt(object.key, (ref) => {
        seen = ref;
        if (ref.version === 1 && !configured.has(ref.masterKeyId))
          throw new FerryError(
            'decryption_failed',
            `stored file ${object.key} was encrypted under master key ${ref.masterKeyId}, which is not configured: ` +
              'list the old master key after the new one and run the rotation again',
          );
        return stale(ref);
      });
      if (outcome === 'reencrypted') {
        counts.files += 1;
        countTenant(counts, tenantOfObject(object.key));
        await deps.onItem?.('files');
      }
    } catch (err) {
      if (!(err instanceof FerryError) || err.code !== 'decryption_failed' || !seen) throw err;
      if (seen.version === 1 && !configured.has(seen.masterKeyId)) throw err;
      recordFailure(lease, `file ${object.key}`, seen.version === 2 ? seen.dataKeyId : null);
      deps.logger?.warn({ key: object.key, err }, 'key rotation: a stored file could not be read');
    }
    checkpoint.files_after = object.key;
    if (++since >= every) {
      since = 0;
      await lease.save();
    }
  }
  await lease.save();
}

/** A JSON document with every stale `{"sealed": …}` value sealed again; null when none was stale. */
async function resealDocument(
  value: unknown,
  reseal: (sealed: string) => Promise<string | null>,
): Promise<{ value: unknown; n: number } | null> {
  let n = 0;
  const walk = async (node: unknown): Promise<unknown> => {
    if (Array.isArray(node)) return Promise.all(node.map(walk));
    if (node === null || typeof node !== 'object') return node;
    const record = node as Record<string, unknown>;
    if (typeof record.sealed === 'string' && Object.keys(record).length === 1) {
      const fresh = await reseal(record.sealed);
      if (fresh === null) return node;
      n += 1;
      return { sealed: fresh };
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(record)) out[k] = await walk(v);
    return out;
  };
  const walked = await walk(value);
  return n ? { value: walked, n } : null;
}

/**
 * Seals every stale value of every sealed column (src/crypto/sealed-columns.ts) again under
 * the active data key, batch by batch in key order with a checkpoint per column. `pattern`
 * (a PostgreSQL regular expression) finds the rows that may hold a stale value; `stale`
 * decides per value. A row changed meanwhile is left for the next run (its update matches
 * the value read, or nothing); a value that does not open is counted as failed.
 */
export async function resealSecrets(
  deps: RotationDeps,
  lease: RotationLease,
  stale: (ref: SealedRef) => boolean,
  pattern: string,
): Promise<void> {
  const { checkpoint } = lease.rotation;
  checkpoint.secrets_after ??= {};
  const afters = checkpoint.secrets_after;
  for (const column of await presentSealedColumns(deps.database.db)) {
    const name = `${column.table}.${column.column}`;
    for (;;) {
      const after = afters[name];
      const rows = await sql<{ k: string; v: unknown; t: string | null }>`
        SELECT ${sql.ref(column.key)}::text AS k, ${sql.ref(column.column)} AS v,
          ${column.tenant ? sql`${sql.ref(column.tenant)}::text` : sql`NULL`} AS t
        FROM ${sql.table(column.table)}
        WHERE ${sql.ref(column.column)}::text ~ ${pattern}
          ${after === undefined ? sql`` : sql`AND ${sql.ref(column.key)} > ${after}`}
        ORDER BY ${sql.ref(column.key)} LIMIT ${deps.batchSize ?? DEFAULT_BATCH}`.execute(deps.database.db);
      for (const row of rows.rows) {
        await resealRow(deps, lease, column, row, stale);
        afters[name] = row.k;
      }
      await lease.save();
      if (rows.rows.length < (deps.batchSize ?? DEFAULT_BATCH)) break;
    }
  }
}

async function resealRow(
  deps: RotationDeps,
  lease: RotationLease,
  column: SealedColumn,
  row: { k: string; v: unknown; t: string | null },
  stale: (ref: SealedRef) => boolean,
): Promise<void> {
  const { counts } = lease.rotation;
  const item = `${column.table}.${column.column} ${row.k}`;
  const reseal = async (sealed: string): Promise<string | null> => {
    const ref = sealedRef(sealed);
    if (!ref || ref.format === 'm1' || !stale(ref)) return null;
    try {
      return await deps.secrets.seal(await deps.secrets.open(sealed));
    } catch (err) {
      if (!(err instanceof FerryError) || err.code !== 'secret_unreadable') throw err;
      recordFailure(lease, item, ref.format === 'v2' ? ref.dataKeyId : null);
      return null;
    }
  };
  let n = 0;
  if (column.kind === 'text') {
    if (typeof row.v !== 'string') return;
    const fresh = await reseal(row.v);
    if (fresh === null) return;
    const updated = await sql`
      UPDATE ${sql.table(column.table)} SET ${sql.ref(column.column)} = ${fresh}
      WHERE ${sql.ref(column.key)} = ${row.k} AND ${sql.ref(column.column)} = ${row.v}`.execute(
      deps.database.db,
    );
    n = Number(updated.numAffectedRows ?? 0) ? 1 : 0;
  } else {
    const value = typeof row.v === 'string' ? (JSON.parse(row.v) as unknown) : row.v;
    const fresh = await resealDocument(value, reseal);
    if (!fresh) return;
    const updated = await sql`
      UPDATE ${sql.table(column.table)} SET ${sql.ref(column.column)} = ${JSON.stringify(fresh.value)}::jsonb
      WHERE ${sql.ref(column.key)} = ${row.k}
        AND ${sql.ref(column.column)} = ${JSON.stringify(value)}::jsonb`.execute(deps.database.db);
    n = Number(updated.numAffectedRows ?? 0) ? fresh.n : 0;
  }
  if (!n) return;
  counts.secrets += n;
  countTenant(counts, row.t, n);
  await deps.onItem?.('secrets');
}

/**
 * Seals every live backup key again by the current master key, and rewrites its key file at
 * each of the tenant's destinations that has it (files first, then the catalog: a rerun finds
 * the key still stale and writes again). A destination that cannot be reached stops the run,
 * since its key file would still open with the old master key.
 */
export async function resealBackupKeys(deps: RotationDeps, lease: RotationLease): Promise<void> {
  const { checkpoint } = lease.rotation;
  for (;;) {
    const after = checkpoint.backup_keys_after;
    const rows = await sql<KeyRow>`
      SELECT id, tenant_id, sealed, age_armor, recipients, created_at, destroyed_at FROM backup_keys
      WHERE sealed IS NOT NULL AND destroyed_at IS NULL ${after ? sql`AND id > ${after}` : sql``}
      ORDER BY id LIMIT ${deps.batchSize ?? DEFAULT_BATCH}`.execute(deps.database.db);
    for (const row of rows.rows) {
      const sealed = row.sealed!;
      if (!deps.secrets.sealedByCurrentMaster(sealed)) await resealBackupKey(deps, lease, row, sealed);
      checkpoint.backup_keys_after = row.id;
    }
    await lease.save();
    if (rows.rows.length < (deps.batchSize ?? DEFAULT_BATCH)) break;
  }
}

async function resealBackupKey(deps: RotationDeps, lease: RotationLease, row: KeyRow, sealed: string) {
  const { counts } = lease.rotation;
  let plain: string;
  try {
    plain = await openSealedBackupKey(deps.secrets, row.id, sealed);
  } catch (err) {
    if (!(err instanceof FerryError) || err.code !== 'secret_unreadable') throw err;
    recordFailure(lease, `backup key ${row.id}`, null);
    return;
  }
  const fresh = deps.secrets.sealWithMaster(plain, backupKeyContext(row.id));
  const file = keyFileOf({ ...row, sealed: fresh });
  const settings = await getBackupSettings(deps.database.db, row.tenant_id);
  const destinations = await openDestinations(deps.backups, settings).catch((err: unknown) => {
    throw new FerryError(
      'service_unavailable',
      `backup key ${row.id} of tenant ${row.tenant_id}: a backup destination cannot be opened (${(err as Error).message}); ` +
        'make it reachable or remove it from the backup settings, then run the rotation again',
    );
  });
  try {
    for (const destination of destinations)
      if (await destination.store.head(keyObjectKey(row.tenant_id, row.id))) {
        await writeKeyFile(destination.store, file);
        counts.key_files += 1;
      }
  } finally {
    for (const destination of destinations) await destination.close().catch(() => {});
  }
  const updated = await sql`
    UPDATE backup_keys SET sealed = ${fresh} WHERE id = ${row.id} AND sealed = ${sealed}`.execute(
    deps.database.db,
  );
  if (Number(updated.numAffectedRows ?? 0)) {
    counts.backup_keys += 1;
    countTenant(counts, row.tenant_id);
    await deps.onItem?.('backup_keys');
  }
}
