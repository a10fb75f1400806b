import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { sql } from 'kysely';
import { Secret, TOTP } from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupContext } from '../src/backup/context.ts';
import {
  backupKeyContext,
  keyFileOf,
  type KeyRow,
  openCarriedDataKeys,
  openKeyFile,
} from '../src/backup/keys.ts';
import { parseManifest } from '../src/backup/manifest.ts';
import {
  keyObjectKey,
  manifestObjectKey,
  readKeyFile,
  readObject,
  writeKeyFile,
} from '../src/backup/repository.ts';
import {
  type BackupContext,
  openDestinations,
  restoreBackup,
  runBackup,
  verifyBackup,
} from '../src/backup/service.ts';
import { getBackupSettings, presentSettings, putBackupSettings } from '../src/backup/settings.ts';
import { type Config, loadConfig } from '../src/config/config.ts';
import { encryptStreamV1, HEADER_BYTES, headerKeyRef } from '../src/crypto/at-rest.ts';
import { masterKeyHex } from '../src/crypto/keyring.ts';
import { type KeyringAdapters, openKeyring } from '../src/crypto/open-keyring.ts';
import { SEALED_COLUMNS } from '../src/crypto/sealed-columns.ts';
import { rotationDeps } from '../src/key-rotation/jobs.ts';
import type { RotationDeps } from '../src/key-rotation/phases.ts';
import { listRotations, RotationLease, unfinishedRotation } from '../src/key-rotation/record.ts';
import {
  AUDIT_DATA_ROTATED,
  AUDIT_MASTER_ROTATED,
  DATA_KEY_DESTROY_GRACE_MS,
  rotateDataKeys,
  rotateMasterKey,
} from '../src/key-rotation/rotate.ts';
import { maskSecret, sealSecret } from '../src/lib/secret-box.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { receiptJwks } from '../src/privacy/receipt-keys.ts';
import { issueReceipt, verifyReceipt } from '../src/privacy/receipts.ts';
import { createObjectStore } from '../src/store/create-object-store.ts';
import type { EncryptedObjectStore } from '../src/store/encrypted-object-store.ts';
import { confirmTotp, type SignedIn } from '../src/web/accounts.ts';
import { createEndpoint } from '../src/webhooks/endpoints.ts';
import { runFerry } from './support/cli.ts';
import { createTestDatabase, DIALECTS, type TestDatabase, testsDialect } from './support/databases.ts';
import { createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { sampleBody } from './support/fixtures/receipts.ts';
import { readAll } from './support/fixtures/streams.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';

const SECRET = `key-rotation-test-secret-${randomBytes(8).toString('hex')}`;
const OUTBOUND = outboundPolicy(['127.0.0.1']);
const b64 = (key: Buffer) => key.toString('base64');

/** What a process configured with some master keys builds: keyring, secret box, stores, backups. */
interface Process extends KeyringAdapters {
  readonly config: Config;
  readonly store: EncryptedObjectStore;
  readonly backups: BackupContext;
  deps(extra?: Partial<RotationDeps>): RotationDeps;
}

/** Fails the test with `message` unless `promise` rejects; returns the error. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** A TOTP code of a base32 secret at an instant, as an authenticator app shows it. */
function totpCode(base32: string, at: Date): string {
  return new TOTP({ secret: Secret.fromBase32(base32), algorithm: 'SHA1', digits: 6, period: 30 }).generate({
    timestamp: at.getTime(),
  });
}

function signedIn(tenant: TestTenant, memberId: string, role: 'admin' | 'manager'): SignedIn {
  return {
    sessionId: 'test',
    member: { id: memberId, name: role, email: `${role}@${tenant.slug}.example`, role },
    tenant: { id: tenant.id, slug: tenant.slug, name: tenant.slug, plan: 'pro', timezone: 'UTC' },
    secondFactorPending: false,
  };
}

/** Every value of every sealed column, as stored. */
async function sealedValues(t: TestDatabase): Promise<string[]> {
  const out: string[] = [];
  for (const c of SEALED_COLUMNS) {
    const rows = await sql<{ v: string | null }>`
      SELECT ${sql.ref(c.column)}::text AS v FROM ${sql.table(c.table)}`.execute(t.database.db);
    for (const r of rows.rows) if (r.v) out.push(r.v);
  }
  return out;
}

for (const dialect of DIALECTS) {
  // PostgreSQL runs with its files in the S3 test server, PGlite with them on local disk.
  const onS3 = dialect === 'postgres';

  describe(`key rotation (${dialect}, files on ${onS3 ? 'S3' : 'local disk'})`, () => {
    let t: TestDatabase;
    let s3: TestS3Server;
    let dataDir: string;
    let tenant: TestTenant;
    const OLD = randomBytes(32);
    const NEW = randomBytes(32);
    /** Stored files and their plaintexts. */
    const files = new Map<string, Buffer>();
    let webhookSecrets: { id: string; secret: string }[];
    const totp = { admin: new Secret({ size: 20 }).base32, manager: new Secret({ size: 20 }).base32 };
    let integrationId: string;
    const integrationCredentials = JSON.stringify({ api_token: `zd_${randomBytes(8).toString('hex')}` });
    let backupId: string;
    let receiptKid: string;
    /** Every data key that ever existed, for the check that none is anywhere it should not be. */
    const dataKeys = new Map<string, Buffer>();
    let step = 0;
    /** A TOTP instant no earlier check used (a code is accepted once per time step). */
    const nextInstant = () => new Date(Date.UTC(2027, 0, 1) + ++step * 60_000);

    function env(keys: string): Record<string, string> {
      return {
        ...t.env,
        FERRY_DATA_DIR: dataDir,
        FERRY_SECRET_KEY: SECRET,
        FERRY_ENCRYPTION_KEY: keys,
        FERRY_DEMO: 'off',
        LOG_LEVEL: 'silent',
        FERRY_OUTBOUND_ALLOW: '127.0.0.1',
        ...(onS3
          ? {
              FERRY_STORAGE: 's3',
              FERRY_STORAGE_ENCRYPTION: 'on',
              FERRY_S3_BUCKET: s3.bucket,
              FERRY_S3_ENDPOINT: s3.endpoint,
              FERRY_S3_ACCESS_KEY_ID: s3.accessKeyId,
              FERRY_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
            }
          : {}),
      };
    }

    /** A process whose master keys are `keys` (the first current), with an optional clock. */
    async function processWith(keys: Buffer[], now?: () => Date): Promise<Process> {
      const config = loadConfig(env(keys.map(b64).join(',')));
      const opened = await openKeyring(t.database, config, now ? { now } : {});
      const store = await createObjectStore(config, opened.keyring);
      const adapters = { database: t.database, config, store, ...opened, ...(now ? { now } : {}) };
      const backups = backupContext(adapters);
      return {
        config,
        ...opened,
        store,
        backups,
        deps: (extra = {}) => ({ ...rotationDeps(adapters), backups, batchSize: 2, ...extra }),
      };
    }

    async function rememberDataKeys(p: Process): Promise<void> {
      for (const k of await p.keyring.list())
        if (k.state !== 'destroyed') dataKeys.set(k.id, Buffer.from(await p.keyring.dataKey(k.id)));
    }

    /** Every stored file, the secrets, the TOTP secrets, the receipt key and a restore: all open with `p`. */
    async function expectEverythingOpens(p: Process): Promise<void> {
      for (const [key, data] of files)
        expect((await readAll(await p.store.get(key))).equals(data), key).toBe(true);
      for (const { id, secret } of webhookSecrets) {
        const row = await sql<{
          s: string;
        }>`SELECT secret_sealed AS s FROM webhook_endpoints WHERE id = ${id}`.execute(t.database.db);
        expect(await p.secrets.open(row.rows[0]!.s)).toBe(secret);
      }
      for (const role of ['admin', 'manager'] as const) {
        const at = nextInstant();
        await confirmTotp(
          t.database,
          signedIn(tenant, tenant.members[role], role),
          totpCode(totp[role], at),
          p.secrets,
          at,
        );
      }
      const integration = await sql<{ c: string }>`
        SELECT credentials_encrypted AS c FROM integrations WHERE id = ${integrationId}`.execute(
        t.database.db,
      );
      expect(await p.secrets.open(integration.rows[0]!.c)).toBe(integrationCredentials);
      const receipt = await issueReceipt(t.database, p.secrets, sampleBody(tenant.id));
      expect(receipt.key_id).toBe(receiptKid);
      expect(verifyReceipt(receipt.document, await receiptJwks(t.database)).valid).toBe(true);
      const shown = await presentSettings(await getBackupSettings(t.database.db, tenant.id), p.secrets);
      expect(JSON.stringify(shown)).toContain(maskSecret(s3.secretAccessKey));
      const verified = await verifyBackup(p.backups, {
        tenantId: tenant.id,
        backupId,
        level: 'full',
        actor: 'test',
      });
      expect(verified.destinations.map((d) => [d.destination, d.ok])).toEqual([
        ['local', true],
        ['bucket', true],
      ]);
    }

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      s3 = await startS3Server();
      dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-keyrot-'));
      tenant = await createTenant(t.database);

      // Before the keyring: files of format 1 (their key wrapped by the master key itself) and
      // secrets sealed v1 under FERRY_SECRET_KEY, beside what is written today.
      const before = await processWith([OLD]);
      for (let i = 0; i < 3; i++) {
        const key = `exports/${tenant.id}/${i}/old-${i}.csv`;
        const data = randomBytes(70_000 + i);
        files.set(key, data);
        await (await before.store.inner.put(key, Readable.from([data]).pipe(encryptStreamV1(OLD)))).commit();
      }
      const fresh = `exports/${tenant.id}/9/new.csv`;
      files.set(fresh, randomBytes(100_000));
      await (await before.store.put(fresh, Readable.from([files.get(fresh)!]))).commit();

      webhookSecrets = [];
      for (const legacy of [false, true]) {
        const { endpoint, secret } = await createEndpoint(
          t.database,
          tenant.id,
          { url: 'http://127.0.0.1:9/hooks', events: ['export.completed'] },
          { secrets: before.secrets, outbound: OUTBOUND },
        );
        webhookSecrets.push({ id: endpoint.id, secret });
        if (legacy)
          await sql`UPDATE webhook_endpoints SET secret_sealed = ${sealSecret(secret, SECRET)} WHERE id = ${endpoint.id}`.execute(
            t.database.db,
          );
      }
      await sql`INSERT INTO team_member_factors (team_member_id, tenant_id, totp_secret) VALUES
        (${tenant.members.admin}, ${tenant.id}, ${await before.secrets.seal(totp.admin)}),
        (${tenant.members.manager}, ${tenant.id}, ${sealSecret(totp.manager, SECRET)})`.execute(
        t.database.db,
      );
      integrationId = crypto.randomUUID();
      await sql`INSERT INTO integrations (id, tenant_id, type, name, credentials_encrypted, credentials_hint)
        VALUES (${integrationId}, ${tenant.id}, 'zendesk', 'Zendesk', ${sealSecret(integrationCredentials, SECRET)}, '••••')`.execute(
        t.database.db,
      );
      // The receipt signing key, sealed the old way.
      receiptKid = (await issueReceipt(t.database, before.secrets, sampleBody(tenant.id))).key_id;
      const signing = await sql<{ s: string }>`
        SELECT private_key_sealed AS s FROM receipt_signing_keys WHERE kid = ${receiptKid}`.execute(
        t.database.db,
      );
      await sql`UPDATE receipt_signing_keys SET private_key_sealed = ${sealSecret(
        await before.secrets.open(signing.rows[0]!.s),
        SECRET,
      )} WHERE kid = ${receiptKid}`.execute(t.database.db);

      // Backups to the operator's storage and to an S3 bucket (its secret sealed the old way).
      await putBackupSettings(
        t.database.db,
        tenant.id,
        {
          destinations: [
            { type: 'default', name: 'local' },
            {
              type: 's3',
              name: 'bucket',
              bucket: s3.bucket,
              region: s3.region,
              endpoint: s3.endpoint,
              force_path_style: true,
              access_key_id: s3.accessKeyId,
              secret_access_key: s3.secretAccessKey,
            },
          ],
        },
        { secrets: before.secrets, actor: 'test' },
      );
      await sql`UPDATE backup_settings SET destinations = ${JSON.stringify(
        (await getBackupSettings(t.database.db, tenant.id)).destinations.map((d) =>
          d.type === 's3'
            ? { ...d, secret_access_key: { sealed: sealSecret(s3.secretAccessKey, SECRET) } }
            : d,
        ),
      )}::jsonb WHERE tenant_id = ${tenant.id}`.execute(t.database.db);
      backupId = (await runBackup(before.backups, { tenantId: tenant.id, trigger: 'manual', actor: 'test' }))
        .id;
      // Its backup key as a release before the keyring sealed it: v1, in the catalog and the key files.
      const key = (
        await sql<KeyRow>`SELECT * FROM backup_keys WHERE tenant_id = ${tenant.id}`.execute(t.database.db)
      ).rows[0]!;
      const legacy = sealSecret(before.secrets.openWithMaster(key.sealed!, backupKeyContext(key.id)), SECRET);
      await sql`UPDATE backup_keys SET sealed = ${legacy} WHERE id = ${key.id}`.execute(t.database.db);
      for (const d of await openDestinations(
        before.backups,
        await getBackupSettings(t.database.db, tenant.id),
      )) {
        await writeKeyFile(d.store, keyFileOf({ ...key, sealed: legacy }));
        await d.close();
      }
      await rememberDataKeys(before);
      await expectEverythingOpens(before);
    }, 180_000);

    afterAll(async () => {
      await t?.drop();
      await s3?.stop();
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    });

    it('rotate-master: stopped midway it resumes; afterwards only the new master key opens anything', async () => {
      const both = await processWith([NEW, OLD]);
      // A run that stops after two items (a crash, or the process killed).
      let moved = 0;
      const stopped = await rejection(
        rotateMasterKey(
          both.deps({
            onItem: () => {
              if (++moved === 2) throw new Error('stopped after two items');
            },
          }),
          { actor: 'cli' },
        ),
      );
      expect(stopped).toMatchObject({ message: 'stopped after two items' });
      const unfinished = await unfinishedRotation(t.database);
      expect(unfinished).toMatchObject({
        kind: 'master',
        status: 'running',
        phase: 'files',
        error: 'stopped after two items',
      });
      expect(unfinished!.counts).toMatchObject({ keyring: 1, files: 2 });
      // Half-rotated, everything opens with both keys configured.
      await expectEverythingOpens(await processWith([NEW, OLD]));
      // A data-key rotation waits for it.
      expect(
        await rejection(rotateDataKeys(both.deps(), { actor: 'test', rotationDays: 90, force: true })),
      ).toMatchObject({
        code: 'conflict',
        message: expect.stringContaining('ferry keys rotate-master'),
      });

      const done = await rotateMasterKey(both.deps(), { actor: 'cli' });
      expect(done.resumed).toBe(true);
      expect(done.rotation).toMatchObject({
        id: unfinished!.id,
        status: 'completed',
        masterKeyId: masterKeyHex(NEW),
      });
      expect(done.rotation.counts).toMatchObject({
        keyring: 1,
        files: 3,
        secrets: 5,
        backup_keys: 1,
        key_files: 2,
        failed: 0,
        tenants: { [tenant.id]: 3 + 4 + 1 },
      });
      expect(await unfinishedRotation(t.database)).toBeNull();

      // Nothing is under the old master key any more: keyring, files, secrets, backup key files.
      const keyring = await sql<{ m: string | null }>`SELECT master_key_id AS m FROM keyring`.execute(
        t.database.db,
      );
      expect(keyring.rows.map((r) => r.m)).toEqual([masterKeyHex(NEW)]);
      for (const key of files.keys()) {
        const head = await readAll(await both.store.inner.get(key, { start: 0, end: HEADER_BYTES - 1 }));
        expect(headerKeyRef(head).version, key).toBe(2);
      }
      for (const value of await sealedValues(t))
        expect(value.includes('v1:'), value.slice(0, 40)).toBe(false);
      const backupKey = (
        await sql<{ sealed: string }>`SELECT sealed FROM backup_keys WHERE tenant_id = ${tenant.id}`.execute(
          t.database.db,
        )
      ).rows[0]!.sealed;
      expect(backupKey.startsWith(`m1:${masterKeyHex(NEW)}:`)).toBe(true);
      for (const d of await openDestinations(
        both.backups,
        await getBackupSettings(t.database.db, tenant.id),
      )) {
        const keyId = (
          await sql<{ id: string }>`SELECT id FROM backup_keys WHERE tenant_id = ${tenant.id}`.execute(
            t.database.db,
          )
        ).rows[0]!.id;
        const file = JSON.parse(String(await readObject(d.store, keyObjectKey(tenant.id, keyId)))) as {
          sealed: string;
        };
        expect(file.sealed, d.name).toBe(backupKey);
        await d.close();
      }

      // A file written after the rotation is under the keyring as well.
      const later = `exports/${tenant.id}/10/after-rotation.csv`;
      files.set(later, randomBytes(50_000));
      await (await both.store.put(later, Readable.from([files.get(later)!]))).commit();

      // With only the new master key configured, everything opens.
      await expectEverythingOpens(await processWith([NEW]));

      // With only the old one, nothing does.
      const old = await processWith([OLD]);
      for (const key of files.keys())
        expect(await rejection(readAll(await old.store.get(key)))).toMatchObject({
          code: 'decryption_failed',
        });
      for (const { id } of webhookSecrets) {
        const row = await sql<{
          s: string;
        }>`SELECT secret_sealed AS s FROM webhook_endpoints WHERE id = ${id}`.execute(t.database.db);
        expect(await rejection(old.secrets.open(row.rows[0]!.s))).toMatchObject({
          code: 'secret_unreadable',
          message: expect.stringContaining('not configured'),
        });
      }
      expect(await rejection(issueReceipt(t.database, old.secrets, sampleBody(tenant.id)))).toMatchObject({
        code: 'secret_unreadable',
      });
      for (const role of ['admin', 'manager'] as const) {
        const at = nextInstant();
        const code = totpCode(totp[role], at);
        expect(
          await rejection(
            confirmTotp(t.database, signedIn(tenant, tenant.members[role], role), code, old.secrets, at),
          ),
        ).toMatchObject({ code: 'secret_unreadable' });
      }
      expect(
        await rejection(
          restoreBackup(old.backups, { tenantId: tenant.id, backupId, mode: 'sandbox', actor: 'test' }),
        ),
      ).toMatchObject({ code: expect.stringMatching(/secret_unreadable|backup_key_unavailable/) });
      expect(
        await rejection(
          verifyBackup(old.backups, { tenantId: tenant.id, backupId, level: 'quick', actor: 'test' }),
        ),
      ).toMatchObject({ code: 'secret_unreadable' });
    }, 240_000);

    it('data keys: a new active key, files and secrets moved to it, the old one destroyed after its grace period', async () => {
      let clock = new Date();
      const p = await processWith([NEW], () => clock);
      const before = await p.keyring.activeId();
      // A backup taken now carries the data key its secrets are sealed under, wrapped by the
      // master key: the backup's own key alone (a tenant's age identity) does not give it.
      const withKey = await runBackup(p.backups, { tenantId: tenant.id, trigger: 'manual', actor: 'test' });
      const [local] = await openDestinations(p.backups, await getBackupSettings(t.database.db, tenant.id));
      const signed = parseManifest(
        (await readObject(local!.store, manifestObjectKey(tenant.id, withKey.id)))!,
        'test',
      );
      const backupKey = await openKeyFile(
        await readKeyFile(local!.store, tenant.id, signed.manifest.key_id, 'test'),
        { secrets: p.secrets },
      );
      await local!.close();
      const carried = openCarriedDataKeys(backupKey, signed.manifest.data_keys ?? [], 'test');
      expect(carried.map((c) => [c.id, c.master_key_id])).toEqual([[before, masterKeyHex(NEW)]]);
      const plain = Buffer.from(await p.keyring.dataKey(before));
      for (const form of ['base64', 'hex', 'base64url'] as const)
        expect(JSON.stringify(signed.manifest) + JSON.stringify(carried)).not.toContain(plain.toString(form));

      const first = await rotateDataKeys(p.deps(), { actor: 'cli', rotationDays: 90, force: true });
      expect(first).not.toBeNull();
      const after = first!.rotation.dataKeyId!;
      expect(after).not.toBe(before);
      expect(await p.keyring.activeId()).toBe(after);
      expect(first!.rotation.counts).toMatchObject({ files: 5, destroyed: 0, failed: 0 });
      expect(first!.rotation.counts.secrets).toBeGreaterThanOrEqual(5);
      await rememberDataKeys(p);
      for (const key of files.keys()) {
        const head = await readAll(await p.store.inner.get(key, { start: 0, end: HEADER_BYTES - 1 }));
        expect(headerKeyRef(head)).toEqual({ version: 2, dataKeyId: after });
      }
      for (const value of await sealedValues(t))
        for (const m of value.matchAll(/v2:([0-9a-f-]{36}):/g)) expect(m[1]).toBe(after);
      expect((await p.keyring.list()).find((k) => k.id === before)?.state).toBe('retired');
      await expectEverythingOpens(p);

      // Within the grace period nothing is due; after it, the sweep destroys the retired key.
      expect(await rotateDataKeys(p.deps(), { actor: 'system', rotationDays: 90 })).toBeNull();
      clock = new Date(clock.getTime() + DATA_KEY_DESTROY_GRACE_MS + 60_000);
      const sweep = await rotateDataKeys(p.deps(), { actor: 'system', rotationDays: 90 });
      expect(sweep!.rotation.counts).toMatchObject({ files: 0, secrets: 0, destroyed: 1 });
      const destroyed = await sql<{ state: string; wrapped: string | null }>`
        SELECT state, wrapped FROM keyring WHERE id = ${before}`.execute(t.database.db);
      expect(destroyed.rows[0]).toEqual({ state: 'destroyed', wrapped: null });
      await expectEverythingOpens(await processWith([NEW], () => clock));

      // A backup from before both rotations restores, its secrets open: the restore puts the
      // data key it carries back into the keyring (retired), and the next sweep moves them.
      const fresh = await processWith([NEW], () => clock);
      const restored = await restoreBackup(fresh.backups, {
        tenantId: tenant.id,
        backupId: withKey.id,
        mode: 'sandbox',
        destination: 'bucket',
        actor: 'test',
      });
      expect(restored.status).toBe('completed');
      expect(restored.report).toMatchObject({ data_keys_unavailable: [] });
      const sandbox = restored.target_tenant_id!;
      const restoredSecrets = await sql<{ s: string }>`
        SELECT secret_sealed AS s FROM webhook_endpoints WHERE tenant_id = ${sandbox} ORDER BY created_at`.execute(
        t.database.db,
      );
      expect(restoredSecrets.rows).toHaveLength(2);
      expect(restoredSecrets.rows.every((r) => r.s.startsWith(`v2:${before}:`))).toBe(true);
      expect((await Promise.all(restoredSecrets.rows.map((r) => fresh.secrets.open(r.s)))).sort()).toEqual(
        webhookSecrets.map((w) => w.secret).sort(),
      );
      expect((await fresh.keyring.list()).find((k) => k.id === before)?.state).toBe('retired');
      clock = new Date(clock.getTime() + DATA_KEY_DESTROY_GRACE_MS + 60_000);
      const again = await rotateDataKeys(fresh.deps(), { actor: 'system', rotationDays: 90 });
      expect(again!.rotation.counts).toMatchObject({ destroyed: 1, failed: 0 });
      expect(again!.rotation.counts.secrets).toBeGreaterThanOrEqual(2);
      const moved = await sql<{ s: string }>`
        SELECT secret_sealed AS s FROM webhook_endpoints WHERE tenant_id = ${sandbox}`.execute(t.database.db);
      expect(moved.rows.every((r) => r.s.startsWith(`v2:${after}:`))).toBe(true);

      // The first backup was taken under the old master key: its copy of the (now destroyed) data
      // key is wrapped by it, so with only the new master key the restore names that key, and
      // the secrets under it stay unreadable rather than opening with a key that should be gone.
      const early = await restoreBackup(fresh.backups, {
        tenantId: tenant.id,
        backupId,
        mode: 'sandbox',
        actor: 'test',
      });
      expect(early.status).toBe('completed');
      expect(early.report).toMatchObject({ data_keys_unavailable: [before] });
      const unreadable = await sql<{ s: string }>`
        SELECT secret_sealed AS s FROM webhook_endpoints WHERE tenant_id = ${early.target_tenant_id}
          AND secret_sealed LIKE ${`v2:${before}:%`}`.execute(t.database.db);
      expect(unreadable.rows.length).toBeGreaterThan(0);
      for (const r of unreadable.rows)
        expect(await rejection(fresh.secrets.open(r.s))).toMatchObject({ code: 'secret_unreadable' });
      await sql`DELETE FROM tenants WHERE id = ${early.target_tenant_id}`.execute(t.database.db);

      // On its schedule: a key older than FERRY_DATA_KEY_ROTATION_DAYS is replaced; 0 never.
      clock = new Date(clock.getTime() + 91 * 86_400_000);
      expect(await rotateDataKeys(fresh.deps(), { actor: 'system', rotationDays: 0 })).toBeNull();
      const scheduled = await rotateDataKeys(fresh.deps(), { actor: 'system', rotationDays: 90 });
      expect(scheduled!.rotation.dataKeyId).not.toBe(after);
      await rememberDataKeys(fresh);
      await expectEverythingOpens(await processWith([NEW], () => clock));
    }, 240_000);

    it('knows every column that holds sealed values', async () => {
      const columns = await sql<{ table_name: string; column_name: string }>`
        SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND data_type IN ('text', 'jsonb', 'character varying')`.execute(
        t.database.db,
      );
      const holding: string[] = [];
      for (const c of columns.rows) {
        const found = await sql<{ n: number }>`
          SELECT count(*)::int AS n FROM ${sql.table(c.table_name)}
          WHERE ${sql.ref(c.column_name)}::text ~ '(^|"sealed": ?")(v1|v2|m1):'`.execute(t.database.db);
        if (found.rows[0]!.n) holding.push(`${c.table_name}.${c.column_name}`);
      }
      const known = [...SEALED_COLUMNS.map((c) => `${c.table}.${c.column}`), 'backup_keys.sealed'];
      expect(holding.length).toBeGreaterThanOrEqual(6);
      for (const column of holding) expect(known, column).toContain(column);
    });

    it('audits each rotation per tenant, with counts and without key material', async () => {
      const events = await sql<Record<string, unknown>>`
        SELECT * FROM audit_events WHERE tenant_id = ${tenant.id} AND action LIKE 'keys.%' ORDER BY seq`.execute(
        t.database.db,
      );
      const master = events.rows.filter((e) => e.action === AUDIT_MASTER_ROTATED);
      const data = events.rows.filter((e) => e.action === AUDIT_DATA_ROTATED);
      expect(master).toHaveLength(1);
      expect(master[0]).toMatchObject({ actor: 'cli', success: true, record_count: expect.anything() });
      expect(Number(master[0]!.record_count)).toBe(8);
      expect(data.length).toBeGreaterThanOrEqual(3);
      expect(Number(data[0]!.record_count)).toBeGreaterThan(0);
      const rotations = await listRotations(t.database);
      expect(rotations.map((r) => r.id)).toContain(master[0]!.target_id);
      const keyring = await sql`SELECT id, state, master_key_id, created_at FROM keyring`.execute(
        t.database.db,
      );
      const written = JSON.stringify({ events: events.rows, rotations, keyring: keyring.rows });
      const material = [OLD, NEW, ...dataKeys.values()].flatMap((k) => [
        k.toString('base64'),
        k.toString('hex'),
        k.toString('base64url'),
      ]);
      for (const m of material) expect(written).not.toContain(m);
      for (const w of webhookSecrets) expect(written).not.toContain(w.secret);
      expect(written).not.toContain(totp.admin);
      expect(written).not.toContain(integrationCredentials);
    });
  });
}

describe.skipIf(!testsDialect('postgres'))('ferry keys (the command, PostgreSQL)', () => {
  let t: TestDatabase;
  let dir: string;
  const OLD = randomBytes(32);
  const NEW = randomBytes(32);
  let base: Record<string, string>;
  const ferry = (args: string[], env: Record<string, string>) => runFerry(args, { env: { ...base, ...env } });

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-keys-cli-'));
    base = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      ...t.env,
      FERRY_DATA_DIR: path.join(dir, 'data'),
      FERRY_SECRET_KEY: SECRET,
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'silent',
    };
    const tenant = await createTenant(t.database);
    const { secrets } = await openKeyring(
      t.database,
      loadConfig({ ...base, FERRY_ENCRYPTION_KEY: b64(OLD) }),
    );
    await createEndpoint(
      t.database,
      tenant.id,
      { url: 'http://127.0.0.1:9/hooks' },
      { secrets, outbound: OUTBOUND },
    );
  }, 120_000);
  afterAll(async () => {
    await t?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a master key from a command: rotate-master prints one line, the keyring shows the new key', async () => {
    const keysFile = path.join(dir, 'vault-answer');
    writeFileSync(keysFile, `${b64(NEW)}\n${b64(OLD)}\n`);
    const command = { FERRY_ENCRYPTION_KEY_COMMAND: `cat '${keysFile}'` };
    const rotated = await ferry(['keys', 'rotate-master'], command);
    expect(rotated.stderr).toBe('');
    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toMatch(
      new RegExp(
        `^master key rotated \\(rotation [0-9a-f-]{36} finished\\): 1 data key re-wrapped under master key ${masterKeyHex(NEW)}, 0 files re-encrypted \\(0 looked at\\), 0 secrets sealed again, 0 backup keys sealed again \\(0 key files rewritten\\)\\n$`,
      ),
    );
    const shown = await ferry(['keys', 'keyring', '--json'], command);
    expect(shown.code).toBe(0);
    const keyring = JSON.parse(shown.stdout) as {
      master_key: { source: string; id: string; others: string[] };
      data_keys: { state: string; master_key_id: string }[];
      rotations: { kind: string; status: string }[];
    };
    expect(keyring.master_key).toEqual({
      source: 'FERRY_ENCRYPTION_KEY_COMMAND',
      id: masterKeyHex(NEW),
      others: expect.arrayContaining([masterKeyHex(OLD)]),
    });
    expect(keyring.data_keys).toEqual([
      expect.objectContaining({ state: 'active', master_key_id: masterKeyHex(NEW) }),
    ]);
    expect(keyring.rotations[0]).toMatchObject({ kind: 'master', status: 'completed' });
    for (const out of [rotated.stdout, shown.stdout])
      for (const key of [NEW, OLD]) expect(out).not.toContain(b64(key));

    // The same keys from a file; rotate-data with --json.
    const file = path.join(dir, 'master.keys');
    writeFileSync(file, `${b64(NEW)}\n`);
    const data = await ferry(['keys', 'rotate-data', '--json'], { FERRY_ENCRYPTION_KEY_FILE: file });
    expect(data.code).toBe(0);
    expect(JSON.parse(data.stdout)).toMatchObject({
      kind: 'data',
      status: 'completed',
      counts: { secrets: 1 },
    });
  });

  it('a failing key command is one clear line that repeats none of its output', async () => {
    const leaked = randomBytes(32).toString('base64');
    const result = await ferry(['keys', 'keyring'], {
      FERRY_ENCRYPTION_KEY_COMMAND: `echo '${leaked}'; echo '${leaked}' >&2; exit 7`,
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('ferry: FERRY_ENCRYPTION_KEY_COMMAND: the command exited with status 7\n');
    expect(result.stdout).toBe('');
    const both = await ferry(['keys', 'keyring'], {
      FERRY_ENCRYPTION_KEY: b64(NEW),
      FERRY_ENCRYPTION_KEY_FILE: path.join(dir, 'master.keys'),
    });
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(
      /^ferry: invalid environment variable FERRY_ENCRYPTION_KEY_FILE: set only one of/,
    );
    expect(both.stderr).not.toContain(b64(NEW));
  });

  it('a FERRY_SECRET_KEY change: with the old secret listed as previous everything opens, and rotate-master moves it to the new one', async () => {
    // A schema of its own: the keyring here is wrapped by the key derived from FERRY_SECRET_KEY.
    const own = await createTestDatabase('postgres');
    try {
      const A = `secret-A-${randomBytes(12).toString('hex')}`;
      const B = `secret-B-${randomBytes(12).toString('hex')}`;
      const envOf = (extra: Record<string, string>) => ({ ...base, ...own.env, ...extra });
      const boxUnder = async (extra: Record<string, string>) =>
        (await openKeyring(own.database, loadConfig(envOf(extra)))).secrets;
      const under = await boxUnder({ FERRY_SECRET_KEY: A });
      const v2 = await under.seal('sealed under the keyring');
      const v1 = sealSecret('sealed before the keyring', A);
      // B alone opens neither: the keyring is wrapped by the key derived from A.
      expect(await rejection((await boxUnder({ FERRY_SECRET_KEY: B })).open(v2))).toMatchObject({
        code: 'secret_unreadable',
      });
      const both = await boxUnder({ FERRY_SECRET_KEY: B, FERRY_PREVIOUS_SECRET_KEYS: A });
      expect(await both.open(v2)).toBe('sealed under the keyring');
      expect(await both.open(v1)).toBe('sealed before the keyring');
      const rotated = await runFerry(['keys', 'rotate-master'], {
        env: {
          ...envOf({ FERRY_SECRET_KEY: B, FERRY_PREVIOUS_SECRET_KEYS: A }),
          DATABASE_SCHEMA: own.schema!,
        },
      });
      expect(rotated.stderr).toBe('');
      expect(rotated.code).toBe(0);
      // Now B alone opens what A's keyring held; A alone opens nothing.
      expect(await (await boxUnder({ FERRY_SECRET_KEY: B })).open(v2)).toBe('sealed under the keyring');
      expect(await rejection((await boxUnder({ FERRY_SECRET_KEY: A })).open(v2))).toMatchObject({
        code: 'secret_unreadable',
      });
    } finally {
      await own.drop();
    }
  });

  it('a rotation running in another process is refused in one line; the old master key alone opens nothing', async () => {
    const { lease } = await RotationLease.acquire(t.database, 'master', {
      actor: 'elsewhere',
      now: () => new Date(),
      phase: 'files',
    });
    try {
      const refused = await ferry(['keys', 'rotate-master'], {
        FERRY_ENCRYPTION_KEY: `${b64(NEW)},${b64(OLD)}`,
      });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(
        /^ferry: the master-key rotation [0-9a-f-]{36} is running in another process .*\n$/,
      );
      const data = await ferry(['keys', 'rotate-data'], { FERRY_ENCRYPTION_KEY: b64(NEW) });
      expect(data.stderr).toMatch(
        /^ferry: a master-key rotation started .* is unfinished: run `ferry keys rotate-master` to finish it first\n$/,
      );
    } finally {
      await lease.release();
    }
    const resumed = await ferry(['keys', 'rotate-master'], {
      FERRY_ENCRYPTION_KEY: `${b64(NEW)},${b64(OLD)}`,
    });
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/^master key rotated \(resumed rotation [0-9a-f-]{36} and finished it\)/);
    const { secrets } = await openKeyring(
      t.database,
      loadConfig({ ...base, FERRY_ENCRYPTION_KEY: b64(OLD) }),
    );
    const sealed = await sql<{ s: string }>`SELECT secret_sealed AS s FROM webhook_endpoints`.execute(
      t.database.db,
    );
    expect(await rejection(secrets.open(sealed.rows[0]!.s))).toMatchObject({ code: 'secret_unreadable' });
  });
});
