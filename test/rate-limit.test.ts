import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import { burstLimit } from '../src/auth/rate-limit.ts';
import { loadConfig } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { bearer, createTenant, type TestTenant } from './support/fixtures/auth.ts';
import {
  createTestDatabase,
  DIALECTS,
  TEST_DATABASE_URL,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';

const HOURLY = 24; // enterprise limit from config in these tests
const BURST = 4; // ceil(2 × 24 / 12)
const START = Date.parse('2030-01-01T10:00:00Z');
const unix = (ms: number) => Math.floor(ms / 1000);

function config(dataDir: string) {
  return loadConfig({
    FERRY_DATA_DIR: dataDir,
    LOG_LEVEL: 'silent',
    FERRY_ENTERPRISE_RATE_LIMIT: String(HOURLY),
  });
}

/** The route every request hits: cheap, authenticated, readable by an admin. */
const URL = '/api/v1/usage';

describe('burst limit', () => {
  it('is twice the average 5-minute share of the hour, rounded up', () => {
    expect(burstLimit(1000)).toBe(167);
    expect(burstLimit(5000)).toBe(834);
    expect(burstLimit(10_000)).toBe(1667);
    expect(burstLimit(HOURLY)).toBe(BURST);
  });
});

for (const dialect of DIALECTS) {
  describe(`per-key rate limits on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let tenant: TestTenant;
    let clock = START;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      app = await buildApp({
        database: t.database,
        config: config(mkdtempSync(path.join(tmpdir(), 'ferry-rl-'))),
        now: () => new Date(clock),
      });
      tenant = await createTenant(t.database, 'enterprise');
    });
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    it('answers every authenticated request with the rate limit headers; health probes carry none', async () => {
      clock = START;
      const { key } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' });
      const res = await app.inject({ url: URL, headers: bearer(key) });
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-ratelimit-limit']).toBe(String(HOURLY));
      expect(res.headers['x-ratelimit-remaining']).toBe(String(HOURLY - 1));
      expect(res.headers['x-ratelimit-reset']).toBe(String(unix(START) + 3600));
      expect(res.headers['x-ratelimit-burst']).toBe(String(BURST));
      expect(res.headers['retry-after']).toBeUndefined();
      const rate = res.json().quotas.find((q: { quota: string }) => q.quota === 'rate_limit');
      expect(rate).toMatchObject({ limit: HOURLY, used: 1, remaining: HOURLY - 1 });
      const health = await app.inject({ url: '/healthz' });
      expect(health.headers['x-ratelimit-limit']).toBeUndefined();
    });

    it('refuses the request after the burst with 429, Retry-After and the headers', async () => {
      clock = START + 60_000; // 10:01, inside the first 5-minute window
      const { key } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' });
      for (let i = 1; i <= BURST; i++) {
        const ok = await app.inject({ url: URL, headers: bearer(key) });
        expect(ok.statusCode, `request ${i}`).toBe(200);
        expect(ok.headers['x-ratelimit-remaining']).toBe(String(HOURLY - i));
      }
      const refused = await app.inject({ url: URL, headers: bearer(key) });
      expect(refused.statusCode).toBe(429);
      expect(refused.headers['content-type']).toBe('application/problem+json; charset=utf-8');
      expect(refused.json()).toMatchObject({ code: 'rate_limited', status: 429 });
      expect(refused.json().detail).toMatch(
        /burst limit of 4 requests per 5 minutes; retry after 240 seconds/,
      );
      expect(refused.headers['retry-after']).toBe('240'); // until 10:05
      expect(refused.headers['x-ratelimit-limit']).toBe(String(HOURLY));
      expect(refused.headers['x-ratelimit-remaining']).toBe(String(HOURLY - BURST - 1));
      expect(refused.headers['x-ratelimit-reset']).toBe(String(unix(START) + 3600));
      expect(refused.headers['x-ratelimit-burst']).toBe(String(BURST));

      // Another key of the same tenant has its own budget.
      const { key: other } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' });
      expect((await app.inject({ url: URL, headers: bearer(other) })).statusCode).toBe(200);

      // The next 5-minute window allows a new burst.
      clock = START + 5 * 60_000;
      expect((await app.inject({ url: URL, headers: bearer(key) })).statusCode).toBe(200);
    });

    it('spends the hourly budget across windows, then refuses until the hour ends', async () => {
      const { key } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' });
      let served = 0;
      let last: Awaited<ReturnType<FerryApp['inject']>> | undefined;
      // Refused requests count too, so each window costs BURST served + 1 refused request.
      for (let window = 0; window < 12; window++) {
        clock = START + window * 5 * 60_000;
        for (;;) {
          last = await app.inject({ url: URL, headers: bearer(key) });
          if (last.statusCode !== 200) break;
          served++;
        }
        if (/hourly limit/.test(last.json().detail)) break;
      }
      expect(served).toBe(HOURLY - 4); // 24 counted = 20 served + 4 refused at the ends of bursts
      expect(last!.statusCode).toBe(429);
      expect(last!.json().detail).toMatch(/hourly limit of 24 requests/);
      expect(last!.headers['x-ratelimit-remaining']).toBe('0');
      const nowSeconds = unix(clock);
      expect(Number(last!.headers['retry-after'])).toBe(unix(START) + 3600 - nowSeconds);

      clock = START + 3600_000; // the next hour
      const fresh = await app.inject({ url: URL, headers: bearer(key) });
      expect(fresh.statusCode).toBe(200);
      expect(fresh.headers['x-ratelimit-remaining']).toBe(String(HOURLY - 1));
      expect(fresh.headers['x-ratelimit-reset']).toBe(String(unix(START) + 7200));
    });

    it('enforces the plan limits: a pro key gets 5,000 an hour and a burst of 834', async () => {
      clock = START;
      const pro = await createTenant(t.database, 'pro');
      const { key } = await createApiKey(t.database, { tenantId: pro.id, role: 'admin' });
      const res = await app.inject({ url: URL, headers: bearer(key) });
      expect(res.headers['x-ratelimit-limit']).toBe('5000');
      expect(res.headers['x-ratelimit-burst']).toBe('834');
    });

    it("an enterprise tenant's own ferry.limits setting wins over the configured default", async () => {
      clock = START;
      const big = await createTenant(t.database, 'enterprise');
      await t.database.db
        .insertInto('settings')
        .values({
          tenant_id: big.id,
          key: 'ferry.limits',
          value: JSON.stringify({ rate_limit_per_hour: 60 }),
        })
        .execute();
      const { key } = await createApiKey(t.database, { tenantId: big.id, role: 'admin' });
      const res = await app.inject({ url: URL, headers: bearer(key) });
      expect(res.headers['x-ratelimit-limit']).toBe('60');
      expect(res.headers['x-ratelimit-burst']).toBe('10');
    });
  });
}

describe.skipIf(!testsDialect('postgres'))(
  'rate limits shared by two API processes over one PostgreSQL schema',
  () => {
    let t: TestDatabase;
    let second: Database;
    let apps: FerryApp[] = [];
    let tenant: TestTenant;
    let clock = START;

    beforeAll(async () => {
      t = await createTestDatabase('postgres');
      second = postgresDatabase({ connectionString: TEST_DATABASE_URL, schema: t.schema!, max: 4 });
      // Same data dir: both processes derive the same key pepper from the install's secret key file.
      const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-rl2-'));
      apps = [
        await buildApp({ database: t.database, config: config(dataDir), now: () => new Date(clock) }),
        await buildApp({ database: second, config: config(dataDir), now: () => new Date(clock) }),
      ];
      tenant = await createTenant(t.database, 'enterprise');
    });
    afterAll(async () => {
      for (const app of apps) await app.close();
      await second?.close();
      await t?.drop();
    });

    it('counts requests to either instance against one budget', async () => {
      clock = START;
      const { key } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' });
      const statuses: number[] = [];
      const remaining: string[] = [];
      for (let i = 0; i < BURST + 1; i++) {
        const res = await apps[i % 2]!.inject({ url: URL, headers: bearer(key) });
        statuses.push(res.statusCode);
        remaining.push(String(res.headers['x-ratelimit-remaining']));
      }
      expect(statuses).toEqual([200, 200, 200, 200, 429]);
      expect(remaining).toEqual(['23', '22', '21', '20', '19']);
    });

    it('lets exactly the burst through when both instances are hit at the same time', async () => {
      clock = START + 10 * 60_000;
      const { key } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' });
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, i) => apps[i % 2]!.inject({ url: URL, headers: bearer(key) })),
      );
      const codes = results.map((r) => r.statusCode);
      expect(codes.filter((c) => c === 200)).toHaveLength(BURST);
      expect(codes.filter((c) => c === 429)).toHaveLength(12 - BURST);
      // Every request got its own count: the remaining values are all different.
      expect(new Set(results.map((r) => r.headers['x-ratelimit-remaining'])).size).toBe(12);
    });
  },
);
