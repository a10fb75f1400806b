import { randomUUID } from 'node:crypto';
import { Type } from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuthContext, Plan } from '../src/auth/context.ts';
import { createApiKey } from '../src/auth/keys.ts';
import {
  checkExportQuota,
  checkFileSize,
  checkScheduleQuota,
  countExport,
  historyStart,
  limitsFor,
  monthlyExports,
  planLimits,
  registerUsageSource,
} from '../src/auth/quotas.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import type { RoutePlugin } from '../src/http/types.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import { exportConfigFromBody } from '../src/export-requests/config.ts';
import { startLocalExport } from '../src/export-requests/local-export.ts';
import { authTestConfig, bearer, createTenant } from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const JAN_15 = new Date('2030-01-15T12:00:00Z');
const FEB_1 = '2030-02-01T00:00:00.000Z';

function ctx(tenantId: string, plan: Plan): AuthContext {
  return {
    tenantId,
    plan,
    role: 'admin',
    apiKeyId: null,
    teamMemberId: null,
    scopes: [],
    actor: 'system',
    ip: null,
    userAgent: null,
  };
}

async function refusal(promise: Promise<unknown>): Promise<FerryError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    expect((err as FerryError).code).toBe('quota_exceeded');
    return err as FerryError;
  }
  throw new Error('expected a quota_exceeded refusal');
}

/** Stands in for an export route: check the quota, then count the accepted export. */
function exportRoute(now: () => Date): RoutePlugin {
  return async (app, { database }) => {
    app.post(
      '/test/exports',
      {
        preHandler: app.authenticate,
        schema: {
          body: Type.Object({ from: Type.Optional(Type.String()), subject: Type.Optional(Type.String()) }),
          response: { 202: Type.Object({ accepted: Type.Boolean() }) },
        },
      },
      async (request, reply) => {
        const auth = request.auth!;
        const subjectRequest = request.body.subject ? { subjectId: request.body.subject } : undefined;
        await checkExportQuota(database, auth, {
          manual: true,
          from: request.body.from,
          subjectRequest,
          now: now(),
        });
        await countExport(database, auth, { subjectRequest, now: now() });
        return reply.code(202).send({ accepted: true });
      },
    );
  };
}

describe('plan limits', () => {
  it('are the published ones', () => {
    expect(planLimits('starter')).toEqual({
      exportsPerMonth: 10,
      maxFileBytes: 100 * 1024 * 1024,
      historyDays: 183,
      concurrentJobs: 1,
      retentionDays: 30,
      activeSchedules: 2,
      rateLimitPerHour: 1000,
    });
    expect(planLimits('pro')).toMatchObject({
      exportsPerMonth: 50,
      historyDays: 730,
      concurrentJobs: 2,
      retentionDays: 90,
      activeSchedules: 10,
      rateLimitPerHour: 5000,
    });
    expect(planLimits('agency')).toMatchObject({
      exportsPerMonth: null,
      maxFileBytes: 2048 * 1024 * 1024,
      historyDays: null,
      concurrentJobs: 5,
      retentionDays: 365,
      activeSchedules: 25,
      rateLimitPerHour: 10_000,
    });
    expect(planLimits('enterprise')).toMatchObject({
      exportsPerMonth: null,
      maxFileBytes: null,
      historyDays: null,
      concurrentJobs: 10,
      retentionDays: 365,
      activeSchedules: null,
    });
  });

  it('history starts that many days before today (UTC)', () => {
    expect(historyStart(planLimits('starter'), JAN_15)?.toISOString()).toBe('2029-07-16T00:00:00.000Z');
    expect(historyStart(planLimits('pro'), JAN_15)?.toISOString()).toBe('2028-01-16T00:00:00.000Z');
    expect(historyStart(planLimits('agency'), JAN_15)).toBeNull();
  });

  it('refuses a file over the size limit, naming the quota', () => {
    expect(() => checkFileSize(planLimits('starter'), 'starter', 100 * 1024 * 1024)).not.toThrow();
    try {
      checkFileSize(planLimits('starter'), 'starter', 100 * 1024 * 1024 + 1);
      expect.unreachable();
    } catch (err) {
      expect(err).toMatchObject({
        code: 'quota_exceeded',
        details: { quota: 'max_file_bytes', resets_at: null },
      });
    }
    expect(() => checkFileSize(planLimits('enterprise'), 'enterprise', 10 ** 13)).not.toThrow();
  });
});

for (const dialect of DIALECTS) {
  describe(`plan quotas on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let clock = JAN_15;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const now = () => clock;
      app = await buildApp({
        database: t.database,
        config: authTestConfig(),
        routes: [exportRoute(now)],
        now,
      });
    });
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    it('refuses the 11th manual export of a starter month with quota and resets_at, and shows it in usage', async () => {
      clock = JAN_15;
      const tenant = await createTenant(t.database, 'starter');
      const { key } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' });
      for (let i = 0; i < 10; i++) {
        const ok = await app.inject({
          method: 'POST',
          url: '/test/exports',
          headers: bearer(key),
          payload: {},
        });
        expect(ok.statusCode, `export ${i + 1}`).toBe(202);
      }
      const refused = await app.inject({
        method: 'POST',
        url: '/test/exports',
        headers: bearer(key),
        payload: {},
      });
      expect(refused.statusCode).toBe(429);
      expect(refused.headers['content-type']).toBe('application/problem+json; charset=utf-8');
      const body = refused.json();
      expect(body).toMatchObject({ code: 'quota_exceeded', quota: 'exports_per_month', resets_at: FEB_1 });
      expect(body.detail).toMatch(/10 manual exports per month .* resets at 2030-02-01T00:00:00.000Z/);

      const usage = await app.inject({ url: '/api/v1/usage', headers: bearer(key) });
      expect(usage.statusCode).toBe(200);
      const quotas = Object.fromEntries(usage.json().quotas.map((q: { quota: string }) => [q.quota, q]));
      expect(quotas.exports_per_month).toMatchObject({ limit: 10, used: 10, remaining: 0, resets_at: FEB_1 });
      expect(quotas.max_file_bytes).toMatchObject({ limit: 104857600, used: null, resets_at: null });
      expect(quotas.history_window).toMatchObject({ limit: 183 });
      expect(quotas.history_window.description).toMatch(/on or after 2029-07-16/);
      expect(quotas.retention_days).toMatchObject({ limit: 30 });
      expect(quotas.active_schedules).toMatchObject({ limit: 2 });
      expect(quotas.concurrent_jobs).toMatchObject({ limit: 1 });
      expect(quotas.rate_limit).toMatchObject({ limit: 1000, used: 12, remaining: 988 });

      // Scheduled runs are neither refused nor counted.
      await expect(
        checkExportQuota(t.database, ctx(tenant.id, 'starter'), { manual: false, now: clock }),
      ).resolves.toBeUndefined();
      await countExport(t.database, ctx(tenant.id, 'starter'), { manual: false, now: clock });

      // A new month starts from zero.
      clock = new Date(FEB_1);
      const next = await app.inject({
        method: 'POST',
        url: '/test/exports',
        headers: bearer(key),
        payload: {},
      });
      expect(next.statusCode).toBe(202);
      const february = await app.inject({ url: '/api/v1/usage', headers: bearer(key) });
      expect(february.json().quotas[0]).toMatchObject({
        quota: 'exports_per_month',
        used: 1,
        resets_at: '2030-03-01T00:00:00.000Z',
      });
    });

    it('counts the month per tenant', async () => {
      clock = JAN_15;
      const a = await createTenant(t.database, 'starter');
      const b = await createTenant(t.database, 'starter');
      for (let i = 0; i < 10; i++) await countExport(t.database, ctx(a.id, 'starter'), { now: clock });
      await refusal(checkExportQuota(t.database, ctx(a.id, 'starter'), { manual: true, now: clock }));
      await expect(
        checkExportQuota(t.database, ctx(b.id, 'starter'), { manual: true, now: clock }),
      ).resolves.toBeUndefined();
    });

    it('never limits agency and enterprise exports per month', async () => {
      const tenant = await createTenant(t.database, 'agency');
      for (let i = 0; i < 60; i++) await countExport(t.database, ctx(tenant.id, 'agency'), { now: clock });
      await expect(
        checkExportQuota(t.database, ctx(tenant.id, 'agency'), { manual: true, now: clock }),
      ).resolves.toBeUndefined();
    });

    it('refuses a from before the history window, naming the earliest day', async () => {
      clock = JAN_15;
      const starter = await createTenant(t.database, 'starter');
      const { key } = await createApiKey(t.database, { tenantId: starter.id, role: 'admin' });
      const early = await app.inject({
        method: 'POST',
        url: '/test/exports',
        headers: bearer(key),
        payload: { from: '2029-07-15' },
      });
      expect(early.statusCode).toBe(429);
      expect(early.json()).toMatchObject({
        code: 'quota_exceeded',
        quota: 'history_window',
        resets_at: null,
      });
      expect(early.json().detail).toMatch(/last 183 days .* from 2029-07-15 is before 2029-07-16/);
      const edge = await app.inject({
        method: 'POST',
        url: '/test/exports',
        headers: bearer(key),
        payload: { from: '2029-07-16' },
      });
      expect(edge.statusCode).toBe(202);
      const timestamp = await app.inject({
        method: 'POST',
        url: '/test/exports',
        headers: bearer(key),
        payload: { from: '2029-07-15T23:59:59Z' },
      });
      expect(timestamp.json()).toMatchObject({ quota: 'history_window' });

      const pro = await createTenant(t.database, 'pro');
      await refusal(
        checkExportQuota(t.database, ctx(pro.id, 'pro'), { manual: true, from: '2028-01-15', now: clock }),
      );
      await expect(
        checkExportQuota(t.database, ctx(pro.id, 'pro'), { manual: true, from: '2028-01-16', now: clock }),
      ).resolves.toBeUndefined();
      const agency = await createTenant(t.database, 'agency');
      await expect(
        checkExportQuota(t.database, ctx(agency.id, 'agency'), {
          manual: true,
          from: '2001-01-01',
          now: clock,
        }),
      ).resolves.toBeUndefined();
      await expect(
        checkExportQuota(t.database, ctx(agency.id, 'agency'), { manual: true, from: 'soon', now: clock }),
      ).resolves.toBeUndefined();
      await expect(
        checkExportQuota(t.database, ctx(pro.id, 'pro'), { manual: true, from: 'soon', now: clock }),
      ).rejects.toThrow(/from: "soon" is not a date/);
    });

    it('lets a data subject ask for its own data twice in 12 months for free', async () => {
      clock = JAN_15;
      const tenant = await createTenant(t.database, 'starter');
      const { key } = await createApiKey(t.database, { tenantId: tenant.id, role: 'admin' });
      const auth = ctx(tenant.id, 'starter');
      for (let i = 0; i < 10; i++) await countExport(t.database, auth, { now: clock });
      const post = (payload: Record<string, string>) =>
        app.inject({ method: 'POST', url: '/test/exports', headers: bearer(key), payload });
      expect((await post({})).json().quota).toBe('exports_per_month');
      expect((await post({ subject: 'customer-a' })).statusCode).toBe(202);
      expect((await post({ subject: 'customer-a' })).statusCode).toBe(202);
      const third = await post({ subject: 'customer-a' });
      expect(third.statusCode).toBe(429);
      expect(third.json().quota).toBe('exports_per_month');
      expect((await post({ subject: 'customer-b' })).statusCode).toBe(202);
      // The free requests did not use the month.
      const usage = await app.inject({ url: '/api/v1/usage', headers: bearer(key) });
      expect(usage.json().quotas[0]).toMatchObject({ used: 10 });
      // Twelve months after the first, the subject has a free request again.
      clock = new Date(JAN_15.getTime() + 366 * 86_400_000);
      await expect(
        checkExportQuota(t.database, auth, {
          manual: true,
          subjectRequest: { subjectId: 'customer-a' },
          now: clock,
        }),
      ).resolves.toBeUndefined();
    });

    it("counts a customer-scoped export as the customer's own free request, the first two in 12 months", async () => {
      const tenant = await createTenant(t.database, 'starter');
      const auth = ctx(tenant.id, 'starter');
      const now = new Date();
      for (let i = 0; i < 10; i++) await countExport(t.database, auth, { now });
      registerUsageSource('concurrent_jobs', async () => 0);
      const config = exportConfigFromBody(tenant.id, {
        datasets: ['conversations'],
        scope: { kind: 'customer', customer_id: randomUUID() },
      });
      // The month is used up, yet the customer's first two requests go through, uncounted.
      for (let i = 0; i < 2; i++) {
        const local = await startLocalExport(t.database, { id: tenant.id, plan: 'starter' }, config);
        await local.fail(new Error('stopped by the test'));
      }
      expect(await monthlyExports(t.database, tenant.id, new Date())).toBe(10);
      const third = await refusal(startLocalExport(t.database, { id: tenant.id, plan: 'starter' }, config));
      expect(third.details?.quota).toBe('exports_per_month');
      // A tenant-wide export is not a subject's request.
      const whole = exportConfigFromBody(tenant.id, { datasets: ['conversations'] });
      expect(
        (await refusal(startLocalExport(t.database, { id: tenant.id, plan: 'starter' }, whole))).details
          ?.quota,
      ).toBe('exports_per_month');
    });

    it('a subject request beyond the free two counts like any export while the month has room', async () => {
      clock = JAN_15;
      const tenant = await createTenant(t.database, 'starter');
      const auth = ctx(tenant.id, 'starter');
      for (let i = 0; i < 3; i++)
        await countExport(t.database, auth, { subjectRequest: { subjectId: 's' }, now: clock });
      expect(await monthlyExports(t.database, tenant.id, clock)).toBe(1);
    });

    it('refuses an export while the plan’s concurrent jobs are running', async () => {
      const tenant = await createTenant(t.database, 'pro');
      const auth = ctx(tenant.id, 'pro');
      await expect(
        checkExportQuota(t.database, auth, { manual: true, activeJobs: 1, now: clock }),
      ).resolves.toBeUndefined();
      const err = await refusal(
        checkExportQuota(t.database, auth, { manual: true, activeJobs: 2, now: clock }),
      );
      expect(err.details).toEqual({ quota: 'concurrent_jobs', resets_at: null });
      expect(err.message).toMatch(/runs 2 export job\(s\) at a time and 2 are running/);
    });

    it('asks registered counters for running jobs and active schedules', async () => {
      const tenant = await createTenant(t.database, 'starter');
      const auth = ctx(tenant.id, 'starter');
      registerUsageSource('concurrent_jobs', async (_db, tenantId) => (tenantId === tenant.id ? 1 : 0));
      registerUsageSource('active_schedules', async (_db, tenantId) => (tenantId === tenant.id ? 2 : 0));
      expect(
        (await refusal(checkExportQuota(t.database, auth, { manual: true, now: clock }))).details?.quota,
      ).toBe('concurrent_jobs');
      expect((await refusal(checkScheduleQuota(t.database, auth))).details?.quota).toBe('active_schedules');
      await expect(checkScheduleQuota(t.database, auth, { activeSchedules: 1 })).resolves.toBeUndefined();
      const { key } = await createApiKey(t.database, { tenantId: tenant.id, role: 'manager' });
      const usage = await app.inject({ url: '/api/v1/usage', headers: bearer(key) });
      const quotas = Object.fromEntries(usage.json().quotas.map((q: { quota: string }) => [q.quota, q]));
      expect(quotas.concurrent_jobs).toMatchObject({ limit: 1, used: 1, remaining: 0 });
      expect(quotas.active_schedules).toMatchObject({ limit: 2, used: 2, remaining: 0 });
    });

    it("applies an enterprise tenant's own limits from its ferry.limits setting", async () => {
      clock = JAN_15;
      const tenant = await createTenant(t.database, 'enterprise');
      await t.database.db
        .insertInto('settings')
        .values({
          tenant_id: tenant.id,
          key: 'ferry.limits',
          value: JSON.stringify({
            exports_per_month: 2,
            max_file_bytes: 5000,
            history_days: 30,
            concurrent_jobs: 'lots',
          }),
        })
        .execute();
      const auth = ctx(tenant.id, 'enterprise');
      const limits = await limitsFor(t.database, auth);
      expect(limits).toMatchObject({
        exportsPerMonth: 2,
        maxFileBytes: 5000,
        historyDays: 30,
        concurrentJobs: 10,
      });
      await countExport(t.database, auth, { now: clock });
      await countExport(t.database, auth, { now: clock });
      expect(
        (await refusal(checkExportQuota(t.database, auth, { manual: true, now: clock }))).details,
      ).toEqual({
        quota: 'exports_per_month',
        resets_at: FEB_1,
      });
      // Other plans ignore the setting.
      const pro = await createTenant(t.database, 'pro');
      await t.database.db
        .insertInto('settings')
        .values({
          tenant_id: pro.id,
          key: 'ferry.limits',
          value: JSON.stringify({ exports_per_month: 1000 }),
        })
        .execute();
      expect((await limitsFor(t.database, ctx(pro.id, 'pro'))).exportsPerMonth).toBe(50);
    });
  });
}
