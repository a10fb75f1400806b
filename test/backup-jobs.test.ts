import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBackups } from '../src/backup/catalog.ts';
import { runDueBackups } from '../src/backup/jobs.ts';
import { listRestores } from '../src/backup/service.ts';
import { putBackupSettings } from '../src/backup/settings.ts';
import type { Config } from '../src/config/config.ts';
import type { JobContext } from '../src/jobs/types.ts';
import { createLogger } from '../src/lib/logger.ts';
import { seed } from '../src/seed/seed.ts';
import type { SecretBox } from '../src/crypto/secret-box.ts';
import { testAdapters } from './support/keyring.ts';
import { createTestDatabase, preferDialect, type TestDatabase } from './support/databases.ts';
import { authTestConfig } from './support/fixtures/auth.ts';

const SECRET = 'backup-jobs-secret-key-0123456789abcdefgh';

describe('the backup schedule (backup.due)', () => {
  let t: TestDatabase;
  let config: Config;
  let tenantId: string;
  let clock: Date;
  let ctx: JobContext;
  let secrets: SecretBox;

  beforeAll(async () => {
    t = await createTestDatabase(preferDialect('pglite'));
    config = authTestConfig({ FERRY_SECRET_KEY: SECRET, ...t.env });
    const summary = await seed(t.database, {
      tenants: 1,
      conversations: 20,
      messagesPerConversation: 4,
      seed: 4,
      since: new Date('2026-01-01T00:00:00Z'),
      until: new Date('2026-06-01T00:00:00Z'),
      secretKey: SECRET,
    });
    tenantId = summary.tenants[0]!.id;
    await sql`UPDATE tenants SET timezone = 'America/New_York' WHERE id = ${tenantId}`.execute(t.database.db);
    // Only what the schedule uses: the database, the configuration, the file store, the clock, the log.
    const keys = await testAdapters(t.database, config);
    secrets = keys.secrets;
    ctx = {
      database: t.database,
      config,
      store: keys.store,
      secrets: keys.secrets,
      logger: createLogger({ logLevel: 'silent' }),
      now: () => clock,
    } as unknown as JobContext;
  }, 120_000);
  afterAll(async () => t?.drop());

  it('backs up once a local day after the time of day, verifies weekly and drills monthly', async () => {
    await putBackupSettings(
      t.database.db,
      tenantId,
      { enabled: true, time_of_day: '02:00', verify_weekday: 3, drill_day: 16, keep: { keep_daily: 2 } },
      { secrets, actor: 'test' },
    );
    // 2026-12-16 is a Wednesday. 06:30 UTC is 01:30 in New York: not yet.
    clock = new Date('2026-12-16T06:30:00Z');
    await runDueBackups(ctx);
    expect(await listBackups(t.database.db, tenantId)).toHaveLength(0);

    // 07:10 UTC is 02:10 in New York: the day's backup, the weekly verification, the monthly drill.
    clock = new Date('2026-12-16T07:10:00Z');
    await runDueBackups(ctx);
    const first = await listBackups(t.database.db, tenantId);
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({ trigger: 'schedule', verify_status: 'ok (full)' });
    expect(await listRestores(t.database.db, tenantId, { drills: true })).toHaveLength(1);

    // Later the same local day: nothing again.
    clock = new Date('2026-12-16T20:00:00Z');
    await runDueBackups(ctx);
    expect(await listBackups(t.database.db, tenantId)).toHaveLength(1);

    // The next three days: one backup each, and the keep policy (2 dailies) forgets the oldest.
    for (const day of ['17', '18', '19']) {
      clock = new Date(`2026-12-${day}T08:00:00Z`);
      await runDueBackups(ctx);
    }
    const kept = await listBackups(t.database.db, tenantId);
    expect(kept.map((b) => b.started_at.slice(0, 10))).toEqual(['2026-12-19', '2026-12-18']);
    const all = await listBackups(t.database.db, tenantId, { all: true });
    expect(all.filter((b) => b.status === 'forgotten')).toHaveLength(2);
    // No second drill in the same month.
    expect(await listRestores(t.database.db, tenantId, { drills: true })).toHaveLength(1);
  }, 120_000);

  it('takes nothing for a tenant whose backups are off', async () => {
    await putBackupSettings(t.database.db, tenantId, { enabled: false }, { secrets, actor: 'test' });
    clock = new Date('2026-12-20T08:00:00Z');
    const before = (await listBackups(t.database.db, tenantId, { all: true })).length;
    await runDueBackups(ctx);
    expect((await listBackups(t.database.db, tenantId, { all: true })).length).toBe(before);
  });
});
