import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chunkObjectKey } from '../src/backup/repository.ts';
import { restoreBackup, runBackup, verifyBackup } from '../src/backup/service.ts';
import { putBackupSettings } from '../src/backup/settings.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { seed } from '../src/seed/seed.ts';
import { type SftpObjectStore, sftpObjectStore } from '../src/store/sftp-object-store.ts';
import { testBackupContext } from './support/backup.ts';
import { createTestDatabase, preferDialect, type TestDatabase } from './support/databases.ts';
import { authTestConfig } from './support/fixtures/auth.ts';
import { sshdAvailable, startSftpServer, type TestSftpServer } from './support/sftp-server.ts';

const SECRET = 'sftp-store-secret-key-0123456789abcdefgh';

async function bytesOf(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

describe.skipIf(!sshdAvailable())(
  'the SFTP object store and backups to two destinations (OpenSSH on 127.0.0.1)',
  () => {
    let server: TestSftpServer;
    let store: SftpObjectStore;

    beforeAll(async () => {
      server = await startSftpServer();
      store = sftpObjectStore({
        host: server.host,
        port: server.port,
        username: server.username,
        privateKey: server.privateKey,
        hostKeyFingerprint: server.hostKeyFingerprint,
        root: path.join(server.uploadDir, 'store'),
        outbound: outboundPolicy(['127.0.0.1']),
      });
    }, 30_000);
    afterAll(async () => {
      await store?.close();
      await server?.stop();
    });

    it('writes, commits, reads back and ranges an object, and lists by prefix in key order', async () => {
      const body = randomBytes(3 * 1024 * 1024);
      const pending = await store.put(
        'a/b/object.bin',
        Readable.from([body.subarray(0, 1000), body.subarray(1000)]),
      );
      expect(pending.sha256).toBe(createHash('sha256').update(body).digest('hex'));
      expect(pending.bytes).toBe(body.length);
      // Not visible before its commit.
      expect(await store.head('a/b/object.bin')).toBeNull();
      expect([...(await collect(store.list('a/')))]).toEqual([]);
      await pending.commit();
      expect(await bytesOf(await store.get('a/b/object.bin'))).toEqual(body);
      expect(await bytesOf(await store.get('a/b/object.bin', { start: 10, end: 19 }))).toEqual(
        body.subarray(10, 20),
      );
      expect(await store.head('a/b/object.bin')).toEqual({ bytes: body.length });
      for (const key of ['a/c/2', 'a/b/0', 'a/a'])
        await (await store.put(key, Readable.from([Buffer.from(key)]))).commit();
      expect((await collect(store.list('a/'))).map((o) => o.key)).toEqual([
        'a/a',
        'a/b/0',
        'a/b/object.bin',
        'a/c/2',
      ]);
      expect((await collect(store.list('a/b/'))).map((o) => o.key)).toEqual(['a/b/0', 'a/b/object.bin']);
    });

    it('leaves nothing of a discarded write, and deletes what is asked (a missing key too)', async () => {
      const pending = await store.put('d/gone', Readable.from([Buffer.from('x')]));
      await pending.discard();
      expect(await store.head('d/gone')).toBeNull();
      expect(readdirSync(path.join(server.uploadDir, 'store', 'd'))).toEqual([]);
      await (await store.put('d/here', Readable.from([Buffer.from('y')]))).commit();
      await store.delete('d/here');
      await store.delete('d/never-was');
      expect(await store.head('d/here')).toBeNull();
      await expect(store.get('d/here')).rejects.toMatchObject({ code: 'not_found' });
    });

    it('refuses a server whose host key is not the pinned one', async () => {
      const other = sftpObjectStore({
        host: server.host,
        port: server.port,
        username: server.username,
        privateKey: server.privateKey,
        hostKeyFingerprint: server.otherFingerprint,
        root: server.uploadDir,
      });
      await expect(other.head('x')).rejects.toMatchObject({ code: 'host_key_mismatch' });
      await other.close();
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
          { secretKey: SECRET, actor: 'test' },
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
        expect(chunkObjectKey(tenantId, path.basename(file))).toContain(path.basename(file));
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
  },
);

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}
