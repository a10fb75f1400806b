import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { beforeAll, describe, expect, it } from 'vitest';
import { REFERENCE_DATASETS } from '../src/datamap/reference-datasets.ts';
import { assertValidDataPackage } from '../src/packaging/datapackage-profile.ts';
import { buildDataPackage, type DataPackageInput, DataPackageSpool } from '../src/packaging/datapackage.ts';
import { checksumsFile, parseChecksumsFile } from '../src/packaging/checksums.ts';
import type { PackageField } from '../src/packaging/fields.ts';
import { exportFileJsonSchema, recordJsonSchema } from '../src/packaging/json-schema.ts';

const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (
  ajv: Ajv | Ajv2020,
) => void;

const HASH = 'a3f1c9e0b7d24e6f8a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef';

/** The vendored profiles, each registered under its canonical URL as a stand-in for network refs. */
function profileValidator(): ValidateFunction {
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addFormat('textarea', true);
  for (const name of ['datapackage', 'dataresource', 'tableschema', 'tabledialect']) {
    const schema = JSON.parse(
      readFileSync(new URL(`../standards/datapackage-v2/${name}.json`, import.meta.url), 'utf8'),
    );
    ajv.addSchema(schema, `https://datapackage.org/profiles/2.0/${name}.json`);
  }
  return ajv.getSchema('https://datapackage.org/profiles/2.0/datapackage.json')!;
}

function companyExport(): DataPackageInput {
  return {
    name: 'company-export-2026-11-22',
    title: 'Acme Support — data export of 2026-11-22',
    description: 'Every dataset of the Acme Support tenant.',
    created: new Date('2026-11-22T09:30:00Z'),
    version: '1.0.0',
    keywords: ['ferry', 'export'],
    resources: [
      ...Object.values(REFERENCE_DATASETS).map((dataset) => ({
        path: `${dataset.name}.csv`,
        name: dataset.name,
        description: dataset.description,
        format: 'csv',
        mediatype: 'text/csv',
        fields: dataset.fields,
        bytes: 1234,
        hash: HASH,
      })),
      {
        path: ['conversations/2026-10.ndjson', 'conversations/2026-11.ndjson'],
        name: 'conversations-ndjson',
        format: 'ndjson',
        mediatype: 'application/x-ndjson',
        fields: REFERENCE_DATASETS['conversations']!.fields,
        primaryKey: ['conversation_id'],
      },
      {
        path: 'index.html',
        name: 'index',
        format: 'html',
        mediatype: 'text/html',
        bytes: 10,
        hash: `sha256:${HASH}`,
      },
    ],
  };
}

describe('datapackage.json', () => {
  let validate: ValidateFunction;
  beforeAll(() => {
    validate = profileValidator();
  });

  it('validates against the vendored Data Package v2 profile', () => {
    const descriptor = buildDataPackage(companyExport());
    const ok = validate(descriptor);
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
    expect(descriptor.$schema).toBe('https://datapackage.org/profiles/2.0/datapackage.json');
    expect(descriptor.created).toBe('2026-11-22T09:30:00.000Z');
  });

  it('is the same bytes from a spool on disk, which keeps names unique without holding them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-datapackage-'));
    try {
      const input = companyExport();
      // 3,000 resources: past the spool's chunk, so names are looked up in its file.
      const resources = [
        ...input.resources,
        ...Array.from({ length: 3000 }, (_, i) => ({
          path: `conversations/c-${i}.json`,
          name: `conversations_c_${i}`,
          title: `conversation "${i}"\nwith its messages 😀`,
          format: 'json',
          mediatype: 'application/json',
          bytes: i,
          hash: HASH,
        })),
      ];
      const spool = new DataPackageSpool(join(dir, 'resources'));
      for (const resource of resources) await spool.add(resource);
      expect(spool.count).toBe(resources.length);
      // A used name is refused, whether it is still in memory or already in the file.
      for (const name of ['index', 'conversations_c_0', 'conversations_c_2999'])
        await expect(spool.add({ ...resources[0]!, name })).rejects.toThrow('is used twice');
      expect(await spool.freeName('conversations_c_0')).toBe('conversations_c_0-2');
      expect(await spool.freeName('conversations_c_3000')).toBe('conversations_c_3000');
      // A resource the builder refuses is refused here too.
      await expect(spool.add({ ...resources[0]!, name: 'Not A Name' })).rejects.toThrow('must match');
      // Pieces are bytes: a read from the file may end inside a character.
      const chunks: Buffer[] = [];
      for await (const piece of spool.text(input)) chunks.push(Buffer.from(piece));
      const whole = buildDataPackage({ ...input, resources });
      expect(Buffer.concat(chunks).toString()).toBe(`${JSON.stringify(whole, null, 2)}\n`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('checksums.sha256 lists every file once, sorted by the bytes of its path', () => {
    const entries = Array.from({ length: 25_000 }, (_, i) => ({
      path: i % 3 === 0 ? `viewer/é-${i}.js` : `conversations/${(i * 7919) % 25_000}-${i}.json`,
      sha256: createHash('sha256').update(String(i)).digest('hex'),
    }));
    const text = checksumsFile(entries).toString('utf8');
    const parsed = parseChecksumsFile(text);
    expect(parsed).toHaveLength(entries.length);
    const paths = parsed.map((e) => e.path);
    expect(paths).toEqual(
      entries.map((e) => e.path).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))),
    );
    expect(new Map(parsed.map((e) => [e.path, e.sha256]))).toEqual(
      new Map(entries.map((e) => [e.path, e.sha256])),
    );
  });

  it('the profile really rejects broken descriptors (the validator is not a no-op)', () => {
    const descriptor = buildDataPackage(companyExport());
    const broken = structuredClone(descriptor) as unknown as {
      resources: { schema: { fields: object[] } }[];
    };
    broken.resources[0]!.schema.fields[0] = { name: 'id', type: 'uuid' };
    expect(validate(broken)).toBe(false);
    expect(validate({ ...descriptor, resources: [] })).toBe(false);
    expect(validate({ ...descriptor, created: 'yesterday' })).toBe(false);
  });

  it('maps Ferry field types to Table Schema types', () => {
    const fields: PackageField[] = [
      { name: 'id', type: 'uuid', description: 'Id.', nullable: false, example: '0193…' },
      { name: 'name', type: 'string', description: 'Name.' },
      { name: 'count', type: 'integer', description: 'Count.' },
      { name: 'score', type: 'number', description: 'Score.' },
      { name: 'escalated', type: 'boolean', description: 'Escalated.' },
      { name: 'created_at', type: 'timestamp', description: 'Created.' },
      { name: 'day', type: 'date', description: 'Day.' },
      { name: 'metadata', type: 'json', description: 'Metadata.' },
      { name: 'tags', type: 'string[]', description: 'Tags.' },
      { name: 'ids', type: 'uuid[]', description: 'Ids.' },
      { name: 'scores', type: 'number[]', description: 'Scores.' },
    ];
    const descriptor = buildDataPackage({
      name: 'types',
      title: 'Types',
      created: '2026-11-22T00:00:00Z',
      resources: [
        {
          path: 'types.csv',
          name: 'types',
          format: 'csv',
          mediatype: 'text/csv',
          fields,
          primaryKey: ['id'],
        },
      ],
    });
    expect(validate(descriptor)).toBe(true);
    const resource = descriptor.resources[0]!;
    expect(resource.type).toBe('table');
    expect(resource.schema?.primaryKey).toEqual(['id']);
    expect(resource.schema?.fields).toEqual([
      {
        name: 'id',
        type: 'string',
        format: 'uuid',
        description: 'Id.',
        example: '0193…',
        constraints: { required: true },
      },
      { name: 'name', type: 'string', description: 'Name.' },
      { name: 'count', type: 'integer', description: 'Count.' },
      { name: 'score', type: 'number', description: 'Score.' },
      { name: 'escalated', type: 'boolean', description: 'Escalated.' },
      { name: 'created_at', type: 'datetime', description: 'Created.' },
      { name: 'day', type: 'date', description: 'Day.' },
      { name: 'metadata', type: 'any', description: 'Metadata.' },
      {
        name: 'tags',
        type: 'array',
        description: 'Tags.',
        constraints: { jsonSchema: { type: 'array', items: { type: 'string' } } },
      },
      {
        name: 'ids',
        type: 'array',
        description: 'Ids.',
        constraints: { jsonSchema: { type: 'array', items: { type: 'string', format: 'uuid' } } },
      },
      {
        name: 'scores',
        type: 'array',
        description: 'Scores.',
        constraints: { jsonSchema: { type: 'array', items: { type: 'number' } } },
      },
    ]);
  });

  it('describes files: sha256 hash, bytes, encoding; non-tabular files have no schema', () => {
    const descriptor = buildDataPackage(companyExport());
    const messages = descriptor.resources.find((r) => r.name === 'messages')!;
    expect(messages).toMatchObject({
      path: 'messages.csv',
      bytes: 1234,
      hash: `sha256:${HASH}`,
      encoding: 'utf-8',
    });
    const index = descriptor.resources.find((r) => r.name === 'index')!;
    expect(index.hash).toBe(`sha256:${HASH}`);
    expect(index).not.toHaveProperty('type');
    expect(index).not.toHaveProperty('schema');
    const ndjson = descriptor.resources.find((r) => r.name === 'conversations-ndjson')!;
    expect(ndjson.path).toEqual(['conversations/2026-10.ndjson', 'conversations/2026-11.ndjson']);
  });

  it('gives a JSON file the path of its JSON Schema and still validates against the profile', () => {
    const descriptor = buildDataPackage({
      ...companyExport(),
      resources: [
        {
          path: 'company.json',
          name: 'company',
          format: 'json',
          mediatype: 'application/json',
          jsonSchema: 'schemas/company.schema.json',
          bytes: 2,
          hash: HASH,
        },
      ],
    });
    expect(descriptor.resources[0]).toEqual({
      name: 'company',
      path: 'company.json',
      format: 'json',
      mediatype: 'application/json',
      encoding: 'utf-8',
      bytes: 2,
      hash: `sha256:${HASH}`,
      jsonSchema: 'schemas/company.schema.json',
    });
    expect(validate(descriptor)).toBe(true);
    expect(() =>
      buildDataPackage({
        ...companyExport(),
        resources: [
          {
            path: 'a.json',
            name: 'a',
            format: 'json',
            mediatype: 'application/json',
            jsonSchema: '../x.json',
          },
        ],
      }),
    ).toThrow(/resources\[0\]\.jsonSchema/);
  });

  it('rejects bad input with the parameter named', () => {
    const base = companyExport();
    const one = base.resources[0]!;
    const cases: [Partial<DataPackageInput>, RegExp][] = [
      [{ name: 'Company Export' }, /^name:/],
      [{ resources: [] }, /^resources:/],
      [{ created: 'not a date' }, /^created:/],
      [{ resources: [one, one] }, /resources\[1\]\.name: "conversations" is used twice/],
      [{ resources: [{ ...one, path: '../secrets.csv' }] }, /resources\[0\]\.path/],
      [{ resources: [{ ...one, hash: 'md5:abc' }] }, /resources\[0\]\.hash/],
      [{ resources: [{ ...one, bytes: -1 }] }, /resources\[0\]\.bytes/],
      [{ resources: [{ ...one, mediatype: 'csv' }] }, /resources\[0\]\.mediatype/],
      [
        { resources: [{ ...one, primaryKey: ['nope'] }] },
        /resources\[0\]\.primaryKey: "nope" is not a field/,
      ],
    ];
    for (const [change, message] of cases) {
      expect(() => buildDataPackage({ ...base, ...change }), message.source).toThrow(message);
    }
  });

  it('assertValidDataPackage checks against the vendored profile at run time', async () => {
    await expect(assertValidDataPackage(buildDataPackage(companyExport()))).resolves.toBeUndefined();
    await expect(assertValidDataPackage({ $schema: 'x', resources: [] })).rejects.toMatchObject({
      code: 'invalid_datapackage',
    });
  });
});

describe('JSON Schema (2020-12) of JSON exports', () => {
  const fields: PackageField[] = [
    { name: 'id', type: 'uuid', description: 'Message id.', nullable: false },
    { name: 'created_at', type: 'timestamp', description: 'Sent at.', nullable: false },
    { name: 'content', type: 'string', description: 'Text.' },
    { name: 'tokens', type: 'integer', description: 'Tokens.' },
    { name: 'confidence', type: 'number', description: 'Confidence.' },
    { name: 'edited', type: 'boolean', description: 'Edited.' },
    { name: 'day', type: 'date', description: 'Day.' },
    { name: 'sources', type: 'json', description: 'Sources.' },
    { name: 'tags', type: 'string[]', description: 'Tags.' },
  ];
  const record = {
    id: '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b',
    created_at: '2026-11-22T09:30:00.000Z',
    content: 'Hello <script>',
    tokens: 12,
    confidence: 0.93,
    edited: false,
    day: '2026-11-22',
    sources: [{ id: 'doc-1' }],
    tags: ['billing'],
  };

  function compile(schema: object): ValidateFunction {
    const ajv = new Ajv2020({ strict: true, allErrors: true });
    addFormats(ajv);
    expect(ajv.validateSchema(schema)).toBe(true);
    return ajv.compile(schema);
  }

  it('a record schema accepts records and nulls in nullable fields', () => {
    const validate = compile(
      recordJsonSchema({ dataset: 'messages', fields, id: 'schemas/messages.record.json' }),
    );
    expect(validate(record)).toBe(true);
    const nulls = {
      ...record,
      content: null,
      tokens: null,
      confidence: null,
      edited: null,
      day: null,
      tags: null,
    };
    expect(validate({ ...nulls, sources: null })).toBe(true);
    // Float specials arrive as strings from the JSON writers.
    for (const special of ['NaN', 'Infinity', '-Infinity'])
      expect(validate({ ...record, confidence: special })).toBe(true);
  });

  it('a record schema rejects wrong types, bad formats, nulls in required fields and extra fields', () => {
    const validate = compile(recordJsonSchema({ dataset: 'messages', fields }));
    const bad: Record<string, unknown>[] = [
      { ...record, id: null },
      { ...record, id: 'not-a-uuid' },
      { ...record, created_at: '22/11/2026' },
      { ...record, tokens: 1.5 },
      { ...record, confidence: 'high' },
      { ...record, edited: 'false' },
      { ...record, tags: [1] },
      { ...record, password_hash: 'x' },
    ];
    for (const value of bad) expect(validate(value), JSON.stringify(value)).toBe(false);
    const { content: _, ...missing } = record;
    expect(validate(missing)).toBe(false);
  });

  it('an export file schema describes { export_metadata, data: [record] }', () => {
    const schema = exportFileJsonSchema({ dataset: 'messages', fields, id: 'schemas/messages.schema.json' });
    expect(schema).toMatchObject({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      $id: 'schemas/messages.schema.json',
    });
    const validate = compile(schema);
    expect(validate({ export_metadata: { tenant_id: 't1', total_records: 2 }, data: [record, record] })).toBe(
      true,
    );
    expect(validate({ export_metadata: {}, data: [] })).toBe(true);
    expect(validate({ data: [record] })).toBe(false);
    expect(validate({ export_metadata: {}, data: [{ ...record, tokens: 'many' }] })).toBe(false);
  });

  it('covers every dataset of the reference data map', () => {
    for (const dataset of Object.values(REFERENCE_DATASETS)) {
      const schema = exportFileJsonSchema({
        dataset: dataset.name,
        fields: dataset.fields,
        description: dataset.description,
      });
      compile(schema);
    }
  });
});
