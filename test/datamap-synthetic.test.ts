import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parse as parseCsv } from 'csv-parse/sync';
import { parquetReadObjects } from 'hyparquet';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureChangeTracking } from '../src/collect/change-tracking.ts';
import { exportChanges } from '../src/collect/changes.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { checkDataMap, REFERENCE_DATAMAP, validateDataMap } from '../src/datamap/datamap.ts';
import { dataDictionaryMarkdown } from '../src/datamap/dictionary.ts';
import type { DataMap, DatasetField, TableDataset, TableDeclaration } from '../src/datamap/types.ts';
import { EXPORT_FORMATS } from '../src/format/types.ts';
import { assertValidDataPackage } from '../src/packaging/datapackage-profile.ts';
import { exportCompanyPackage } from '../src/pipeline/company-package.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { lines, sink } from './support/fixtures/streams.ts';
import { settle } from './support/wait.ts';

/**
 * A dataset the reference map does not know, added to a copy of the map with no other
 * code change: its own table, columns of several classes, a time column and a tenant key.
 * Every capability the map drives must follow: exports in every format, the company
 * package (with datapackage.json and the data dictionary), and the change feed.
 */

const run = promisify(execFile);

const GADGETS_TABLE: TableDeclaration = {
  description: 'Gadgets a tenant keeps track of.',
  tenantKey: 'tenant_id',
  timeColumn: 'created_at',
  updatedColumn: null,
  primaryKey: ['id'],
  subjectLinks: [{ column: 'owner_email', subject: 'customer', by: 'email' }],
  relations: [{ column: 'tenant_id', references: 'tenants.id' }],
  retention: {
    keep: 'P0D',
    after: 'account_closed',
    action: 'delete',
    note: 'Kept for the life of the tenant account.',
  },
  erasure: { action: 'delete' },
  columns: {
    id: { type: 'uuid', class: 'identifier', description: 'Unique identifier of the gadget.' },
    tenant_id: { type: 'uuid', class: 'identifier', description: 'The tenant that owns the gadget.' },
    name: { type: 'string', class: 'none', description: 'Name of the gadget.' },
    owner_email: { type: 'string', class: 'contact', pii: 'email', description: 'Email of its owner.' },
    notes: { type: 'string', class: 'free_text', description: 'Notes; may hold personal data.' },
    weight: { type: 'number', class: 'none', description: 'Weight in grams.' },
    labels: { type: 'string[]', class: 'none', description: 'Labels.' },
    created_at: { type: 'timestamp', class: 'none', description: 'When the gadget was added.' },
  },
};

const GADGETS_DDL = `
CREATE TABLE gadgets (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name text NOT NULL,
  owner_email text,
  notes text,
  weight numeric,
  labels text[],
  created_at timestamptz NOT NULL DEFAULT now()
)`;

const FIELDS: DatasetField[] = Object.entries(GADGETS_TABLE.columns).map(([column, c]) => ({
  name: column === 'id' ? 'gadget_id' : column,
  type: c.type,
  class: c.class,
  description: c.description,
  ...(c.pii ? { pii: c.pii } : {}),
  sql: `t.${column}`,
  reads: [`gadgets.${column}`],
}));
const FIELD_NAMES = FIELDS.map((f) => f.name);

const GADGETS: TableDataset = {
  name: 'gadgets',
  description: 'One row per gadget.',
  kind: 'table',
  source: 'gadgets',
  from: 'FROM gadgets t',
  timeColumn: 't.created_at',
  key: ['t.created_at', 't.id'],
  fields: FIELDS,
  filters: [
    { name: 'from', type: 'string', sql: 't.created_at >= $value', description: 'Start date (inclusive).' },
    { name: 'to', type: 'string', sql: 't.created_at < $value', description: 'End date (inclusive).' },
  ],
  parameters: [],
  formats: EXPORT_FORMATS,
  package: { order: 200, dated: true, files: [{ path: 'gadgets', format: 'tabular' }] },
  changeFeed: { idColumn: 'id' },
  scopes: {},
};

const MAP: DataMap = {
  ...REFERENCE_DATAMAP,
  tables: { ...REFERENCE_DATAMAP.tables, gadgets: GADGETS_TABLE },
  datasets: { ...REFERENCE_DATAMAP.datasets, gadgets: GADGETS },
};

for (const dialect of DIALECTS) {
  describe(`a dataset added to the data map on ${dialect}`, () => {
    let t: TestDatabase;
    let work: string;
    const tenantId = randomUUID();
    const ids = [randomUUID(), randomUUID(), randomUUID()];

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      work = await mkdtemp(path.join(tmpdir(), 'ferry-synthetic-'));
      await t.database.exec(GADGETS_DDL);
      await sql`INSERT INTO tenants (id, name, slug, plan, timezone, home_country)
        VALUES (${tenantId}, 'Gadget Co', 'gadget-co', 'pro', 'Europe/Berlin', 'DE')`.execute(t.database.db);
      for (const [n, id] of ids.entries()) {
        await sql`INSERT INTO gadgets (id, tenant_id, name, owner_email, notes, weight, labels, created_at)
          VALUES (${id}, ${tenantId}, ${`Gadget ${n}`}, ${`owner${n}@example.com`},
            ${`write to owner${n}@example.com`}, ${10.5 + n}, ${['a', `n${n}`]},
            ${new Date(Date.UTC(2026, 0, 1 + n))})`.execute(t.database.db);
      }
    }, 120_000);
    afterAll(async () => {
      await t?.drop();
      await rm(work, { recursive: true, force: true });
    });

    const request = (format: string, pii = 'full') =>
      parseExportRequest({ tenantId, dataset: 'gadgets', format, pii }, MAP);

    it('passes the checks at start and gets change tracking from the map alone', async () => {
      expect(checkDataMap(MAP)).toEqual([]);
      await expect(validateDataMap(MAP, t.database.db)).resolves.toBeUndefined();
      // Migration 0005 tracks every reference table; only the new one needs setting up, once.
      expect(await ensureChangeTracking(t.database.db, REFERENCE_DATAMAP)).toEqual([]);
      expect(await ensureChangeTracking(t.database.db, MAP)).toEqual(['gadgets']);
      expect(await ensureChangeTracking(t.database.db, MAP)).toEqual([]);
    });

    it('exports in every format', async () => {
      for (const format of EXPORT_FORMATS) {
        const { out, bytes, text } = sink();
        const outcome = await exportDataset(t.database, request(format), out, { datamap: MAP });
        expect(outcome.records, format).toBe(3);
        let exported: string[];
        switch (format) {
          case 'csv': {
            const rows = parseCsv(bytes(), { columns: true }) as Record<string, string>[];
            expect(Object.keys(rows[0]!)).toEqual(FIELD_NAMES);
            exported = rows.map((r) => r.gadget_id!);
            break;
          }
          case 'json': {
            const doc = JSON.parse(text()) as { data: Record<string, unknown>[] };
            expect(Object.keys(doc.data[0]!)).toEqual(FIELD_NAMES);
            expect(doc.data[0]!.labels).toEqual(['a', 'n0']);
            exported = doc.data.map((r) => String(r.gadget_id));
            break;
          }
          case 'ndjson':
            exported = lines(text()).map((l) => String((JSON.parse(l) as Record<string, unknown>).gadget_id));
            break;
          case 'xml':
            expect(text()).toContain('xsi:schemaLocation="https://ferry.dev/schema/export/1.0 gadgets.xsd"');
            exported = [...text().matchAll(/<gadget_id>([^<]+)<\/gadget_id>/g)].map((m) => m[1]!);
            break;
          case 'parquet': {
            const buffer = bytes();
            const file = new Uint8Array(buffer).buffer;
            const rows = (await parquetReadObjects({ file })) as Record<string, unknown>[];
            exported = rows.map((r) => String(r.gadget_id));
            break;
          }
        }
        expect(exported, format).toEqual(ids);
      }
      // Column classes drive anonymization as for any reference dataset.
      const { out, text } = sink();
      await exportDataset(t.database, request('json', 'complete'), out, { datamap: MAP });
      const first = (JSON.parse(text()) as { data: Record<string, unknown>[] }).data[0]!;
      expect(first.owner_email).not.toBe('owner0@example.com');
      expect(first.notes).toBe('write to [email]');
      expect(first.name).toBe('Gadget 0');
    });

    it('goes in the company package, its datapackage.json and data dictionary', async () => {
      const file = path.join(work, 'package.zip');
      const outcome = await exportCompanyPackage(
        t.database,
        { tenantId, kind: 'zip', pii: 'full', datasets: ['gadgets'] },
        createWriteStream(file),
        { datamap: MAP },
      );
      await run('unzip', ['-q', file, '-d', work]);
      const root = path.join(work, outcome.root);
      await run('sha256sum', ['-c', 'checksums.sha256'], { cwd: root });
      const rows = parseCsv(await readFile(path.join(root, 'gadgets.csv')), { columns: true }) as unknown[];
      expect(rows).toHaveLength(3);
      expect(outcome.counts).toEqual({ 'gadgets.csv': 3 });
      const descriptor = JSON.parse(await readFile(path.join(root, 'datapackage.json'), 'utf8')) as {
        resources: {
          path: string;
          format: string;
          mediatype: string;
          schema: { fields: { name: string }[] };
        }[];
      };
      await assertValidDataPackage(descriptor);
      expect(descriptor.resources).toHaveLength(1);
      expect(descriptor.resources[0]).toMatchObject({
        path: 'gadgets.csv',
        format: 'csv',
        mediatype: 'text/csv',
      });
      expect(descriptor.resources[0]!.schema.fields.map((f) => f.name)).toEqual(FIELD_NAMES);
      const dictionary = await readFile(path.join(root, 'data_dictionary.md'), 'utf8');
      expect(dictionary).toContain('### gadgets');
      expect(dictionary).toContain('| owner_email | string | contact (email) | Email of its owner. |');
      const metadata = JSON.parse(await readFile(path.join(root, 'metadata.json'), 'utf8')) as {
        datasets: string[];
      };
      expect(metadata.datasets).toEqual(['gadgets']);
    });

    it('is in the data dictionary, as a dataset and as a table', () => {
      const dictionary = dataDictionaryMarkdown(MAP);
      expect(dictionary.match(/^### gadgets$/gm)).toHaveLength(2);
      expect(dictionary).toContain('Gadgets a tenant keeps track of.');
      expect(dictionary).toContain('Data subjects: owner_email → customer (by email).');
    });

    it('has a change feed: an insert, an update and a delete give two rows and a tombstone', async () => {
      const db = t.database.db;
      // The first run's cursor stops before transactions other sessions still hold open;
      // once they end, it lies past the rows written at setup, which are not changes.
      await settle(t.database);
      const first = sink();
      const start = await exportChanges(t.database, request('ndjson'), null, first.out, { datamap: MAP });
      expect({ records: start.records, tombstones: start.tombstones }).toEqual({ records: 3, tombstones: 0 });

      const added = randomUUID();
      await sql`INSERT INTO gadgets (id, tenant_id, name) VALUES (${added}, ${tenantId}, 'Gadget 3')`.execute(
        db,
      );
      await sql`UPDATE gadgets SET name = 'Renamed' WHERE id = ${ids[0]!}`.execute(db);
      await sql`DELETE FROM gadgets WHERE id = ${ids[1]!}`.execute(db);
      await settle(t.database);

      const next = sink();
      const changes = await exportChanges(t.database, request('ndjson'), start.nextCursor, next.out, {
        datamap: MAP,
      });
      expect({ records: changes.records, tombstones: changes.tombstones }).toEqual({
        records: 2,
        tombstones: 1,
      });
      expect(changes.endOfStream).toBe(true);
      const [tombstone, ...rows] = lines(next.text()).map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(tombstone).toMatchObject({ _deleted: true, gadget_id: ids[1] });
      expect(rows.map((r) => r.gadget_id).sort()).toEqual([ids[0], added].sort());
      expect(rows.find((r) => r.gadget_id === ids[0])!.name).toBe('Renamed');
    });
  });
}
