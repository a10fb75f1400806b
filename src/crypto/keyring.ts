import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { type AtRestKeyring, type DataEncryptionKey, masterKeyId } from './at-rest.ts';
import { type DataKeyState, type KeyringTables, keyringDb } from './keyring-tables.ts';
import type { MasterKeys } from './master-key.ts';

/*
 * The keyring: data keys (DEKs) that encrypt stored files (format 2, src/crypto/at-rest.ts)
 * and seal small secrets (`v2:` values, src/crypto/secret-box.ts), each stored in the
 * `keyring` table wrapped by the master key:
 *
 *   wrapped = base64(nonce (12) ‖ AES-256-GCM(master key, nonce, data key, AAD) (32) ‖ tag (16))
 *   AAD     = "ferry keyring data key v1" ‖ 0x00 ‖ the key's uuid
 *
 * The AAD binds the wrapped bytes to their row, so a wrapped key copied onto another row
 * does not open. Rotating the master key re-wraps rows; the data keys, and with them every
 * file and secret, stay as they are. Key material is never logged, shown or exported.
 */

const WRAP_LABEL = 'ferry keyring data key v1';
/** How long a process seals with the active key it knows before it looks for a newer one. */
export const KEYRING_REFRESH_MS = 5 * 60_000;

function wrapAad(id: string): Buffer {
  return Buffer.from(`${WRAP_LABEL}\0${id}`, 'utf8');
}

function unreadable(why: string): FerryError {
  return new FerryError('decryption_failed', `cannot open data key: ${why}`);
}

/** The hex id of a master key, as the keyring records it. */
export function masterKeyHex(masterKey: Uint8Array): string {
  return masterKeyId(masterKey).toString('hex');
}

/** A data key wrapped by `masterKey` for the row `id`. */
export function wrapDataKey(
  masterKey: Uint8Array,
  id: string,
  key: Uint8Array,
): { wrapped: string; master_key_id: string } {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', masterKey, nonce);
  cipher.setAAD(wrapAad(id));
  const body = Buffer.concat([cipher.update(key), cipher.final(), cipher.getAuthTag()]);
  return { wrapped: Buffer.concat([nonce, body]).toString('base64'), master_key_id: masterKeyHex(masterKey) };
}

/** The data key of a row, with whichever configured master key wrapped it. */
export function unwrapDataKey(
  masterKeys: readonly Uint8Array[],
  row: { id: string; wrapped: string; master_key_id: string | null },
): Buffer {
  const master = masterKeys.find((key) => masterKeyHex(key) === row.master_key_id);
  if (!master)
    throw unreadable(
      `data key ${row.id} is wrapped by master key ${row.master_key_id}, which is not configured ` +
        '(list the old master key after the new one until `ferry keys rotate-master` has finished)',
    );
  const bytes = Buffer.from(row.wrapped, 'base64');
  if (bytes.length !== 12 + 32 + 16) throw unreadable(`data key ${row.id} is malformed`);
  try {
    const decipher = createDecipheriv('aes-256-gcm', master, bytes.subarray(0, 12));
    decipher.setAAD(wrapAad(row.id));
    decipher.setAuthTag(bytes.subarray(44));
    return Buffer.concat([decipher.update(bytes.subarray(12, 44)), decipher.final()]);
  } catch {
    throw unreadable(
      `data key ${row.id} does not open with the configured master key (altered, or another key)`,
    );
  }
}

/** A keyring row as the process sees it (the wrapped bytes stay inside this module). */
export interface DataKeyInfo {
  readonly id: string;
  readonly state: DataKeyState;
  readonly masterKeyId: string | null;
  readonly createdAt: Date;
  readonly retiredAt: Date | null;
  readonly destroyedAt: Date | null;
}

interface Row extends DataKeyInfo {
  readonly wrapped: string | null;
}

interface Snapshot {
  readonly rows: ReadonlyMap<string, Row>;
  readonly activeId: string | undefined;
  readonly loadedAt: number;
}

export interface KeyringOptions {
  /** The clock for key ages (created, retired, destroyed); the system clock by default. */
  readonly now?: () => Date;
  /** How long the active key is used before the table is looked at again. */
  readonly refreshMs?: number;
}

/**
 * The process's view of the keyring, loaded once and reloaded when a key id it does not know
 * is met (another process created it), so readers pick up rotations made elsewhere; writers
 * look for a newer active key every few minutes. One instance per process, built by the
 * composition root and shared by the object store and the secret box.
 *
 * On PGlite a query outside a running transaction waits for it, so code that seals inside a
 * transaction calls `ready()` first (after that, sealing needs no query) and passes its
 * transaction to `dataKey` (a key met for the first time is looked up through it).
 */
export class Keyring implements AtRestKeyring {
  readonly master: MasterKeys;
  readonly #database: Database;
  readonly #now: () => Date;
  readonly #refreshMs: number;
  #snapshot: Snapshot | undefined;
  #loading: Promise<Snapshot> | undefined;
  readonly #opened = new Map<string, Buffer>();

  constructor(database: Database, master: MasterKeys, options: KeyringOptions = {}) {
    this.#database = database;
    this.master = master;
    this.#now = options.now ?? (() => new Date());
    this.#refreshMs = options.refreshMs ?? KEYRING_REFRESH_MS;
  }

  get masterKeys(): readonly Uint8Array[] {
    return this.master.all;
  }

  /** Loads the keyring and makes sure a data key is active (creating the first one). */
  async ready(): Promise<void> {
    await this.#activeId();
  }

  async activeDataKey(): Promise<DataEncryptionKey> {
    const id = await this.#activeId();
    return { id, key: await this.dataKey(id) };
  }

  /** The id of the active data key (created on first use). */
  async activeId(): Promise<string> {
    return this.#activeId();
  }

  /** The data key `id`; `db` (a transaction the caller is in) is where an unknown id is looked up. */
  async dataKey(id: string, db?: Kysely<DB>): Promise<Uint8Array> {
    const opened = this.#opened.get(id);
    if (opened) return opened;
    let row = this.#snapshot?.rows.get(id);
    // Unknown here (another process made it), or destroyed when last read (a restore may have put it back).
    if (!row || row.state === 'destroyed') row = (await (db ? this.#load(db) : this.reload())).rows.get(id);
    if (!row) throw unreadable(`data key ${id} is not in this installation's keyring`);
    if (row.state === 'destroyed' || row.wrapped === null)
      throw unreadable(`data key ${id} was destroyed (what it encrypted can no longer be read)`);
    const key = unwrapDataKey(this.master.all, { id, wrapped: row.wrapped, master_key_id: row.masterKeyId });
    this.#opened.set(id, key);
    return key;
  }

  /** Every key of the keyring as the table has it now (oldest first), without key material. */
  async list(): Promise<DataKeyInfo[]> {
    const snapshot = await this.reload();
    return [...snapshot.rows.values()].map(({ wrapped: _wrapped, ...info }) => info);
  }

  /** Reads the table again; concurrent callers share one read. */
  reload(): Promise<Snapshot> {
    this.#loading ??= this.#load().finally(() => {
      this.#loading = undefined;
    });
    return this.#loading;
  }

  async #load(db: Kysely<DB> = this.#database.db): Promise<Snapshot> {
    const rows = await keyringDb(db)
      .selectFrom('keyring')
      .selectAll()
      .orderBy('created_at')
      .orderBy('id')
      .execute();
    const map = new Map<string, Row>();
    let activeId: string | undefined;
    for (const r of rows) {
      map.set(r.id, {
        id: r.id,
        state: r.state,
        wrapped: r.wrapped,
        masterKeyId: r.master_key_id,
        createdAt: new Date(r.created_at),
        retiredAt: r.retired_at ? new Date(r.retired_at) : null,
        destroyedAt: r.destroyed_at ? new Date(r.destroyed_at) : null,
      });
      if (r.state === 'active') activeId = r.id;
    }
    const snapshot: Snapshot = { rows: map, activeId, loadedAt: Date.now() };
    this.#snapshot = snapshot;
    return snapshot;
  }

  async #activeId(): Promise<string> {
    let snapshot = this.#snapshot ?? (await this.reload());
    if (Date.now() - snapshot.loadedAt > this.#refreshMs && !this.#loading)
      // Allowed to fail: the key in hand stays valid and the next use tries again.
      this.reload().catch(() => undefined);
    if (snapshot.activeId) return snapshot.activeId;
    await this.#insertActive(keyringDb(this.#database.db));
    snapshot = await this.reload();
    if (!snapshot.activeId) throw new Error('the keyring has no active data key after creating one');
    return snapshot.activeId;
  }

  /** Inserts a new active key unless one exists (the one-active index decides a race). */
  async #insertActive(db: Kysely<DB & KeyringTables>): Promise<string> {
    const id = randomUUID();
    const key = randomBytes(32);
    await db
      .insertInto('keyring')
      .values({ id, state: 'active', ...wrapDataKey(this.master.current, id, key), created_at: this.#now() })
      .onConflict((oc) => oc.doNothing())
      .execute();
    return id;
  }

  /**
   * Retires the active key and makes a new one active, in one transaction. Returns both ids.
   * Data under the retired key stays readable until a data-key rotation has moved it.
   */
  async rotate(): Promise<{ active: string; retired: string | null }> {
    const now = this.#now();
    const result = await this.#database.db.transaction().execute(async (trx) => {
      const db = keyringDb(trx);
      const retired = await db
        .updateTable('keyring')
        .set({ state: 'retired', retired_at: now })
        .where('state', '=', 'active')
        .returning('id')
        .executeTakeFirst();
      const id = randomUUID();
      await db
        .insertInto('keyring')
        .values({
          id,
          state: 'active',
          ...wrapDataKey(this.master.current, id, randomBytes(32)),
          created_at: now,
        })
        .execute();
      return { active: id, retired: retired?.id ?? null };
    });
    await this.reload();
    return result;
  }

  /**
   * Re-wraps every live key that another master key wrapped under the current one. Each row
   * is updated only if it is still as read, so concurrent runs cannot undo each other.
   * Fails (nothing half-done: each row is one statement) when a key does not open.
   */
  async rewrap(): Promise<{ rewrapped: number; keys: number }> {
    const current = masterKeyHex(this.master.current);
    const rows = await keyringDb(this.#database.db)
      .selectFrom('keyring')
      .select(['id', 'wrapped', 'master_key_id'])
      .where('state', '<>', 'destroyed')
      .orderBy('created_at')
      .execute();
    let rewrapped = 0;
    for (const row of rows) {
      if (row.wrapped === null || row.master_key_id === current) continue;
      const key = unwrapDataKey(this.master.all, { ...row, wrapped: row.wrapped });
      const updated = await keyringDb(this.#database.db)
        .updateTable('keyring')
        .set(wrapDataKey(this.master.current, row.id, key))
        .where('id', '=', row.id)
        .where('wrapped', '=', row.wrapped)
        .executeTakeFirst();
      rewrapped += Number(updated.numUpdatedRows);
    }
    await this.reload();
    return { rewrapped, keys: rows.length };
  }

  /** Destroys a retired key: its wrapped bytes are removed for good. Returns whether it was. */
  async destroy(id: string): Promise<boolean> {
    const result = await keyringDb(this.#database.db)
      .updateTable('keyring')
      .set({ state: 'destroyed', wrapped: null, master_key_id: null, destroyed_at: this.#now() })
      .where('id', '=', id)
      .where('state', '=', 'retired')
      .executeTakeFirst();
    this.#opened.delete(id);
    await this.reload();
    return Number(result.numUpdatedRows) > 0;
  }

  /**
   * A copy of a data key wrapped by the current master key, for a backup to carry: whoever
   * restores it needs the master key as well as the backup's key.
   */
  async wrappedCopy(id: string): Promise<{ wrapped: string; master_key_id: string }> {
    return wrapDataKey(this.master.current, id, await this.dataKey(id));
  }

  /**
   * Puts a data key back from a wrapped copy (a backup restored into a database that lacks
   * it, or destroyed it since): as `retired`, wrapped by the current master key, on `db` (the
   * restore's session), so the next data-key rotation moves what uses it and destroys it
   * again. False when the copy's master key is not configured (it stays out).
   */
  async restore(
    db: Kysely<DB>,
    id: string,
    copy: { wrapped: string; master_key_id: string },
  ): Promise<boolean> {
    const present = await keyringDb(db)
      .selectFrom('keyring')
      .select('state')
      .where('id', '=', id)
      .executeTakeFirst();
    if (present && present.state !== 'destroyed') return true;
    let key: Buffer;
    try {
      key = unwrapDataKey(this.master.all, { id, ...copy });
    } catch (err) {
      if (err instanceof FerryError) return false;
      throw err;
    }
    const wrapped = wrapDataKey(this.master.current, id, key);
    const now = this.#now();
    await keyringDb(db)
      .insertInto('keyring')
      .values({ id, state: 'retired', ...wrapped, created_at: now, retired_at: now })
      .onConflict((oc) =>
        oc
          .column('id')
          .doUpdateSet({ state: 'retired', ...wrapped, retired_at: now, destroyed_at: null })
          .where('keyring.state', '=', 'destroyed'),
      )
      .execute();
    return true;
  }
}
