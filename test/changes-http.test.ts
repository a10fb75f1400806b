import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { parse as parseCsv } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import { defaultWindow, seed } from '../src/seed/seed.ts';
import { authTestConfig, bearer } from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { lines } from './support/fixtures/streams.ts';
import { settle } from './support/wait.ts';

type Row = Record<string, unknown>;

for (const dialect of DIALECTS) {
  describe(`change feed over HTTP on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let tenantA: string;
    let keyA: string;
    let keyB: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 2,
        conversations: 20,
        messagesPerConversation: 3,
        seed: 33,
        ...defaultWindow(),
        secretKey: 'changes-http-test-secret-0123456789abcdef',
      });
      tenantA = summary.tenants[0]!.id;
      await sql`UPDATE tenants SET plan = 'enterprise'`.execute(t.database.db);
      app = await buildApp({ database: t.database, config: authTestConfig() });
      keyA = (await createApiKey(t.database, { tenantId: tenantA, role: 'admin' })).key;
      keyB = (await createApiKey(t.database, { tenantId: summary.tenants[1]!.id, role: 'admin' })).key;
    }, 120_000);
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    const get = (url: string, key = keyA) => app.inject({ method: 'GET', url, headers: bearer(key) });

    async function source(dataset: string, idField: string): Promise<Map<string, Row>> {
      const chunks: Buffer[] = [];
      const out = new Writable({
        write(chunk, _e, done) {
          chunks.push(chunk as Buffer);
          done();
        },
      });
      await exportDataset(
        t.database,
        parseExportRequest({ tenantId: tenantA, dataset, format: 'ndjson', pii: 'full' }),
        out,
      );
      const rows = lines(Buffer.concat(chunks).toString('utf8')).map((l) => JSON.parse(l) as Row);
      return new Map(rows.map((r) => [String(r[idField]), r]));
    }

    /** Follows X-Next-Cursor until X-End-Of-Stream: true, applying every page to `state`. */
    async function follow(dataset: string, idField: string, since: string, state: Map<string, Row>) {
      let cursor = since;
      let calls = 0;
      let deletes = 0;
      for (;;) {
        await settle(t.database);
        const res = await get(
          `/api/v1/export/${dataset}?updated_since=${cursor}&page_size=4&format=ndjson&include_pii=true`,
        );
        expect(res.statusCode).toBe(200);
        expect(res.headers['content-type']).toBe('application/x-ndjson');
        expect(res.headers['x-export-id']).toMatch(/^[0-9a-f-]{36}$/);
        expect(Number(res.headers['x-total-records'])).toBeGreaterThanOrEqual(0);
        const rows = lines(res.body).map((l) => JSON.parse(l) as Row);
        expect(rows.length).toBeLessThanOrEqual(4);
        for (const row of rows) {
          if (row._deleted === true) {
            state.delete(String(row[idField]));
            deletes++;
          } else state.set(String(row[idField]), row);
        }
        cursor = res.headers['x-next-cursor'] as string;
        expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
        calls++;
        if (res.headers['x-end-of-stream'] === 'true') {
          expect(res.headers.link).toBeUndefined();
          break;
        }
        expect(res.headers['x-end-of-stream']).toBe('false');
        expect(res.headers.link).toContain(`updated_since=${cursor}`);
        expect(calls).toBeLessThan(200);
      }
      return { cursor, calls, deletes };
    }

    it('starts from updated_since=0, then sends changes and tombstones until caught up', async () => {
      const mirror = new Map<string, Row>();
      const first = await follow('customers', 'customer_id', '0', mirror);
      expect(first.calls).toBeGreaterThan(1);
      expect(mirror).toEqual(await source('customers', 'customer_id'));

      const ids = [...mirror.keys()].sort();
      await sql`UPDATE customers SET segment = 'enterprise' WHERE id = ${ids[0]}`.execute(t.database.db);
      await sql`DELETE FROM customers WHERE id = ${ids[1]}`.execute(t.database.db);
      await sql`INSERT INTO customers (id, tenant_id, segment) VALUES (${randomUUID()}, ${tenantA}, 'smb')`.execute(
        t.database.db,
      );
      const second = await follow('customers', 'customer_id', first.cursor, mirror);
      expect(second.deletes).toBe(1);
      expect(mirror.has(ids[1]!)).toBe(false);
      expect(mirror).toEqual(await source('customers', 'customer_id'));

      // Caught up: one call, nothing in it, and a cursor to keep.
      const idle = await get(`/api/v1/export/customers?updated_since=${second.cursor}&format=ndjson`);
      expect(idle.headers['x-end-of-stream']).toBe('true');
      expect(idle.headers['x-total-records']).toBe('0');
      expect(idle.body).toBe('');
    });

    it('takes an empty updated_since as from the beginning', async () => {
      const res = await get('/api/v1/export/sites?updated_since=&format=ndjson&page_size=10000');
      expect(res.statusCode).toBe(200);
      const count = await sql<{
        n: number;
      }>`SELECT count(*)::int AS n FROM sites WHERE tenant_id = ${tenantA}`.execute(t.database.db);
      expect(lines(res.body)).toHaveLength(count.rows[0]!.n);
      expect(res.headers['x-end-of-stream']).toBe('true');
    });

    it('marks changes with _op in CSV and puts the cursor in JSON metadata', async () => {
      const start = (await get('/api/v1/export/settings?updated_since=0&page_size=10000')).headers[
        'x-next-cursor'
      ] as string;
      await sql`DELETE FROM settings WHERE tenant_id = ${tenantA} AND key = (
        SELECT min(key) FROM settings WHERE tenant_id = ${tenantA})`.execute(t.database.db);
      await sql`UPDATE settings SET value = '"x"' WHERE tenant_id = ${tenantA} AND key = (
        SELECT max(key) FROM settings WHERE tenant_id = ${tenantA})`.execute(t.database.db);
      await settle(t.database);
      const csv = await get(`/api/v1/export/settings?updated_since=${start}`);
      expect(csv.statusCode).toBe(200);
      expect(csv.headers['content-type']).toBe('text/csv; charset=utf-8');
      const rows = parseCsv(csv.body, { columns: true }) as Record<string, string>[];
      expect(rows.map((r) => r._op)).toEqual(['delete', 'upsert']);
      expect(Object.keys(rows[0]!)).toEqual(['_op', 'key', 'value', 'updated_at', '_deleted_at']);
      expect(csv.headers['x-total-records']).toBe('2');

      const json = await get(`/api/v1/export/settings?updated_since=${start}&format=json`);
      const doc = JSON.parse(json.body) as { export_metadata: Row; data: Row[] };
      expect(doc.export_metadata.next_cursor).toBe(json.headers['x-next-cursor']);
      expect(doc.export_metadata.end_of_stream).toBe(true);
      expect(doc.data[0]).toMatchObject({ _deleted: true, key: rows[0]!.key });
      expect(doc.data[1]).toMatchObject({ key: rows[1]!.key, value: 'x' });
    });

    it('gzips a change page', async () => {
      const res = await get('/api/v1/export/sites?updated_since=0&compression=gzip&format=ndjson');
      expect(res.headers['content-encoding']).toBe('gzip');
      expect(res.rawPayload.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    });

    it('refuses what the feed cannot do, naming the parameter', async () => {
      const cursorB = (await get('/api/v1/export/customers?updated_since=0&page_size=1', keyB)).headers[
        'x-next-cursor'
      ] as string;
      const cursorSites = (await get('/api/v1/export/sites?updated_since=0&page_size=1')).headers[
        'x-next-cursor'
      ] as string;
      const cases: [string, string][] = [
        ['/api/v1/export/analytics?updated_since=0', 'updated_since'],
        ['/api/v1/export/revenue_attribution?updated_since=0', 'updated_since'],
        ['/api/v1/export/knowledge_base?updated_since=0', 'updated_since'],
        ['/api/v1/export/customers?updated_since=0&page=2', 'page'],
        ['/api/v1/export/customers?updated_since=0&cursor=abc', 'cursor'],
        ['/api/v1/export/customers?updated_since=%25%25', 'updated_since'],
        [`/api/v1/export/customers?updated_since=${cursorB}`, 'updated_since'],
        [`/api/v1/export/customers?updated_since=${cursorSites}`, 'updated_since'],
        ['/api/v1/export/customers?updated_since=0&columns=email', 'columns'],
        ['/api/v1/export/customers?updated_since=0&page_size=0', 'page_size'],
      ];
      for (const [url, parameter] of cases) {
        const res = await get(url);
        expect({ url, status: res.statusCode }).toEqual({ url, status: 400 });
        expect({ url, parameter: res.json().errors?.[0]?.parameter }).toEqual({ url, parameter });
      }
    });

    it('records an export.changes audit entry', async () => {
      const res = await get('/api/v1/export/customers?updated_since=0&page_size=2&format=ndjson');
      expect(lines(res.body)).toHaveLength(2);
      const id = res.headers['x-export-id'] as string;
      let entry: Row | undefined;
      for (let i = 0; i < 100 && !entry; i++) {
        entry = (await sql<Row>`SELECT * FROM audit_events WHERE target_id = ${id}`.execute(t.database.db))
          .rows[0];
        if (!entry) await new Promise((r) => setImmediate(r));
      }
      expect(entry).toMatchObject({ action: 'export.changes', data_type: 'customers', success: true });
      expect(Number(entry!.record_count)).toBe(2);
    });
  });
}
