import { createHash, randomUUID } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap } from '../datamap/types.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import { tenantDataKeyIds } from '../crypto/sealed-columns.ts';
import { type Database, type DbSession, literal, quoteIdent } from '../db/database.ts';
import { utcInstantSql } from '../db/keyset.ts';
import type { DB } from '../db/schema.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { FERRY_VERSION } from '../version.ts';
import { BACKUP_CDC, contentChunks, countRows } from './chunker.ts';
import type { CdcSizes } from './fastcdc.ts';
import { carryDataKeys, currentDataKey, type DataKey } from './keys.ts';
import {
  type ChunkRef,
  type Manifest,
  type ManifestFile,
  type ManifestTable,
  signManifest,
  type SigningKeyRef,
} from './manifest.ts';
import {
  chunkId,
  chunkObjectKey,
  ensureKeyFile,
  manifestObjectKey,
  putObject,
  readObject,
  sealChunk,
} from './repository.ts';
import { type BackupSettings, getBackupSettings, type OpenedDestination } from './settings.ts';
import { backupTables, catalogOf, streamOrder } from './tables.ts';
import { type BackupRow, backupById, latestCompleted, markStaleRunning } from './catalog.ts';

export interface BackupDeps {
  readonly database: Database;
  /** Seals the tenant's backup key (by the master key) and opens the receipt signing key. */
  readonly secrets: SecretBox;
  /** Opens the tenant's destinations (settings.ts); each is closed after the backup. */
  readonly destinations: (settings: BackupSettings) => Promise<OpenedDestination[]>;
  /** The operator's file store, to read stored export files backed up by content. */
  readonly files?: ObjectStore;
  readonly map?: DataMap;
  readonly sizes?: CdcSizes;
  readonly now?: () => Date;
  readonly onProgress?: (progress: BackupProgress) => void;
}

export interface BackupProgress {
  readonly table: string;
  readonly tableIndex: number;
  readonly tables: number;
  readonly rows: number;
  readonly bytes: number;
}

export interface BackupRequest {
  /** A backup registered already (`registerBackup`, for a queued one); a new one otherwise. */
  readonly id?: string;
  readonly tenantId: string;
  readonly trigger: 'manual' | 'schedule' | 'pre_restore' | 'api';
  readonly actor: string;
}

/** Chunks sealed and uploaded at once. */
const IN_FLIGHT = 4;

/** What one destination already holds (the parent backup's chunks, and what this run wrote). */
interface Target {
  readonly destination: OpenedDestination;
  /** Chunk ids it holds, with their stored sizes. */
  readonly known: Map<string, number>;
}

/**
 * Takes a backup of one tenant: every table of the backup set read in one snapshot
 * transaction, streamed as COPY text in a stable order, cut into content-defined chunks at
 * row boundaries, each chunk compressed, encrypted and stored under its keyed hash at every
 * destination unless it is there already (an incremental backup writes only the chunks that
 * changed). The signed manifest is written last, then the catalog row becomes `completed`:
 * a backup that stops half-way is never listed as one.
 */
export async function createBackup(deps: BackupDeps, request: BackupRequest): Promise<BackupRow> {
  const { database } = deps;
  const db = database.db;
  const now = deps.now ?? (() => new Date());
  const settings = await getBackupSettings(db, request.tenantId);
  const id = request.id ?? (await registerBackup(db, request, now()));
  const opened: OpenedDestination[] = [];
  try {
    const tenant = await sql<{
      slug: string;
    }>`SELECT slug FROM tenants WHERE id = ${request.tenantId}`.execute(db);
    opened.push(...(await deps.destinations(settings)));
    const { key, file } = await currentDataKey(db, request.tenantId, deps.secrets, settings.recipients);
    const parent = await latestCompleted(db, request.tenantId);
    const targets: Target[] = [];
    for (const destination of opened) {
      await ensureKeyFile(destination.store, file);
      targets.push({ destination, known: await parentChunks(destination.store, request.tenantId, parent) });
    }
    const sizes = deps.sizes ?? BACKUP_CDC;
    const stats = { written: 0, newChunks: 0, chunks: 0 };
    const upload = chunkUploader(key, request.tenantId, targets, stats);

    const read = await database.session('snapshot', (session) =>
      readTenant(session, deps, request.tenantId, settings, sizes, upload),
    );
    await upload.drain();

    const manifest: Manifest = {
      format: 'ferry-backup/1',
      backup_id: id,
      tenant_id: request.tenantId,
      tenant_slug: tenant.rows[0]?.slug ?? request.tenantId,
      kind: parent ? 'incremental' : 'full',
      parent_id: parent?.id ?? null,
      key_id: key.id,
      snapshot_at: read.snapshotAt,
      created_at: now().toISOString(),
      schema_version: read.schemaVersion,
      ferry_version: FERRY_VERSION,
      chunking: { algorithm: 'fastcdc-2020', min: sizes.minSize, avg: sizes.avgSize, max: sizes.maxSize },
      compression: 'zstd',
      encryption: 'aes-256-gcm',
      stored_files: settings.stored_files,
      tables: read.tables,
      files: read.files,
      erasure_ledger: read.ledger,
      signing_keys: read.signingKeys,
      data_keys: await carryDataKeys(deps.secrets.keyring, key, read.dataKeyIds),
    };
    const signed = await signManifest(database, deps.secrets, key, manifest);
    const bytes = Buffer.from(`${JSON.stringify(signed)}\n`);
    for (const t of targets)
      await putObject(
        t.destination.store,
        manifestObjectKey(request.tenantId, id),
        bytes,
        'application/json',
      );
    const rows = read.tables.reduce((n, t) => n + t.rows, 0);
    const plain = read.tables.reduce((n, t) => n + t.bytes, 0) + read.files.reduce((n, f) => n + f.bytes, 0);
    await sql`UPDATE backups SET status = 'completed', kind = ${manifest.kind}, parent_id = ${manifest.parent_id},
        key_id = ${key.id}, snapshot_at = ${read.snapshotAt}, schema_version = ${read.schemaVersion},
        ferry_version = ${FERRY_VERSION}, tables = ${read.tables.length}, rows = ${rows}, plain_bytes = ${plain},
        written_bytes = ${stats.written}, chunks = ${stats.chunks}, new_chunks = ${stats.newChunks},
        manifest_sha256 = ${createHash('sha256').update(bytes).digest('hex')},
        destinations = ${JSON.stringify(targets.map((t) => ({ name: t.destination.name, label: t.destination.label, status: 'written' })))}::jsonb,
        finished_at = ${now()}
      WHERE id = ${id}`.execute(db);
    return (await backupById(db, request.tenantId, id))!;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    await sql`UPDATE backups SET status = 'failed', error = ${message.slice(0, 2000)}, finished_at = ${now()}
      WHERE id = ${id}`
      .execute(db)
      .catch(() => {});
    throw err;
  } finally {
    for (const d of opened) await d.close().catch(() => {});
  }
}

/**
 * Registers the running backup (refused for an unknown or purged tenant). The tenant's settings row is locked first, as prune locks
 * it, so a backup never starts while a prune of the same repository holds its lease (the
 * prune would delete chunks the backup is about to reuse).
 */
export async function registerBackup(
  db: Kysely<DB>,
  request: Omit<BackupRequest, 'id'>,
  at: Date,
): Promise<string> {
  const tenant = await sql<{
    status: string;
  }>`SELECT status FROM tenants WHERE id = ${request.tenantId}`.execute(db);
  if (!tenant.rows[0]) throw new FerryError('not_found', `no tenant ${request.tenantId}`);
  if (tenant.rows[0].status === 'purged')
    throw new FerryError('account_closed', 'the account was purged: it has nothing left to back up');
  const id = randomUUID();
  await markStaleRunning(db, request.tenantId, at);
  await db.transaction().execute(async (trx) => {
    await sql`INSERT INTO backup_settings (tenant_id) VALUES (${request.tenantId}) ON CONFLICT (tenant_id) DO NOTHING`.execute(
      trx,
    );
    const lease = await sql<{ prune_until: Date | null }>`
      SELECT prune_until FROM backup_settings WHERE tenant_id = ${request.tenantId} FOR UPDATE`.execute(trx);
    const until = lease.rows[0]?.prune_until;
    if (until && until > at)
      throw new FerryError(
        'conflict',
        "a prune of this tenant's backups is running; try again when it has finished",
        {
          prune_until: until.toISOString(),
        },
      );
    await sql`INSERT INTO backups (id, tenant_id, status, kind, trigger, actor, started_at)
      VALUES (${id}, ${request.tenantId}, 'running', 'full', ${request.trigger}, ${request.actor}, ${at})`.execute(
      trx,
    );
  });
  return id;
}

/** The chunks of the parent backup at a destination (none when it lacks the manifest). */
async function parentChunks(
  store: ObjectStore,
  tenantId: string,
  parent: BackupRow | null,
): Promise<Map<string, number>> {
  const known = new Map<string, number>();
  if (!parent) return known;
  const bytes = await readObject(store, manifestObjectKey(tenantId, parent.id)).catch(() => null);
  if (!bytes) return known;
  try {
    const signed = JSON.parse(bytes.toString('utf8')) as { manifest: Manifest };
    for (const t of signed.manifest.tables) for (const [id, , stored] of t.chunks) known.set(id, stored);
    for (const f of signed.manifest.files) for (const [id, , stored] of f.chunks ?? []) known.set(id, stored);
  } catch {
    // An unreadable parent manifest only means nothing is reused from it.
  }
  return known;
}

interface Uploader {
  /** Names the chunk, and stores it (in the background) wherever it is missing. */
  add(plain: Buffer): Promise<ChunkRef>;
  drain(): Promise<void>;
}

function chunkUploader(
  key: DataKey,
  tenantId: string,
  targets: readonly Target[],
  stats: { written: number; newChunks: number; chunks: number },
): Uploader {
  const running = new Set<Promise<void>>();
  const later: ChunkRef[] = [];
  let failure: unknown = null;
  return {
    async add(plain) {
      if (failure) throw failure;
      const id = chunkId(key, plain);
      stats.chunks++;
      const missing = targets.filter((t) => !t.known.has(id));
      if (!missing.length) {
        const ref: ChunkRef = [id, plain.length, targets[0]?.known.get(id) ?? 0];
        // Seen earlier in this backup and still being sealed: its size is filled in by drain().
        if (ref[2] === 0) later.push(ref);
        return ref;
      }
      for (const t of missing) t.known.set(id, 0);
      while (running.size >= IN_FLIGHT) await Promise.race(running);
      if (failure) throw failure;
      const ref: ChunkRef = [id, plain.length, 0];
      // Compression and encryption run beside the reader (zstd in libuv's thread pool), so
      // reading, chunking and sealing overlap.
      const task = (async () => {
        const sealed = await sealChunk(key, id, plain);
        ref[2] = sealed.length;
        for (const t of targets) if (t.known.get(id) === 0) t.known.set(id, sealed.length);
        stats.newChunks++;
        for (const t of missing) {
          await putObject(t.destination.store, chunkObjectKey(tenantId, id), sealed);
          stats.written += sealed.length;
        }
      })().then(
        () => {
          running.delete(task);
        },
        (err: unknown) => {
          running.delete(task);
          failure ??= err;
        },
      );
      running.add(task);
      return ref;
    },
    async drain() {
      await Promise.all(running);
      if (failure) throw failure;
      for (const ref of later) ref[2] = targets[0]?.known.get(ref[0]) ?? 0;
    },
  };
}

interface ReadResult {
  signingKeys: SigningKeyRef[];
  /** The keyring data keys the tenant's sealed values use, at the snapshot. */
  dataKeyIds: string[];
  ledger: { request_id: string; subject_key: string; erased_at: string }[];
  snapshotAt: string;
  schemaVersion: string;
  tables: ManifestTable[];
  files: ManifestFile[];
}

/** Reads every table of the backup set (and stored files by content) inside the snapshot. */
async function readTenant(
  session: DbSession,
  deps: BackupDeps,
  tenantId: string,
  settings: BackupSettings,
  sizes: CdcSizes,
  upload: Uploader,
): Promise<ReadResult> {
  const clock = await sql<{ at: string }>`
    SELECT ${sql.raw(utcInstantSql('now()'))} AS at`.execute(session.db);
  const version = await sql<{ name: string }>`
    SELECT name FROM kysely_migration ORDER BY name DESC LIMIT 1`.execute(session.db);
  const catalog = await catalogOf(session.db);
  const declared = backupTables(deps.map ?? REFERENCE_DATAMAP);
  const tables: ManifestTable[] = [];
  let index = 0;
  for (const table of declared) {
    index++;
    const entry = catalog.get(table.name);
    if (!entry) continue;
    const columns = entry.columns.map((c) => c.name);
    const order = streamOrder(table, entry.primaryKey, entry.columns);
    const projection = columns
      .map((c) => (table.withheld[c] ? `${table.withheld[c]} AS ${quoteIdent(c)}` : quoteIdent(c)))
      .join(', ');
    const source = session.copyOut({
      projection,
      from: `FROM ${quoteIdent(table.name)} WHERE ${quoteIdent(table.tenantKey)} = ${literal(tenantId)} {{KEY_RANGE}}`,
      key: order,
      options: 'FORMAT text',
    });
    const hash = createHash('sha256');
    const chunks: ChunkRef[] = [];
    let rows = 0;
    let bytes = 0;
    for await (const chunk of contentChunks(source, { sizes })) {
      hash.update(chunk);
      rows += countRows(chunk);
      bytes += chunk.length;
      chunks.push(await upload.add(chunk));
      deps.onProgress?.({ table: table.name, tableIndex: index, tables: declared.length, rows, bytes });
    }
    deps.onProgress?.({ table: table.name, tableIndex: index, tables: declared.length, rows, bytes });
    tables.push({
      name: table.name,
      columns,
      withheld: Object.keys(table.withheld),
      order: order.map((o) => o.replaceAll('"', '')),
      rows,
      bytes,
      sha256: hash.digest('hex'),
      chunks,
    });
  }
  const files = await storedFiles(session, deps, tenantId, settings, sizes, upload);
  const ledger = await sql<{ request_id: string; subject_key: string; erased_at: string }>`
    SELECT request_id::text AS request_id, subject_key,
      ${sql.raw(utcInstantSql('erased_at'))} AS erased_at
    FROM erasure_ledger WHERE tenant_id = ${tenantId} ORDER BY erased_at, request_id`.execute(session.db);
  const signing = await sql<SigningKeyRef>`
    SELECT kid, public_key,
      ${sql.raw(utcInstantSql('created_at'))} AS created_at,
      CASE WHEN retired_at IS NULL THEN NULL
        ELSE ${sql.raw(utcInstantSql('retired_at'))} END AS retired_at
    FROM receipt_signing_keys WHERE kid IN (SELECT key_id FROM dsar_receipts WHERE tenant_id = ${tenantId}) ORDER BY kid`.execute(
    session.db,
  );
  return {
    signingKeys: signing.rows,
    dataKeyIds: await tenantDataKeyIds(session.db, tenantId),
    ledger: ledger.rows,
    snapshotAt: clock.rows[0]!.at,
    schemaVersion: version.rows[0]?.name ?? 'none',
    tables,
    files,
  };
}

/** The stored export files of the tenant: listed by reference, or chunked by content. */
async function storedFiles(
  session: DbSession,
  deps: BackupDeps,
  tenantId: string,
  settings: BackupSettings,
  sizes: CdcSizes,
  upload: Uploader,
): Promise<ManifestFile[]> {
  const r = await sql<{
    export_id: string;
    name: string;
    storage_key: string;
    bytes: string | number;
    sha256: string;
  }>`
    SELECT f.export_id, f.name, f.storage_key, f.bytes, f.sha256 FROM export_files f
    JOIN export_requests e ON e.id = f.export_id
    WHERE f.tenant_id = ${tenantId} AND e.files_deleted_at IS NULL ORDER BY f.created_at, f.id`.execute(
    session.db,
  );
  const out: ManifestFile[] = [];
  for (const row of r.rows) {
    const base = {
      export_id: row.export_id,
      name: row.name,
      storage_key: row.storage_key,
      bytes: Number(row.bytes),
      sha256: row.sha256.trim(),
    };
    if (settings.stored_files !== 'content' || !deps.files) {
      out.push(base);
      continue;
    }
    let stream: AsyncIterable<Buffer>;
    try {
      stream = (await deps.files.get(row.storage_key)) as AsyncIterable<Buffer>;
    } catch (err) {
      // A file removed since (expired, erased) stays listed by reference only.
      if (err instanceof FerryError && err.code === 'not_found') {
        out.push(base);
        continue;
      }
      throw err;
    }
    const chunks: ChunkRef[] = [];
    for await (const chunk of contentChunks(stream, { sizes, rows: false }))
      chunks.push(await upload.add(chunk));
    out.push({ ...base, chunks });
  }
  return out;
}
