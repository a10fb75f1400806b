import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listChunkIds } from '../src/backup/repository.ts';
import { prune, restoreBackup, runBackup, verifyBackup } from '../src/backup/service.ts';
import { openDestination, putBackupSettings } from '../src/backup/settings.ts';
import { seed } from '../src/seed/seed.ts';
import { testBackupContext } from './support/backup.ts';
import { createTestDatabase, preferDialect, type TestDatabase } from './support/databases.ts';
import { authTestConfig } from './support/fixtures/auth.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';

const SECRET = 'backup-s3-secret-key-0123456789abcdefghij';

describe('backups to an S3-compatible bucket (s3rver)', () => {
  let server: TestS3Server;
  let t: TestDatabase;

  beforeAll(async () => {
    server = await startS3Server();
    t = await createTestDatabase(preferDialect('pglite'));
  }, 60_000);
  afterAll(async () => {
    await t?.drop();
    await server?.stop();
  });

  it('writes, verifies, restores and prunes a backup in the bucket', async () => {
    const config = authTestConfig({ FERRY_SECRET_KEY: SECRET, ...t.env });
    const ctx = await testBackupContext(t.database, config, SECRET);
    const summary = await seed(t.database, {
      tenants: 1,
      conversations: 30,
      messagesPerConversation: 4,
      seed: 9,
      since: new Date('2026-01-01T00:00:00Z'),
      until: new Date('2026-06-01T00:00:00Z'),
      secretKey: SECRET,
    });
    const tenantId = summary.tenants[0]!.id;
    const settings = await putBackupSettings(
      t.database.db,
      tenantId,
      {
        destinations: [
          {
            type: 's3',
            name: 'bucket',
            bucket: server.bucket,
            region: server.region,
            endpoint: server.endpoint,
            force_path_style: true,
            access_key_id: server.accessKeyId,
            secret_access_key: server.secretAccessKey,
          },
        ],
      },
      { secrets: ctx.secrets, actor: 'test' },
    );
    // The secret is sealed in the settings, never stored as entered.
    const stored = settings.destinations[0] as unknown as { secret_access_key: unknown };
    expect(stored.secret_access_key).not.toBe(server.secretAccessKey);
    expect(JSON.stringify(stored.secret_access_key)).toMatch(/v2:/);

    const first = await runBackup(ctx, { tenantId, trigger: 'manual', actor: 'test' });
    expect(first.destinations.map((d) => d.name)).toEqual(['bucket']);
    const second = await runBackup(ctx, { tenantId, trigger: 'manual', actor: 'test' });
    expect(second.new_chunks).toBeLessThanOrEqual(2);
    const verified = await verifyBackup(ctx, { tenantId, backupId: second.id, level: 'full', actor: 'test' });
    expect(verified.destinations).toEqual([expect.objectContaining({ destination: 'bucket', ok: true })]);

    const restored = await restoreBackup(ctx, {
      tenantId,
      backupId: first.id,
      mode: 'sandbox',
      actor: 'test',
    });
    expect(restored.status).toBe('completed');

    const dest = await openDestination(settings.destinations[0]!, {
      defaultStore: ctx.defaultStore,
      secrets: ctx.secrets,
      outbound: ctx.outbound,
    });
    try {
      const chunks = await listChunkIds(dest.store, tenantId);
      expect(chunks.size).toBeGreaterThanOrEqual(first.chunks - 2);
      const result = await prune(ctx, { tenantId, actor: 'test' });
      // Both backups are kept: nothing they use is deleted.
      expect(result.destinations[0]).toMatchObject({ destination: 'bucket', chunks_deleted: 0 });
      expect((await listChunkIds(dest.store, tenantId)).size).toBe(chunks.size);
    } finally {
      await dest.close();
    }
  }, 120_000);
});
