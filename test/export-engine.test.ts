import { parse as parseCsv } from 'csv-parse/sync';
import { parquetReadObjects } from 'hyparquet';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateXML } from 'xmllint-wasm';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import { knowledgeBaseDocuments } from '../src/collect/documents.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { parseExportRequest, type ExportInput } from '../src/collect/request.ts';
import { xsdFor } from '../src/format/xml-schema.ts';
import { seed } from '../src/seed/seed.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { sink } from './support/fixtures/streams.ts';

async function run(t: TestDatabase, input: Partial<ExportInput> & { dataset: string; tenantId: string }) {
  const { out, bytes } = sink();
  const outcome = await exportDataset(t.database, parseExportRequest({ pii: 'full', ...input }), out);
  return { outcome, body: bytes() };
}

/** The table datasets and the id column each exports. */
const TABLE_DATASETS: Record<string, { table: string; idField: string; tenantScoped: boolean }> = {
  conversations: { table: 'conversations', idField: 'conversation_id', tenantScoped: true },
  messages: { table: 'messages', idField: 'message_id', tenantScoped: true },
  team_members: { table: 'team_members', idField: 'team_member_id', tenantScoped: true },
  customers: { table: 'customers', idField: 'customer_id', tenantScoped: true },
  consent_records: { table: 'consent_records', idField: 'consent_id', tenantScoped: true },
  activity_logs: { table: 'activity_logs', idField: 'log_id', tenantScoped: true },
  billing: { table: 'invoices', idField: 'invoice_id', tenantScoped: true },
  sites: { table: 'sites', idField: 'site_id', tenantScoped: true },
  integrations: { table: 'integrations', idField: 'integration_id', tenantScoped: true },
};

const PLANTED = {
  email: 'zelda.planted@example.org',
  phone: '+49 30 1234 5678',
  name: 'Zelda Quartermaine',
  card: '4111 1111 1111 1111',
  ip: '203.0.113.77',
};

for (const dialect of DIALECTS) {
  describe(`export engine on ${dialect}`, () => {
    let t: TestDatabase;
    let tenantId: string;
    let otherTenant: string;
    let plantedConversation: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 2,
        conversations: 30,
        messagesPerConversation: 6,
        seed: 11,
        since: new Date('2026-08-01T00:00:00Z'),
        until: new Date('2026-10-01T00:00:00Z'),
      });
      tenantId = summary.tenants[0]!.id;
      otherTenant = summary.tenants[1]!.id;
      // A conversation whose customer typed personal data into the chat.
      const conv = await t.database.db
        .selectFrom('conversations')
        .select(['id'])
        .where('tenant_id', '=', tenantId)
        .orderBy('start_timestamp')
        .executeTakeFirstOrThrow();
      plantedConversation = conv.id;
      await t.database.db
        .updateTable('conversations')
        .set({
          customer_email: PLANTED.email,
          customer_name: PLANTED.name,
          ip_address: PLANTED.ip,
          satisfaction_feedback: `call me on ${PLANTED.phone}`,
        })
        .where('id', '=', conv.id)
        .execute();
      await t.database.db
        .updateTable('messages')
        .set({
          content: `I am ${PLANTED.name}, mail ${PLANTED.email}, phone ${PLANTED.phone}, card ${PLANTED.card}, from ${PLANTED.ip}`,
        })
        .where('conversation_id', '=', conv.id)
        .where('sender_type', '=', 'customer')
        .execute();
    });
    afterAll(() => t.drop());

    async function idsInDb(table: string): Promise<string[]> {
      const r = await sql<{
        id: string;
      }>`SELECT id::text AS id FROM ${sql.table(table)} WHERE tenant_id = ${tenantId} ORDER BY id`.execute(
        t.database.db,
      );
      return r.rows.map((x) => x.id);
    }

    for (const [dataset, spec] of Object.entries(TABLE_DATASETS)) {
      it(`exports ${dataset} in every format, each read back by an independent reader`, async () => {
        const expected = await idsInDb(spec.table);
        expect(expected.length).toBeGreaterThan(0);
        // The default columns: every field but the enriched ones, which come only when named.
        const fields = REFERENCE_DATAMAP.datasets[dataset]!.fields.filter((f) => !f.enrichment);

        const csv = await run(t, { tenantId, dataset, format: 'csv' });
        const csvRows = parseCsv(csv.body, { columns: true }) as Record<string, string>[];
        expect(Object.keys(csvRows[0]!)).toEqual(fields.map((f) => f.name));
        expect(csvRows.map((r) => r[spec.idField]).sort()).toEqual(expected);
        expect(csv.outcome.records).toBe(expected.length);

        const json = await run(t, { tenantId, dataset, format: 'json' });
        const doc = JSON.parse(json.body.toString('utf8')) as {
          export_metadata: { tenant_id: string };
          data: Record<string, unknown>[];
        };
        expect(doc.export_metadata.tenant_id).toBe(tenantId);
        expect(doc.data.map((r) => r[spec.idField]).sort()).toEqual(expected);

        const ndjson = await run(t, { tenantId, dataset, format: 'ndjson' });
        const lines = ndjson.body
          .toString('utf8')
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(lines.map((r) => r[spec.idField]).sort()).toEqual(expected);
        expect(lines).toEqual(doc.data);

        const xml = await run(t, { tenantId, dataset, format: 'xml' });
        const xsd = xsdFor({ dataset, fields });
        const validation = await validateXML({
          xml: [{ fileName: `${dataset}.xml`, contents: xml.body.toString('utf8') }],
          schema: [{ fileName: `${dataset}.xsd`, contents: xsd }],
        });
        expect(validation.errors).toEqual([]);
        expect(xml.outcome.records).toBe(expected.length);

        const parquet = await run(t, { tenantId, dataset, format: 'parquet' });
        const buffer = new Uint8Array(parquet.body).buffer;
        const rows = (await parquetReadObjects({ file: buffer })) as Record<string, unknown>[];
        expect(rows.map((r) => r[spec.idField]).sort()).toEqual(expected);
      });
    }

    it('keeps message text, timestamps, booleans and arrays exact in CSV and JSON', async () => {
      const db = await t.database.db
        .selectFrom('messages')
        .select(['id', 'content', 'created_at', 'edited', 'content_sources'])
        .where('tenant_id', '=', tenantId)
        .execute();
      const byId = new Map(db.map((m) => [m.id, m]));
      const csvRows = parseCsv(
        (await run(t, { tenantId, dataset: 'messages', format: 'csv', csvGuard: false })).body,
        { columns: true },
      ) as Record<string, string>[];
      for (const row of csvRows) {
        const m = byId.get(row.message_id!)!;
        expect(row.message_content).toBe(m.content);
        expect(new Date(row.timestamp!).getTime()).toBe(new Date(m.created_at).getTime());
        expect(row.timestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
        expect(row.edited).toBe(String(m.edited));
        expect(JSON.parse(row.content_sources!)).toEqual(m.content_sources);
      }
      const ndjson = (await run(t, { tenantId, dataset: 'messages', format: 'ndjson' })).body
        .toString('utf8')
        .trimEnd()
        .split('\n');
      for (const line of ndjson) {
        const row = JSON.parse(line) as Record<string, unknown>;
        const m = byId.get(String(row.message_id))!;
        expect(row.message_content).toBe(m.content);
        expect(row.edited).toBe(m.edited);
        expect(row.content_sources).toEqual(m.content_sources);
      }
    });

    it('never exports another tenant’s rows', async () => {
      const body = (await run(t, { tenantId, dataset: 'messages', format: 'csv' })).body.toString('utf8');
      const theirs = await t.database.db
        .selectFrom('messages')
        .select('id')
        .where('tenant_id', '=', otherTenant)
        .execute();
      for (const m of theirs.slice(0, 50)) expect(body).not.toContain(m.id);
    });

    it('guards spreadsheet formulas in CSV unless turned off', async () => {
      await t.database.db
        .updateTable('messages')
        .set({ content: '=HYPERLINK("http://evil.example","x")' })
        .where('conversation_id', '=', plantedConversation)
        .where('sender_type', '=', 'ai')
        .execute();
      const guarded = parseCsv((await run(t, { tenantId, dataset: 'messages', format: 'csv' })).body, {
        columns: true,
      }) as Record<string, string>[];
      expect(guarded.some((r) => r.message_content === `'=HYPERLINK("http://evil.example","x")`)).toBe(true);
      const raw = parseCsv(
        (await run(t, { tenantId, dataset: 'messages', format: 'csv', csvGuard: false })).body,
        { columns: true },
      ) as Record<string, string>[];
      expect(raw.some((r) => r.message_content === '=HYPERLINK("http://evil.example","x")')).toBe(true);
    });

    it('filters by date in the tenant zone, status and selected columns in the asked order', async () => {
      const all = await t.database.db
        .selectFrom('conversations')
        .select(['id', 'status', 'start_timestamp'])
        .where('tenant_id', '=', tenantId)
        .execute();
      const resolved = all
        .filter((c) => c.status === 'resolved')
        .map((c) => c.id)
        .sort();
      const filtered = parseCsv(
        (
          await run(t, {
            tenantId,
            dataset: 'conversations',
            format: 'csv',
            filters: { status: 'resolved' },
            columns: 'conversation_status,conversation_id',
          })
        ).body,
        { columns: true },
      ) as Record<string, string>[];
      expect(Object.keys(filtered[0]!)).toEqual(['conversation_status', 'conversation_id']);
      expect(filtered.map((r) => r.conversation_id).sort()).toEqual(resolved);

      const from = '2026-09-01';
      const tenant = await t.database.db
        .selectFrom('tenants')
        .select('timezone')
        .where('id', '=', tenantId)
        .executeTakeFirstOrThrow();
      const startOfDay = await sql<{
        s: Date;
      }>`SELECT (${from}::date::timestamp AT TIME ZONE ${tenant.timezone}) AS s`.execute(t.database.db);
      const expected = all
        .filter((c) => new Date(c.start_timestamp) >= new Date(startOfDay.rows[0]!.s))
        .map((c) => c.id)
        .sort();
      const dated = parseCsv(
        (await run(t, { tenantId, dataset: 'conversations', format: 'csv', from })).body,
        { columns: true },
      ) as Record<string, string>[];
      expect(dated.map((r) => r.conversation_id).sort()).toEqual(expected);
    });

    it('names a bad filter, column or value with the accepted values', () => {
      expect(() => parseExportRequest({ tenantId, dataset: 'messages', filters: { colour: 'red' } })).toThrow(
        /no filter "colour" \(accepted: from, to,/,
      );
      expect(() => parseExportRequest({ tenantId, dataset: 'messages', columns: 'message_id,nope' })).toThrow(
        /no column "nope"/,
      );
      expect(() =>
        parseExportRequest({ tenantId, dataset: 'conversations', filters: { status: 'open' } }),
      ).toThrow(/status: unknown value "open" \(accepted: resolved, unresolved, in_progress\)/);
      expect(() =>
        parseExportRequest({ tenantId, dataset: 'conversations', filters: { escalated: 'maybe' } }),
      ).toThrow(/escalated/);
      expect(() => parseExportRequest({ tenantId, dataset: 'nope' })).toThrow(/unknown dataset "nope"/);
      expect(() => parseExportRequest({ tenantId, dataset: 'messages', format: 'markdown' })).toThrow(
        /format/,
      );
    });

    for (const level of ['basic', 'enhanced', 'complete'] as const) {
      it(`leaves no planted email, phone, name, card or IP in any ${level} export`, async () => {
        const forbidden =
          level === 'basic'
            ? [PLANTED.email, PLANTED.phone, PLANTED.card, 'Quartermaine']
            : Object.values(PLANTED);
        for (const dataset of ['conversations', 'messages']) {
          for (const format of ['csv', 'ndjson', 'xml']) {
            const text = (await run(t, { tenantId, dataset, format, pii: level })).body.toString('utf8');
            for (const value of forbidden)
              expect(text, `${dataset}.${format} at ${level} contains ${value}`).not.toContain(value);
            expect(text.replace(/\s/g, '')).not.toContain(PLANTED.card.replace(/\s/g, ''));
          }
        }
      });
    }

    it('exports the computed and document datasets', async () => {
      const analytics = parseCsv(
        (await run(t, { tenantId, dataset: 'analytics', format: 'csv', options: { granularity: 'monthly' } }))
          .body,
        { columns: true },
      ) as Record<string, string>[];
      const total = analytics.reduce((n, r) => n + Number(r.total_conversations), 0);
      const conversations = await t.database.db
        .selectFrom('conversations')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('tenant_id', '=', tenantId)
        .executeTakeFirstOrThrow();
      expect(total).toBe(Number(conversations.n));

      const revenue = JSON.parse(
        (
          await run(t, {
            tenantId,
            dataset: 'revenue_attribution',
            format: 'json',
            options: { attribution_model: 'multi_touch' },
          })
        ).body.toString('utf8'),
      ) as { data: { attribution_model: string }[] };
      expect(revenue.data.every((r) => r.attribution_model === 'multi_touch')).toBe(true);

      const kb = JSON.parse(
        (await run(t, { tenantId, dataset: 'knowledge_base', format: 'json' })).body.toString('utf8'),
      ) as {
        export_metadata: { total_documents: number };
        documents: { chunks: { vector_embedding?: number[] }[] }[];
        categories: unknown[];
      };
      expect(kb.documents.length).toBe(kb.export_metadata.total_documents);
      expect(kb.documents[0]!.chunks[0]!.vector_embedding).toBeUndefined();
      const withVectors = JSON.parse(
        (
          await run(t, {
            tenantId,
            dataset: 'knowledge_base',
            format: 'json',
            options: { include_embeddings: 'true' },
          })
        ).body.toString('utf8'),
      ) as typeof kb;
      expect(withVectors.documents[0]!.chunks[0]!.vector_embedding!.length).toBeGreaterThan(0);

      const account = (await run(t, { tenantId, dataset: 'account', format: 'json' })).body.toString('utf8');
      const parsed = JSON.parse(account) as {
        account: { integrations: { credentials: string }[]; team_members: Record<string, unknown>[] };
      };
      expect(parsed.account.integrations.every((i) => i.credentials.startsWith('••••'))).toBe(true);
      expect(parsed.account.team_members[0]).not.toHaveProperty('password_hash');
      const secrets = await t.database.db
        .selectFrom('integrations')
        .select('credentials_encrypted')
        .where('tenant_id', '=', tenantId)
        .execute();
      for (const s of secrets) expect(account).not.toContain(s.credentials_encrypted);
      const hashes = await t.database.db
        .selectFrom('team_members')
        .select('password_hash')
        .where('tenant_id', '=', tenantId)
        .execute();
      for (const h of hashes) expect(account).not.toContain(h.password_hash);
    });

    it('ends a knowledge-base export when created_at has microseconds, and keeps them', async () => {
      // The newest document of the page gets digits below the millisecond, as now() writes them.
      await sql`
        UPDATE documents SET created_at = date_trunc('milliseconds', created_at) + interval '123 microseconds'
        WHERE id = (SELECT id FROM documents WHERE tenant_id = ${tenantId} ORDER BY created_at DESC, id DESC LIMIT 1)`.execute(
        t.database.db,
      );
      const expected = await sql<{ id: string; created: string; updated: string }>`
        SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created,
               to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated
        FROM documents WHERE tenant_id = ${tenantId} ORDER BY created_at, id`.execute(t.database.db);
      const seen: { id: string; created: string; updated: string }[] = [];
      for await (const doc of knowledgeBaseDocuments(t.database, tenantId, { includeEmbeddings: false })) {
        seen.push({
          id: doc.document_id,
          created: doc.metadata.created_date,
          updated: doc.metadata.last_updated,
        });
        // A cursor cut to milliseconds selects the newest document again, forever.
        if (seen.length > expected.rows.length) break;
      }
      expect(seen).toEqual(expected.rows);
      expect(seen.at(-1)!.created).toMatch(/\.\d{3}123Z$/);

      const kb = JSON.parse(
        (
          await run(t, { tenantId, dataset: 'knowledge_base', format: 'json', timezone: 'Europe/Berlin' })
        ).body.toString('utf8'),
      ) as {
        documents: {
          metadata: { created_date: string };
          usage_statistics: { last_referenced: string | null };
        }[];
      };
      expect(kb.documents).toHaveLength(expected.rows.length);
      for (const doc of kb.documents)
        expect(doc.metadata.created_date).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0[12]:00$/);
      const referenced = kb.documents
        .map((d) => d.usage_statistics.last_referenced)
        .filter((v) => v !== null);
      expect(referenced.length).toBeGreaterThan(0);
      for (const at of referenced) expect(at).toMatch(/\.\d{6}\+0[12]:00$/);
    });

    it('writes an infinite timestamp as null in every format', async () => {
      const { id } = await t.database.db
        .selectFrom('conversations')
        .select('id')
        .where('tenant_id', '=', tenantId)
        .where('end_timestamp', 'is not', null)
        .orderBy('id')
        .executeTakeFirstOrThrow();
      const before = await sql<{
        end: string;
      }>`SELECT end_timestamp::text AS end FROM conversations WHERE id = ${id}`.execute(t.database.db);
      await sql`UPDATE conversations SET end_timestamp = 'infinity' WHERE id = ${id}`.execute(t.database.db);
      try {
        const ask = (format: string) =>
          run(t, {
            tenantId,
            dataset: 'conversations',
            format,
            columns: ['conversation_id', 'end_timestamp'],
          });
        const pick = (rows: Record<string, unknown>[]) => rows.find((r) => r.conversation_id === id)!;
        const csv = parseCsv((await ask('csv')).body, { columns: true }) as Record<string, string>[];
        expect(pick(csv).end_timestamp).toBe('');
        const json = JSON.parse((await ask('json')).body.toString('utf8')) as {
          data: Record<string, unknown>[];
        };
        expect(pick(json.data).end_timestamp).toBeNull();
        const lines = (await ask('ndjson')).body
          .toString('utf8')
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(pick(lines).end_timestamp).toBeNull();
        const xml = (await ask('xml')).body.toString('utf8');
        const record = xml.slice(xml.indexOf(`<conversation_id>${id}</conversation_id>`));
        expect(record.slice(0, record.indexOf('</record>'))).not.toContain('<end_timestamp>');
        const parquet = (await parquetReadObjects({
          file: new Uint8Array((await ask('parquet')).body).buffer,
        })) as Record<string, unknown>[];
        expect(pick(parquet).end_timestamp).toBeNull();
        // In a zone with an offset too (the offset of infinity cannot be computed).
        const zoned = (format: string) =>
          run(t, {
            tenantId,
            dataset: 'conversations',
            format,
            timezone: 'Europe/Berlin',
            columns: ['conversation_id', 'end_timestamp'],
          });
        const berlinCsv = parseCsv((await zoned('csv')).body, { columns: true }) as Record<string, string>[];
        expect(pick(berlinCsv).end_timestamp).toBe('');
        expect(berlinCsv.some((r) => /\+0[12]:00$/.test(r.end_timestamp ?? ''))).toBe(true);
        const berlinLines = (await zoned('ndjson')).body
          .toString('utf8')
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(pick(berlinLines).end_timestamp).toBeNull();
      } finally {
        await sql`UPDATE conversations SET end_timestamp = ${before.rows[0]!.end}::timestamptz WHERE id = ${id}`.execute(
          t.database.db,
        );
      }
    });

    it('estimates the row count up front, for anonymized exports too', async () => {
      const seen: (number | null)[] = [];
      const { out } = sink();
      const outcome = await exportDataset(
        t.database,
        parseExportRequest({ tenantId, dataset: 'messages', pii: 'complete' }),
        out,
        {
          estimate: true,
          onProgress: (p) => seen.push(p.estimatedRecords),
        },
      );
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((n) => n === outcome.records)).toBe(true);
    });

    it('compresses with gzip and zstd into streams that decompress to the plain export', async () => {
      const zlib = await import('node:zlib');
      const plain = (await run(t, { tenantId, dataset: 'messages', format: 'csv' })).body.toString('utf8');
      const gz = await run(t, { tenantId, dataset: 'messages', format: 'csv', compression: 'gzip' });
      expect(gz.outcome.extension).toBe('csv.gz');
      expect(zlib.gunzipSync(gz.body).toString('utf8')).toBe(plain);
      const zst = await run(t, { tenantId, dataset: 'messages', format: 'csv', compression: 'zstd' });
      expect(zst.outcome.extension).toBe('csv.zst');
      expect(zlib.zstdDecompressSync(zst.body).toString('utf8')).toBe(plain);
    });
  });
}

describe('export request validation', () => {
  it('accepts report days for computed datasets and refuses impossible dates', () => {
    const tenantId = '00000000-0000-4000-8000-000000000001';
    expect(
      parseExportRequest({ tenantId, dataset: 'analytics', from: '2026-09-01', to: '2026-09-30' }).filters,
    ).toEqual({ from: '2026-09-01', to: '2026-09-30' });
    expect(
      parseExportRequest({ tenantId, dataset: 'revenue_attribution', from: '2026-09-01' }).filters,
    ).toEqual({ from: '2026-09-01' });
    expect(() => parseExportRequest({ tenantId, dataset: 'messages', from: '2024-02-30' })).toThrow(
      'from: "2024-02-30" is not a valid date',
    );
    expect(parseExportRequest({ tenantId, dataset: 'messages', from: '2024-02-29' }).filters.from).toBe(
      '2024-02-29',
    );
  });
});
