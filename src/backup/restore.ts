import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { type Kysely, sql } from 'kysely';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap } from '../datamap/types.ts';
import type { Keyring } from '../crypto/keyring.ts';
import { type Database, type DbSession, literal, quoteIdent } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { redeleteInTransaction } from '../privacy/deletion.ts';
import { eraseRowsInTransaction } from '../privacy/erasure.ts';
import { specificName } from '../privacy/subject.ts';
import { subjectKey } from '../privacy/subject-key.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { type DataKey, type KeySecrets, openCarriedDataKeys, openKey } from './keys.ts';
import {
  checkManifest,
  type Manifest,
  type ManifestTable,
  parseManifest,
  type SignedManifest,
} from './manifest.ts';
import { chunkObjectKey, manifestObjectKey, openChunk, readKeyFile, readObject } from './repository.ts';
import { backupTables, type CatalogColumn, catalogOf } from './tables.ts';

export const RESTORE_MODES = ['replace', 'sandbox', 'database', 'drill'] as const;
export type RestoreMode = (typeof RESTORE_MODES)[number];

/**
 * Append-only records a restore into the live tenant keeps as they are: the audit trail, and
 * the signed receipts (with their chain head), which people were given as proof.
 */
const APPEND_ONLY = new Set(['audit_events', 'dsar_receipts', 'receipt_chains']);

/** Staging tables of a sandbox kept to the end of the transaction (the ledger replay reads their ids). */
const KEEP_STAGED = new Set(['customers', 'team_members']);

export interface RestoreTableReport {
  readonly name: string;
  /** Rows in the backup (and restored, before the erasure replay). */
  readonly rows: number;
  readonly restored: boolean;
  readonly note?: string;
}

export interface ReErased {
  /** The erasure request the ledger entry belongs to. */
  readonly request_id: string;
  /** The keyed hash the ledger names the subject by (never the identifier itself). */
  readonly subject_key: string;
  readonly erased_at: string;
  /** Rows deleted, anonymized or scrubbed again, per table. */
  readonly tables: Readonly<Record<string, number>>;
}

export interface RestoreReport {
  readonly backup_id: string;
  readonly mode: RestoreMode;
  readonly source_tenant_id: string;
  readonly target_tenant_id: string;
  readonly target_slug: string;
  /** A sandbox's ids are `md5(id_salt || id)` as a uuid (`remapId`); empty otherwise. */
  readonly id_salt: string;
  readonly snapshot_at: string;
  readonly destination: string;
  readonly signature: 'valid' | 'unknown_key';
  readonly tables: readonly RestoreTableReport[];
  readonly re_erased: readonly ReErased[];
  /**
   * The erasure ledger's entries (the backup's and the database's) and whether they were
   * replayed: not without the operator's secret key, which keys the ledger's hashes.
   */
  readonly erasure_ledger: { readonly entries: number; readonly replayed: boolean };
  /** Columns a backup never holds: restored as values no password or key matches. */
  readonly withheld: readonly string[];
  /**
   * Keyring data keys the backup carries that are wrapped by a master key not configured
   * here (or no keyring was given): restored secrets sealed under them do not open.
   */
  readonly data_keys_unavailable: readonly string[];
  readonly files_restored: number;
  readonly duration_ms: number;
}

/** An erasure ledger entry as a restore replays it. */
export interface LedgerEntry {
  readonly request_id: string;
  readonly subject_key: string;
  readonly erased_at: string;
}

export interface RestoreInput {
  /** Where the backup is read from. */
  readonly store: ObjectStore;
  readonly destinationName: string;
  readonly tenantId: string;
  readonly backupId: string;
  readonly mode: RestoreMode;
  /** The database restored into (the operator's own, or another). */
  readonly target: Database;
  /** The database whose signing keys check the manifest signature (null: MAC only). */
  readonly verifier: Database | null;
  readonly secrets: KeySecrets;
  /**
   * Wraps the data keys the backup carries into the target's keyring (under its current master
   * key), so the restored secrets open; without it they are not added.
   */
  readonly keyring?: Keyring | undefined;
  /** The erasure ledger of the tenant (every database that has one), replayed before commit. */
  readonly ledger: readonly LedgerEntry[];
  /** The operator's secret key, which keys the ledger's subject hashes. */
  readonly ledgerKey?: string | undefined;
  /** Where stored files backed up by content are written back (replace and database modes). */
  readonly files?: ObjectStore | undefined;
  readonly map?: DataMap;
  readonly now?: () => Date;
  readonly onProgress?: (progress: {
    table: string;
    rows: number;
    tableIndex: number;
    tables: number;
  }) => void;
}

/** Reads and checks a manifest and opens its key: what every restore and verify starts with. */
export async function openBackup(
  store: ObjectStore,
  tenantId: string,
  backupId: string,
  secrets: KeySecrets,
  verifier: Database | null,
  where: string,
): Promise<{ signed: SignedManifest; key: DataKey; signature: 'valid' | 'unknown_key' }> {
  const bytes = await readObject(store, manifestObjectKey(tenantId, backupId));
  if (!bytes)
    throw new FerryError('backup_corrupt', `${where}: the manifest of backup ${backupId} is missing`);
  const signed = parseManifest(bytes, `${where}: backup ${backupId}`);
  if (signed.manifest.backup_id !== backupId || signed.manifest.tenant_id !== tenantId)
    throw new FerryError(
      'backup_corrupt',
      `${where}: the manifest stored as backup ${backupId} is another backup's`,
    );
  const file = await readKeyFile(store, tenantId, signed.manifest.key_id, `${where}: backup ${backupId}`);
  if (file.key_id !== signed.manifest.key_id || file.tenant_id !== tenantId)
    throw new FerryError('backup_corrupt', `${where}: backup ${backupId}: the key file is another key's`);
  const key = await openKey(file, secrets);
  const { signature } = await checkManifest(verifier, key, signed, `${where}: backup ${backupId}`);
  return { signed, key, signature };
}

/**
 * The plain bytes of a stream's chunks, in order, each fetched, decrypted and checked (a few
 * fetched ahead of the reader). `where` names the backup and table in errors.
 */
export async function* chunkStream(
  store: ObjectStore,
  key: DataKey,
  tenantId: string,
  chunks: readonly (readonly [string, number, number])[],
  where: string,
  ahead = 4,
): AsyncGenerator<Buffer> {
  const fetchOne = async (id: string) => {
    const stored = await readObject(store, chunkObjectKey(tenantId, id));
    if (!stored) throw new FerryError('backup_corrupt', `${where}: chunk ${id} is missing`);
    return openChunk(key, id, stored, where);
  };
  const queue: Promise<Buffer>[] = [];
  let next = 0;
  const fill = () => {
    while (queue.length < ahead && next < chunks.length) {
      const p = fetchOne(chunks[next++]![0]);
      p.catch(() => {}); // awaited in order below
      queue.push(p);
    }
  };
  fill();
  while (queue.length) {
    const plain = await queue.shift()!;
    fill();
    yield plain;
  }
}

/** A uuid derived from another, the same in SQL and here: `md5(salt || id)`, formatted as a uuid. */
export function remapId(salt: string, id: string): string {
  const h = createHash('md5').update(`${salt}${id}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const remapSql = (salt: string, expr: string) => `md5(${literal(salt)} || (${expr})::text)::uuid`;

/**
 * Restores one backup into `target`, in one transaction: for `replace`, the tenant's current
 * rows are deleted and the backup's loaded (the audit trail, append-only, stays as it is); for
 * `sandbox` and `drill`, the rows go to a new tenant whose every id is mapped consistently to a
 * new one (so the original keeps running); for `database`, they go to another database as
 * they are. Every chunk is checked as it is read and every table's stream against the
 * manifest's row count and SHA-256; then the erasure ledger is replayed, so a person erased
 * since the backup was taken is erased again. Any failure rolls everything back.
 */
export async function restoreInto(input: RestoreInput): Promise<RestoreReport> {
  const started = Date.now();
  const where = `${input.destinationName}`;
  const { signed, key, signature } = await openBackup(
    input.store,
    input.tenantId,
    input.backupId,
    input.secrets,
    input.verifier,
    where,
  );
  const manifest = signed.manifest;
  const sandbox = input.mode === 'sandbox' || input.mode === 'drill';
  // A sandbox maps every id through one random salt, the tenant's own included.
  const salt = sandbox ? `${randomUUID()}:` : '';
  const targetTenantId = sandbox ? remapId(salt, manifest.tenant_id) : manifest.tenant_id;
  const stamp = (input.now ?? (() => new Date()))().toISOString().replace(/[-:]/g, '').slice(0, 13);
  const targetSlug = sandbox
    ? `${manifest.tenant_slug.slice(0, 30)}-${input.mode === 'drill' ? 'drill' : 'restore'}-${stamp.toLowerCase()}-${targetTenantId.slice(0, 4)}`
    : manifest.tenant_slug;
  const declared = new Map(backupTables(input.map ?? REFERENCE_DATAMAP).map((t) => [t.name, t]));

  const result = await input.target.session('write', async (session) => {
    await session.exec(`SET LOCAL ferry.restoring = 'on'`);
    const catalog = await catalogOf(session.db);
    const existing = await sql<{
      id: string;
    }>`SELECT id FROM tenants WHERE id = ${manifest.tenant_id}`.execute(session.db);
    if (input.mode === 'database' && existing.rows.length)
      throw new FerryError(
        'conflict',
        `the target database already has tenant ${manifest.tenant_id}: restore into it with mode replace, or into an empty database`,
      );
    if (input.mode === 'replace' && !existing.rows.length)
      throw new FerryError(
        'not_found',
        `tenant ${manifest.tenant_id} is not in this database: use mode database`,
      );
    for (const table of manifest.tables) {
      const have = catalog.get(table.name);
      if (!have)
        throw new FerryError(
          'conflict',
          `table ${table.name} of the backup does not exist here (older schema?)`,
        );
      const names = new Set(have.columns.map((c) => c.name));
      const lacking = table.columns.filter((c) => !names.has(c));
      if (lacking.length)
        throw new FerryError(
          'conflict',
          `table ${table.name} here lacks ${lacking.join(', ')} (the backup's schema ${manifest.schema_version} is newer): migrate first`,
        );
    }
    if (input.mode === 'replace') await deleteCurrent(session, manifest, declared, catalog);
    // The data keys of the restored secrets, for a keyring that lacks them: retired there, so the
    // next data-key rotation seals those secrets again and destroys the keys once more.
    const dataKeysUnavailable: string[] = [];
    if (input.keyring)
      for (const carried of openCarriedDataKeys(key, manifest.data_keys ?? [], where))
        if (!(await input.keyring.restore(session.db, carried.id, carried)))
          dataKeysUnavailable.push(carried.id);
    // The public keys of the receipts, for a database that lacks them: retired there, never signing.
    for (const k of manifest.signing_keys ?? [])
      await sql`INSERT INTO receipt_signing_keys (kid, public_key, private_key_sealed, created_at, retired_at)
        VALUES (${k.kid}, ${k.public_key}, '!withheld-from-backup', ${k.created_at}, ${k.retired_at ?? new Date().toISOString()})
        ON CONFLICT (kid) DO NOTHING`.execute(session.db);

    const reports: RestoreTableReport[] = [];
    let index = 0;
    for (const table of manifest.tables) {
      index++;
      const tenantKey = declared.get(table.name)?.tenantKey ?? 'tenant_id';
      if (input.mode === 'replace' && APPEND_ONLY.has(table.name)) {
        reports.push({
          name: table.name,
          rows: table.rows,
          restored: false,
          note: 'kept as it is: append-only (the audit trail, signed receipts)',
        });
        continue;
      }
      const stream = checkedStream(input.store, key, manifest, table, where, (rows) =>
        input.onProgress?.({ table: table.name, rows, tableIndex: index, tables: manifest.tables.length }),
      );
      const columnList = table.columns.map(quoteIdent).join(', ');
      if (sandbox || (input.mode === 'replace' && table.name === 'tenants')) {
        const staging = `ferry_restore_${table.name}`;
        await session.exec(
          `CREATE TEMP TABLE ${quoteIdent(staging)} (LIKE ${quoteIdent(table.name)} INCLUDING DEFAULTS) ON COMMIT DROP`,
        );
        await session.copyIn(`${quoteIdent(staging)} (${columnList})`, 'FORMAT text', stream);
        const types = new Map((catalog.get(table.name)?.columns ?? []).map((c) => [c.name, c]));
        if (input.mode === 'replace') {
          const set = table.columns
            .filter((c) => c !== 'id')
            .map((c) => `${quoteIdent(c)} = s.${quoteIdent(c)}`)
            .join(', ');
          await session.exec(`UPDATE tenants t SET ${set} FROM ${quoteIdent(staging)} s WHERE t.id = s.id`);
        } else {
          const exprs = table.columns.map((c) =>
            sandboxValue(table.name, c, types.get(c), salt, { targetSlug, tenantKey }),
          );
          // Audit events in their chain's order, so the copy's chain keeps the source's sequence.
          const order = table.name === 'audit_events' ? ' ORDER BY seq, occurred_at, id' : '';
          await session.exec(
            `INSERT INTO ${quoteIdent(table.name)} (${columnList}) SELECT ${exprs.join(', ')} FROM ${quoteIdent(staging)}${order}`,
          );
        }
        // The backup's own ids of customers and team members are kept until the ledger is replayed.
        if (!KEEP_STAGED.has(table.name)) await session.exec(`DROP TABLE ${quoteIdent(staging)}`);
      } else {
        await session.copyIn(`${quoteIdent(table.name)} (${columnList})`, 'FORMAT text', stream);
      }
      const counted = await sql<{ n: string | number }>`${sql.raw(
        `SELECT count(*) AS n FROM ${quoteIdent(table.name)} WHERE ${quoteIdent(tenantKey)} = ${literal(targetTenantId)}`,
      )}`.execute(session.db);
      if (Number(counted.rows[0]?.n ?? 0) !== table.rows)
        throw new FerryError(
          'backup_corrupt',
          `${where}: backup ${manifest.backup_id}: table ${table.name} restored ${counted.rows[0]?.n} rows, the manifest lists ${table.rows}`,
        );
      reports.push({ name: table.name, rows: table.rows, restored: true });
    }
    if (input.mode === 'replace')
      for (const table of manifest.tables) {
        if (!table.withheld.length) continue;
        const key = catalog.get(table.name)?.primaryKey ?? ['id'];
        const kept = quoteIdent(`ferry_keep_${table.name}`);
        await session.exec(
          `UPDATE ${quoteIdent(table.name)} t SET ${table.withheld.map((c) => `${quoteIdent(c)} = k.${quoteIdent(c)}`).join(', ')}
           FROM ${kept} k WHERE ${key.map((c) => `t.${quoteIdent(c)} = k.${quoteIdent(c)}`).join(' AND ')}`,
        );
      }
    // Another database, or a new (sandbox) tenant: its audit chain goes on from its last event.
    if (input.mode !== 'replace') await chainHead(session.db, targetTenantId);
    // The ledger as the backup recorded it, and every newer entry the caller knows.
    const ledger = [...input.ledger];
    for (const e of manifest.erasure_ledger ?? [])
      if (!ledger.some((l) => l.request_id === e.request_id)) ledger.push(e);
    const reErased = await replayLedger(
      session,
      { ...input, ledger },
      manifest.tenant_id,
      targetTenantId,
      salt,
    );
    // The tenant's selective deletions (docs/deletion.md): their rows, by id, are deleted again.
    for (const d of await redeleteInTransaction(
      session.db,
      manifest.tenant_id,
      targetTenantId,
      (column) => (salt ? remapSql(salt, column) : column),
      input.map ?? REFERENCE_DATAMAP,
    ))
      reErased.push({
        request_id: d.deletion_id,
        subject_key: d.subject_key,
        erased_at: d.erased_at,
        tables: d.tables,
      });
    return {
      reports,
      reErased,
      ledger: { entries: ledger.length, replayed: Boolean(input.ledgerKey) },
      dataKeysUnavailable,
    };
  });

  const filesRestored =
    manifest.stored_files === 'content' &&
    input.files &&
    (input.mode === 'replace' || input.mode === 'database')
      ? await restoreFiles(input.store, input.files, key, manifest, where)
      : 0;
  return {
    backup_id: manifest.backup_id,
    mode: input.mode,
    source_tenant_id: manifest.tenant_id,
    target_tenant_id: targetTenantId,
    target_slug: targetSlug,
    id_salt: salt,
    snapshot_at: manifest.snapshot_at,
    destination: input.destinationName,
    signature,
    tables: result.reports,
    re_erased: result.reErased,
    erasure_ledger: result.ledger,
    withheld: manifest.tables.flatMap((t) => t.withheld.map((c) => `${t.name}.${c}`)),
    files_restored: filesRestored,
    data_keys_unavailable: input.keyring
      ? result.dataKeysUnavailable
      : (manifest.data_keys ?? []).map((k) => k.id),
    duration_ms: Date.now() - started,
  };
}

/**
 * A table's plain stream from its chunks, checked against the manifest as it goes: every
 * chunk by its tag and keyed hash, the whole stream by its SHA-256 and row count (checked
 * when the last byte has been read, before the load is counted and committed).
 */
function checkedStream(
  store: ObjectStore,
  key: DataKey,
  manifest: Manifest,
  table: ManifestTable,
  where: string,
  onRows: (rows: number) => void,
): AsyncIterable<Buffer> {
  const label = `${where}: backup ${manifest.backup_id}, table ${table.name}`;
  return (async function* () {
    const hash = createHash('sha256');
    let bytes = 0;
    let rows = 0;
    for await (const plain of chunkStream(store, key, manifest.tenant_id, table.chunks, label)) {
      hash.update(plain);
      bytes += plain.length;
      for (let i = plain.indexOf(10); i >= 0; i = plain.indexOf(10, i + 1)) rows++;
      onRows(rows);
      yield plain;
    }
    if (bytes !== table.bytes || rows !== table.rows || hash.digest('hex') !== table.sha256)
      throw new FerryError('backup_corrupt', `${label}: the stream does not match the manifest's checksum`);
  })();
}

/** Deletes the tenant's current rows of every table the backup replaces, children first. */
async function deleteCurrent(
  session: DbSession,
  manifest: Manifest,
  declared: Map<string, { tenantKey: string }>,
  catalog: Map<string, { primaryKey: string[] }>,
): Promise<void> {
  // The live values of what a backup withholds (password and key hashes) are kept for the rows
  // that come back: restoring over the live account does not lock its people out.
  for (const table of manifest.tables) {
    if (!table.withheld.length) continue;
    const key = catalog.get(table.name)?.primaryKey ?? ['id'];
    const tenantKey = declared.get(table.name)?.tenantKey ?? 'tenant_id';
    await session.exec(
      `CREATE TEMP TABLE ${quoteIdent(`ferry_keep_${table.name}`)} ON COMMIT DROP AS SELECT ${[...key, ...table.withheld].map(quoteIdent).join(', ')}
       FROM ${quoteIdent(table.name)} WHERE ${quoteIdent(tenantKey)} = ${literal(manifest.tenant_id)}`,
    );
  }
  for (const table of [...manifest.tables].reverse()) {
    if (table.name === 'tenants' || APPEND_ONLY.has(table.name)) continue;
    const tenantKey = declared.get(table.name)?.tenantKey ?? 'tenant_id';
    await session.exec(
      `DELETE FROM ${quoteIdent(table.name)} WHERE ${quoteIdent(tenantKey)} = ${literal(manifest.tenant_id)}`,
    );
  }
}

/** Columns of an audit event the chain trigger fills in when a sandbox's copy is chained anew. */
export const SANDBOX_RECHAINED = ['prev_hash', 'hash', 'redacted_by'];

/** The SQL value of a column in a sandbox: ids mapped, the tenant renamed, stored files re-keyed. */
function sandboxValue(
  table: string,
  column: string,
  type: CatalogColumn | undefined,
  salt: string,
  target: { targetSlug: string; tenantKey: string },
): string {
  const c = quoteIdent(column);
  if (table === 'tenants') {
    if (column === 'slug') return literal(target.targetSlug);
    if (column === 'name') return `left(${c} || ' (restored)', 200)`;
    if (column === 'status') return `'active'`;
    if (['closed_at', 'closed_by', 'purge_after', 'purged_at'].includes(column)) return 'NULL';
  }
  // The copy's audit events get a chain of their own: their ids and tenant changed, so the
  // source's hashes cannot hold; the chain trigger links them again in their order (below).
  if (table === 'audit_events' && SANDBOX_RECHAINED.includes(column)) return 'NULL';
  if (table === 'export_files' && column === 'storage_key')
    return `'restored/' || ${remapSql(salt, 'id')} || '/' || ${c}`;
  if (type?.type === 'uuid') return `CASE WHEN ${c} IS NULL THEN NULL ELSE ${remapSql(salt, c)} END`;
  if (type?.type === 'ARRAY' && type.udt === '_uuid')
    return `ARRAY(SELECT ${remapSql(salt, 'x')} FROM unnest(${c}) WITH ORDINALITY AS u(x, n) ORDER BY n)`;
  return c;
}

/** After a restore into another database or tenant, the tenant's audit chain head is its last restored event. */
async function chainHead(db: Kysely<DB>, tenantId: string): Promise<void> {
  await sql`INSERT INTO audit_chains (tenant_id, last_seq, last_hash)
    SELECT tenant_id, seq, hash FROM audit_events WHERE tenant_id = ${tenantId} AND seq IS NOT NULL
    ORDER BY seq DESC LIMIT 1
    ON CONFLICT (tenant_id) DO UPDATE SET last_seq = EXCLUDED.last_seq, last_hash = EXCLUDED.last_hash`.execute(
    db,
  );
}

/**
 * Erases again every subject of the erasure ledger found among the restored rows. The ledger
 * names subjects only by keyed hash, so each restored customer's and team member's
 * identifiers are hashed the same way (with the source tenant's id) and compared.
 */
async function replayLedger(
  session: DbSession,
  input: RestoreInput,
  sourceTenantId: string,
  targetTenantId: string,
  salt: string,
): Promise<ReErased[]> {
  if (!input.ledger.length || !input.ledgerKey) return [];
  const byKey = new Map(input.ledger.map((e) => [e.subject_key, e]));
  const hash = (identifier: string) => subjectKey(input.ledgerKey!, sourceTenantId, identifier);
  const customers = await sql<{
    id: string;
    email: string | null;
    phone: string | null;
    name: string | null;
  }>`
    SELECT id, email, phone, name FROM customers WHERE tenant_id = ${targetTenantId}`.execute(session.db);
  const members = await sql<{ id: string; email: string; name: string }>`
    SELECT id, email, name FROM team_members WHERE tenant_id = ${targetTenantId}`.execute(session.db);
  // The ids a subject had in the backup (a sandbox maps them to new ones).
  const original = new Map<string, string>();
  if (salt) {
    const ids = await sql<{ id: string }>`
      SELECT id FROM ferry_restore_customers UNION ALL SELECT id FROM ferry_restore_team_members`.execute(
      session.db,
    );
    for (const { id } of ids.rows) original.set(remapId(salt, id), id);
  }
  const out: ReErased[] = [];
  const erase = async (
    entry: LedgerEntry,
    subject: {
      customerIds: string[];
      teamMemberIds: string[];
      email: string | null;
      phone: string | null;
      name: string | null;
    },
  ) => {
    const database = { ...input.target, db: session.db } as Database;
    const stores = await eraseRowsInTransaction(
      database,
      targetTenantId,
      {
        tenantId: targetTenantId,
        identifiers: subject.email ? { email: subject.email } : { customer_id: subject.customerIds[0] ?? '' },
        customerIds: subject.customerIds,
        teamMemberIds: subject.teamMemberIds,
        emails: subject.email ? [subject.email.toLowerCase()] : [],
        phones: subject.phone ? [subject.phone] : [],
        names: subject.name && specificName(subject.name) ? [subject.name] : [],
        matches: [],
      },
      input.map ?? REFERENCE_DATAMAP,
    );
    const tables: Record<string, number> = {};
    for (const s of stores)
      tables[s.dataset] = (tables[s.dataset] ?? 0) + s.deleted + s.anonymized + s.scrubbed;
    out.push({
      request_id: entry.request_id,
      subject_key: entry.subject_key,
      erased_at: entry.erased_at,
      tables,
    });
  };
  for (const c of customers.rows) {
    const ids = [`customer:${original.get(c.id) ?? c.id}`];
    if (c.email) ids.push(`email:${c.email.toLowerCase()}`);
    if (c.phone) ids.push(`phone:${c.phone}`);
    const entry = ids.map((i) => byKey.get(hash(i))).find(Boolean);
    if (entry)
      await erase(entry, {
        customerIds: [c.id],
        teamMemberIds: [],
        email: c.email,
        phone: c.phone,
        name: c.name,
      });
  }
  for (const m of members.rows) {
    const ids = [`team_member:${original.get(m.id) ?? m.id}`, `email:${m.email.toLowerCase()}`];
    const entry = ids.map((i) => byKey.get(hash(i))).find(Boolean);
    if (entry)
      await erase(entry, {
        customerIds: [],
        teamMemberIds: [m.id],
        email: m.email,
        phone: null,
        name: m.name,
      });
  }
  return out;
}

/** Writes back the stored files a content backup holds, where they are missing. */
async function restoreFiles(
  store: ObjectStore,
  files: ObjectStore,
  key: DataKey,
  manifest: Manifest,
  where: string,
): Promise<number> {
  let n = 0;
  for (const f of manifest.files) {
    if (!f.chunks || (await files.head(f.storage_key))) continue;
    const source = Readable.from(
      chunkStream(store, key, manifest.tenant_id, f.chunks, `${where}: file ${f.name}`),
    );
    const pending = await files.put(f.storage_key, source);
    if (pending.sha256 !== f.sha256) {
      await pending.discard();
      throw new FerryError('backup_corrupt', `${where}: stored file ${f.name} does not match its checksum`);
    }
    await pending.commit();
    n++;
  }
  return n;
}
