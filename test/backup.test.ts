import { randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBackups } from '../src/backup/catalog.ts';
import { applyKeepPolicy } from '../src/backup/forget.ts';
import type { KeyFile } from '../src/backup/keys.ts';
import { chunkObjectKey, keyObjectKey, manifestObjectKey } from '../src/backup/repository.ts';
import { restoreInto, SANDBOX_RECHAINED } from '../src/backup/restore.ts';
import {
  type BackupContext,
  forget,
  prune,
  restoreBackup,
  runBackup,
  runDrill,
  verifyBackup,
} from '../src/backup/service.ts';
import { putBackupSettings } from '../src/backup/settings.ts';
import type { Config } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { pgliteDatabase } from '../src/db/pglite-database.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import { recordAudit } from '../src/auth/audit.ts';
import { verifyAuditChain } from '../src/privacy/audit-chain.ts';
import { executeErasure } from '../src/privacy/erasure.ts';
import { createHold, releaseHold } from '../src/privacy/holds.ts';
import { resolveSubject } from '../src/privacy/subject.ts';
import { seed } from '../src/seed/seed.ts';
import { LocalObjectStore } from '../src/store/local-object-store.ts';
import { canonical, snapshotTenant, tenantRows, testBackupContext } from './support/backup.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { authTestConfig } from './support/fixtures/auth.ts';

const SECRET = 'backup-test-secret-key-0123456789abcdef';

async function count(database: Database, statement: string): Promise<number> {
  const r = await sql<{ n: number | string }>`${sql.raw(statement)}`.execute(database.db);
  return Number(r.rows[0]?.n ?? 0);
}

/** A 1 % change of the tenant: new messages in a new conversation, edited messages, a deleted customer. */
async function changeTenant(database: Database, tenantId: string): Promise<void> {
  const conversation = await sql<{ id: string; site_id: string }>`
    SELECT id, site_id FROM conversations WHERE tenant_id = ${tenantId} ORDER BY start_timestamp DESC LIMIT 1`.execute(
    database.db,
  );
  const fresh = randomUUID();
  const c = conversation.rows[0]!;
  await sql`INSERT INTO conversations (id, tenant_id, site_id, session_id, start_timestamp, language, status,
      escalated, message_count, customer_message_count, ai_message_count, human_message_count, topics_detected, tags,
      custom_fields, created_at, last_updated)
    SELECT ${fresh}, tenant_id, site_id, 'sess-new', now(), language, status, false, 2, 1, 1, 0, '{}', '{}', '{}', now(), now()
    FROM conversations WHERE id = ${c.id}`.execute(database.db);
  for (const content of ['Réponse "neuve"\nligne 2 😀', '=SUM(A1:A9) and a tab\there'])
    await sql`INSERT INTO messages (id, tenant_id, conversation_id, created_at, sender_type, content, content_sources,
        source_relevance_scores, message_length, entities_extracted, custom_metadata, edited, updated_at)
      VALUES (${randomUUID()}, ${tenantId}, ${fresh}, now(), 'customer', ${content}, '[]', '[]', ${content.length}, '[]', '{}', false, now())`.execute(
      database.db,
    );
  await sql`UPDATE messages SET content = content || ' (edited)', edited = true WHERE id IN (
    SELECT id FROM messages WHERE tenant_id = ${tenantId} ORDER BY created_at DESC LIMIT 3)`.execute(
    database.db,
  );
  await sql`DELETE FROM customers WHERE id = (
    SELECT id FROM customers WHERE tenant_id = ${tenantId} ORDER BY created_at LIMIT 1)`.execute(database.db);
}

function files(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...files(full));
    else out.push(full);
  }
  return out;
}

for (const dialect of DIALECTS) {
  describe(`tenant backups (${dialect})`, () => {
    let t: TestDatabase;
    let database: Database;
    let config: Config;
    let ctx: BackupContext & { root: string };
    let tenantId: string;
    let otherTenantId: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      database = t.database;
      config = authTestConfig({ FERRY_SECRET_KEY: SECRET, ...t.env });
      ctx = await testBackupContext(database, config, SECRET);
      const summary = await seed(database, {
        tenants: 2,
        conversations: 60,
        messagesPerConversation: 5,
        seed: 21,
        since: new Date('2025-06-01T00:00:00Z'),
        until: new Date('2026-06-01T00:00:00Z'),
        secretKey: SECRET,
      });
      tenantId = summary.tenants[0]!.id;
      otherTenantId = summary.tenants[1]!.id;
    }, 120_000);

    afterAll(async () => {
      await t?.drop();
    });

    it('restores every point of a full and an incremental backup into a sandbox, row for row', async () => {
      // Audit events to restore: the copy's chain must verify too.
      for (const [action, error] of [
        ['export.requested', null],
        ['session.sign_in_failed', 'wrong password "ana@example.com"\nline 2 😀'],
      ] as const)
        await recordAudit(database, {
          tenantId,
          actor: 'test',
          action,
          success: error === null,
          error,
          ip: '203.0.113.7',
          userAgent: 'Mozilla/5.0',
          occurredAt: new Date('2026-11-01T10:00:00.123456Z'),
        });
      const before = await snapshotTenant(database, tenantId);
      const otherBefore = await tenantRows(database, otherTenantId);
      const full = await runBackup(ctx, { tenantId, trigger: 'manual', actor: 'test' });
      expect(full).toMatchObject({ status: 'completed', kind: 'full', parent_id: null });
      expect(full.rows).toBe(Object.values(before.rows).reduce((n, rows) => n + rows.length, 0));
      expect(full.chunks).toBeGreaterThan(20);

      await changeTenant(database, tenantId);
      const after = await snapshotTenant(database, tenantId);
      const incremental = await runBackup(ctx, { tenantId, trigger: 'manual', actor: 'test' });
      expect(incremental).toMatchObject({ status: 'completed', kind: 'incremental', parent_id: full.id });
      // Only the chunks around the change are new.
      expect(incremental.new_chunks).toBeLessThan(incremental.chunks / 3);
      expect(incremental.written_bytes).toBeLessThan(full.written_bytes / 3);

      for (const [backup, expected] of [
        [full, before],
        [incremental, after],
      ] as const) {
        const restore = await restoreBackup(ctx, {
          tenantId,
          backupId: backup.id,
          mode: 'sandbox',
          actor: 'test',
        });
        expect(restore.status).toBe('completed');
        const report = restore.report as { target_tenant_id: string; target_slug: string; id_salt: string };
        expect(report.target_tenant_id).not.toBe(tenantId);
        // The copy's audit events are chained anew (their ids changed): all but the chain's own
        // columns are the source's, and the copy's chain verifies.
        const drop = { audit_events: SANDBOX_RECHAINED };
        const restored = await tenantRows(database, report.target_tenant_id, { drop });
        expect(restored).toEqual(
          canonical(expected, { sandbox: { salt: report.id_salt, slug: report.target_slug }, drop }),
        );
        expect(restored.audit_events!.length).toBeGreaterThan(0);
        expect(await verifyAuditChain(database, report.target_tenant_id)).toMatchObject({ valid: true });
      }
      // The live tenants were not touched (their audit trail records the backups and restores).
      expect(await tenantRows(database, tenantId, { skip: ['audit_events'] })).toEqual(
        canonical(after, { skip: ['audit_events'] }),
      );
      expect(await tenantRows(database, otherTenantId)).toEqual(otherBefore);
    }, 240_000);

    it('verifies quick and full; a flipped or truncated chunk, manifest or key is named and refused', async () => {
      const backup = (await listBackups(database.db, tenantId))[0]!;
      const ok = await verifyBackup(ctx, { tenantId, backupId: backup.id, level: 'full', actor: 'test' });
      expect(ok.ok).toBe(true);
      expect(ok.destinations[0]).toMatchObject({ destination: 'primary', signature: 'valid' });
      expect(ok.destinations[0]!.bytes_read).toBe(backup.plain_bytes);

      const manifest = JSON.parse(
        readFileSync(path.join(ctx.root, manifestObjectKey(tenantId, backup.id)), 'utf8'),
      ) as { manifest: { tables: { name: string; chunks: [string, number, number][] }[] } };
      const messages = manifest.manifest.tables.find((x) => x.name === 'messages')!;
      const [chunk] = messages.chunks[Math.floor(messages.chunks.length / 2)]!;
      const chunkFile = path.join(ctx.root, chunkObjectKey(tenantId, chunk));
      const original = readFileSync(chunkFile);
      const tenantsBefore = await count(database, 'SELECT count(*) AS n FROM tenants');

      // One flipped byte: same size, so only a full verification reads it.
      const flipped = Buffer.from(original);
      flipped[Math.floor(flipped.length / 2)]! ^= 0x40;
      writeFileSync(chunkFile, flipped);
      expect(
        (await verifyBackup(ctx, { tenantId, backupId: backup.id, level: 'quick', actor: 'test' })).ok,
      ).toBe(true);
      const full = await verifyBackup(ctx, { tenantId, backupId: backup.id, level: 'full', actor: 'test' });
      expect(full.ok).toBe(false);
      expect(full.destinations[0]!.error).toContain(`table messages: chunk ${chunk}`);
      expect(full.destinations[0]!.error).toContain(backup.id);
      await expect(
        restoreBackup(ctx, { tenantId, backupId: backup.id, mode: 'sandbox', actor: 'test' }),
      ).rejects.toMatchObject({ code: 'backup_corrupt' });
      expect(await count(database, 'SELECT count(*) AS n FROM tenants')).toBe(tenantsBefore);

      // A truncated chunk: the quick check already finds it by its size.
      truncateSync(chunkFile, original.length - 100);
      const quick = await verifyBackup(ctx, { tenantId, backupId: backup.id, level: 'quick', actor: 'test' });
      expect(quick.ok).toBe(false);
      expect(quick.destinations[0]!.error).toContain(chunk);
      writeFileSync(chunkFile, original);

      // The manifest: its MAC fails.
      const manifestFile = path.join(ctx.root, manifestObjectKey(tenantId, backup.id));
      const manifestBytes = readFileSync(manifestFile);
      const edited = manifestBytes
        .toString('utf8')
        .replace(/"rows":(\d+)/, (_m, n) => `"rows":${Number(n) + 1}`);
      writeFileSync(manifestFile, edited);
      const badManifest = await verifyBackup(ctx, {
        tenantId,
        backupId: backup.id,
        level: 'quick',
        actor: 'test',
      });
      expect(badManifest.destinations[0]!.error).toMatch(/manifest does not match its MAC/);
      writeFileSync(manifestFile, manifestBytes);

      // The key file: its sealed data key no longer opens.
      const keyFile = path.join(ctx.root, keyObjectKey(tenantId, backup.key_id!));
      const keyBytes = readFileSync(keyFile);
      const key = JSON.parse(keyBytes.toString('utf8')) as KeyFile;
      const sealed = key.sealed!.split(':');
      const ct = Buffer.from(sealed[3]!, 'base64');
      ct[0]! ^= 1;
      writeFileSync(
        keyFile,
        JSON.stringify({ ...key, sealed: [...sealed.slice(0, 3), ct.toString('base64')].join(':') }),
      );
      const badKey = await verifyBackup(ctx, {
        tenantId,
        backupId: backup.id,
        level: 'quick',
        actor: 'test',
      });
      expect(badKey.ok).toBe(false);
      expect(badKey.destinations[0]!.error).toContain(`backup key ${backup.key_id}`);
      await expect(
        restoreBackup(ctx, { tenantId, backupId: backup.id, mode: 'sandbox', actor: 'test' }),
      ).rejects.toBeInstanceOf(FerryError);
      writeFileSync(keyFile, keyBytes);
      expect(
        (await verifyBackup(ctx, { tenantId, backupId: backup.id, level: 'full', actor: 'test' })).ok,
      ).toBe(true);
      expect(await count(database, 'SELECT count(*) AS n FROM tenants')).toBe(tenantsBefore);
    }, 240_000);

    it('erases again, on restore, a person erased after the backup, and says so', async () => {
      const backup = await runBackup(ctx, { tenantId, trigger: 'manual', actor: 'test' });
      const person = await sql<{ email: string; id: string }>`
        SELECT c.email, c.id FROM customers c WHERE c.tenant_id = ${tenantId} AND c.email IS NOT NULL
          AND EXISTS (SELECT 1 FROM conversations v WHERE v.customer_id = c.id) ORDER BY c.email LIMIT 1`.execute(
        database.db,
      );
      const { email } = person.rows[0]!;
      const subject = await resolveSubject(database, tenantId, { email });
      const requestId = randomUUID();
      await executeErasure(
        { database, store: ctx.files, secretKey: SECRET },
        { tenantId, requestId, subject },
      );
      expect(
        await count(
          database,
          `SELECT count(*) AS n FROM customers WHERE tenant_id = '${tenantId}' AND lower(email) = '${email}'`,
        ),
      ).toBe(0);

      const restore = await restoreBackup(ctx, {
        tenantId,
        backupId: backup.id,
        mode: 'sandbox',
        actor: 'test',
      });
      const report = restore.report as {
        target_tenant_id: string;
        re_erased: { request_id: string; tables: Record<string, number> }[];
      };
      expect(report.re_erased.map((e) => e.request_id)).toEqual([requestId]);
      expect(report.re_erased[0]!.tables.customers).toBeGreaterThan(0);
      const target = report.target_tenant_id;
      expect(
        await count(
          database,
          `SELECT count(*) AS n FROM customers WHERE tenant_id = '${target}' AND lower(email) = '${email}'`,
        ),
      ).toBe(0);
      expect(
        await count(
          database,
          `SELECT count(*) AS n FROM conversations WHERE tenant_id = '${target}' AND lower(customer_email) = '${email}'`,
        ),
      ).toBe(0);
      // Everyone else came back.
      expect(await count(database, `SELECT count(*) AS n FROM customers WHERE tenant_id = '${target}'`)).toBe(
        await count(database, `SELECT count(*) AS n FROM customers WHERE tenant_id = '${tenantId}'`),
      );
    }, 240_000);

    it('restores over the live tenant only when confirmed, after a backup of its current state', async () => {
      const backup = (await listBackups(database.db, tenantId))[0]!;
      await expect(
        restoreBackup(ctx, { tenantId, backupId: backup.id, mode: 'replace', actor: 'test' }),
      ).rejects.toMatchObject({ code: 'invalid_parameter' });
      // The ledger replay erases the previous test's subject again: their rows' touch times are the restore's.
      const compare = { skip: ['audit_events', 'tenants'], ignore: ['updated_at', 'last_updated'] };
      const expected = await tenantRows(database, tenantId, compare);
      await changeTenant(database, tenantId);
      const auditBefore = await count(
        database,
        `SELECT count(*) AS n FROM audit_events WHERE tenant_id = '${tenantId}'`,
      );
      const hashes = async () =>
        (
          await sql<{ id: string; password_hash: string }>`
            SELECT id, password_hash FROM team_members WHERE tenant_id = ${tenantId} ORDER BY id`.execute(
            database.db,
          )
        ).rows;
      const hashesBefore = await hashes();
      const restore = await restoreBackup(ctx, {
        tenantId,
        backupId: backup.id,
        mode: 'replace',
        confirm: true,
        actor: 'test',
      });
      const report = restore.report as {
        pre_restore_backup_id: string;
        tables: { name: string; restored: boolean }[];
      };
      expect(report.pre_restore_backup_id).toBeTruthy();
      expect(report.tables.find((x) => x.name === 'audit_events')).toMatchObject({ restored: false });
      // The erasure of the previous test stays in force (the ledger is replayed on replace too).
      expect(await tenantRows(database, tenantId, compare)).toEqual(expected);
      // The live password hashes stay: a backup never holds them, and nobody is locked out.
      expect(await hashes()).toEqual(hashesBefore);
      expect(hashesBefore.length).toBeGreaterThan(0);
      expect(hashesBefore.every((h) => !h.password_hash.startsWith('!withheld'))).toBe(true);
      // The audit trail only grew.
      expect(
        await count(database, `SELECT count(*) AS n FROM audit_events WHERE tenant_id = '${tenantId}'`),
      ).toBeGreaterThan(auditBefore);
    }, 240_000);

    it('deletes nothing a legal hold keeps: no backup is forgotten, no restore replaces the live rows', async () => {
      const before = await listBackups(database.db, tenantId);
      expect(before.length).toBeGreaterThan(1);
      const hold = await createHold(
        database,
        tenantId,
        { scope: 'tenant', reason: 'preservation letter', matter: 'HOLD-7' },
        { actor: 'test' },
      );
      try {
        const result = await forget(ctx, {
          tenantId,
          dryRun: false,
          policy: { keep_last: 1 },
          actor: 'test',
        });
        expect(result.forgotten).toEqual([]);
        expect(result.held_by).toEqual([hold.id]);
        expect((await listBackups(database.db, tenantId)).map((b) => b.id)).toEqual(before.map((b) => b.id));
        const rows = await tenantRows(database, tenantId, { skip: ['audit_events'] });
        await expect(
          restoreBackup(ctx, {
            tenantId,
            backupId: before[0]!.id,
            mode: 'replace',
            confirm: true,
            actor: 'test',
          }),
        ).rejects.toMatchObject({ code: 'conflict', message: expect.stringContaining('HOLD-7') });
        expect(await tenantRows(database, tenantId, { skip: ['audit_events'] })).toEqual(rows);
        // A sandbox restore touches nothing of the live account: allowed.
        const sandbox = await restoreBackup(ctx, {
          tenantId,
          backupId: before[0]!.id,
          mode: 'sandbox',
          actor: 'test',
        });
        expect(sandbox.status).toBe('completed');
      } finally {
        await releaseHold(database, tenantId, hold.id, 'matter closed', { actor: 'test' });
      }
    }, 240_000);

    it('keeps exactly the backups the keep policy names, and prune leaves every kept one verifiable', async () => {
      const day = 86_400_000;
      let clock = new Date('2027-01-04T02:00:00.000Z');
      const timed: BackupContext = { ...ctx, now: () => clock };
      const ids: { id: string; time: Date }[] = [];
      for (let i = 0; i < 12; i++) {
        clock = new Date(Date.parse('2027-01-04T02:00:00.000Z') + i * 3 * day);
        if (i % 4 === 1) await changeTenant(database, otherTenantId);
        const b = await runBackup(timed, { tenantId: otherTenantId, trigger: 'schedule', actor: 'test' });
        ids.push({ id: b.id, time: clock });
      }
      const policy = { keep_last: 2, keep_weekly: 3, keep_monthly: 2 };
      // Days, weeks and months are the tenant's own.
      const zone = await sql<{
        timezone: string;
      }>`SELECT timezone FROM tenants WHERE id = ${otherTenantId}`.execute(database.db);
      const expectedKept = applyKeepPolicy(ids, policy, zone.rows[0]!.timezone)
        .filter((d) => d.keep)
        .map((d) => d.id)
        .sort();
      const result = await forget(timed, { tenantId: otherTenantId, dryRun: false, policy, actor: 'test' });
      expect(result.forgotten.length).toBe(ids.length - expectedKept.length);
      const kept = (await listBackups(database.db, otherTenantId)).map((b) => b.id).sort();
      expect(kept).toEqual(expectedKept);
      const chunksBefore = files(path.join(ctx.root, 'backups', otherTenantId, 'chunks')).length;
      const pruned = await prune(timed, { tenantId: otherTenantId, actor: 'test' });
      expect(pruned.destinations[0]!.chunks_deleted).toBeGreaterThan(0);
      expect(files(path.join(ctx.root, 'backups', otherTenantId, 'chunks')).length).toBe(
        chunksBefore - pruned.destinations[0]!.chunks_deleted,
      );
      for (const id of kept)
        expect(
          (await verifyBackup(timed, { tenantId: otherTenantId, backupId: id, level: 'full', actor: 'test' }))
            .ok,
        ).toBe(true);
      for (const id of result.forgotten)
        expect(
          statSync(path.join(ctx.root, manifestObjectKey(otherTenantId, id)), { throwIfNoEntry: false }),
        ).toBeUndefined();
    }, 300_000);

    it('drills the latest backup: restored, compared, timed, deleted', async () => {
      const tenantsBefore = await count(database, 'SELECT count(*) AS n FROM tenants');
      const drill = await runDrill(ctx, { tenantId, actor: 'test' });
      const report = drill.report as {
        ok: boolean;
        rto_seconds: number;
        rpo_seconds: number;
        targets: { scenario: string; met: boolean }[];
        target_tenant_id: string;
        sandbox_deleted: boolean;
      };
      expect(drill.status).toBe('completed');
      expect(report).toMatchObject({ ok: true, sandbox_deleted: true });
      expect(report.rto_seconds).toBeGreaterThan(0);
      expect(report.targets.map((x) => x.scenario)).toEqual([
        'minor_disruption',
        'major_outage',
        'data_corruption',
        'complete_loss',
      ]);
      expect(
        await count(
          database,
          `SELECT count(*) AS n FROM messages WHERE tenant_id = '${report.target_tenant_id}'`,
        ),
      ).toBe(0);
      expect(await count(database, 'SELECT count(*) AS n FROM tenants')).toBe(tenantsBefore);
    }, 240_000);

    it("restores with the tenant's own age identity alone into another database", async () => {
      const keyDir = mkdtempSync(path.join(tmpdir(), 'ferry-age-'));
      const identityFile = path.join(keyDir, 'key.txt');
      execFileSync('age-keygen', ['-o', identityFile], { stdio: 'ignore' });
      const recipient = execFileSync('age-keygen', ['-y', identityFile], { encoding: 'utf8' }).trim();
      await putBackupSettings(
        database.db,
        tenantId,
        { recipients: [recipient] },
        { secrets: ctx.secrets, actor: 'test' },
      );
      const expected = await tenantRows(database, tenantId, { skip: ['tenants'] });
      const backup = await runBackup(ctx, { tenantId, trigger: 'manual', actor: 'test' });
      const key = JSON.parse(
        readFileSync(path.join(ctx.root, keyObjectKey(tenantId, backup.key_id!)), 'utf8'),
      ) as KeyFile;
      // The key part with the age CLI: the tenant's identity opens the data key.
      const armored = path.join(keyDir, 'data-key.age');
      writeFileSync(armored, key.age!);
      const plainKey = execFileSync('age', ['-d', '-i', identityFile, armored]);
      expect(plainKey.length).toBe(32);

      const other = await pgliteDatabase();
      await migrateToLatest(other.db);
      try {
        const report = await restoreInto({
          store: new LocalObjectStore({ root: ctx.root }),
          destinationName: 'copy',
          tenantId,
          backupId: backup.id,
          mode: 'database',
          target: other,
          verifier: null,
          secrets: {
            identities: [
              readFileSync(identityFile, 'utf8')
                .split('\n')
                .find((l) => l.startsWith('AGE-SECRET-KEY-'))!,
            ],
          },
          ledger: [],
        });
        expect(report.signature).toBe('unknown_key');
        const restored = await tenantRows(other, tenantId, { skip: ['tenants'] });
        expect(restored).toEqual(expected);
        // A wrong identity opens nothing.
        const wrong = path.join(keyDir, 'wrong.txt');
        execFileSync('age-keygen', ['-o', wrong], { stdio: 'ignore' });
        await expect(
          restoreInto({
            store: new LocalObjectStore({ root: ctx.root }),
            destinationName: 'copy',
            tenantId,
            backupId: backup.id,
            mode: 'sandbox',
            target: other,
            verifier: null,
            secrets: {
              identities: [
                readFileSync(wrong, 'utf8')
                  .split('\n')
                  .find((l) => l.startsWith('AGE-SECRET-KEY-'))!,
              ],
            },
            ledger: [],
          }),
        ).rejects.toMatchObject({ code: 'backup_key_unavailable' });
      } finally {
        await other.close();
      }
    }, 240_000);
  });
}
