import { create } from 'xmlbuilder2';
import { validateXML } from 'xmllint-wasm';
import { describe, expect, it } from 'vitest';
import { XML_NAMESPACE, XSI_NAMESPACE } from '../src/format/xml-schema.ts';
import { xml, xsdFor } from '../src/format/xml-writer.ts';
import {
  allTypeFields,
  chunked,
  context,
  messageFields,
  messageRow,
  ndjsonOf,
  run,
  uuid,
} from './support/fixtures/format.ts';

const ALL = context(allTypeFields, { dataset: 'kitchen_sink' });

/** Rows as row_to_json renders them, one per case. */
const ROWS = [
  // 0: every value present, escapable characters everywhere
  {
    id: uuid(1),
    title: `Fish & chips <b>"bold"</b> 'quoted' ]]> — 😀 👩‍👩‍👧 🇩🇪`,
    count: 42,
    score: 0.1,
    active: true,
    created_at: '2025-09-03T10:00:00.123456+00:00',
    day: '2025-09-03',
    attributes: { plan: 'pro', 'a&b': '<x>', list: [1, 2.5, null], big: 1 },
    tags: ['vip', '<b>', 'ümlaut'],
    related_ids: [uuid(2), uuid(3)],
    weights: [0.5, 1e-7, -3],
  },
  // 1: all nulls
  {
    id: uuid(4),
    title: null,
    count: null,
    score: null,
    active: null,
    created_at: null,
    day: null,
    attributes: null,
    tags: null,
    related_ids: null,
    weights: null,
  },
  // 2: control characters, CR/LF, empty arrays, null array items, float specials, Z and offset timestamps
  {
    id: uuid(5),
    title: 'bell\u0007 nul\u0000 esc\u001b vt\u000b ff\u000c tab\there\r\nnext line\uFFFE\uFFFF end',
    count: -9007199254740991,
    score: 'NaN',
    active: false,
    created_at: '2025-09-03T12:30:00+02:00',
    day: '1999-12-31',
    attributes: 'just a JSON string',
    tags: [],
    related_ids: [null, uuid(6)],
    weights: ['Infinity', null, '-Infinity'],
  },
  // 3: empty string, a timestamp that is not xs:dateTime text (space, short offset), zero
  {
    id: uuid(7),
    title: '',
    count: 0,
    score: 0,
    active: true,
    created_at: '2025-01-01 01:00:00+01',
    day: '2025-01-01',
    attributes: [],
    tags: [''],
    related_ids: [],
    weights: [],
  },
];

async function validate(document: string, schema: string) {
  return validateXML({
    xml: [{ fileName: 'export.xml', contents: document }],
    schema: [{ fileName: 'export.xsd', contents: schema }],
  });
}

type El = Element;
function children(el: El, name?: string): El[] {
  return Array.from(el.childNodes).filter(
    (n): n is El => n.nodeType === 1 && (name === undefined || (n as El).localName === name),
  );
}
function child(el: El, name: string): El | undefined {
  return children(el, name)[0];
}

function parse(document: string): El {
  return create(document).root().node as unknown as El;
}

describe('xml writer', () => {
  const lines = ROWS.map((r) => JSON.stringify(r));
  // Hand-mangle one line into the exact big-integer form PostgreSQL writes.
  lines[0] = lines[0]!.replace('"big":1', '"big":12345678901234567');

  it('writes a document that validates against the generated XSD', async () => {
    const out = (await run(xml.create(ALL), chunked(ndjsonOf(lines), [1, 3, 7, 64]))).toString('utf8');
    expect(out.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n')).toBe(true);
    const result = await validate(out, xsdFor(ALL));
    expect(result.errors).toEqual([]);
    expect(result.valid).toBe(true);
  });

  it('round-trips every value through an independent parser', async () => {
    const out = (await run(xml.create(ALL), ndjsonOf(lines))).toString('utf8');
    const root = parse(out);
    expect(root.localName).toBe('export');
    expect(root.namespaceURI).toBe(XML_NAMESPACE);
    expect(root.getAttribute('dataset')).toBe('kitchen_sink');

    const metadata = child(root, 'metadata')!;
    expect(child(metadata, 'export_id')!.textContent).toBe(ALL.metadata['export_id']);
    expect(child(metadata, 'anonymized')!.textContent).toBe('false');
    expect(JSON.parse(child(metadata, 'filters')!.textContent!)).toEqual(ALL.metadata['filters']);

    const records = children(child(root, 'records')!, 'record');
    expect(records).toHaveLength(4);
    const [full, nulls, nasty, empty] = records as [El, El, El, El];

    // Child elements are the fields, in field order.
    expect(children(full).map((e) => e.localName)).toEqual(allTypeFields.map((f) => f.name));
    expect(children(full).every((e) => e.namespaceURI === XML_NAMESPACE)).toBe(true);
    expect(child(full, 'title')!.textContent).toBe(ROWS[0]!.title);
    expect(child(full, 'count')!.textContent).toBe('42');
    expect(child(full, 'score')!.textContent).toBe('0.1');
    expect(child(full, 'active')!.textContent).toBe('true');
    expect(child(full, 'created_at')!.textContent).toBe('2025-09-03T10:00:00.123456+00:00');
    expect(child(full, 'day')!.textContent).toBe('2025-09-03');
    const attributes = child(full, 'attributes')!.textContent!;
    expect(attributes).toContain('"big":12345678901234567');
    expect(JSON.parse(attributes)).toMatchObject({ plan: 'pro', 'a&b': '<x>', list: [1, 2.5, null] });
    expect(children(child(full, 'tags')!, 'item').map((e) => e.textContent)).toEqual([
      'vip',
      '<b>',
      'ümlaut',
    ]);
    expect(children(child(full, 'weights')!, 'item').map((e) => Number(e.textContent))).toEqual([
      0.5, 1e-7, -3,
    ]);

    // Nulls: the element is omitted.
    expect(children(nulls).map((e) => e.localName)).toEqual(['id']);

    // Control characters are gone; tab, CR and LF are kept.
    expect(child(nasty, 'title')!.textContent).toBe('bell nul esc vt ff tab\there\r\nnext line end');
    expect(child(nasty, 'count')!.textContent).toBe('-9007199254740991');
    expect(child(nasty, 'score')!.textContent).toBe('NaN');
    expect(child(nasty, 'active')!.textContent).toBe('false');
    expect(child(nasty, 'created_at')!.textContent).toBe('2025-09-03T12:30:00+02:00');
    expect(child(nasty, 'attributes')!.textContent).toBe('"just a JSON string"');
    expect(children(child(nasty, 'tags')!)).toEqual([]);
    const related = children(child(nasty, 'related_ids')!, 'item');
    expect(related.map((e) => e.getAttributeNS(XSI_NAMESPACE, 'nil'))).toEqual(['true', null]);
    expect(related[1]!.textContent).toBe(uuid(6));
    expect(children(child(nasty, 'weights')!, 'item').map((e) => e.textContent)).toEqual(['INF', '', '-INF']);

    expect(child(empty, 'title')!.textContent).toBe('');
    expect(child(empty, 'created_at')!.textContent).toBe('2025-01-01T00:00:00Z');
    expect(child(empty, 'attributes')!.textContent).toBe('[]');
    expect(children(child(empty, 'tags')!, 'item').map((e) => e.textContent)).toEqual(['']);
  });

  it('validates with zero rows', async () => {
    const out = (await run(xml.create(ALL), [])).toString('utf8');
    expect((await validate(out, xsdFor(ALL))).valid).toBe(true);
    expect(children(child(parse(out), 'records')!)).toEqual([]);
  });

  it('validates a real messages export fed byte by byte across multi-byte characters', async () => {
    const ctx = context(messageFields);
    const input = ndjsonOf(Array.from({ length: 60 }, (_, i) => messageRow(i)));
    const out = (await run(xml.create(ctx), chunked(input, [1, 2, 3]))).toString('utf8');
    expect(out).not.toContain('\uFFFD');
    expect(out).toContain('Danke schön! Größe 42 passt. 👍');
    const result = await validate(out, xsdFor(ctx));
    expect(result.errors).toEqual([]);
    expect(children(child(parse(out), 'records')!, 'record')).toHaveLength(60);
  });

  it('has an XSD that rejects what the data map says is wrong', async () => {
    const xsd = xsdFor(ALL);
    const good = (await run(xml.create(ALL), ndjsonOf([lines[3]!]))).toString('utf8');
    expect((await validate(good, xsd)).valid).toBe(true);
    const cases = [
      good.replace(`<id>${uuid(7)}</id>`, '<id>not-a-uuid</id>'),
      good.replace('<count>0</count>', '<count>1.5</count>'),
      good.replace('<active>true</active>', '<active>yes</active>'),
      good.replace('<created_at>2025-01-01T00:00:00Z</created_at>', '<created_at>yesterday</created_at>'),
      good.replace('<id>', '<unknown_field/><id>'),
      good.replace('dataset="kitchen_sink"', 'dataset="other"'),
    ];
    for (const bad of cases) {
      expect(bad).not.toBe(good);
      expect((await validate(bad, xsd)).valid).toBe(false);
    }
  });

  it('maps every field type to its XSD type and documents the fields', () => {
    const xsd = xsdFor(ALL);
    expect(xsd).toContain(`targetNamespace="${XML_NAMESPACE}"`);
    for (const [name, type] of [
      ['id', 'uuid'],
      ['title', 'xs:string'],
      ['count', 'xs:long'],
      ['score', 'xs:double'],
      ['active', 'xs:boolean'],
      ['created_at', 'xs:dateTime'],
      ['day', 'xs:date'],
      ['attributes', 'xs:string'],
    ]) {
      expect(xsd).toContain(`<xs:element name="${name}" type="${type}" minOccurs="0">`);
    }
    expect(xsd).toContain('Free text &amp; &lt;markup&gt; "quoted"');
    expect(xsd).toMatch(/name="weights" minOccurs="0">[\s\S]*?<xs:element name="item" type="xs:double"/);
    expect(xsd).toMatch(/name="related_ids" minOccurs="0">[\s\S]*?<xs:element name="item" type="uuid"/);
  });

  it('fails with the field named when a value does not fit its type', async () => {
    const bad = JSON.stringify({ ...ROWS[3], count: 'many' });
    await expect(run(xml.create(ALL), ndjsonOf([bad]))).rejects.toThrow(
      /field count: value "many" is not a valid integer/,
    );
  });

  it('declares its media type', () => {
    expect(xml.contentType).toBe('application/xml; charset=utf-8');
    expect(xml.extension).toBe('xml');
  });
});
