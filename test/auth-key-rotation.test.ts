import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { AxeBuilder } from '@axe-core/playwright';
import { sql } from 'kysely';
import { type Browser, chromium } from 'playwright-core';
import { Type } from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rehashStatus, storeRotation } from '../src/auth/key-rotation.ts';
import { bindApiKeyPepper, createApiKey } from '../src/auth/keys.ts';
import { authDb } from '../src/auth/tables.ts';
import { linkSigner } from '../src/compose.ts';
import { type Config, loadConfig } from '../src/config/config.ts';
import { openKeyring } from '../src/crypto/open-keyring.ts';
import type { SecretBox } from '../src/crypto/secret-box.ts';
import type { Database } from '../src/db/database.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import type { RoutePlugin } from '../src/http/types.ts';
import type { JobContext, FerryJob } from '../src/jobs/types.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { checkStatusToken, statusToken } from '../src/privacy/status-link.ts';
import { issueToken } from '../src/web/accounts.ts';
import { webRoutes } from '../src/web/plugin.ts';
import { deliverDueMessages } from '../src/webhooks/dispatch.ts';
import { createEndpoint } from '../src/webhooks/endpoints.ts';
import { API_KEY_EXPIRING_JOB, API_KEY_JOBS, warnExpiringKeys } from '../src/webhooks/key-expiry.ts';
import { authTestConfig, bearer, createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { runFerry } from './support/cli.ts';
import {
  createTestDatabase,
  DIALECTS,
  preferDialect,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';
const SECRET_A = 'key-rotation-test-secret-A-0123456789abcdef';
const SECRET_B = 'key-rotation-test-secret-B-0123456789abcdef';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** A route that answers any authenticated caller with the key it authenticated as. */
const whoami: RoutePlugin = async (app) => {
  app.get(
    '/test/whoami',
    {
      preHandler: app.authenticate,
      schema: { response: { 200: Type.Object({ actor: Type.String() }) } },
    },
    async (request) => ({ actor: request.auth!.actor }),
  );
};

/**
 * The same database as another Ferry process opens it: the same tables, its own key
 * peppers (they are bound per Database object, from that process's configuration).
 */
function anotherProcess(database: Database): Database {
  return {
    kind: database.kind,
    db: database.db,
    copyOut: (query) => database.copyOut(query),
    copyIn: (table, columns, csv) => database.copyIn(table, columns, csv),
    exec: (statement) => database.exec(statement),
    session: (mode, work) => database.session(mode, work),
    close: async () => {},
  };
}

interface KeyRow {
  key_hash: string;
  pepper_id: string | null;
  expires_at: Date | null;
  expiry_warned_at: Date | null;
}

for (const dialect of DIALECTS) {
  describe(`API key rotation and secret changes on ${dialect}`, () => {
    let t: TestDatabase;
    let tenant: TestTenant;
    let other: TestTenant;
    const apps: FerryApp[] = [];
    let clock = new Date('2031-03-01T10:00:00Z');

    /** A server process on the test database with `env` (and the test's clock). */
    async function serve(
      env: Record<string, string>,
    ): Promise<{ app: FerryApp; database: Database; config: Config }> {
      const database = anotherProcess(t.database);
      const config = authTestConfig(env);
      const app = await buildApp({ database, config, routes: [whoami], now: () => clock });
      apps.push(app);
      return { app, database, config };
    }
    const row = async (id: string) =>
      (await authDb(t.database)
        .selectFrom('api_keys')
        .select(['key_hash', 'pepper_id', 'expires_at', 'expiry_warned_at'])
        .where('id', '=', id)
        .executeTakeFirstOrThrow()) as KeyRow;
    const who = (app: FerryApp, key: string) => app.inject({ url: '/test/whoami', headers: bearer(key) });

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      tenant = await createTenant(t.database);
      other = await createTenant(t.database);
    });
    afterAll(async () => {
      for (const app of apps) await app.close();
      await t?.drop();
    });

    describe('a change of FERRY_SECRET_KEY', () => {
      it('keeps keys made under the old secret working, hashes them again on first use, then needs the old secret no more', async () => {
        const before = await serve({ FERRY_SECRET_KEY: SECRET_A });
        const used = await createApiKey(
          before.database,
          { tenantId: tenant.id, role: 'admin', name: 'used' },
          clock,
        );
        const idle = await createApiKey(
          before.database,
          { tenantId: tenant.id, role: 'admin', name: 'idle' },
          clock,
        );
        expect((await who(before.app, used.key)).statusCode).toBe(200);
        const underA = await row(used.id);
        expect(underA.pepper_id).toMatch(/^[0-9a-f]{16}$/);
        expect((await row(idle.id)).pepper_id).toBe(underA.pepper_id);

        // The operator changes the secret and lists the old one as previous.
        const during = await serve({ FERRY_SECRET_KEY: SECRET_B, FERRY_PREVIOUS_SECRET_KEYS: SECRET_A });
        expect(await rehashStatus(during.database, clock, tenant.id)).toMatchObject({
          current: 0,
          previous: [2],
          unknown: 0,
        });

        // Concurrent first uses: every one is let in, and the row ends up with one new hash.
        const answers = await Promise.all([1, 2, 3].map(() => who(during.app, used.key)));
        expect(answers.map((a) => a.statusCode)).toEqual([200, 200, 200]);
        expect(answers[0]!.json()).toEqual({ actor: `api_key:${used.id}` });
        const rehashed = await row(used.id);
        expect(rehashed.pepper_id).not.toBe(underA.pepper_id);
        expect(rehashed.key_hash).not.toBe(underA.key_hash);
        const fresh = await createApiKey(during.database, { tenantId: tenant.id, role: 'analyst' }, clock);
        expect((await row(fresh.id)).pepper_id).toBe(rehashed.pepper_id);
        expect(await rehashStatus(during.database, clock, tenant.id)).toMatchObject({
          current: 2,
          previous: [1],
          unknown: 0,
        });

        // The old secret is dropped: the re-hashed key still works, the one never used does not.
        const after = await serve({ FERRY_SECRET_KEY: SECRET_B });
        expect((await who(after.app, used.key)).statusCode).toBe(200);
        expect((await who(after.app, fresh.key)).statusCode).toBe(200);
        const refused = await who(after.app, idle.key);
        expect(refused.statusCode).toBe(401);
        expect(refused.json()).toMatchObject({ code: 'unauthorized' });
        expect(await rehashStatus(after.database, clock, tenant.id)).toMatchObject({
          current: 2,
          previous: [],
          unknown: 1,
        });
      });

      it('works the same when the old secret was the per-install secret.key file', async () => {
        const fromFile = await serve({});
        const own = await createTenant(t.database);
        const key = await createApiKey(fromFile.database, { tenantId: own.id, role: 'admin' }, clock);
        expect((await who(fromFile.app, key.key)).statusCode).toBe(200);
        const file = readFileSync(path.join(fromFile.config.dataDir, 'secret.key'), 'utf8').trim();
        const moved = await serve({
          FERRY_SECRET_KEY: SECRET_B,
          FERRY_PREVIOUS_SECRET_KEYS: `${SECRET_A}, ${file}`,
        });
        expect((await who(moved.app, key.key)).statusCode).toBe(200);
        const without = await serve({ FERRY_SECRET_KEY: SECRET_A });
        expect((await who(without.app, key.key)).statusCode).toBe(401);
      });

      it('records the secret of a key made before secrets were recorded on its next use', async () => {
        const server = await serve({ FERRY_SECRET_KEY: SECRET_B });
        const legacy = await createApiKey(server.database, { tenantId: other.id, role: 'admin' }, clock);
        await sql`UPDATE api_keys SET pepper_id = NULL WHERE id = ${legacy.id}`.execute(t.database.db);
        expect(await rehashStatus(server.database, clock, other.id)).toMatchObject({
          current: 0,
          unknown: 1,
        });
        expect((await who(server.app, legacy.key)).statusCode).toBe(200);
        expect(await rehashStatus(server.database, clock, other.id)).toMatchObject({
          current: 1,
          unknown: 0,
        });
      });

      it('keeps download links and privacy-center status links signed under the previous secret valid', () => {
        const dataDir = authTestConfig().dataDir;
        const configA = { ...authTestConfig({ FERRY_SECRET_KEY: SECRET_A }), dataDir };
        const configB = authTestConfig({ FERRY_SECRET_KEY: SECRET_B, FERRY_PREVIOUS_SECRET_KEYS: SECRET_A });
        const configC = authTestConfig({ FERRY_SECRET_KEY: SECRET_B });
        const target = { tenantId: tenant.id, exportId: 'e1', fileId: 'f1', expires: 2_000_000_000 };
        const signed = linkSigner(configA).sign(target);
        expect(linkSigner(configB).verify(target, signed)).toBe(true);
        expect(linkSigner(configB).verify({ ...target, fileId: 'f2' }, signed)).toBe(false);
        expect(linkSigner(configC).verify(target, signed)).toBe(false);
        // New links are signed under the current secret.
        expect(linkSigner(configC).verify(target, linkSigner(configB).sign(target))).toBe(true);

        const token = statusToken(configA, 'req-1');
        expect(checkStatusToken(configB, 'req-1', token)).toBe(true);
        expect(checkStatusToken(configB, 'req-2', token)).toBe(false);
        expect(checkStatusToken(configC, 'req-1', token)).toBe(false);
      });
    });

    describe('expiry and rotation', () => {
      let app: FerryApp;
      let database: Database;
      let admin: string;
      let adminId: string;

      beforeAll(async () => {
        ({ app, database } = await serve({ FERRY_SECRET_KEY: SECRET_B }));
        const created = await createApiKey(
          database,
          { tenantId: tenant.id, role: 'admin', name: 'root' },
          clock,
        );
        admin = created.key;
        adminId = created.id;
      });

      const post = (url: string, body?: unknown, key = admin) =>
        app.inject({
          method: 'POST',
          url,
          headers: bearer(key),
          ...(body === undefined ? {} : { payload: body as object }),
        });

      it('refuses an expired key with 401 api_key_expired', async () => {
        const created = await post('/api/v1/api-keys', {
          role: 'analyst',
          name: 'short',
          expires_at: new Date(clock.getTime() + HOUR).toISOString(),
        });
        expect(created.statusCode, created.body).toBe(201);
        const key = created.json() as { id: string; key: string; expires_at: string; status: string };
        expect(key.expires_at).toBe(new Date(clock.getTime() + HOUR).toISOString());
        expect((await who(app, key.key)).statusCode).toBe(200);

        clock = new Date(clock.getTime() + 2 * HOUR);
        const res = await who(app, key.key);
        expect(res.statusCode).toBe(401);
        expect(res.headers['content-type']).toBe(PROBLEM);
        expect(res.headers['www-authenticate']).toBe('Bearer realm="ferry"');
        expect(res.json()).toMatchObject({
          code: 'api_key_expired',
          status: 401,
          detail: `the API key expired at ${key.expires_at}; rotate it or create a new one`,
        });
        const shown = await app.inject({ url: `/api/v1/api-keys/${key.id}`, headers: bearer(admin) });
        expect(shown.json()).toMatchObject({
          status: 'expired',
          expires_at: key.expires_at,
          rotated_from: null,
        });
      });

      it('takes expires_at or expires_in_days on create, and refuses bad expiries', async () => {
        const inDays = await post('/api/v1/api-keys', { role: 'analyst', expires_in_days: 30 });
        expect(inDays.json().expires_at).toBe(new Date(clock.getTime() + 30 * DAY).toISOString());
        const listed = (await app.inject({ url: '/api/v1/api-keys', headers: bearer(admin) })).json() as {
          data: { id: string; expires_at: string | null }[];
        };
        expect(listed.data.find((k) => k.id === inDays.json().id)?.expires_at).toBe(inDays.json().expires_at);

        for (const [body, parameter] of [
          [{ role: 'analyst', expires_at: '2031-02-01T00:00:00Z' }, 'expires_at'],
          [{ role: 'analyst', expires_at: 'next tuesday' }, 'expires_at'],
          [{ role: 'analyst', expires_at: '2032-01-01T00:00:00Z', expires_in_days: 3 }, 'expires_at'],
        ] as const) {
          const res = await post('/api/v1/api-keys', body);
          expect(res.statusCode, JSON.stringify(body)).toBe(400);
          expect(res.headers['content-type']).toBe(PROBLEM);
          expect(res.json().code).toBe('invalid_parameter');
          expect(res.body).toContain(parameter);
        }
      });

      it('rotates with an overlap: both keys work until the old one expires, then only the new one', async () => {
        const old = await createApiKey(
          database,
          {
            tenantId: tenant.id,
            role: 'agent',
            name: 'nightly sync',
            teamMemberId: tenant.members.agent,
            scopes: ['exports:read'],
            allowedIps: ['127.0.0.1/32', '2001:db8::/32'],
            expiresAt: new Date(clock.getTime() + 90 * DAY),
          },
          clock,
        );
        const res = await post(`/api/v1/api-keys/${old.id}/rotate`, { overlap_hours: 48 });
        expect(res.statusCode, res.body).toBe(201);
        const rotated = res.json();
        expect(rotated.key).toMatch(/^fy_live_[0-9A-Za-z]{43}$/);
        expect(rotated.key).not.toBe(old.key);
        expect(rotated).toMatchObject({
          name: 'nightly sync',
          role: 'agent',
          team_member_id: tenant.members.agent,
          scopes: ['exports:read'],
          allowed_ips: ['127.0.0.1/32', '2001:db8::/32'],
          rotated_from: old.id,
          status: 'active',
          created_by: `api_key:${adminId}`,
          // The new key lasts as long as the old one was made to last.
          expires_at: new Date(clock.getTime() + 90 * DAY).toISOString(),
          previous: {
            id: old.id,
            prefix: old.prefix,
            status: 'active',
            expires_at: new Date(clock.getTime() + 48 * HOUR).toISOString(),
          },
        });

        const start = clock;
        clock = new Date(start.getTime() + 47 * HOUR);
        expect((await who(app, old.key)).statusCode).toBe(200);
        expect((await who(app, rotated.key)).json()).toEqual({ actor: `api_key:${rotated.id}` });

        clock = new Date(start.getTime() + 48 * HOUR);
        const expired = await who(app, old.key);
        expect(expired.statusCode).toBe(401);
        expect(expired.json().code).toBe('api_key_expired');
        expect(expired.json().detail).toContain(`use the key that replaced it (${rotated.prefix}…)`);
        expect((await who(app, rotated.key)).statusCode).toBe(200);

        // A key is rotated once; the second attempt names the key that replaced it.
        const again = await post(`/api/v1/api-keys/${old.id}/rotate`, {});
        expect(again.statusCode).toBe(409);
        expect(again.headers['content-type']).toBe(PROBLEM);
        expect(again.json().code).toBe('conflict');
        expect(again.json().detail).toContain(rotated.id);
      });

      it('stops the old key at once with overlap 0, never extends an earlier expiry, and defaults to 24 hours', async () => {
        const now = await createApiKey(
          database,
          { tenantId: tenant.id, role: 'analyst', name: 'now' },
          clock,
        );
        const zero = await post(`/api/v1/api-keys/${now.id}/rotate`, { overlap_hours: 0 });
        expect(zero.statusCode).toBe(201);
        expect(zero.json().previous).toMatchObject({ status: 'expired', expires_at: clock.toISOString() });
        expect(zero.json().expires_at).toBeNull();
        expect((await who(app, now.key)).json().code).toBe('api_key_expired');
        expect((await who(app, zero.json().key)).statusCode).toBe(200);

        const soon = await createApiKey(
          database,
          { tenantId: tenant.id, role: 'analyst', expiresAt: new Date(clock.getTime() + 2 * HOUR) },
          clock,
        );
        const kept = await post(`/api/v1/api-keys/${soon.id}/rotate`, {
          overlap_hours: 720,
          expires_at: null,
        });
        expect(kept.json().previous.expires_at).toBe(new Date(clock.getTime() + 2 * HOUR).toISOString());
        expect(kept.json().expires_at).toBeNull();

        // No body at all: the default overlap.
        const plain = await createApiKey(database, { tenantId: tenant.id, role: 'analyst' }, clock);
        const defaulted = await post(`/api/v1/api-keys/${plain.id}/rotate`);
        expect(defaulted.statusCode, defaulted.body).toBe(201);
        expect(defaulted.json().previous.expires_at).toBe(
          new Date(clock.getTime() + 24 * HOUR).toISOString(),
        );
      });

      it("refuses bad rotations: another tenant's key, a revoked key, a non-admin caller, bad overlaps", async () => {
        const theirs = await createApiKey(database, { tenantId: other.id, role: 'admin' }, clock);
        const foreign = await post(`/api/v1/api-keys/${theirs.id}/rotate`, {});
        expect(foreign.statusCode).toBe(404);
        expect(foreign.headers['content-type']).toBe(PROBLEM);
        expect(foreign.json().code).toBe('not_found');
        expect((await row(theirs.id)).expires_at).toBeNull();
        expect(
          (
            await authDb(t.database)
              .selectFrom('api_keys')
              .select('id')
              .where('rotated_from', '=', theirs.id)
              .execute()
          ).length,
        ).toBe(0);

        const target = await createApiKey(database, { tenantId: tenant.id, role: 'analyst' }, clock);
        for (const body of [
          { overlap_hours: 721 },
          { overlap_hours: -1 },
          { overlap_hours: 'soon' },
          { extra: 1 },
        ]) {
          const res = await post(`/api/v1/api-keys/${target.id}/rotate`, body);
          expect(res.statusCode, JSON.stringify(body)).toBe(400);
          expect(res.json().code).toBe('invalid_parameter');
        }
        expect((await post('/api/v1/api-keys/not-a-uuid/rotate', {})).statusCode).toBe(400);

        const analyst = await createApiKey(database, { tenantId: tenant.id, role: 'analyst' }, clock);
        const forbidden = await post(`/api/v1/api-keys/${target.id}/rotate`, {}, analyst.key);
        expect(forbidden.statusCode).toBe(403);
        expect(forbidden.json().code).toBe('forbidden');

        await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${target.id}`, headers: bearer(admin) });
        const revoked = await post(`/api/v1/api-keys/${target.id}/rotate`, {});
        expect(revoked.statusCode).toBe(409);
        expect(revoked.json().detail).toMatch(/revoked/);
      });

      it('audits the rotation without the key or its hash', async () => {
        const old = await createApiKey(
          database,
          { tenantId: tenant.id, role: 'manager', name: 'audited' },
          clock,
        );
        const res = await post(`/api/v1/api-keys/${old.id}/rotate`, { overlap_hours: 6 });
        const rotated = res.json() as { id: string; key: string };
        const events = await authDb(t.database)
          .selectFrom('audit_events')
          .select(['action', 'actor', 'target_id', 'data_type'])
          .where('target_id', 'in', [old.id, rotated.id])
          .orderBy('action')
          .execute();
        expect(events).toEqual([
          {
            action: 'api_key.created',
            actor: `api_key:${adminId}`,
            target_id: rotated.id,
            data_type: 'api_key:manager',
          },
          {
            action: 'api_key.rotated',
            actor: `api_key:${adminId}`,
            target_id: old.id,
            data_type: `replaced by ${rotated.id}, overlap 6h`,
          },
        ]);
        const hashes = await authDb(t.database).selectFrom('api_keys').select('key_hash').execute();
        const audit = (
          await sql<{ row: string }>`SELECT audit_events::text AS row FROM audit_events`.execute(
            t.database.db,
          )
        ).rows
          .map((r) => r.row)
          .join('\n');
        for (const secret of [old.key, rotated.key, old.key.slice(16), rotated.key.slice(16)])
          expect(audit).not.toContain(secret);
        for (const { key_hash } of hashes) expect(audit).not.toContain(key_hash);
      });
    });

    describe('the api_key.expiring webhook', () => {
      let receiver: TestWebhookReceiver;
      let config: Config;
      let database: Database;
      let secrets: SecretBox;

      beforeAll(async () => {
        receiver = await startWebhookReceiver();
        ({ database, config } = await serve({
          FERRY_SECRET_KEY: SECRET_B,
          FERRY_OUTBOUND_ALLOW: '127.0.0.1',
        }));
        ({ secrets } = await openKeyring(t.database, config));
      });
      afterAll(async () => {
        await receiver?.stop();
      });

      it('is sent once per key a week ahead, delivered signed, without the key or its hash, and again after a new expiry', async () => {
        const hooked = await createTenant(t.database);
        const { secret } = await createEndpoint(
          t.database,
          hooked.id,
          { url: receiver.url, events: ['api_key.expiring'] },
          { secrets, outbound: outboundPolicy(config.outboundAllow) },
        );
        receiver.setSecrets([secret]);
        // Real time here: the receiver checks the signature's timestamp against its clock.
        const now = new Date();
        const soon = await createApiKey(
          database,
          {
            tenantId: hooked.id,
            role: 'analyst',
            name: 'soon',
            expiresAt: new Date(now.getTime() + 6 * DAY + HOUR),
          },
          now,
        );
        const later = await createApiKey(
          database,
          {
            tenantId: hooked.id,
            role: 'analyst',
            name: 'later',
            expiresAt: new Date(now.getTime() + 8 * DAY),
          },
          now,
        );
        await createApiKey(database, { tenantId: hooked.id, role: 'analyst', name: 'never' }, now);

        const job = API_KEY_JOBS.find((j) => j.name === API_KEY_EXPIRING_JOB)!;
        expect(job.schedule?.cron).toBeDefined();
        const run = (at: Date) =>
          job.handle(
            { id: 'job', data: {} } as unknown as FerryJob,
            {
              database: t.database,
              config,
              now: () => at,
            } as unknown as JobContext,
          );
        const deliver = () =>
          deliverDueMessages({
            database: t.database,
            secrets,
            outbound: outboundPolicy(config.outboundAllow),
          });
        const messages = async () =>
          (
            await sql<{ payload: string }>`SELECT payload FROM webhook_messages
              WHERE tenant_id = ${hooked.id} AND event = 'api_key.expiring' ORDER BY created_at, id`.execute(
              t.database.db,
            )
          ).rows.map((r) => JSON.parse(r.payload));

        await run(now);
        await run(now);
        expect(await deliver()).toBe(1);
        expect(receiver.requests).toHaveLength(1);
        const [received] = receiver.requests;
        expect(received!.verifiedWith).toEqual([0]);
        expect(JSON.parse(received!.body)).toEqual({
          event: 'api_key.expiring',
          timestamp: now.toISOString(),
          tenant_id: hooked.id,
          data: {
            api_key_id: soon.id,
            name: 'soon',
            prefix: soon.prefix,
            expires_at: new Date(now.getTime() + 6 * DAY + HOUR).toISOString(),
            days_left: 7,
            replaced_by: null,
          },
        });
        expect((await row(soon.id)).expiry_warned_at).toEqual(now);

        // A day later `later` comes within the week; `soon` is not warned about again.
        const dayLater = new Date(now.getTime() + DAY + HOUR);
        await run(dayLater);
        expect((await messages()).map((m) => m.data.api_key_id)).toEqual([soon.id, later.id]);

        // Rotating `soon` gives it a new expiry: it is warned about again, naming its successor.
        const rotatedAt = new Date(now.getTime() + 2 * DAY);
        const { key: successor } = await storeRotation(
          database,
          { tenantId: hooked.id, actor: 'cli', ip: null, userAgent: null },
          soon.id,
          { overlapHours: 12, expiresAt: null },
          rotatedAt,
        );
        expect((await row(soon.id)).expiry_warned_at).toBeNull();
        await run(rotatedAt);
        await run(rotatedAt);
        const all = await messages();
        expect(all).toHaveLength(3);
        expect(all[2].data).toMatchObject({
          api_key_id: soon.id,
          expires_at: new Date(rotatedAt.getTime() + 12 * HOUR).toISOString(),
          days_left: 1,
          replaced_by: successor.id,
        });

        const stored = (
          await sql<{ row: string }>`SELECT webhook_messages::text AS row FROM webhook_messages`.execute(
            t.database.db,
          )
        ).rows
          .map((r) => r.row)
          .join('\n');
        const hashes = await authDb(t.database)
          .selectFrom('api_keys')
          .select('key_hash')
          .where('tenant_id', '=', hooked.id)
          .execute();
        for (const key of [soon.key, later.key, successor.key]) expect(stored).not.toContain(key.slice(16));
        for (const { key_hash } of hashes) expect(stored).not.toContain(key_hash);
      });

      it('marks a key whose expiry was written with microseconds, so it is warned about once', async () => {
        const quiet = await createTenant(t.database);
        const now = new Date();
        const key = await createApiKey(database, { tenantId: quiet.id, role: 'analyst' }, now);
        await sql`UPDATE api_keys SET expires_at = ${new Date(now.getTime() + 5 * DAY)}::timestamptz + interval '123 microseconds'
          WHERE id = ${key.id}`.execute(t.database.db);
        expect(await warnExpiringKeys(t.database, now)).toBeGreaterThanOrEqual(1);
        expect((await row(key.id)).expiry_warned_at).toEqual(now);
        expect(await warnExpiringKeys(t.database, now)).toBe(0);
      });
    });
  });
}

/** `ferry keys …` as an operator runs it, against a server sharing its configuration. */
describe.skipIf(!testsDialect('postgres'))('ferry keys rotate, create --expires-*, rehash-status', () => {
  let t: TestDatabase;
  let app: FerryApp;
  let tenant: TestTenant;
  let env: NodeJS.ProcessEnv;
  const ferry = (...args: string[]) => runFerry(['keys', ...args], { env });
  /** The first line of what a failed command printed, after checking it failed. */
  const refusal = (result: { code: number; stderr: string }) => {
    expect(result.code).not.toBe(0);
    return result.stderr.trim().split('\n')[0];
  };
  const who = (key: string) => app.inject({ url: '/test/whoami', headers: bearer(key) });

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    const config = authTestConfig({
      FERRY_SECRET_KEY: SECRET_B,
      FERRY_PREVIOUS_SECRET_KEYS: SECRET_A,
      ...t.env,
    });
    env = {
      ...process.env,
      ...t.env,
      FERRY_DATA_DIR: config.dataDir,
      FERRY_SECRET_KEY: SECRET_B,
      FERRY_PREVIOUS_SECRET_KEYS: SECRET_A,
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'silent',
    };
    app = await buildApp({ database: t.database, config, routes: [whoami] });
    tenant = await createTenant(t.database);
  });
  afterAll(async () => {
    await app?.close();
    await t?.drop();
  });

  it('refuses bad expiries on create with one clear line, and takes good ones', {
    timeout: 120_000,
  }, async () => {
    const base = ['create', '--tenant', tenant.slug, '--role', 'analyst'];
    expect(refusal(await ferry(...base, '--expires-in-days', 'soon'))).toMatch(
      /--expires-in-days must be an integer from 1 to 3650, got "soon"/,
    );
    expect(refusal(await ferry(...base, '--expires-at', 'tomorrow'))).toMatch(
      /--expires-at must be an RFC 3339 time such as 2027-01-31T00:00:00Z, got "tomorrow"/,
    );
    const past = await ferry(...base, '--expires-at', '2020-01-01T00:00:00Z');
    expect(past.code).toBe(1);
    expect(past.stderr).toBe('ferry: expires_at: must be in the future\n');
    const both = await ferry(...base, '--expires-in-days', '3', '--expires-at', '2040-01-01T00:00:00Z');
    expect(both.stderr).toBe('ferry: give --expires-in-days or --expires-at, not both\n');

    const dated = await ferry(...base, '--expires-at', '2040-01-01T00:00:00Z', '--json');
    expect(dated.code, dated.stderr).toBe(0);
    expect(JSON.parse(dated.stdout).expiresAt).toBe('2040-01-01T00:00:00.000Z');
  });

  it('rotates a key: the new one is printed once, the old one works for the overlap', {
    timeout: 120_000,
  }, async () => {
    const old = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin', name: 'ops' });
    expect(
      refusal(await ferry('rotate', '--tenant', tenant.slug, old.id, '--overlap-hours', '9999')),
    ).toMatch(/--overlap-hours must be a whole number of hours from 0 to 720, got "9999"/);
    expect(
      refusal(await ferry('rotate', '--tenant', tenant.slug, old.id, '--overlap-hours', 'a day')),
    ).toMatch(/--overlap-hours must be a whole number/);
    const unknown = await ferry('rotate', '--tenant', tenant.slug, '00000000-0000-4000-8000-000000000000');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe(
      'ferry: API key "00000000-0000-4000-8000-000000000000" does not exist in this tenant\n',
    );
    // Nothing was changed by the refusals.
    expect((await who(old.key)).statusCode).toBe(200);

    const rotated = await ferry('rotate', '--tenant', tenant.slug, old.id);
    expect(rotated.code, rotated.stderr).toBe(0);
    const key = /key {5}(fy_live_[0-9A-Za-z]{43})\n/.exec(rotated.stdout)![1]!;
    expect(rotated.stdout).toMatch(/only time the new key is shown/);
    expect(rotated.stdout).toMatch(
      new RegExp(`The old key ${old.prefix}\\.\\.\\. keeps working until 20\\d\\d-`),
    );
    expect((await who(old.key)).statusCode).toBe(200);
    expect((await who(key)).statusCode).toBe(200);

    const twice = await ferry('rotate', '--tenant', tenant.slug, old.id);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(
      /^ferry: API key .* was rotated already: key .* replaces it; rotate that key instead, or revoke it first\n$/,
    );

    const successor = /id {6}([0-9a-f-]{36})\n/.exec(rotated.stdout)![1]!;
    const now = await ferry('rotate', '--tenant', tenant.slug, successor, '--overlap-hours', '0', '--json');
    expect(now.code, now.stderr).toBe(0);
    const third = JSON.parse(now.stdout);
    expect(third).toMatchObject({
      rotated_from: successor,
      name: 'ops',
      role: 'admin',
      previous: { status: 'expired' },
    });
    expect((await who(key)).json().code).toBe('api_key_expired');
    expect((await who(third.key)).statusCode).toBe(200);
    const audit = await authDb(t.database)
      .selectFrom('audit_events')
      .select(['action', 'actor'])
      .where('target_id', 'in', [old.id, successor])
      .where('action', '=', 'api_key.rotated')
      .execute();
    expect(audit).toEqual([
      { action: 'api_key.rotated', actor: 'cli' },
      { action: 'api_key.rotated', actor: 'cli' },
    ]);
  });

  it('tells how many keys still need a previous secret', { timeout: 120_000 }, async () => {
    const mine = await createTenant(t.database);
    // A key made before the secret changed: by a process whose secret was A.
    const before = anotherProcess(t.database);
    bindApiKeyPepper(before, () => SECRET_A);
    const old = await createApiKey(before, { tenantId: mine.id, role: 'admin' });
    await createApiKey(t.database, { tenantId: mine.id, role: 'analyst' });

    const waiting = await ferry('rehash-status', '--tenant', mine.slug);
    expect(waiting.code, waiting.stderr).toBe(0);
    expect(waiting.stdout).toContain('1 active API keys are hashed under the current secret.');
    expect(waiting.stdout).toContain(
      '1 active API keys are still hashed under previous secret #1 of FERRY_PREVIOUS_SECRET_KEYS.',
    );
    expect(waiting.stdout).toContain(
      'Keep FERRY_PREVIOUS_SECRET_KEYS: 1 active keys still need a previous secret',
    );

    expect((await who(old.key)).statusCode).toBe(200);
    const done = await ferry('rehash-status', '--tenant', mine.slug, '--json');
    expect(JSON.parse(done.stdout)).toEqual({
      current: 2,
      previous: [0],
      unknown: 0,
      inactive: 0,
      previous_removable: true,
    });
    const text = await ferry('rehash-status', '--tenant', mine.slug);
    expect(text.stdout).toContain('FERRY_PREVIOUS_SECRET_KEYS can be removed.');
    // The config itself refuses a previous secret that is too short.
    expect(() => loadConfig({ FERRY_PREVIOUS_SECRET_KEYS: `${SECRET_A},short` })).toThrow(
      /FERRY_PREVIOUS_SECRET_KEYS: must be earlier FERRY_SECRET_KEY values/,
    );
  });
});

/** The dashboard's keys page in Chromium: rotate a key, the new one shown once, the old one marked. */
describe('rotating a key on the dashboard, in a browser', () => {
  let t: TestDatabase;
  let app: FerryApp;
  let browser: Browser;
  let tenant: TestTenant;
  let base: string;

  beforeAll(async () => {
    t = await createTestDatabase(preferDialect('pglite'));
    const config = authTestConfig({ FERRY_SECRET_KEY: SECRET_B });
    app = await buildApp({ database: t.database, config, routes: [whoami, webRoutes] });
    await app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    tenant = await createTenant(t.database);
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await t?.drop();
  });

  it('rotates with the chosen overlap, shows the new key once, and marks the old one', {
    timeout: 120_000,
  }, async () => {
    const now = new Date();
    const sync = await createApiKey(
      t.database,
      { tenantId: tenant.id, role: 'analyst', name: 'browser sync' },
      now,
    );
    const report = await createApiKey(
      t.database,
      {
        tenantId: tenant.id,
        role: 'analyst',
        name: 'weekly report',
        expiresAt: new Date(now.getTime() + 3 * DAY),
      },
      now,
    );
    const who = (key: string) => fetch(`${base}/test/whoami`, { headers: bearer(key) });
    const page = await (await browser.newContext()).newPage();
    const link = await issueToken(
      t.database,
      { tenantId: tenant.id, memberId: tenant.members.admin },
      'sign_in',
      now,
    );
    await page.goto(`${base}/signin/link/${link}`);
    await page.waitForURL(/\/app/);
    await page.goto(`${base}/app/keys`);
    const accessible = async () => {
      const result = await new AxeBuilder({ page }).analyze();
      const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
      expect(bad.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
    };
    await accessible();
    // A key expiring within the week says so.
    await expect
      .poll(() => page.locator(`#key-${report.id} mark.status-expiring`).textContent())
      .toMatch(/in [34] days/);

    await page.getByRole('button', { name: 'Rotate browser sync', exact: true }).click();
    await page.getByLabel('How long browser sync keeps working').selectOption('0');
    await page.getByRole('button', { name: 'Rotate browser sync now' }).click();
    const shown = await page.locator('#new-key-value').inputValue();
    expect(shown).toMatch(/^fy_live_[0-9A-Za-z]{43}$/);
    expect(await page.locator('article.secret').textContent()).toContain(
      `It replaces ${sync.prefix}…, which stopped working now.`,
    );
    await accessible();
    expect((await who(shown)).status).toBe(200);
    const old = await who(sync.key);
    expect(old.status).toBe(401);
    expect(((await old.json()) as { code: string }).code).toBe('api_key_expired');

    // Shown once: the list has the prefixes only; the old key is marked expired and replaced.
    await page.goto(`${base}/app/keys`);
    expect(await page.content()).not.toContain(shown);
    const oldRow = page.locator(`#key-${sync.id}`);
    expect(await oldRow.locator('mark.status-expired').count()).toBe(1);
    expect(await oldRow.textContent()).toContain(`replaced by ${shown.slice(0, 16)}…`);
    expect(await oldRow.getByRole('button', { name: /^Rotate/ }).count()).toBe(0);

    // The default overlap: the old key keeps working for 24 hours.
    await page.getByRole('button', { name: 'Rotate weekly report', exact: true }).click();
    await page.getByRole('button', { name: 'Rotate weekly report now' }).click();
    expect(await page.locator('article.secret').textContent()).toMatch(
      new RegExp(`It replaces ${report.prefix}…, which keeps working until 20\\d\\d-`),
    );
    expect((await who(report.key)).status).toBe(200);
    expect((await who(await page.locator('#new-key-value').inputValue())).status).toBe(200);
  });
});
