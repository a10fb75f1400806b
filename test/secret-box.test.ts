import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { masterKeyHex, unwrapDataKey } from '../src/crypto/keyring.ts';
import { sealedRef } from '../src/crypto/secret-box.ts';
import type { DB } from '../src/db/schema.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import { loadOrCreateSecretKey, maskSecret, openSecret, sealSecret } from '../src/lib/secret-box.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { keyringWith } from './support/keyring.ts';

const KEY = 'k'.repeat(20) + '-0123456789abcdef';
const OTHER = 'o'.repeat(20) + '-0123456789abcdef';
const SECRET = '{"api_token":"zd_live_4f9a8b7c6d5e"}';

function expectUnreadable(fn: () => unknown) {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    expect((err as FerryError).code).toBe('secret_unreadable');
    expect((err as Error).message).not.toContain('zd_live');
    expect((err as Error).message).not.toContain(KEY);
    expect((err as Error).message).not.toContain(OTHER);
    return;
  }
  throw new Error('expected openSecret to throw');
}

describe('secret box v1 (before the keyring)', () => {
  it('round-trips and never shows the plaintext in the sealed text', () => {
    const sealed = sealSecret(SECRET, KEY);
    expect(sealed).toMatch(/^v1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
    expect(sealed).not.toContain('zd_live');
    expect(openSecret(sealed, KEY)).toBe(SECRET);
    expect(openSecret(sealSecret('ünïcødé 🔑', KEY), KEY)).toBe('ünïcødé 🔑');
  });

  it('uses a fresh IV for every seal', () => {
    expect(sealSecret(SECRET, KEY)).not.toBe(sealSecret(SECRET, KEY));
  });

  it('rejects a tampered ciphertext, tag or IV', () => {
    const [v, iv, tag, ct] = sealSecret(SECRET, KEY).split(':') as [string, string, string, string];
    const flip = (b64: string) => {
      const bytes = Buffer.from(b64, 'base64');
      bytes[0]! ^= 1;
      return bytes.toString('base64');
    };
    expectUnreadable(() => openSecret([v, iv, tag, flip(ct)].join(':'), KEY));
    expectUnreadable(() => openSecret([v, iv, flip(tag), ct].join(':'), KEY));
    expectUnreadable(() => openSecret([v, flip(iv), tag, ct].join(':'), KEY));
    expectUnreadable(() => openSecret(['v2', iv, tag, ct].join(':'), KEY));
    expectUnreadable(() => openSecret('not a sealed value', KEY));
  });

  it('rejects the wrong key', () => {
    expectUnreadable(() => openSecret(sealSecret(SECRET, KEY), OTHER));
  });

  it('masks all but the last characters', () => {
    expect(maskSecret('sk_live_1234567890abcd')).toBe('••••abcd');
    expect(maskSecret('abcdefg')).toBe('••••fg');
    expect(maskSecret('abc')).toBe('••••');
    expect(maskSecret('')).toBe('••••');
  });

  it('creates a per-install key file once and reuses it', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-key-'));
    try {
      const dataDir = path.join(dir, 'data');
      const first = loadOrCreateSecretKey({ secretKey: undefined, dataDir });
      expect(first.length).toBeGreaterThanOrEqual(32);
      expect(loadOrCreateSecretKey({ secretKey: undefined, dataDir })).toBe(first);
      const file = path.join(dataDir, 'secret.key');
      expect(readFileSync(file, 'utf8').trim()).toBe(first);
      expect(statSync(file).mode & 0o077).toBe(0);
      expect(loadOrCreateSecretKey({ secretKey: KEY, dataDir })).toBe(KEY);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

for (const dialect of DIALECTS) {
  describe(`keyring and sealed secrets v2 (${dialect})`, () => {
    let t: TestDatabase;
    const master = randomBytes(32);
    beforeAll(async () => {
      t = await createTestDatabase(dialect);
    });
    afterAll(async () => {
      await t?.drop();
    });

    it('creates one active data key on first use, even when two processes race for it', async () => {
      const [a, b] = [keyringWith(t.database, [master]), keyringWith(t.database, [master])];
      await Promise.all([a.keyring.ready(), b.keyring.ready()]);
      const rows = await sql<{ id: string; state: string; wrapped: string; master_key_id: string }>`
        SELECT id, state, wrapped, master_key_id FROM keyring`.execute(t.database.db);
      expect(rows.rows).toHaveLength(1);
      expect(rows.rows[0]).toMatchObject({ state: 'active', master_key_id: masterKeyHex(master) });
      expect(await a.keyring.activeId()).toBe(await b.keyring.activeId());
      // The row holds the key wrapped, never as it is.
      const key = Buffer.from(await a.keyring.dataKey(rows.rows[0]!.id));
      expect(rows.rows[0]!.wrapped).not.toContain(key.toString('base64'));
      expect(Buffer.from(rows.rows[0]!.wrapped, 'base64').includes(key)).toBe(false);
    });

    it('seals v2 under the active key; the sealed text binds the version and the key id', async () => {
      const { secrets, keyring } = keyringWith(t.database, [master], { legacyKey: KEY });
      const sealed = await secrets.seal(SECRET);
      expect(sealed).toMatch(/^v2:[0-9a-f-]{36}:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
      expect(sealedRef(sealed)).toEqual({ format: 'v2', dataKeyId: await keyring.activeId() });
      expect(sealed).not.toContain('zd_live');
      expect(await secrets.open(sealed)).toBe(SECRET);
      expect(await secrets.seal(SECRET)).not.toBe(sealed);
      // The same ciphertext under another key id, or tampered, does not open.
      const other = (await keyring.rotate()).active;
      const parts = sealed.split(':');
      const moved = ['v2', other, ...parts.slice(2)].join(':');
      await expect(secrets.open(moved)).rejects.toMatchObject({ code: 'secret_unreadable' });
      await expect(secrets.open(`${sealed.slice(0, -4)}AAA=`)).rejects.toMatchObject({
        code: 'secret_unreadable',
      });
      // A retired key still opens what it sealed; new values go under the new key.
      expect(await secrets.open(sealed)).toBe(SECRET);
      expect(sealedRef(await secrets.seal(SECRET))).toEqual({ format: 'v2', dataKeyId: other });
      // v1 values, sealed before the keyring, open with the legacy secret key.
      expect(await secrets.open(sealSecret(SECRET, KEY))).toBe(SECRET);
      const stranger = keyringWith(t.database, [master], { legacyKey: OTHER });
      await expect(stranger.secrets.open(sealSecret(SECRET, KEY))).rejects.toMatchObject({
        code: 'secret_unreadable',
      });
    });

    it('another process picks up a key it does not know, also inside a transaction (PGlite holds one connection)', async () => {
      const first = keyringWith(t.database, [master]);
      const second = keyringWith(t.database, [master]);
      await second.keyring.ready();
      await first.keyring.rotate();
      const sealed = await first.secrets.seal(SECRET);
      // `second` loaded the keyring before the rotation: the unknown id is looked up through the transaction.
      const opened = await t.database.db
        .transaction()
        .execute((trx) => second.secrets.open(sealed, { db: trx as unknown as Kysely<DB> }));
      expect(opened).toBe(SECRET);
    });

    it('a master key that did not wrap the keyring opens nothing, and says which key is missing', async () => {
      const { secrets } = keyringWith(t.database, [master]);
      const sealed = await secrets.seal(SECRET);
      const wrong = keyringWith(t.database, [randomBytes(32)]);
      const err = await wrong.secrets.open(sealed).catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: 'secret_unreadable',
        message: expect.stringContaining(`master key ${masterKeyHex(master)}, which is not configured`),
      });
      expect(String(err)).not.toContain(SECRET);
      // A wrapped key copied onto another row does not open there (the id is authenticated).
      const rows = await sql<{ id: string; wrapped: string }>`
        SELECT id, wrapped FROM keyring WHERE state <> 'destroyed' ORDER BY created_at`.execute(
        t.database.db,
      );
      expect(() =>
        unwrapDataKey([master], {
          id: rows.rows[1]!.id,
          wrapped: rows.rows[0]!.wrapped,
          master_key_id: masterKeyHex(master),
        }),
      ).toThrow(/does not open/);
    });

    it('m1: sealed by the master key itself, bound to what it is for', async () => {
      const { secrets } = keyringWith(t.database, [master]);
      const sealed = secrets.sealWithMaster(SECRET, 'backup key 1');
      expect(sealedRef(sealed)).toEqual({ format: 'm1', masterKeyId: masterKeyHex(master) });
      expect(secrets.sealedByCurrentMaster(sealed)).toBe(true);
      expect(secrets.openWithMaster(sealed, 'backup key 1')).toBe(SECRET);
      expect(() => secrets.openWithMaster(sealed, 'backup key 2')).toThrow(/cannot decrypt/);
      await expect(secrets.open(sealed)).rejects.toMatchObject({ code: 'secret_unreadable' });
      const rotated = keyringWith(t.database, [randomBytes(32), master]);
      expect(rotated.secrets.openWithMaster(sealed, 'backup key 1')).toBe(SECRET);
      expect(rotated.secrets.sealedByCurrentMaster(sealed)).toBe(false);
      expect(() =>
        keyringWith(t.database, [randomBytes(32)]).secrets.openWithMaster(sealed, 'backup key 1'),
      ).toThrow(/not configured/);
    });
  });
}
