/**
 * Shared inputs for the format writer tests: NDJSON exactly as PostgreSQL's
 * `row_to_json` renders it (timestamps `...+00:00` or `Z`, float specials as strings,
 * jsonb with its own spacing, big integers as bare numbers), odd chunkings, and a
 * runner that collects a writer's output.
 */
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MESSAGE_FIELDS } from '../src/datamap/reference-datasets.ts';
import type { FieldSpec, WriterContext } from '../src/format/types.ts';

export const messageFields: FieldSpec[] = MESSAGE_FIELDS.map(({ name, type, description }) => ({
  name,
  type,
  description,
}));

/** One field of every type, for the type-mapping tests. */
export const allTypeFields: FieldSpec[] = [
  { name: 'id', type: 'uuid', description: 'Row id.' },
  { name: 'title', type: 'string', description: 'Free text & <markup> "quoted" \'single\'.' },
  { name: 'count', type: 'integer', description: 'A count.' },
  { name: 'score', type: 'number', description: 'A score.' },
  { name: 'active', type: 'boolean', description: 'A flag.' },
  { name: 'created_at', type: 'timestamp', description: 'When.' },
  { name: 'day', type: 'date', description: 'Which day.' },
  { name: 'attributes', type: 'json', description: 'Free-form JSON.' },
  { name: 'tags', type: 'string[]', description: 'Tags.' },
  { name: 'related_ids', type: 'uuid[]', description: 'Related rows.' },
  { name: 'weights', type: 'number[]', description: 'Weights.' },
];

export function context(fields: FieldSpec[], overrides: Partial<WriterContext> = {}): WriterContext {
  return {
    dataset: 'messages',
    fields,
    metadata: {
      export_id: '0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b',
      tenant_id: '0199a1b2-c3d4-7e5f-8a9b-000000000001',
      dataset: 'messages',
      format: 'test',
      generated_at: '2025-09-03T12:00:00Z',
      filters: { from: '2025-09-01', sender_type: 'ai' },
      anonymized: false,
    },
    bom: false,
    ...overrides,
  };
}

/** A deterministic UUID (v7 shape) from a number. */
export function uuid(n: number): string {
  const hex = n.toString(16).padStart(12, '0');
  return `0198f3c2-8a1b-7c3d-9e4f-${hex}`;
}

const TEXTS = [
  'Hi, where is my order #4711?',
  'Your order shipped yesterday; tracking: 1Z999AA10123456784.',
  'Danke schön! Größe 42 passt. 👍',
  'Est-ce que je peux payer en 3× ?',
  '注文をキャンセルしたいです。',
  'Line one\nline two\r\nline three\ttabbed',
  'Tricky: & < > " \' ]]> =SUM(A1) 🚀🇩🇪',
];

/**
 * A messages row as `row_to_json` renders it. Microsecond timestamps; every third row
 * uses `Z`, the others `+00:00`; some rows have nulls where the column allows them.
 */
export function messageRow(i: number, base = Date.UTC(2025, 8, 3, 10, 0, 0)): string {
  const ms = base + i * 1500;
  const iso = new Date(ms).toISOString().slice(0, 19);
  const micros = String((i * 137) % 1_000_000).padStart(6, '0');
  const ts = `${iso}.${micros}${i % 3 === 0 ? 'Z' : '+00:00'}`;
  const ai = i % 2 === 1;
  const text = TEXTS[i % TEXTS.length]!;
  const row = {
    message_id: uuid(i),
    conversation_id: uuid(1_000_000 + Math.floor(i / 10)),
    timestamp: ts,
    sender_type: ai ? 'ai' : 'customer',
    sender_id: ai ? 'asst_default' : null,
    message_content: text,
    confidence_score: ai ? ((i * 7) % 100) / 100 : null,
    processing_time_ms: ai ? 200 + (i % 900) : null,
    tokens_used: ai ? 50 + (i % 400) : null,
    content_sources: ai ? [uuid(9_000_000 + (i % 5)), uuid(9_000_000 + ((i + 1) % 5))] : null,
    source_relevance_scores: ai ? [0.91, 0.5] : null,
    message_length: [...text].length,
    language_detected: 'en',
    sentiment_score: ((i % 21) - 10) / 10,
    intent_classification: ai ? null : 'order_status',
    entities_extracted: i % 4 === 0 ? { order_id: '4711', amounts: [19.99, 5] } : [],
    custom_metadata: i % 5 === 0 ? { channel: 'web', nested: { deep: true } } : null,
    edited: i % 7 === 0,
  };
  // jsonb prints with a space after ':' and ','; mimic that for the json columns.
  return JSON.stringify(row).replace(
    /"custom_metadata":\{"channel":"web"/,
    '"custom_metadata":{"channel": "web"',
  );
}

export function ndjsonOf(lines: string[]): Buffer {
  return Buffer.from(lines.map((l) => `${l}\n`).join(''));
}

/** Cuts bytes into chunks of the given sizes, cycling (so boundaries fall everywhere). */
export function chunked(bytes: Buffer, sizes: number[] = [1, 2, 3, 5, 7, 11, 13, 64, 1000]): Buffer[] {
  const chunks: Buffer[] = [];
  let offset = 0;
  let k = 0;
  while (offset < bytes.length) {
    const size = sizes[k++ % sizes.length]!;
    chunks.push(bytes.subarray(offset, offset + size));
    offset += size;
  }
  return chunks;
}

/** Feeds chunks through a writer and returns everything it wrote. */
export async function run(transform: Transform, chunks: Buffer[] | Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(Array.isArray(chunks) ? chunks : [chunks]),
    transform,
    async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) out.push(chunk);
    },
  );
  return Buffer.concat(out);
}
