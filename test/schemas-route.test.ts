import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateXML } from 'xmllint-wasm';
import { parseExportRequest } from '../src/collect/request.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { seed } from '../src/seed/seed.ts';
import { authTestConfig } from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { sink } from './support/fixtures/streams.ts';

/** `GET /api/v1/schemas/{dataset}.xsd`: the XSD that the XML exports name in xsi:schemaLocation. */
for (const dialect of DIALECTS) {
  describe(`XML Schemas route on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let tenantId: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 8,
        messagesPerConversation: 4,
        seed: 3,
        since: new Date('2026-08-01T00:00:00Z'),
        until: new Date('2026-10-01T00:00:00Z'),
      });
      tenantId = summary.tenants[0]!.id;
      app = await buildApp({ database: t.database, config: authTestConfig() });
    });
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    async function xmlExport(dataset: string, extra: Record<string, unknown> = {}): Promise<string> {
      const { out, text } = sink();
      await exportDataset(
        t.database,
        parseExportRequest({ tenantId, dataset, format: 'xml', pii: 'full', ...extra }),
        out,
      );
      return text();
    }

    async function validates(xml: string, xsd: string, name: string) {
      return validateXML({
        xml: [{ fileName: 'export.xml', contents: xml }],
        schema: [{ fileName: `${name}.xsd`, contents: xsd }],
      });
    }

    it('serves the XSD each dataset export validates against, without a key', async () => {
      for (const dataset of ['conversations', 'messages', 'analytics', 'customers']) {
        const res = await app.inject({ url: `/api/v1/schemas/${dataset}.xsd` });
        expect(res.statusCode, res.body).toBe(200);
        expect(res.headers['content-type']).toBe('application/xml; charset=utf-8');
        const xml = await xmlExport(dataset);
        expect(xml).toContain(`schemaLocation="https://ferry.dev/schema/export/1.0 ${dataset}.xsd"`);
        const result = await validates(xml, res.body, dataset);
        expect(result.errors, dataset).toEqual([]);
        expect(result.valid).toBe(true);
      }
    });

    it('follows the columns of an export, in their order', async () => {
      const columns = 'sender_type,message_id,timestamp';
      const xml = await xmlExport('messages', { columns });
      const full = await app.inject({ url: '/api/v1/schemas/messages.xsd' });
      expect((await validates(xml, full.body, 'messages')).valid).toBe(false);
      const narrowed = await app.inject({ url: `/api/v1/schemas/messages.xsd?columns=${columns}` });
      expect(narrowed.statusCode).toBe(200);
      expect((await validates(xml, narrowed.body, 'messages')).errors).toEqual([]);
      const bad = await app.inject({ url: '/api/v1/schemas/messages.xsd?columns=colour' });
      expect(bad.statusCode).toBe(400);
      expect(bad.json()).toMatchObject({ code: 'invalid_parameter' });
    });

    it('answers 404 problem+json for unknown datasets and for documents without an XSD', async () => {
      for (const dataset of ['nope', 'knowledge_base', 'account', '__proto__']) {
        const res = await app.inject({ url: `/api/v1/schemas/${dataset}.xsd` });
        expect(res.statusCode, dataset).toBe(404);
        expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(res.json()).toMatchObject({ code: 'not_found', status: 404 });
        expect(res.json().detail).toContain('conversations');
      }
    });
  });
}
