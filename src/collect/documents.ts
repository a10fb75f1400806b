import { sql } from 'kysely';
import type { Writable } from 'node:stream';
import type { Database } from '../db/database.ts';
import { literal } from '../db/database.ts';
import { afterPosition, instantText } from '../db/keyset.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { ACCOUNT_SECTIONS, KB_PARTS } from '../datamap/reference-datasets.ts';
import type { DocumentDataset, DocumentWriter } from '../datamap/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { escapeText } from '../format/xml-escape.ts';
import { createPackageWriter } from '../packaging/archive.ts';
import { anonymizeSql } from '../transform/anonymize.ts';
import { timestampSql } from './render-sql.ts';
import type { ExportRequest } from './request.ts';
import type { TenantInfo } from './tenant.ts';

/**
 * The writers of the `document` datasets of the data map: the knowledge base (JSON,
 * Markdown, XML) and the account (JSON). Documents are read in keyset pages and
 * written as they arrive, so memory does not grow with the knowledge base.
 */

export interface DocumentContext {
  tenant: TenantInfo;
  timezone: string;
  anonymizeKey: string;
  metadata: Record<string, unknown>;
}

export interface DocumentResult {
  records: number;
  contentType: string;
  extension: string;
}

/** Writes and waits for the stream to accept more (backpressure). */
async function write(out: Writable, text: string): Promise<void> {
  if (!out.write(text))
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      out.once('error', onError);
      out.once('drain', () => {
        out.off('error', onError);
        resolve();
      });
    });
}

const PAGE = 50;

export interface KbDocument {
  document_id: string;
  title: string;
  url: string | null;
  content: string;
  metadata: {
    created_date: string;
    last_updated: string;
    content_type: string;
    category: string;
    tags: string[];
    word_count: number;
    reading_time_minutes: number;
    language: string;
  };
  usage_statistics: {
    total_references: number;
    average_relevance: number | null;
    last_referenced: string | null;
    monthly_references: Record<string, number>;
  };
  chunks: {
    chunk_id: string;
    content: string;
    vector_embedding?: number[];
    relevance_scores: { average: number | null; max: number | null; min: number | null };
  }[];
}

interface Usage {
  total: number;
  average: number | null;
  last: string | null;
  monthly: Record<string, number>;
}

/**
 * Usage of each document, derived from the sources AI answers cited (messages.content_sources).
 * `last` is the database's text of the newest citation, in the export's zone.
 */
async function documentUsage(
  database: Database,
  tenantId: string,
  timezone: string,
): Promise<Map<string, Usage>> {
  const last = timestampSql('max(max(m.created_at)) OVER (PARTITION BY src.doc)', timezone);
  const rows = await sql<{
    doc: string;
    month: string;
    n: number;
    rel_sum: number | null;
    rel_n: number;
    last: string;
  }>`
    SELECT src.doc, to_char(date_trunc('month', m.created_at AT TIME ZONE 'UTC'), 'YYYY-MM') AS month,
           count(*)::int AS n,
           sum((m.source_relevance_scores ->> (src.ord::int - 1))::float8) AS rel_sum,
           count(m.source_relevance_scores ->> (src.ord::int - 1))::int AS rel_n,
           ${sql.raw(last)} AS last
    FROM messages m CROSS JOIN LATERAL jsonb_array_elements_text(m.content_sources) WITH ORDINALITY AS src(doc, ord)
    WHERE m.tenant_id = ${tenantId} AND m.sender_type = 'ai'
    GROUP BY 1, 2`.execute(database.db);
  const usage = new Map<string, Usage & { relSum: number; relN: number }>();
  for (const r of rows.rows) {
    const u = usage.get(r.doc) ?? { total: 0, average: null, last: r.last, monthly: {}, relSum: 0, relN: 0 };
    u.total += r.n;
    u.relSum += r.rel_sum ?? 0;
    u.relN += r.rel_n;
    u.monthly[r.month] = r.n;
    usage.set(r.doc, u);
  }
  for (const u of usage.values())
    u.average = u.relN ? Math.round((u.relSum / u.relN) * 10_000) / 10_000 : null;
  return usage;
}

/** One page of documents in `(created_at, id)` order after a position. */
function documentPage(
  database: Database,
  tenantId: string,
  timezone: string,
  after: { at: string; id: string } | null,
) {
  return database.db
    .selectFrom('documents')
    .select(['id', 'title', 'url', 'content', 'content_type', 'category', 'tags', 'language'])
    .select([
      instantText('created_at').as('cursor_at'),
      sql<string>`${sql.raw(timestampSql('created_at', timezone))}`.as('created_date'),
      sql<string>`${sql.raw(timestampSql('updated_at', timezone))}`.as('last_updated'),
    ])
    .where('tenant_id', '=', tenantId)
    .$if(after !== null, (qb) => qb.where(afterPosition('created_at', after!, 'asc')))
    .orderBy('created_at')
    .orderBy('id')
    .limit(PAGE)
    .execute();
}

/**
 * Streams the tenant's documents with their chunks, a page at a time. Timestamps are
 * the database's text with microseconds, in `timezone` (default UTC); the page cursor
 * holds the database's own `created_at` and the id (see db/keyset.ts).
 */
export async function* knowledgeBaseDocuments(
  database: Database,
  tenantId: string,
  options: { includeEmbeddings: boolean; timezone?: string | undefined },
): AsyncGenerator<KbDocument> {
  const timezone = options.timezone ?? 'UTC';
  const usage = await documentUsage(database, tenantId, timezone);
  let after: { at: string; id: string } | null = null;
  for (;;) {
    const docs = await documentPage(database, tenantId, timezone, after);
    if (!docs.length) return;
    const chunks = await database.db
      .selectFrom('document_chunks')
      .select([
        'id',
        'document_id',
        'chunk_index',
        'content',
        'relevance_avg',
        'relevance_max',
        'relevance_min',
      ])
      .$if(options.includeEmbeddings, (qb) => qb.select('embedding'))
      .where(
        'document_id',
        'in',
        docs.map((d) => d.id),
      )
      .orderBy('document_id')
      .orderBy('chunk_index')
      .execute();
    for (const d of docs) {
      const words = d.content.split(/\s+/).filter(Boolean).length;
      const u = usage.get(d.id);
      yield {
        document_id: d.id,
        title: d.title,
        url: d.url,
        content: d.content,
        metadata: {
          created_date: d.created_date,
          last_updated: d.last_updated,
          content_type: d.content_type,
          category: d.category,
          tags: d.tags,
          word_count: words,
          reading_time_minutes: Math.max(1, Math.ceil(words / 200)),
          language: d.language,
        },
        usage_statistics: {
          total_references: u?.total ?? 0,
          average_relevance: u?.average ?? null,
          last_referenced: u?.last ?? null,
          monthly_references: u?.monthly ?? {},
        },
        chunks: chunks
          .filter((c) => c.document_id === d.id)
          .map((c) => ({
            chunk_id: c.id,
            content: c.content,
            ...(options.includeEmbeddings
              ? { vector_embedding: (c as { embedding?: number[] }).embedding ?? [] }
              : {}),
            relevance_scores: { average: c.relevance_avg, max: c.relevance_max, min: c.relevance_min },
          })),
      };
    }
    const last = docs[docs.length - 1]!;
    after = { at: last.cursor_at, id: last.id };
  }
}

/** Categories with their document counts, and what visitors ask about (topics) and where answers fall short. */
async function kbSummary(database: Database, tenantId: string) {
  const categories = await database.db
    .selectFrom('documents')
    .select(['category'])
    .select((eb) => eb.fn.countAll<number>().as('document_count'))
    .where('tenant_id', '=', tenantId)
    .groupBy('category')
    .orderBy('category')
    .execute();
  const topics = await sql<{ topic: string; n: number; low: number }>`
    SELECT topic, count(*)::int AS n, count(*) FILTER (WHERE c.ai_confidence_avg < 0.5)::int AS low
    FROM conversations c CROSS JOIN LATERAL unnest(c.topics_detected) AS topic
    WHERE c.tenant_id = ${tenantId}
    GROUP BY topic ORDER BY n DESC, topic LIMIT 50`.execute(database.db);
  return {
    categories: categories.map((c) => ({ name: c.category, document_count: Number(c.document_count) })),
    search_analytics: {
      top_search_terms: topics.rows.slice(0, 10).map((t) => ({ term: t.topic, count: t.n })),
      content_gaps: topics.rows
        .filter((t) => t.low > 0)
        .sort((a, b) => b.low - a.low || a.topic.localeCompare(b.topic))
        .slice(0, 10)
        .map((t) => ({ topic: t.topic, low_confidence_conversations: t.low })),
    },
  };
}

function xmlElement(name: string, value: unknown, indent: string): string {
  if (value === null || value === undefined) return '';
  if (Array.isArray(value)) {
    return `${indent}<${name}>${value.map((v) => `\n${xmlElement('item', v, `${indent}  `)}`).join('')}\n${indent}</${name}>\n`.replace(
      /\n\n/g,
      '\n',
    );
  }
  if (typeof value === 'object') {
    const inner = Object.entries(value as Record<string, unknown>)
      .map(([k, v]) =>
        xmlElement(/^[A-Za-z_][\w.-]*$/.test(k) ? k : `m${k.replace(/[^\w]/g, '_')}`, v, `${indent}  `),
      )
      .join('');
    return `${indent}<${name}>\n${inner}${indent}</${name}>\n`;
  }
  return `${indent}<${name}>${escapeText(String(value))}</${name}>\n`;
}

export const KB_XML_NAMESPACE = 'https://ferry.dev/schema/knowledge-base/1.0';

/** A comma-separated option as a set of accepted words; absent or empty means all of them. */
export function listOption<T extends string>(
  options: Readonly<Record<string, string>>,
  name: string,
  accepted: readonly T[],
): ReadonlySet<T> {
  const raw = options[name]?.trim();
  if (!raw) return new Set(accepted);
  const chosen = raw
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean);
  for (const value of chosen)
    if (!(accepted as readonly string[]).includes(value))
      throw invalid(`options.${name}`, `"${value}" is not one of the accepted values`, accepted);
  if (!chosen.length) throw invalid(`options.${name}`, 'choose at least one', accepted);
  return new Set(chosen as T[]);
}

/** A document with only the parts asked for: without content, its chunks keep their ids, scores and vectors. */
type ShapedKbDocument = Omit<KbDocument, 'content' | 'metadata' | 'usage_statistics' | 'chunks'> &
  Partial<Pick<KbDocument, 'content' | 'metadata' | 'usage_statistics'>> & {
    chunks: (Omit<KbDocument['chunks'][number], 'content'> & { content?: string })[];
  };

function shapeDocument(doc: KbDocument, parts: ReadonlySet<(typeof KB_PARTS)[number]>): ShapedKbDocument {
  const { content, metadata, usage_statistics, chunks, ...rest } = doc;
  return {
    ...rest,
    ...(parts.has('content') ? { content } : {}),
    ...(parts.has('metadata') ? { metadata } : {}),
    ...(parts.has('usage_stats') ? { usage_statistics } : {}),
    chunks: parts.has('content') ? chunks : chunks.map(({ content: _text, ...chunk }) => chunk),
  };
}

function markdownFor(doc: ShapedKbDocument): string {
  const yaml = (v: unknown) => JSON.stringify(v);
  const m = doc.metadata;
  const front = [
    '---',
    `document_id: ${yaml(doc.document_id)}`,
    `title: ${yaml(doc.title)}`,
    `url: ${yaml(doc.url)}`,
    ...(m
      ? [
          `content_type: ${yaml(m.content_type)}`,
          `category: ${yaml(m.category)}`,
          `tags: ${yaml(m.tags)}`,
          `language: ${yaml(m.language)}`,
          `created_date: ${yaml(m.created_date)}`,
          `last_updated: ${yaml(m.last_updated)}`,
          `word_count: ${m.word_count}`,
        ]
      : []),
    ...(doc.usage_statistics ? [`total_references: ${doc.usage_statistics.total_references}`] : []),
    '---',
    '',
  ].join('\n');
  return doc.content === undefined ? front : `${front}${doc.content}\n`;
}

export function markdownFileName(doc: { document_id: string; title: string }): string {
  const slug = doc.title
    .normalize('NFKD')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 60);
  return `${slug || 'document'}-${doc.document_id.slice(0, 8)}.md`;
}

async function exportKnowledgeBase(
  database: Database,
  request: ExportRequest,
  out: Writable,
  ctx: DocumentContext,
): Promise<DocumentResult> {
  const includeEmbeddings = request.options.include_embeddings === 'true';
  const parts = listOption(request.options, 'include', KB_PARTS);
  const meta = {
    export_date: ctx.metadata.export_date,
    tenant_id: ctx.tenant.id,
    total_documents: await countKnowledgeBase(database, ctx.tenant.id),
    export_version: ctx.metadata.export_version,
    export_id: ctx.metadata.export_id,
  };
  const docs = shaped(
    knowledgeBaseDocuments(database, ctx.tenant.id, { includeEmbeddings, timezone: ctx.timezone }),
    parts,
  );
  let records = 0;
  if (request.format === 'markdown') {
    const pkg = createPackageWriter('zip', out, {
      root: 'knowledge_base',
      mtime: new Date(String(ctx.metadata.export_date)),
    });
    for await (const doc of docs) {
      await pkg.add(markdownFileName(doc), markdownFor(doc));
      records++;
    }
    await pkg.finish();
    return { records, contentType: 'application/zip', extension: 'md.zip' };
  }
  const summary = await kbSummary(database, ctx.tenant.id);
  if (request.format === 'xml') {
    await write(
      out,
      `<?xml version="1.0" encoding="UTF-8"?>\n<knowledge_base xmlns="${KB_XML_NAMESPACE}">\n`,
    );
    await write(out, xmlElement('export_metadata', meta, '  '));
    await write(out, '  <documents>\n');
    for await (const doc of docs) {
      await write(out, xmlElement('document', doc, '    '));
      records++;
    }
    await write(out, '  </documents>\n');
    await write(out, xmlElement('categories', summary.categories, '  '));
    await write(out, xmlElement('search_analytics', summary.search_analytics, '  '));
    await write(out, '</knowledge_base>\n');
    return { records, contentType: 'application/xml', extension: 'xml' };
  }
  if (request.format !== 'json')
    throw new FerryError(
      'unsupported_format',
      `knowledge_base exports as json, markdown or xml, not ${request.format}`,
    );
  await write(out, `{"export_metadata":${JSON.stringify(meta)},"documents":[`);
  for await (const doc of docs) {
    await write(out, `${records ? ',' : ''}\n${JSON.stringify(doc)}`);
    records++;
  }
  await write(
    out,
    `\n],"categories":${JSON.stringify(summary.categories)},"search_analytics":${JSON.stringify(summary.search_analytics)}}\n`,
  );
  return { records, contentType: 'application/json', extension: 'json' };
}

async function* shaped(docs: AsyncIterable<KbDocument>, parts: ReadonlySet<(typeof KB_PARTS)[number]>) {
  for await (const doc of docs) yield shapeDocument(doc, parts);
}

async function countKnowledgeBase(database: Database, tenantId: string): Promise<number> {
  const total = await database.db
    .selectFrom('documents')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('tenant_id', '=', tenantId)
    .executeTakeFirstOrThrow();
  return Number(total.n);
}

/** Account data: profile, plan and usage, settings, sites, team (no password hashes), integrations (masked). */
export async function accountDocument(
  database: Database,
  request: ExportRequest,
  ctx: DocumentContext,
): Promise<Record<string, unknown>> {
  const tenantId = ctx.tenant.id;
  const teamFields = REFERENCE_DATAMAP.datasets.team_members!.fields.filter((f) => f.name !== 'tenant_id');
  const cols = teamFields
    .map(
      (f) =>
        `${request.pii === 'full' ? f.sql : anonymizeSql(f, f.sql, { level: request.pii, key: ctx.anonymizeKey })} AS "${f.name}"`,
    )
    .join(', ');
  const team = await sql<
    Record<string, unknown>
  >`${sql.raw(`SELECT ${cols} FROM team_members t WHERE t.tenant_id = ${literal(tenantId)} ORDER BY t.created_at, t.id`)}`.execute(
    database.db,
  );
  const [tenant, sites, settings, integrations, subscription, usage] = await Promise.all([
    database.db
      .selectFrom('tenants')
      .select(['id', 'name', 'slug', 'plan', 'timezone', 'home_country', 'created_at'])
      .where('id', '=', tenantId)
      .executeTakeFirstOrThrow(),
    database.db
      .selectFrom('sites')
      // The database's own time text (microseconds), as every other export writes times.
      .select([
        'id',
        'url',
        'name',
        sql<string>`${sql.raw(timestampSql('created_at', 'UTC'))}`.as('created_at'),
      ])
      .where('tenant_id', '=', tenantId)
      .orderBy('created_at')
      .orderBy('id')
      .execute(),
    database.db
      .selectFrom('settings')
      .select(['key', 'value', 'updated_at'])
      .where('tenant_id', '=', tenantId)
      .orderBy('key')
      .execute(),
    // Only the masked hint leaves; the encrypted credentials column is never selected.
    database.db
      .selectFrom('integrations')
      .select(['id', 'type', 'name', 'config', 'credentials_hint', 'enabled', 'created_at', 'updated_at'])
      .where('tenant_id', '=', tenantId)
      .orderBy('created_at')
      .orderBy('id')
      .execute(),
    database.db
      .selectFrom('subscriptions')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .orderBy('created_at', 'desc')
      .executeTakeFirst(),
    sql<{ conversations: number; messages: number; documents: number }>`
      SELECT (SELECT count(*)::int FROM conversations WHERE tenant_id = ${tenantId} AND start_timestamp > now() - interval '30 days') AS conversations,
             (SELECT count(*)::int FROM messages WHERE tenant_id = ${tenantId} AND created_at > now() - interval '30 days') AS messages,
             (SELECT count(*)::int FROM documents WHERE tenant_id = ${tenantId}) AS documents`.execute(
      database.db,
    ),
  ]);
  const u = usage.rows[0];
  return {
    tenant,
    plan_and_usage: {
      plan: tenant.plan,
      subscription: subscription
        ? {
            plan: subscription.plan,
            status: subscription.status,
            seats: subscription.seats,
            amount: subscription.amount,
            currency: subscription.currency,
            billing_interval: subscription.billing_interval,
            current_period_end: subscription.current_period_end,
          }
        : null,
      usage: {
        conversations_last_30_days: u?.conversations ?? 0,
        messages_last_30_days: u?.messages ?? 0,
        documents: u?.documents ?? 0,
        team_members: team.rows.length,
        sites: sites.length,
      },
    },
    settings: Object.fromEntries(settings.map((s) => [s.key, s.value])),
    sites,
    team_members: team.rows,
    integrations: integrations.map(({ credentials_hint, ...rest }) => ({
      ...rest,
      credentials: credentials_hint,
    })),
  };
}

async function exportAccount(
  database: Database,
  request: ExportRequest,
  out: Writable,
  ctx: DocumentContext,
): Promise<DocumentResult> {
  if (request.format !== 'json')
    throw new FerryError('unsupported_format', `account exports as json, not ${request.format}`);
  const sections = listOption(request.options, 'sections', ACCOUNT_SECTIONS);
  const { settings, team_members, integrations, ...always } = await accountDocument(database, request, ctx);
  // The profile, plan, usage and sites always come; the other sections as asked.
  const account = {
    ...always,
    ...(sections.has('settings') ? { settings } : {}),
    ...(sections.has('users') ? { team_members } : {}),
    ...(sections.has('integrations') ? { integrations } : {}),
  };
  await write(out, `${JSON.stringify({ export_metadata: ctx.metadata, account }, null, 2)}\n`);
  return { records: 1, contentType: 'application/json', extension: 'json' };
}

/** The code behind a document dataset, named by its declaration's `document`. */
interface DocumentBuilder {
  write(
    database: Database,
    request: ExportRequest,
    out: Writable,
    ctx: DocumentContext,
  ): Promise<DocumentResult>;
  /** The records the document holds for a tenant (before it is written). */
  count(database: Database, tenantId: string): Promise<number>;
}

/** Every document writer; a new one is a compile error until it is listed here. */
const DOCUMENTS = {
  knowledge_base: { write: exportKnowledgeBase, count: countKnowledgeBase },
  account: { write: exportAccount, count: async () => 1 },
} satisfies Record<DocumentWriter, DocumentBuilder>;

/** Writes a document dataset to `out`. */
export function exportDocumentDataset(
  database: Database,
  dataset: DocumentDataset,
  request: ExportRequest,
  out: Writable,
  ctx: DocumentContext,
): Promise<DocumentResult> {
  return DOCUMENTS[dataset.document].write(database, request, out, ctx);
}

/** The records a document dataset holds for a tenant: documents of the knowledge base, one account. */
export function documentRecords(
  database: Database,
  dataset: DocumentDataset,
  tenantId: string,
): Promise<number> {
  return DOCUMENTS[dataset.document].count(database, tenantId);
}
