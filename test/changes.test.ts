import { randomUUID } from 'node:crypto';
import { parse as parseCsv } from 'csv-parse/sync';
import { parquetReadObjects } from 'hyparquet';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ChangeCursor,
  decodeChangeCursor,
  encodeChangeCursor,
  exportChanges,
  planChanges,
} from '../src/collect/changes.ts';
import { type ExportInput, parseExportRequest } from '../src/collect/request.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { defaultWindow, seed } from '../src/seed/seed.ts';
import { createTestDatabase, DIALECTS, TEST_DATABASE_URL, type TestDatabase } from './support/databases.ts';
import { lines, sink } from './support/fixtures/streams.ts';
import { settle } from './support/wait.ts';

const KEY = 'cd'.repeat(16);

/** Tracked datasets and the field that identifies a record. */
const FEEDS: Record<string, string> = {
  conversations: 'conversation_id',
  messages: 'message_id',
  customers: 'customer_id',
  consent_records: 'consent_id',
  team_members: 'team_member_id',
  activity_logs: 'log_id',
  billing: 'invoice_id',
  sites: 'site_id',
  settings: 'key',
  integrations: 'integration_id',
};

type Row = Record<string, unknown>;

/** A consumer of the feed: upserts rows by id, deletes tombstones; returns what it applied. */
function apply(
  state: Map<string, Row>,
  ndjson: string,
  idField: string,
): { upserts: number; deletes: number } {
  let upserts = 0;
  let deletes = 0;
  for (const line of lines(ndjson)) {
    const row = JSON.parse(line) as Row;
    const id = String(row[idField]);
    if (row._deleted === true) {
      expect(Object.keys(row)).toEqual(['_deleted', idField, 'deleted_at']);
      state.delete(id);
      deletes++;
    } else {
      state.set(id, row);
      upserts++;
    }
  }
  return { upserts, deletes };
}

for (const dialect of DIALECTS) {
  describe(`change feed on ${dialect}`, () => {
    let t: TestDatabase;
    let tenantId: string;
    let otherTenant: string;
    /** The consumer's copy per dataset and where it left off. */
    const mirrors = new Map<string, { state: Map<string, Row>; cursor: ChangeCursor | null }>();

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 2,
        conversations: 25,
        messagesPerConversation: 3,
        seed: 21,
        ...defaultWindow(),
        secretKey: 'changes-test-secret-0123456789abcdef-xyz',
      });
      tenantId = summary.tenants[0]!.id;
      otherTenant = summary.tenants[1]!.id;
    }, 120_000);
    afterAll(() => t?.drop());

    const request = (input: Partial<ExportInput> & { dataset: string }) =>
      parseExportRequest({ tenantId, format: 'ndjson', pii: 'full', ...input });

    /** The dataset as it is now, by id. */
    async function source(dataset: string): Promise<Map<string, Row>> {
      const { out, text } = sink();
      await exportDataset(t.database, request({ dataset }), out, { anonymizeKey: KEY });
      const idField = FEEDS[dataset]!;
      return new Map(
        lines(text()).map((l) => [String((JSON.parse(l) as Row)[idField]), JSON.parse(l) as Row]),
      );
    }

    /** Calls the feed page by page until it says it is caught up; applies everything. */
    async function catchUp(
      dataset: string,
      pageSize: number | undefined,
      options: { settle?: boolean } = {},
    ) {
      if (options.settle ?? true) await settle(t.database);
      const mirror = mirrors.get(dataset) ?? { state: new Map<string, Row>(), cursor: null };
      mirrors.set(dataset, mirror);
      let calls = 0;
      let upserts = 0;
      let deletes = 0;
      for (;;) {
        const { out, text } = sink();
        const result = await exportChanges(t.database, request({ dataset }), mirror.cursor, out, {
          limit: pageSize,
          anonymizeKey: KEY,
        });
        const applied = apply(mirror.state, text(), FEEDS[dataset]!);
        expect(applied).toEqual({ upserts: result.records, deletes: result.tombstones });
        if (pageSize) expect(result.records + result.tombstones).toBeLessThanOrEqual(pageSize);
        upserts += applied.upserts;
        deletes += applied.deletes;
        // The cursor goes through its text form, as a schedule would store it.
        mirror.cursor = decodeChangeCursor(encodeChangeCursor(result.nextCursor), { tenantId, dataset });
        calls++;
        if (result.endOfStream) break;
        expect(calls).toBeLessThan(500);
      }
      return { calls, upserts, deletes };
    }

    it('first run: every row of every tracked dataset, no tombstones', async () => {
      for (const dataset of Object.keys(FEEDS)) {
        const run = await catchUp(dataset, 4);
        const expected = await source(dataset);
        expect(run.deletes).toBe(0);
        expect(run.upserts).toBe(expected.size);
        expect(mirrors.get(dataset)!.state).toEqual(expected);
      }
    });

    it('an immediate second run is empty and caught up at once', async () => {
      for (const dataset of ['conversations', 'settings']) {
        const run = await catchUp(dataset, 4);
        expect(run).toEqual({ calls: 1, upserts: 0, deletes: 0 });
      }
    });

    it('inserts, updates and deletes between runs: the mirror equals the source after applying', async () => {
      const db = t.database.db;
      const customers = await db
        .selectFrom('customers')
        .select('id')
        .where('tenant_id', '=', tenantId)
        .orderBy('id')
        .execute();
      await db
        .updateTable('customers')
        .set({ name: 'Renamed Customer' })
        .where('id', 'in', [customers[0]!.id, customers[1]!.id])
        .execute();
      // Deleting a customer cascades to consent records and sets conversations.customer_id NULL.
      await db.deleteFrom('customers').where('id', '=', customers[2]!.id).execute();
      await db
        .insertInto('customers')
        .values({ id: randomUUID(), tenant_id: tenantId, email: 'new@example.com', segment: 'smb' })
        .execute();
      const conversations = await db
        .selectFrom('conversations')
        .select('id')
        .where('tenant_id', '=', tenantId)
        .orderBy('id')
        .execute();
      await db
        .updateTable('conversations')
        .set({ status: 'resolved' })
        .where('id', '=', conversations[0]!.id)
        .execute();
      // Deleting a conversation cascades to its messages: tombstones for both.
      await db.deleteFrom('conversations').where('id', '=', conversations[1]!.id).execute();
      await db
        .insertInto('settings')
        .values({ tenant_id: tenantId, key: 'feed.test', value: JSON.stringify({ on: true }) })
        .execute();
      const settings = await db
        .selectFrom('settings')
        .select('key')
        .where('tenant_id', '=', tenantId)
        .execute();
      await db
        .deleteFrom('settings')
        .where('tenant_id', '=', tenantId)
        .where('key', '=', settings[0]!.key)
        .execute();
      // Another tenant's changes never show up.
      await db.updateTable('customers').set({ name: 'Other' }).where('tenant_id', '=', otherTenant).execute();

      const expectations: Record<string, { deletes: number; minUpserts: number }> = {
        customers: { deletes: 1, minUpserts: 3 },
        conversations: { deletes: 1, minUpserts: 1 },
        messages: { deletes: 1, minUpserts: 0 },
        consent_records: { deletes: 0, minUpserts: 0 },
        settings: { deletes: 1, minUpserts: 1 },
      };
      for (const [dataset, expectation] of Object.entries(expectations)) {
        const run = await catchUp(dataset, 3);
        expect(mirrors.get(dataset)!.state).toEqual(await source(dataset));
        if (dataset !== 'messages' && dataset !== 'consent_records')
          expect(run.deletes).toBe(expectation.deletes);
        else expect(run.deletes).toBeGreaterThanOrEqual(expectation.deletes);
        expect(run.upserts).toBeGreaterThanOrEqual(expectation.minUpserts);
        const total = await source(dataset);
        expect(run.upserts).toBeLessThan(total.size);
      }
    });

    it('writes during a run land in this run or the next, never in neither', async () => {
      const db = t.database.db;
      const ids = (
        await db
          .selectFrom('customers')
          .select('id')
          .where('tenant_id', '=', tenantId)
          .orderBy('id')
          .execute()
      ).map((r) => r.id);
      const mirror = mirrors.get('customers')!;
      // Change every customer, then read the run two rows at a time while writing between calls.
      await db
        .updateTable('customers')
        .set({ phone: '+1 555 0100' })
        .where('tenant_id', '=', tenantId)
        .execute();
      await settle(t.database);
      let cursor = mirror.cursor;
      let step = 0;
      for (;;) {
        const { out, text } = sink();
        const result = await exportChanges(t.database, request({ dataset: 'customers' }), cursor, out, {
          limit: 2,
          anonymizeKey: KEY,
        });
        apply(mirror.state, text(), 'customer_id');
        cursor = result.nextCursor;
        if (result.endOfStream) break;
        if (step === 1) {
          await db
            .updateTable('customers')
            .set({ name: 'During the run' })
            .where('id', 'in', ids.slice(0, 3))
            .execute();
          await db.updateTable('customers').set({ name: 'Late' }).where('id', 'in', ids.slice(-3)).execute();
          await db.deleteFrom('customers').where('id', '=', ids.at(-4)!).execute();
          await db
            .insertInto('customers')
            .values({
              id: randomUUID(),
              tenant_id: tenantId,
              email: 'during@example.com',
              segment: 'consumer',
            })
            .execute();
        }
        step++;
      }
      mirror.cursor = cursor;
      expect(step).toBeGreaterThanOrEqual(2);
      await catchUp('customers', 2);
      expect(mirror.state).toEqual(await source('customers'));
    });

    it('writes tombstones as _op rows in CSV and as _deleted objects in NDJSON and JSON', async () => {
      const start = (await exportChanges(t.database, request({ dataset: 'sites' }), null, sink().out))
        .nextCursor;
      const site = await t.database.db
        .insertInto('sites')
        .values({ id: randomUUID(), tenant_id: tenantId, url: 'https://gone.example', name: 'Gone' })
        .returning('id')
        .executeTakeFirstOrThrow();
      await t.database.db
        .updateTable('sites')
        .set({ name: 'Renamed' })
        .where('tenant_id', '=', tenantId)
        .where('url', '!=', 'https://gone.example')
        .execute();
      await t.database.db.deleteFrom('sites').where('id', '=', site.id).execute();
      const sites = await t.database.db
        .selectFrom('sites')
        .select('id')
        .where('tenant_id', '=', tenantId)
        .execute();

      await settle(t.database);
      const csv = sink();
      const c = await exportChanges(t.database, request({ dataset: 'sites', format: 'csv' }), start, csv.out);
      const rows = parseCsv(csv.text(), { columns: true }) as Record<string, string>[];
      expect(Object.keys(rows[0]!)).toEqual([
        '_op',
        'site_id',
        'tenant_id',
        'site_url',
        'name',
        'created_at',
        '_deleted_at',
      ]);
      expect(rows[0]).toMatchObject({ _op: 'delete', site_id: site.id, tenant_id: '', name: '' });
      expect(rows[0]!._deleted_at).toMatch(/^\d{4}-\d{2}-\d{2}T.*Z$/);
      expect(
        rows.slice(1).every((r) => r._op === 'upsert' && r.name === 'Renamed' && r._deleted_at === ''),
      ).toBe(true);
      expect(rows).toHaveLength(1 + sites.length);
      expect({ records: c.records, tombstones: c.tombstones }).toEqual({
        records: sites.length,
        tombstones: 1,
      });

      const nd = sink();
      await exportChanges(t.database, request({ dataset: 'sites' }), start, nd.out);
      const first = JSON.parse(lines(nd.text())[0]!) as Row;
      expect(first).toEqual({ _deleted: true, site_id: site.id, deleted_at: rows[0]!._deleted_at });
      expect(lines(nd.text())[0]).toBe(JSON.stringify(first));

      const js = sink();
      const j = await exportChanges(t.database, request({ dataset: 'sites', format: 'json' }), start, js.out);
      const doc = JSON.parse(js.text()) as { export_metadata: Row; data: Row[] };
      expect(doc.data[0]).toEqual(first);
      expect(doc.export_metadata.end_of_stream).toBe(true);
      expect(doc.export_metadata.next_cursor).toBe(encodeChangeCursor(j.nextCursor));

      const pq = sink();
      await exportChanges(t.database, request({ dataset: 'sites', format: 'parquet' }), start, pq.out);
      const buffer = pq.bytes();
      const objects = (await parquetReadObjects({
        file: buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer,
      })) as Row[];
      expect(objects.map((o) => o._op)).toEqual(['delete', ...sites.map(() => 'upsert')]);
      expect(objects[0]!.site_id).toBe(site.id);

      const xml = sink();
      await exportChanges(t.database, request({ dataset: 'sites', format: 'xml' }), start, xml.out);
      expect(xml.text()).toContain('<_op>delete</_op>');
      expect(xml.text()).toContain(`<site_id>${site.id}</site_id>`);
    });

    it('keeps updated_at following updates, unless an update sets it', async () => {
      const db = t.database.db;
      await sql`INSERT INTO settings (tenant_id, key, value, updated_at)
        VALUES (${tenantId}, 'touch.test', '1', '2020-01-01T00:00:00Z')`.execute(db);
      const read = async () =>
        (
          await sql<{ at: string }>`SELECT to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS at
            FROM settings WHERE tenant_id = ${tenantId} AND key = 'touch.test'`.execute(db)
        ).rows[0]!.at;
      expect(await read()).toBe('2020-01-01');
      await sql`UPDATE settings SET value = '2' WHERE key = 'touch.test'`.execute(db);
      expect((await read()) > '2024-01-01').toBe(true);
      await sql`UPDATE settings SET value = '3', updated_at = '2019-05-05T00:00:00Z' WHERE key = 'touch.test'`.execute(
        db,
      );
      expect(await read()).toBe('2019-05-05');
      const before = (await sql<{ n: number }>`SELECT count(*)::int AS n FROM deleted_records`.execute(db))
        .rows[0]!.n;
      await sql`DELETE FROM settings WHERE key = 'touch.test'`.execute(db);
      const after = (await sql<{ n: number }>`SELECT count(*)::int AS n FROM deleted_records`.execute(db))
        .rows[0]!.n;
      expect(after).toBe(before + 1);
    });

    it('refuses computed datasets, foreign cursors and feeds without the record id', async () => {
      await expect(planChanges(t.database, request({ dataset: 'analytics' }), null)).rejects.toMatchObject({
        code: 'invalid_parameter',
        details: { parameter: 'updated_since' },
      });
      const mine = encodeChangeCursor(mirrors.get('customers')!.cursor!);
      expect(() => decodeChangeCursor(mine, { tenantId: otherTenant, dataset: 'customers' })).toThrow(
        /another/,
      );
      expect(() => decodeChangeCursor(mine, { tenantId, dataset: 'sites' })).toThrow(/another/);
      expect(() => decodeChangeCursor('garbage!', { tenantId, dataset: 'sites' })).toThrow(/not a cursor/);
      expect(decodeChangeCursor('0', { tenantId, dataset: 'sites' })).toBeNull();
      await expect(
        planChanges(t.database, request({ dataset: 'customers', columns: 'email' }), null),
      ).rejects.toMatchObject({ details: { parameter: 'columns' } });
    });

    it('leaves no tombstones behind a deleted tenant', async () => {
      const db = t.database.db;
      const count = async () =>
        (
          await sql<{
            n: number;
          }>`SELECT count(*)::int AS n FROM deleted_records WHERE tenant_id = ${otherTenant}`.execute(db)
        ).rows[0]!.n;
      await db
        .deleteFrom('settings')
        .where('tenant_id', '=', otherTenant)
        .where('key', 'like', 'ai.%')
        .execute();
      const one = await count();
      expect(one).toBeGreaterThan(0);
      await db.deleteFrom('tenants').where('id', '=', otherTenant).execute();
      expect(await count()).toBe(one);
    });

    if (dialect === 'postgres') {
      it('a transaction open when a run starts and committed after it read past the row is in the next run', async () => {
        await catchUp('customers', 2);
        const mirror = mirrors.get('customers')!;
        const target = (
          await t.database.db
            .selectFrom('customers')
            .select('id')
            .where('tenant_id', '=', tenantId)
            .orderBy('id')
            .executeTakeFirstOrThrow()
        ).id;
        const client = new pg.Client({
          connectionString: TEST_DATABASE_URL,
          options: `-c search_path=${t.schema}`,
        });
        await client.connect();
        try {
          await client.query('BEGIN');
          // The in-flight write: its updated_at (now()) is older than the run that follows.
          await client.query(`UPDATE customers SET name = 'In flight' WHERE id = $1`, [target]);
          // A later transaction commits first, so the in-flight one is below the newest finished id.
          await sql`UPDATE customers SET country = 'FR' WHERE tenant_id = ${tenantId} AND id <> ${target}`.execute(
            t.database.db,
          );
          const during = await catchUp('customers', 2, { settle: false });
          expect(mirror.state.get(target)?.name).not.toBe('In flight');
          expect(during.calls).toBeGreaterThan(0);
          await client.query('COMMIT');
        } finally {
          await client.end();
        }
        const next = await catchUp('customers', 2);
        expect(next.upserts).toBeGreaterThanOrEqual(1);
        expect(mirror.state.get(target)?.name).toBe('In flight');
        expect(mirror.state).toEqual(await source('customers'));
      });

      it('a delete that committed before a re-insert with an older transaction id does not remove the row', async () => {
        await catchUp('settings', 5);
        const mirror = mirrors.get('settings')!;
        const key = 'feed.reinserted';
        await sql`INSERT INTO settings (tenant_id, key, value) VALUES (${tenantId}, ${key}, '"v1"')`.execute(
          t.database.db,
        );
        await catchUp('settings', 5);
        expect(mirror.state.get(key)?.value).toBe('v1');
        const connect = async () => {
          const client = new pg.Client({
            connectionString: TEST_DATABASE_URL,
            options: `-c search_path=${t.schema}`,
          });
          await client.connect();
          return client;
        };
        const [a, c, b] = [await connect(), await connect(), await connect()];
        try {
          // Transaction ids in the order a < c < b; b deletes and commits, then a re-inserts.
          for (const client of [a, c, b]) {
            await client.query('BEGIN');
            await client.query('SELECT pg_current_xact_id()');
          }
          await b.query('DELETE FROM settings WHERE tenant_id = $1 AND key = $2', [tenantId, key]);
          await b.query('COMMIT');
          await a.query(`INSERT INTO settings (tenant_id, key, value) VALUES ($1, $2, '"v2"')`, [
            tenantId,
            key,
          ]);
          await a.query('COMMIT');
          // While c is open, a run covers a's insert but not b's delete.
          await catchUp('settings', 5, { settle: false });
          await c.query('COMMIT');
        } finally {
          await Promise.all([a.end(), b.end(), c.end()]);
        }
        await catchUp('settings', 5);
        expect(mirror.state.get(key)?.value).toBe('v2');
        expect(mirror.state).toEqual(await source('settings'));
      });

      it('a feed read while writers commit at random ends equal to the source', async () => {
        await catchUp('customers', 3);
        const mirror = mirrors.get('customers')!;
        const writers = new pg.Pool({
          connectionString: TEST_DATABASE_URL,
          options: `-c search_path=${t.schema}`,
          max: 4,
        });
        let stop = false;
        let writes = 0;
        const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
        const writer = async (n: number) => {
          while (!stop) {
            const client = await writers.connect();
            try {
              await client.query('BEGIN');
              const { rows } = await client.query<{ id: string }>(
                'SELECT id FROM customers WHERE tenant_id = $1 ORDER BY random() LIMIT 2',
                [tenantId],
              );
              if (rows[0])
                await client.query('UPDATE customers SET name = $1 WHERE id = $2', [
                  `w${n}-${writes}`,
                  rows[0].id,
                ]);
              // Hold the transaction open across some of the reader's calls.
              await pause(Math.floor(Math.random() * 15));
              if (writes % 5 === 0 && rows[1])
                await client.query('DELETE FROM customers WHERE id = $1', [rows[1].id]);
              if (writes % 3 === 0)
                await client.query(`INSERT INTO customers (id, tenant_id, segment) VALUES ($1, $2, 'smb')`, [
                  randomUUID(),
                  tenantId,
                ]);
              await client.query(Math.random() < 0.1 ? 'ROLLBACK' : 'COMMIT');
              writes++;
            } catch (err) {
              // Writers lock random rows in random order, so PostgreSQL may pick one as a
              // deadlock victim; that transaction is simply rolled back, as an application would.
              await client.query('ROLLBACK').catch(() => {});
              if ((err as { code?: string }).code !== '40P01') throw err;
            } finally {
              client.release();
            }
          }
        };
        const running = [writer(1), writer(2), writer(3)];
        try {
          // At least 15 reads, and until the writers have committed more than 10 times
          // (a fast reader would otherwise finish before the writers got going).
          for (let round = 0; (round < 15 || writes <= 10) && round < 500; round++)
            await catchUp('customers', 3, { settle: false });
        } finally {
          stop = true;
          await Promise.all(running);
          await writers.end();
        }
        expect(writes).toBeGreaterThan(10);
        await catchUp('customers', 3);
        expect(mirror.state).toEqual(await source('customers'));
      });
    }
  });
}
