import { gunzipSync } from 'node:zlib';
import { parse as parseCsv } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import { exportPage, planPage } from '../src/collect/paging.ts';
import { type ExportInput, parseExportRequest } from '../src/collect/request.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import { defaultWindow, seed } from '../src/seed/seed.ts';
import { authTestConfig, bearer } from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { lines, sink } from './support/fixtures/streams.ts';

const KEY = 'ab'.repeat(16);

/** Every dataset the paged endpoint pages (all but the two document datasets). */
const PAGED = Object.keys(REFERENCE_DATAMAP.datasets).filter(
  (d) => REFERENCE_DATAMAP.datasets[d]!.kind !== 'document',
);

for (const dialect of DIALECTS) {
  describe(`paged exports on ${dialect}`, () => {
    let t: TestDatabase;
    let tenantA: string;
    let tenantB: string;
    let app: FerryApp;
    const keys: Record<string, string> = {};

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 2,
        conversations: 40,
        messagesPerConversation: 3,
        seed: 5,
        ...defaultWindow(),
        secretKey: 'paged-export-test-secret-0123456789abcdef',
      });
      tenantA = summary.tenants[0]!.id;
      tenantB = summary.tenants[1]!.id;
      // No history window: these tests are about paging, not plan limits.
      await sql`UPDATE tenants SET plan = 'enterprise'`.execute(t.database.db);
      app = await buildApp({ database: t.database, config: authTestConfig() });
      for (const [name, tenantId, role] of [
        ['adminA', tenantA, 'admin'],
        ['adminB', tenantB, 'admin'],
        ['analystA', tenantA, 'analyst'],
      ] as const) {
        keys[name] = (await createApiKey(t.database, { tenantId, role })).key;
      }
      const agent = await t.database.db
        .selectFrom('team_members')
        .select('id')
        .where('tenant_id', '=', tenantA)
        .where('role', '=', 'agent')
        .executeTakeFirstOrThrow();
      keys.agentA = (
        await createApiKey(t.database, { tenantId: tenantA, role: 'agent', teamMemberId: agent.id })
      ).key;
    }, 120_000);
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    const request = (input: Partial<ExportInput> & { dataset: string }) =>
      parseExportRequest({ tenantId: tenantA, format: 'ndjson', ...input });

    async function whole(input: Partial<ExportInput> & { dataset: string }): Promise<string[]> {
      const { out, text } = sink();
      await exportDataset(t.database, request(input), out, { anonymizeKey: KEY });
      return lines(text());
    }

    for (const dataset of PAGED) {
      it(`walks ${dataset} with the cursor: every row exactly once, in order`, async () => {
        const expected = await whole({ dataset });
        const got: string[] = [];
        let cursor: string | undefined;
        let pages = 0;
        for (;;) {
          const { out, text } = sink();
          const page = await exportPage(t.database, request({ dataset }), out, {
            pageSize: 7,
            cursor,
            anonymizeKey: KEY,
          });
          const rows = lines(text());
          got.push(...rows);
          pages++;
          expect(page.records).toBe(rows.length);
          expect(page.total).toBe(expected.length);
          expect(page.pageCount).toBe(Math.ceil(expected.length / 7));
          if (page.endOfStream) break;
          expect(rows).toHaveLength(7);
          cursor = page.nextCursor!;
          expect(pages).toBeLessThan(1000);
        }
        expect(got).toEqual(expected);
        expect(pages).toBe(Math.max(1, Math.ceil(expected.length / 7)));
      });
    }

    it('pages by number: page N holds rows (N-1)*size+1 .. N*size, past the end is empty', async () => {
      const expected = await whole({ dataset: 'messages' });
      const size = 9;
      const pages = Math.ceil(expected.length / size);
      const got: string[] = [];
      for (let page = 1; page <= pages; page++) {
        const { out, text } = sink();
        const plan = await planPage(t.database, request({ dataset: 'messages' }), {
          pageSize: size,
          page,
          anonymizeKey: KEY,
        });
        await plan.write(out);
        expect(plan.endOfStream).toBe(page === pages);
        expect(plan.pageCount).toBe(pages);
        expect(lines(text())).toEqual(expected.slice((page - 1) * size, page * size));
        got.push(...lines(text()));
      }
      expect(got).toEqual(expected);
      const { out, text } = sink();
      const beyond = await exportPage(t.database, request({ dataset: 'messages' }), out, {
        pageSize: size,
        page: pages + 1,
      });
      expect(beyond.records).toBe(0);
      expect(beyond.endOfStream).toBe(true);
      expect(text()).toBe('');
    });

    it('keeps a walk exact while rows are inserted and deleted between pages', async () => {
      const table = await t.database.db
        .selectFrom('customers')
        .select(['id', 'created_at'])
        .where('tenant_id', '=', tenantA)
        .orderBy('created_at')
        .orderBy('id')
        .execute();
      const ids: string[] = [];
      let cursor: string | undefined;
      let step = 0;
      for (;;) {
        const { out, text } = sink();
        const page = await exportPage(
          t.database,
          request({ dataset: 'customers', columns: 'customer_id' }),
          out,
          {
            pageSize: 5,
            cursor,
          },
        );
        ids.push(...lines(text()).map((l) => (JSON.parse(l) as { customer_id: string }).customer_id));
        if (page.endOfStream) break;
        cursor = page.nextCursor!;
        if (step++ === 1) {
          // Behind the cursor: a new oldest customer (next walk only); ahead: a row removed.
          await sql`INSERT INTO customers (id, tenant_id, segment, created_at) VALUES
            ('00000000-0000-4000-8000-00000000c0de', ${tenantA}, 'smb', '2000-01-01T00:00:00Z')`.execute(
            t.database.db,
          );
          await sql`DELETE FROM customers WHERE id = ${table.at(-1)!.id}`.execute(t.database.db);
        }
      }
      expect(ids).toEqual(table.slice(0, -1).map((r) => r.id));
      await sql`DELETE FROM customers WHERE id = '00000000-0000-4000-8000-00000000c0de'`.execute(
        t.database.db,
      );
    });

    async function get(url: string, key = keys.adminA!) {
      return app.inject({ method: 'GET', url, headers: bearer(key) });
    }

    it('answers with the headers of a paged download', async () => {
      const count = await t.database.db
        .selectFrom('conversations')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('tenant_id', '=', tenantA)
        .executeTakeFirstOrThrow();
      const total = Number(count.n);
      const res = await get('/api/v1/export/conversations?page_size=15&columns=conversation_id,tenant_id');
      expect(res.statusCode).toBe(200);
      const day = new Date().toISOString().slice(0, 10);
      expect(res.headers['content-type']).toBe('text/csv; charset=utf-8');
      expect(res.headers['content-disposition']).toContain(`filename="conversations_${day}.csv"`);
      expect(res.headers['x-total-records']).toBe(String(total));
      expect(res.headers['x-page-count']).toBe(String(Math.ceil(total / 15)));
      expect(res.headers['x-export-id']).toMatch(/^[0-9a-f-]{36}$/);
      expect(res.headers['x-end-of-stream']).toBe('false');
      const cursor = res.headers['x-next-cursor'] as string;
      expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(res.headers.link).toBe(
        `</api/v1/export/conversations?page_size=15&columns=conversation_id%2Ctenant_id&cursor=${cursor}>; rel="next"`,
      );
      expect(res.headers['content-encoding']).toBeUndefined();
      const rows = parseCsv(res.body, { columns: true }) as { conversation_id: string; tenant_id: string }[];
      expect(rows).toHaveLength(15);
      expect(new Set(rows.map((r) => r.tenant_id))).toEqual(new Set([tenantA]));

      // Following the links collects every conversation exactly once, and the last page says so.
      const seen = rows.map((r) => r.conversation_id);
      let link = res.headers.link as string | undefined;
      let last = res;
      while (link) {
        last = await get(/^<([^>]+)>/.exec(link)![1]!);
        expect(last.statusCode).toBe(200);
        seen.push(
          ...(parseCsv(last.body, { columns: true }) as { conversation_id: string }[]).map(
            (r) => r.conversation_id,
          ),
        );
        link = last.headers.link as string | undefined;
      }
      expect(last.headers['x-end-of-stream']).toBe('true');
      expect(seen).toHaveLength(total);
      expect(new Set(seen).size).toBe(total);
    });

    it('pages by number over HTTP with a Link to the next number', async () => {
      const res = await get('/api/v1/export/messages?page=2&page_size=10&format=ndjson');
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('application/x-ndjson');
      expect(lines(res.body)).toHaveLength(10);
      expect(res.headers.link).toBe(
        '</api/v1/export/messages?page=3&page_size=10&format=ndjson>; rel="next"',
      );
      const expected = await whole({ dataset: 'messages', columns: 'message_id' });
      const ids = lines(res.body).map((l) => (JSON.parse(l) as { message_id: string }).message_id);
      expect(ids).toEqual(
        expected.slice(10, 20).map((l) => (JSON.parse(l) as { message_id: string }).message_id),
      );
    });

    it('gzips the body with Content-Encoding and the same bytes inside', async () => {
      const plain = await get(
        '/api/v1/export/messages?page_size=50&columns=message_id,timestamp,message_content',
      );
      const zipped = await get(
        '/api/v1/export/messages?page_size=50&columns=message_id,timestamp,message_content&compression=gzip',
      );
      expect(zipped.statusCode).toBe(200);
      expect(zipped.headers['content-encoding']).toBe('gzip');
      expect(zipped.headers['content-disposition']).toContain('.csv"');
      expect(zipped.rawPayload.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
      expect(gunzipSync(zipped.rawPayload).toString('utf8')).toBe(plain.body);
    });

    it('writes JSON pages with the cursor and end of stream in the metadata', async () => {
      const res = await get('/api/v1/export/sites?format=json&page_size=1');
      expect(res.statusCode).toBe(200);
      const doc = JSON.parse(res.body) as { export_metadata: Record<string, unknown>; data: unknown[] };
      expect(doc.data).toHaveLength(1);
      expect(doc.export_metadata.next_cursor).toBe(res.headers['x-next-cursor']);
      expect(doc.export_metadata.end_of_stream).toBe(res.headers['x-end-of-stream'] === 'true');
      expect(doc.export_metadata.export_id).toBe(res.headers['x-export-id']);
    });

    it('filters by day range, status, a declared filter and analytics options', async () => {
      const res = await get(
        '/api/v1/export/conversations?format=ndjson&status=resolved&escalated=false&columns=conversation_status,escalated,start_timestamp&page_size=10000',
      );
      expect(res.statusCode).toBe(200);
      const rows = lines(res.body).map(
        (l) => JSON.parse(l) as { conversation_status: string; escalated: boolean },
      );
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.every((r) => r.conversation_status === 'resolved' && r.escalated === false)).toBe(true);

      const { since } = defaultWindow();
      const day = new Date(since.getTime() + 20 * 86_400_000).toISOString().slice(0, 10);
      const ranged = await get(
        `/api/v1/export/messages?format=ndjson&start_date=${day}&end_date=${day}&page_size=10000`,
      );
      expect(ranged.statusCode).toBe(200);
      const expected = await whole({ dataset: 'messages', from: day, to: day, columns: 'message_id' });
      expect(ranged.headers['x-total-records']).toBe(String(expected.length));

      const sites = await t.database.db
        .selectFrom('sites')
        .select('url')
        .where('tenant_id', '=', tenantA)
        .execute();
      const pick = sites.slice(0, 2).map((s) => s.url);
      const analytics = await get(
        `/api/v1/export/analytics?format=ndjson&granularity=weekly&metrics=performance&page_size=10000${pick
          .map((u) => `&site_urls[]=${encodeURIComponent(u)}`)
          .join('')}`,
      );
      expect(analytics.statusCode).toBe(200);
      const periods = lines(analytics.body).map(
        (l) => JSON.parse(l) as { site_url: string; total_conversations: number },
      );
      expect(periods.length).toBeGreaterThan(0);
      expect(new Set(periods.map((p) => p.site_url)).size).toBeLessThanOrEqual(pick.length);
      expect(periods.every((p) => pick.includes(p.site_url))).toBe(true);
      expect(Object.keys(periods[0]!)).not.toContain('conversion_rate');
    });

    it('refuses bad parameters with 400 naming the parameter', async () => {
      const cases: [string, string][] = [
        ['/api/v1/export/messages?page_size=0', 'page_size'],
        ['/api/v1/export/messages?page_size=10001', 'page_size'],
        ['/api/v1/export/messages?page=0', 'page'],
        ['/api/v1/export/messages?start_date=2025-02-30', 'start_date'],
        ['/api/v1/export/messages?end_date=yesterday', 'end_date'],
        ['/api/v1/export/messages?start_date=2025-03-02&end_date=2025-03-01', 'end_date'],
        ['/api/v1/export/messages?colour=blue', 'colour'],
        ['/api/v1/export/customers?status=resolved', 'status'],
        ['/api/v1/export/settings?start_date=2025-01-01', 'start_date'],
        ['/api/v1/export/messages?granularity=daily', 'granularity'],
        ['/api/v1/export/messages?format=docx', 'format'],
        ['/api/v1/export/messages?include_pii=maybe', 'include_pii'],
        ['/api/v1/export/messages?columns=message_id,nope', 'columns'],
        ['/api/v1/export/messages?status=closed', 'status'],
        ['/api/v1/export/messages?cursor=not-a-cursor', 'cursor'],
        ['/api/v1/export/messages?page=2&cursor=abc', 'page'],
        ['/api/v1/export/nothing', 'dataset'],
        ['/api/v1/export/account?page=2', 'page'],
      ];
      for (const [url, parameter] of cases) {
        const res = await get(url);
        expect({ url, status: res.statusCode }).toEqual({ url, status: 400 });
        const problem = res.json() as { code: string; errors?: { parameter: string }[]; detail: string };
        expect({ url, parameter: problem.errors?.[0]?.parameter }).toEqual({ url, parameter });
      }
    });

    it('refuses a site the tenant does not have, naming the value and the known sites', async () => {
      const known = (
        await t.database.db
          .selectFrom('sites')
          .select('url')
          .where('tenant_id', '=', tenantA)
          .orderBy('url')
          .execute()
      ).map((s) => s.url);
      const unknown = 'https://shop.acme.example';
      for (const [url, parameter] of [
        [`/api/v1/export/conversations?site_url=${encodeURIComponent(unknown)}`, 'site_url'],
        [`/api/v1/export/messages?site_url=${encodeURIComponent(unknown)}`, 'site_url'],
        [
          `/api/v1/export/analytics?site_urls[]=${encodeURIComponent(known[0]!)}&site_urls[]=${encodeURIComponent(unknown)}`,
          'site_urls',
        ],
        [`/api/v1/export/analytics?site_url=${encodeURIComponent(unknown)}`, 'site_urls'],
      ] as const) {
        const res = await get(url);
        expect(res.statusCode, url).toBe(400);
        const problem = res.json();
        expect(problem.code).toBe('invalid_parameter');
        expect(problem.errors[0]).toMatchObject({ parameter, accepted: known });
        expect(problem.detail).toContain(`"${unknown}" is not a site of this tenant`);
      }
      // Another tenant's site is unknown here too.
      const foreign = await t.database.db
        .selectFrom('sites')
        .select('url')
        .where('tenant_id', '=', tenantB)
        .executeTakeFirstOrThrow();
      if (!known.includes(foreign.url))
        expect(
          (await get(`/api/v1/export/conversations?site_url=${encodeURIComponent(foreign.url)}`)).statusCode,
        ).toBe(400);
      expect(
        (await get(`/api/v1/export/conversations?site_url=${encodeURIComponent(known[0]!)}`)).statusCode,
      ).toBe(200);
    });

    it("never shows another tenant's rows, whatever cursor is sent", async () => {
      const fromB = await get('/api/v1/export/conversations?page_size=3&format=ndjson', keys.adminB);
      const cursorB = fromB.headers['x-next-cursor'] as string;
      const crossed = await get(`/api/v1/export/conversations?page_size=3&format=ndjson&cursor=${cursorB}`);
      expect(crossed.statusCode).toBe(400);
      expect(crossed.json().errors[0].parameter).toBe('cursor');
      expect(crossed.body).not.toContain(tenantB);

      const own = await get('/api/v1/export/conversations?page_size=10000&format=ndjson&columns=tenant_id');
      const tenants = new Set(lines(own.body).map((l) => (JSON.parse(l) as { tenant_id: string }).tenant_id));
      expect(tenants).toEqual(new Set([tenantA]));
    });

    it('applies the role: analysts get no personal data, agents only their conversations', async () => {
      const refused = await get('/api/v1/export/conversations?include_pii=true', keys.analystA);
      expect(refused.statusCode).toBe(403);
      expect(refused.json().code).toBe('forbidden');
      const refusals = await sql<{ actor: string; error: string }>`
        SELECT actor, error FROM audit_events
        WHERE tenant_id = ${tenantA} AND action = 'export.page' AND success = false AND data_type = 'conversations'`.execute(
        t.database.db,
      );
      expect(refusals.rows).toHaveLength(1);
      expect(refusals.rows[0]!.actor).toMatch(/^api_key:/);
      expect(refusals.rows[0]!.error).toContain('personal data');
      expect((await get('/api/v1/export/customers', keys.analystA)).statusCode).toBe(403);
      const anonymized = await get(
        '/api/v1/export/conversations?format=ndjson&page_size=10000&columns=customer_email',
        keys.analystA,
      );
      expect(anonymized.statusCode).toBe(200);
      expect(anonymized.body).not.toMatch(/@/);

      const agent = await t.database.db
        .selectFrom('api_keys' as never)
        .select('team_member_id' as never)
        .where('role' as never, '=', 'agent' as never)
        .where('tenant_id' as never, '=', tenantA as never)
        .executeTakeFirstOrThrow();
      const member = (agent as { team_member_id: string }).team_member_id;
      const mine = await sql<{ id: string }>`
        SELECT id FROM conversations c WHERE c.tenant_id = ${tenantA} AND (c.assigned_agent_id = ${member}
          OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.sender_id = ${member}))`.execute(
        t.database.db,
      );
      const res = await get(
        '/api/v1/export/conversations?format=ndjson&page_size=10000&columns=conversation_id',
        keys.agentA,
      );
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-total-records']).toBe(String(mine.rows.length));
      const got = lines(res.body).map((l) => (JSON.parse(l) as { conversation_id: string }).conversation_id);
      expect(new Set(got)).toEqual(new Set(mine.rows.map((r) => r.id)));
      expect((await get('/api/v1/export/customers', keys.agentA)).statusCode).toBe(403);
    });

    it('answers HEAD with the headers only, without running the export', async () => {
      const head = await app.inject({
        method: 'HEAD',
        url: '/api/v1/export/messages?page_size=5',
        headers: bearer(keys.adminA!),
      });
      expect(head.statusCode).toBe(200);
      expect(head.body).toBe('');
      expect(Number(head.headers['x-total-records'])).toBeGreaterThan(5);
      expect(head.headers['x-next-cursor']).toBeTruthy();
      const id = head.headers['x-export-id'] as string;
      const audited = await sql`SELECT 1 FROM audit_events WHERE target_id = ${id}`.execute(t.database.db);
      expect(audited.rows).toHaveLength(0);
    });

    it('sends knowledge_base and account as one document', async () => {
      const res = await get('/api/v1/export/account');
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('application/json');
      expect(res.headers['x-end-of-stream']).toBe('true');
      expect(res.headers['x-page-count']).toBe('1');
      expect(JSON.parse(res.body)).toBeTypeOf('object');
      const kb = await get('/api/v1/export/knowledge_base');
      expect(kb.statusCode).toBe(200);
      expect(kb.headers['content-disposition']).toContain('knowledge_base_');
      const docs = await sql<{
        n: number;
      }>`SELECT count(*)::int AS n FROM documents WHERE tenant_id = ${tenantA}`.execute(t.database.db);
      expect(kb.headers['x-total-records']).toBe(String(docs.rows[0]!.n));
      expect((JSON.parse(kb.body) as { documents: unknown[] }).documents).toHaveLength(docs.rows[0]!.n);
    });

    it('records an export.page audit entry per request', async () => {
      const res = await get('/api/v1/export/sites?page_size=2');
      expect(res.statusCode).toBe(200);
      const id = res.headers['x-export-id'] as string;
      let entry: Record<string, unknown> | undefined;
      for (let i = 0; i < 100 && !entry; i++) {
        const found = await sql<
          Record<string, unknown>
        >`SELECT * FROM audit_events WHERE target_id = ${id}`.execute(t.database.db);
        entry = found.rows[0];
        if (!entry) await new Promise((r) => setImmediate(r));
      }
      expect(entry).toMatchObject({
        action: 'export.page',
        data_type: 'sites',
        success: true,
        tenant_id: tenantA,
      });
      expect(Number(entry!.record_count)).toBe(2);
    });

    it('limits the history to the plan: an older start_date is refused, none starts at the window', async () => {
      await sql`UPDATE tenants SET plan = 'starter' WHERE id = ${tenantA}`.execute(t.database.db);
      try {
        const starter = (await createApiKey(t.database, { tenantId: tenantA, role: 'admin' })).key;
        const old = await get('/api/v1/export/messages?start_date=2001-01-01', starter);
        expect(old.statusCode).toBe(429);
        expect(old.json().code).toBe('quota_exceeded');
        const first = new Date(Date.now() - 183 * 86_400_000).toISOString().slice(0, 10);
        const res = await get('/api/v1/export/messages?page_size=1', starter);
        const expected = await whole({ dataset: 'messages', from: first, columns: 'message_id' });
        expect(res.headers['x-total-records']).toBe(String(expected.length));
      } finally {
        await sql`UPDATE tenants SET plan = 'enterprise' WHERE id = ${tenantA}`.execute(t.database.db);
      }
    });
  });
}
