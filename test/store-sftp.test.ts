import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { restoreBackup, runBackup, verifyBackup } from '../src/backup/service.ts';
import { putBackupSettings } from '../src/backup/settings.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { seed } from '../src/seed/seed.ts';
import {
  type SftpObjectStore,
  type SftpStoreOptions,
  sftpObjectStore,
} from '../src/store/sftp-object-store.ts';
import { testBackupContext } from './support/backup.ts';
import { createTestDatabase, preferDialect, type TestDatabase } from './support/databases.ts';
import { authTestConfig } from './support/fixtures/auth.ts';
import { sshdAvailable, startSftpServer, type TestSftpServer } from './support/sftp-server.ts';

const SECRET = 'sftp-store-secret-key-0123456789abcdefgh';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

async function bytesOf(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

async function keysOf(store: SftpObjectStore, prefix: string): Promise<string[]> {
  return (await collect(store.list(prefix))).map((o) => o.key);
}

/** A source that yields `bytes` in `pieces` chunks, as a database COPY stream would. */
function sourceOf(bytes: Buffer, pieces = 7): Readable {
  const size = Math.ceil(bytes.length / pieces) || 1;
  return Readable.from(
    (function* () {
      for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
    })(),
  );
}

/** Ids of the processes whose parent is `pid` (Linux). */
function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        // `pid (comm) state ppid …`; comm may hold spaces, so read after its closing parenthesis.
        const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false; // exited meanwhile
      }
    })
    .map(Number);
}

/** Every file and folder under `dir` on the server's disk, relative and sorted. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true }) as string[]).map((f) => f.split(path.sep).join('/')).sort();
}

describe.skipIf(!sshdAvailable())('the SFTP object store against OpenSSH sshd on 127.0.0.1', () => {
  let server: TestSftpServer;
  let store: SftpObjectStore;
  let root: string;
  const opened: SftpObjectStore[] = [];

  function optionsFor(extra: Partial<SftpStoreOptions> = {}): SftpStoreOptions {
    return {
      host: server.host,
      port: server.port,
      username: server.username,
      privateKey: server.privateKey,
      hostKeyFingerprint: server.hostKeyFingerprint,
      root,
      outbound: outboundPolicy(['127.0.0.1']),
      ...extra,
    };
  }

  async function openStore(extra: Partial<SftpStoreOptions> = {}): Promise<SftpObjectStore> {
    const opening = await sftpObjectStore(optionsFor(extra));
    opened.push(opening);
    return opening;
  }

  beforeAll(async () => {
    server = await startSftpServer();
    root = path.join(server.uploadDir, 'store');
    store = await openStore();
  }, 30_000);
  afterAll(async () => {
    for (const s of opened) await s.close();
    await server?.stop();
  });

  it('round-trips 3 MB through put, commit and get, with the SHA-256 and size computed while writing', async () => {
    const body = randomBytes(3 * 1024 * 1024);
    const pending = await store.put('round/trip.bin', sourceOf(body, 48));
    expect(pending).toMatchObject({ key: 'round/trip.bin', bytes: body.length, sha256: sha256(body) });
    expect(await pending.commit()).toEqual({
      key: 'round/trip.bin',
      bytes: body.length,
      sha256: sha256(body),
    });
    const read = await bytesOf(await store.get('round/trip.bin'));
    expect(read.length).toBe(body.length);
    expect(sha256(read)).toBe(sha256(body));
    expect(await store.head('round/trip.bin')).toEqual({ bytes: body.length });
    expect(readFileSync(path.join(root, 'round', 'trip.bin')).equals(body)).toBe(true);
    expect(filesUnder(path.join(root, 'round'))).toEqual(['trip.bin']);
    // A small object goes in one write, and an empty one is an object too.
    await (await store.put('round/small', sourceOf(Buffer.from('hello')))).commit();
    await (await store.put('round/empty', Readable.from([]))).commit();
    expect((await bytesOf(await store.get('round/small'))).toString()).toBe('hello');
    expect(await store.head('round/empty')).toEqual({ bytes: 0 });
    expect((await bytesOf(await store.get('round/empty'))).length).toBe(0);
  });

  it('reads inclusive byte ranges, clamps an end past the last byte, refuses a start past it', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    await (await store.put('range/big.bin', sourceOf(body))).commit();
    expect(await bytesOf(await store.get('range/big.bin', { start: 10, end: 19 }))).toEqual(
      body.subarray(10, 20),
    );
    const tail = await bytesOf(
      await store.get('range/big.bin', { start: body.length - 5, end: body.length + 100 }),
    );
    expect(tail).toEqual(body.subarray(body.length - 5));
    const middle = await bytesOf(await store.get('range/big.bin', { start: 1_000_000 }));
    expect(middle.equals(body.subarray(1_000_000))).toBe(true);
    await expect(store.get('range/big.bin', { start: body.length })).rejects.toMatchObject({
      code: 'range_not_satisfiable',
    });
    await expect(store.get('range/big.bin', { start: 5, end: 4 })).rejects.toMatchObject({
      code: 'invalid_parameter',
    });
  });

  it('shows a pending object to no reader until its commit', async () => {
    const pending = await store.put('pending/object', sourceOf(randomBytes(5000)));
    // The bytes are on the server, under a hidden name only.
    expect(filesUnder(path.join(root, 'pending'))).toEqual([
      expect.stringMatching(/^\.object\.[0-9a-f]{12}\.part$/),
    ]);
    expect(await store.head('pending/object')).toBeNull();
    await expect(store.get('pending/object')).rejects.toMatchObject({ code: 'not_found' });
    expect(await keysOf(store, 'pending/')).toEqual([]);
    expect(await keysOf(store, '')).not.toContain('pending/object');
    await pending.commit();
    expect(await store.head('pending/object')).toEqual({ bytes: 5000 });
    expect(await keysOf(store, 'pending/')).toEqual(['pending/object']);
    expect(filesUnder(path.join(root, 'pending'))).toEqual(['object']);
  });

  it('leaves nothing of a discarded write, and lists none of it', async () => {
    const pending = await store.put('discard/gone', sourceOf(randomBytes(3 * 1024 * 1024)));
    await pending.discard();
    expect(filesUnder(path.join(root, 'discard'))).toEqual([]);
    expect(await store.head('discard/gone')).toBeNull();
    expect(await keysOf(store, 'discard/')).toEqual([]);
    await expect(pending.commit()).rejects.toMatchObject({ code: 'conflict' });
    // A committed object cannot be discarded any more.
    const kept = await store.put('discard/kept', sourceOf(Buffer.from('y')));
    await kept.commit();
    await expect(kept.discard()).rejects.toMatchObject({ code: 'conflict' });
    expect(await keysOf(store, 'discard/')).toEqual(['discard/kept']);
  });

  it('replaces an object on a second commit under the same key', async () => {
    await (await store.put('replace/k', sourceOf(Buffer.from('first')))).commit();
    await (await store.put('replace/k', sourceOf(Buffer.from('second, longer')))).commit();
    expect((await bytesOf(await store.get('replace/k'))).toString()).toBe('second, longer');
    expect(filesUnder(path.join(root, 'replace'))).toEqual(['k']);
  });

  it('lists by prefix across nested folders in key (byte) order', async () => {
    const keys = [
      'list/b/2',
      'list/a-b',
      'list/a/x/1',
      'list/a/0',
      'list/b1',
      'list/a.txt',
      'list/b/1/deep/er',
    ];
    await Promise.all(keys.map(async (key) => (await store.put(key, sourceOf(Buffer.from(key)))).commit()));
    const sorted = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    expect(sorted).toEqual([
      'list/a-b',
      'list/a.txt',
      'list/a/0',
      'list/a/x/1',
      'list/b/1/deep/er',
      'list/b/2',
      'list/b1',
    ]);
    expect(await keysOf(store, 'list/')).toEqual(sorted);
    expect(await keysOf(store, 'list/a/')).toEqual(['list/a/0', 'list/a/x/1']);
    expect(await keysOf(store, 'list/b')).toEqual(['list/b/1/deep/er', 'list/b/2', 'list/b1']);
    expect(await keysOf(store, 'list/b/1/')).toEqual(['list/b/1/deep/er']);
    expect(await keysOf(store, 'list/none/')).toEqual([]);
    expect(await keysOf(store, 'nothing-here')).toEqual([]);
    const [first] = await collect(store.list('list/a-b'));
    expect(first).toEqual({ key: 'list/a-b', bytes: 8, lastModified: expect.any(Date) });
    expect(Math.abs(first!.lastModified.getTime() - Date.now())).toBeLessThan(60_000);
    await expect(collect(store.list('../'))).rejects.toMatchObject({ code: 'invalid_parameter' });
  });

  it('deletes an object, and a missing key without an error', async () => {
    await (await store.put('del/here', sourceOf(Buffer.from('y')))).commit();
    await store.delete('del/here');
    expect(await store.head('del/here')).toBeNull();
    await expect(store.get('del/here')).rejects.toMatchObject({ code: 'not_found' });
    await store.delete('del/here');
    await store.delete('del/never-was');
    await store.delete('no-such-folder/at/all');
    // A key that is a folder of other keys is not an object.
    await (await store.put('del/folder/inside', sourceOf(Buffer.from('z')))).commit();
    await store.delete('del/folder');
    expect(await store.head('del/folder/inside')).toEqual({ bytes: 1 });
  });

  it('answers a missing key with not_found on get and null on head', async () => {
    const error = await store.get('missing/key').catch((err: unknown) => err);
    expect(error).toMatchObject({ name: 'FerryError', code: 'not_found' });
    expect((error as Error).message).toBe('no stored object under key "missing/key"');
    expect(await store.head('missing/key')).toBeNull();
    // A folder is not an object either.
    await (await store.put('missing/dir/file', sourceOf(Buffer.from('x')))).commit();
    await expect(store.get('missing/dir')).rejects.toMatchObject({ code: 'not_found' });
    expect(await store.head('missing/dir')).toBeNull();
  });

  it('refuses keys outside the rules before touching the server, and releases the source', async () => {
    for (const key of ['../escape', '/abs', 'a//b', '.hidden', 'a/.part', 'sp ace']) {
      const source = sourceOf(Buffer.from('x'));
      await expect(store.put(key, source)).rejects.toMatchObject({ code: 'invalid_parameter' });
      expect(source.destroyed).toBe(true);
      await expect(store.get(key)).rejects.toMatchObject({ code: 'invalid_parameter' });
      await expect(store.delete(key)).rejects.toMatchObject({ code: 'invalid_parameter' });
    }
    expect(existsSync(path.join(server.uploadDir, 'escape'))).toBe(false);
  });

  it("fails a put with the source's own error and leaves no .part file behind", async () => {
    for (const size of [100, 3 * 1024 * 1024]) {
      const source = Readable.from(
        (async function* () {
          yield randomBytes(size);
          throw new Error('the export stream broke');
        })(),
      );
      await expect(store.put(`broken/${size}`, source)).rejects.toThrow('the export stream broke');
      expect(filesUnder(path.join(root, 'broken'))).toEqual([]);
    }
  });

  it('keeps a key from also being a folder of other keys', async () => {
    await (await store.put('clash/file', sourceOf(Buffer.from('x')))).commit();
    const source = sourceOf(Buffer.from('y'));
    await expect(store.put('clash/file/under', source)).rejects.toMatchObject({ code: 'conflict' });
    expect(source.destroyed).toBe(true);
    await (await store.put('clash/dir/under', sourceOf(Buffer.from('z')))).commit();
    const pending = await store.put('clash/dir', sourceOf(Buffer.from('w')));
    await expect(pending.commit()).rejects.toMatchObject({ code: 'conflict' });
    await pending.discard();
    expect(filesUnder(path.join(root, 'clash'))).toEqual(['dir', 'dir/under', 'file']);
  });

  it('writes concurrently on its one connection, making a new folder once', async () => {
    const bodies = Array.from({ length: 12 }, (_, i) => randomBytes(1000 + i));
    const pendings = await Promise.all(bodies.map((b, i) => store.put(`many/new/${i}`, sourceOf(b))));
    await Promise.all(pendings.map((p) => p.commit()));
    for (const [i, b] of bodies.entries())
      expect((await bytesOf(await store.get(`many/new/${i}`))).equals(b)).toBe(true);
    expect(await keysOf(store, 'many/new/')).toHaveLength(12);
  });

  it('creates a missing root, and presigns nothing', async () => {
    const deep = await openStore({ root: `${server.uploadDir}/fresh/root/` });
    await (await deep.put('k', sourceOf(Buffer.from('v')))).commit();
    expect(readFileSync(path.join(server.uploadDir, 'fresh', 'root', 'k'), 'utf8')).toBe('v');
    expect(await deep.presignGet('k', 60)).toBeNull();
    await expect(deep.presignGet('k', 0)).rejects.toMatchObject({ code: 'invalid_parameter' });
    await deep.close();
  });

  it('opens a new connection after the old one drops, and after close', async () => {
    const own = await openStore({ root: path.join(server.uploadDir, 'reconnect') });
    await (await own.put('before', sourceOf(Buffer.from('1')))).commit();
    await (await store.put('reconnect/shared', sourceOf(Buffer.from('22')))).commit();
    // End every session the test server serves (the children of its sshd), as a server restart would.
    const listener = readFileSync(path.join(path.dirname(server.uploadDir), 'sshd.pid'), 'utf8').trim();
    const sessions = childrenOf(Number(listener));
    expect(sessions.length).toBeGreaterThan(0);
    for (const pid of sessions) process.kill(pid, 'SIGTERM');
    const afterDrop = (s: SftpObjectStore, key: string) =>
      expect.poll(() => s.head(key).catch((err: Error) => err.message), { timeout: 10_000 });
    await afterDrop(own, 'before').toEqual({ bytes: 1 });
    await own.close();
    expect(await own.head('before')).toEqual({ bytes: 1 });
    // The shared store, whose connection was dropped too, reconnects as well.
    await afterDrop(store, 'reconnect/shared').toEqual({ bytes: 2 });
  });

  it('refuses a server whose host key is not the pinned one, with a clear error', async () => {
    const other = await openStore({ hostKeyFingerprint: server.otherFingerprint });
    const error = await other.head('x').catch((err: unknown) => err);
    expect(error).toMatchObject({ name: 'FerryError', code: 'host_key_mismatch' });
    expect((error as Error).message).toBe(
      `sftp: the server at 127.0.0.1:${server.port} presented host key ${server.hostKeyFingerprint}, not the ` +
        `pinned ${server.otherFingerprint}; Ferry did not log in. If the server's key really changed, update ` +
        "the destination's host key",
    );
    const source = sourceOf(Buffer.from('x'));
    await expect(other.put('x', source)).rejects.toMatchObject({ code: 'host_key_mismatch' });
    expect(source.destroyed).toBe(true);
  });

  it('checks the host with the outbound guard: loopback is refused unless allowed', async () => {
    const guarded = await openStore({ outbound: undefined });
    await expect(guarded.head('x')).rejects.toMatchObject({ code: 'outbound_blocked' });
  });

  it('refuses options without a usable host key or credentials', async () => {
    await expect(sftpObjectStore(optionsFor({ hostKeyFingerprint: '' }))).rejects.toMatchObject({
      code: 'invalid_parameter',
    });
    await expect(sftpObjectStore(optionsFor({ hostKeyFingerprint: 'SHA256:short' }))).rejects.toMatchObject({
      code: 'invalid_parameter',
    });
    await expect(sftpObjectStore(optionsFor({ privateKey: undefined }))).rejects.toMatchObject({
      code: 'invalid_parameter',
    });
    await expect(sftpObjectStore(optionsFor({ root: '' }))).rejects.toMatchObject({
      code: 'invalid_parameter',
    });
    const any = await openStore({ hostKeyFingerprint: 'insecure-accept-any', root: path.join(root, 'any') });
    await (await any.put('k', sourceOf(Buffer.from('v')))).commit();
    expect(await any.head('k')).toEqual({ bytes: 1 });
  });

  describe('a backup written to the operator storage and to SFTP', () => {
    let t: TestDatabase;
    afterAll(async () => {
      await t?.drop();
    });

    it('is verified at each destination separately, and restores from either', async () => {
      t = await createTestDatabase(preferDialect('postgres'));
      const config = authTestConfig({ FERRY_SECRET_KEY: SECRET, ...t.env });
      const ctx = await testBackupContext(t.database, config, SECRET);
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 30,
        messagesPerConversation: 4,
        seed: 5,
        since: new Date('2026-01-01T00:00:00Z'),
        until: new Date('2026-06-01T00:00:00Z'),
        secretKey: SECRET,
      });
      const tenantId = summary.tenants[0]!.id;
      const remote = path.join(server.uploadDir, 'offsite');
      await putBackupSettings(
        t.database.db,
        tenantId,
        {
          destinations: [
            { type: 'default', name: 'local' },
            {
              type: 'sftp',
              name: 'offsite',
              host: server.host,
              port: server.port,
              username: server.username,
              private_key: server.privateKey,
              host_key: server.hostKeyFingerprint,
              directory: remote,
            },
          ],
        },
        { secrets: ctx.secrets, actor: 'test' },
      );
      const backup = await runBackup(ctx, { tenantId, trigger: 'manual', actor: 'test' });
      expect(backup.destinations.map((d) => d.name)).toEqual(['local', 'offsite']);
      const ok = await verifyBackup(ctx, { tenantId, backupId: backup.id, level: 'full', actor: 'test' });
      expect(ok.destinations.map((d) => [d.destination, d.ok])).toEqual([
        ['local', true],
        ['offsite', true],
      ]);
      // Damage the off-site copy: only that destination fails, and a restore from the local copy still works.
      const [manifestChunk] = readdirSync(path.join(remote, 'backups', tenantId, 'chunks'));
      const dir = path.join(remote, 'backups', tenantId, 'chunks', manifestChunk!);
      const file = path.join(dir, readdirSync(dir)[0]!);
      expect(existsSync(file)).toBe(true);
      writeFileSync(file, Buffer.from('not a chunk'));
      const damaged = await verifyBackup(ctx, {
        tenantId,
        backupId: backup.id,
        level: 'quick',
        actor: 'test',
      });
      expect(damaged.destinations.map((d) => [d.destination, d.ok])).toEqual([
        ['local', true],
        ['offsite', false],
      ]);
      expect(damaged.destinations[1]!.error).toContain(path.basename(file));
      await expect(
        restoreBackup(ctx, {
          tenantId,
          backupId: backup.id,
          mode: 'sandbox',
          destination: 'offsite',
          actor: 'test',
        }),
      ).rejects.toMatchObject({ code: 'backup_corrupt' });
      const restored = await restoreBackup(ctx, {
        tenantId,
        backupId: backup.id,
        mode: 'sandbox',
        destination: 'local',
        actor: 'test',
      });
      expect(restored.status).toBe('completed');
    }, 120_000);
  });
});
