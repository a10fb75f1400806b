import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../src/auth/context.ts';
import { bearer } from './support/fixtures/auth.ts';
import {
  type ExportHarness,
  type ExportJson,
  exportHarness,
  requestExport,
  getExport,
} from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';

const ROLES: Role[] = ['admin', 'manager', 'analyst', 'agent'];

interface Case {
  name: string;
  method: 'GET' | 'POST' | 'DELETE';
  url: (ids: Ids) => string;
  body?: Record<string, unknown>;
  expect: Record<Role, number>;
}

interface Ids {
  /** A completed export the admin asked for (conversations, full personal data). */
  admin: string;
  /** A completed export the analyst asked for (conversations, anonymized). */
  analyst: string;
  /** A queued export of the asking role, fresh for each request (for DELETE). */
  own: string;
}

const CASES: Case[] = [
  {
    name: 'request anonymized conversations',
    method: 'POST',
    url: () => '/api/v1/exports',
    body: { datasets: ['conversations'], pii: 'enhanced' },
    expect: { admin: 202, manager: 202, analyst: 202, agent: 202 },
  },
  {
    name: 'request conversations with full personal data',
    method: 'POST',
    url: () => '/api/v1/exports',
    body: { datasets: ['conversations'], pii: 'full' },
    expect: { admin: 202, manager: 202, analyst: 403, agent: 202 },
  },
  {
    name: 'request billing',
    method: 'POST',
    url: () => '/api/v1/exports',
    body: { datasets: ['billing'], pii: 'full' },
    expect: { admin: 202, manager: 403, analyst: 403, agent: 403 },
  },
  {
    name: 'request the company package',
    method: 'POST',
    url: () => '/api/v1/exports',
    body: { datasets: ['account', 'conversations'], package: 'tar.gz', pii: 'full' },
    expect: { admin: 202, manager: 403, analyst: 403, agent: 403 },
  },
  {
    name: 'list exports',
    method: 'GET',
    url: () => '/api/v1/exports',
    expect: { admin: 200, manager: 200, analyst: 200, agent: 200 },
  },
  {
    name: "read the admin's export",
    method: 'GET',
    url: (ids) => `/api/v1/exports/${ids.admin}`,
    expect: { admin: 200, manager: 200, analyst: 404, agent: 404 },
  },
  {
    name: "read the analyst's export",
    method: 'GET',
    url: (ids) => `/api/v1/exports/${ids.analyst}`,
    expect: { admin: 200, manager: 200, analyst: 200, agent: 404 },
  },
  {
    name: "download the admin's export",
    method: 'GET',
    url: (ids) => `/api/v1/exports/${ids.admin}/download`,
    expect: { admin: 200, manager: 200, analyst: 404, agent: 404 },
  },
  {
    name: "download the analyst's export",
    method: 'GET',
    url: (ids) => `/api/v1/exports/${ids.analyst}/download`,
    expect: { admin: 200, manager: 200, analyst: 200, agent: 404 },
  },
  {
    name: "repeat the admin's export",
    method: 'POST',
    url: (ids) => `/api/v1/exports/${ids.admin}/repeat`,
    expect: { admin: 202, manager: 202, analyst: 404, agent: 404 },
  },
  {
    name: 'cancel an own export',
    method: 'DELETE',
    url: (ids) => `/api/v1/exports/${ids.own}`,
    expect: { admin: 200, manager: 200, analyst: 403, agent: 403 },
  },
  {
    name: 'read through the compliance path',
    method: 'GET',
    url: (ids) => `/api/export/status/${ids.analyst}`,
    expect: { admin: 200, manager: 200, analyst: 200, agent: 404 },
  },
  {
    name: 'download through the compliance path',
    method: 'GET',
    url: (ids) => `/api/export/download/${ids.admin}`,
    expect: { admin: 200, manager: 200, analyst: 404, agent: 404 },
  },
  {
    name: 'cancel through the compliance path',
    method: 'DELETE',
    url: (ids) => `/api/export/${ids.own}`,
    expect: { admin: 200, manager: 200, analyst: 403, agent: 403 },
  },
  {
    name: 'request through the compliance path',
    method: 'POST',
    url: () => '/api/export/request',
    body: { datasets: ['conversations'], pii: 'complete' },
    expect: { admin: 202, manager: 202, analyst: 202, agent: 202 },
  },
];

for (const dialect of DIALECTS) {
  describe(`export endpoints and access on ${dialect}`, () => {
    let h: ExportHarness;
    let adminExport: ExportJson;
    let analystExport: ExportJson;

    beforeAll(async () => {
      // Enterprise with room for many running jobs: the matrix asks for dozens of exports at once.
      h = await exportHarness(dialect, { workers: true, limits: { concurrent_jobs: 1000 } });
      adminExport = await requestExport(h.app, h.keys.admin, { datasets: ['conversations'], pii: 'full' });
      analystExport = await requestExport(h.app, h.keys.analyst, {
        datasets: ['conversations'],
        pii: 'enhanced',
      });
      await h.waitForExport(adminExport.id, ['completed']);
      await h.waitForExport(analystExport.id, ['completed']);
    }, 180_000);
    afterAll(async () => {
      await h?.close();
    });

    it('answers every endpoint for every role as the permission matrix says', async () => {
      const failures: string[] = [];
      for (const c of CASES) {
        for (const role of ROLES) {
          // A queued export of this role's key (a manager-made one for roles that may not cancel).
          const ownerKey = c.method === 'DELETE' && c.expect[role] === 403 ? h.keys.manager : h.keys[role];
          const own =
            c.method === 'DELETE'
              ? (await requestExport(h.app, ownerKey, { datasets: ['sites'], pii: 'complete' })).id
              : '';
          const res = await h.app.inject({
            method: c.method,
            url: c.url({ admin: adminExport.id, analyst: analystExport.id, own }),
            headers: bearer(h.keys[role]),
            ...(c.body ? { payload: c.body } : {}),
          });
          if (res.statusCode !== c.expect[role])
            failures.push(
              `${c.name} as ${role}: ${res.statusCode} (expected ${c.expect[role]}) ${res.body.slice(0, 200)}`,
            );
          else if (res.statusCode >= 400)
            expect(res.json().code).toBe(res.statusCode === 404 ? 'not_found' : 'forbidden');
        }
      }
      expect(failures).toEqual([]);
    });

    it("narrows an agent's export to its own conversations", async () => {
      const created = await requestExport(h.app, h.keys.agent, {
        datasets: ['conversations'],
        pii: 'enhanced',
      });
      expect(created.request).toMatchObject({
        scope: { kind: 'team_member', team_member_id: h.tenant.members.agent },
      });
    });

    it('answers 404 for exports of another tenant on every endpoint', async () => {
      const other = h.otherKeys.admin;
      const id = adminExport.id;
      const attempts = [
        { method: 'GET' as const, url: `/api/v1/exports/${id}` },
        { method: 'GET' as const, url: `/api/v1/exports/${id}/download` },
        { method: 'DELETE' as const, url: `/api/v1/exports/${id}` },
        { method: 'POST' as const, url: `/api/v1/exports/${id}/repeat` },
        { method: 'GET' as const, url: `/api/export/status/${id}` },
        { method: 'GET' as const, url: `/api/export/download/${id}` },
        { method: 'DELETE' as const, url: `/api/export/${id}` },
      ];
      for (const a of attempts) {
        const res = await h.app.inject({ ...a, headers: bearer(other) });
        expect(res.statusCode, `${a.method} ${a.url}`).toBe(404);
        expect(res.json().code).toBe('not_found');
      }
      const list = await h.app.inject({
        method: 'GET',
        url: '/api/v1/exports?limit=100',
        headers: bearer(other),
      });
      expect((list.json() as { data: ExportJson[] }).data.map((e) => e.id)).not.toContain(id);
      // Still there for its own tenant.
      const mine = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${id}`,
        headers: bearer(h.keys.admin),
      });
      expect((mine.json() as ExportJson).status).toBe('completed');
    });

    it('lists history newest first with filters and cursor pagination', async () => {
      const all: ExportJson[] = [];
      let cursor: string | null = null;
      do {
        const res = await h.app.inject({
          method: 'GET',
          url: `/api/v1/exports?limit=3${cursor ? `&cursor=${cursor}` : ''}`,
          headers: bearer(h.keys.admin),
        });
        expect(res.statusCode).toBe(200);
        const page = res.json() as { data: ExportJson[]; next_cursor: string | null };
        expect(page.data.length).toBeLessThanOrEqual(3);
        all.push(...page.data);
        cursor = page.next_cursor;
      } while (cursor);
      const count = await h.database.db
        .withTables<{ export_requests: { id: string; tenant_id: string } }>()
        .selectFrom('export_requests')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('tenant_id', '=', h.tenant.id)
        .executeTakeFirstOrThrow();
      expect(all.length).toBe(Number(count.n));
      expect(new Set(all.map((e) => e.id)).size).toBe(all.length);
      const created = all.map((e) => String(e.created_at));
      expect([...created].sort().reverse()).toEqual(created);

      const completed = await h.app.inject({
        method: 'GET',
        url: '/api/v1/exports?status=completed&dataset=conversations&limit=100',
        headers: bearer(h.keys.admin),
      });
      const data = (completed.json() as { data: ExportJson[] }).data;
      expect(data.map((e) => e.id)).toEqual(expect.arrayContaining([adminExport.id, analystExport.id]));
      for (const e of data) {
        expect(e.status).toBe('completed');
        expect(e.datasets).toContain('conversations');
      }
      const future = await h.app.inject({
        method: 'GET',
        url: '/api/v1/exports?from=2999-01-01',
        headers: bearer(h.keys.admin),
      });
      expect((future.json() as { data: ExportJson[] }).data).toEqual([]);
      const bad = await h.app.inject({
        method: 'GET',
        url: '/api/v1/exports?cursor=nope',
        headers: bearer(h.keys.admin),
      });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().errors[0].parameter).toBe('cursor');

      // An analyst sees only the exports asked for with its key.
      const analyst = await h.app.inject({
        method: 'GET',
        url: '/api/v1/exports?limit=100',
        headers: bearer(h.keys.analyst),
      });
      const seen = (analyst.json() as { data: ExportJson[] }).data.map((e) => e.id);
      expect(seen).toContain(analystExport.id);
      expect(seen).not.toContain(adminExport.id);
    });

    it('pages through exports created within one millisecond (the cursor keeps microseconds)', async () => {
      // Rows written by now() differ below the millisecond; a cursor cut to milliseconds loses them.
      await sql`
        UPDATE export_requests e SET created_at = b.base + n.rn * interval '1 microsecond'
        FROM (SELECT date_trunc('milliseconds', min(created_at)) AS base FROM export_requests WHERE tenant_id = ${h.tenant.id}) b,
             (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM export_requests WHERE tenant_id = ${h.tenant.id}) n
        WHERE e.id = n.id`.execute(h.database.db);
      const ids: string[] = [];
      let cursor: string | null = null;
      for (let pages = 0; pages < 500; pages++) {
        const res = await h.app.inject({
          method: 'GET',
          url: `/api/v1/exports?limit=1${cursor ? `&cursor=${cursor}` : ''}`,
          headers: bearer(h.keys.admin),
        });
        const page = res.json() as { data: ExportJson[]; next_cursor: string | null };
        ids.push(...page.data.map((e) => e.id));
        cursor = page.next_cursor;
        if (!cursor) break;
      }
      const all = await h.database.db
        .withTables<{ export_requests: { id: string; tenant_id: string; created_at: Date } }>()
        .selectFrom('export_requests')
        .select('id')
        .where('tenant_id', '=', h.tenant.id)
        .orderBy('created_at', 'desc')
        .orderBy('id', 'desc')
        .execute();
      expect(all.length).toBeGreaterThan(2);
      expect(ids).toEqual(all.map((r) => r.id));
    });

    it('repeats a past export with its configuration', async () => {
      const res = await h.app.inject({
        method: 'POST',
        url: `/api/v1/exports/${analystExport.id}/repeat`,
        headers: bearer(h.keys.admin),
      });
      expect(res.statusCode, res.body).toBe(202);
      const repeated = res.json() as ExportJson;
      expect(repeated.id).not.toBe(analystExport.id);
      expect(repeated.repeat_of).toBe(analystExport.id);
      expect(repeated.request).toEqual(analystExport.request);
      const done = await h.waitForExport(repeated.id, ['completed']);
      expect(done.status).toBe('completed');
      expect(done.files[0]!.records).toBe(
        (await getExport(h.app, h.keys.admin, analystExport.id)).files[0]!.records,
      );
    });

    it('answers 401 without a key', async () => {
      for (const url of ['/api/v1/exports', `/api/v1/exports/${adminExport.id}`, '/api/export/request']) {
        const res = await h.app.inject({ method: url.endsWith('request') ? 'POST' : 'GET', url });
        expect(res.statusCode).toBe(401);
      }
    });
  });
}
