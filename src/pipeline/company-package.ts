import { randomBytes, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { rangeFrom } from '../db/database.ts';
import { packageDatasets, REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { dataDictionaryMarkdown } from '../datamap/dictionary.ts';
import type { DataMap, DatasetDeclaration, PackageBuilder, PackageFile } from '../datamap/types.ts';
import { invalid } from '../domain/ferry-error.ts';
import { getWriter } from '../format/registry.ts';
import { EXPORT_FORMATS, type ExportFormat, type FieldSpec } from '../format/types.ts';
import { xsdFileName, xsdFor } from '../format/xml-schema.ts';
import { FERRY_VERSION } from '../version.ts';
import {
  createPackageWriter,
  type PackageEntryResult,
  type PackageOutput,
  type PackageWriter,
  type SplitPart,
} from '../packaging/archive.ts';
import { DataPackageSpool, type DataResourceInput } from '../packaging/datapackage.ts';
import { indentJsonText } from '../format/json-text.ts';
import { buildIndexHtml, FileListSummary } from '../packaging/index-html.ts';
import { exportFileJsonSchema, recordJsonSchema } from '../packaging/json-schema.ts';
import {
  ConversationIndexWriter,
  conversationScriptText,
  VIEWER_INDEX_PATH,
  viewerConversationPath,
  viewerPageFile,
  type ViewerMessage,
} from '../packaging/viewer-scripts.ts';
import type { ExportScope } from '../domain/export-scope.ts';
import type { ArchiveKind } from '../domain/package-kind.ts';
import type { PiiLevel } from '../domain/pii-level.ts';
import { accountDocument, knowledgeBaseDocuments, markdownFileName } from '../collect/documents.ts';
import { buildExportQuery, selectedFields } from '../collect/query.ts';
import { type ExportRequest, parseExportRequest, type SubjectRows } from '../collect/request.ts';
import { loadTenant, type TenantInfo, zonesFor } from '../collect/tenant.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import { writeDataset } from './export-dataset.ts';

export interface PackageRequest {
  tenantId: string;
  kind: ArchiveKind;
  /** Datasets to include (default: every dataset the data map places in the package). */
  datasets?: readonly string[] | undefined;
  /** Format of the tabular files (default csv); the JSON files of the package stay JSON. */
  format?: string | undefined;
  pii: PiiLevel;
  from?: string | undefined;
  to?: string | undefined;
  scope?: ExportScope | undefined;
  /** CSV files: prefix cells that spreadsheets would run as formulas (default on). */
  csvGuard?: boolean | undefined;
  /**
   * A data subject's own package (an access or portability request): only the datasets
   * with rows linked to them, each narrowed to those rows.
   */
  subject?: SubjectPackage | undefined;
}

/** What narrows a package to one data subject; built by the privacy code from the data map. */
export interface SubjectPackage {
  /** The request this package answers (in metadata.json). */
  readonly requestId: string;
  /** The subject's rows in a dataset, or null when the dataset holds none of theirs. */
  rows(dataset: DatasetDeclaration): SubjectRows | null;
  /** Tabular files are also written in these formats (JSON for machines, CSV for spreadsheets). */
  readonly alsoFormats: readonly ExportFormat[];
}

export interface PackageOutcome {
  exportId: string;
  root: string;
  records: number;
  bytes: number;
  /** SHA-256 of the archive (empty for a directory package). */
  sha256: string;
  /** Records per file path. */
  counts: Record<string, number>;
  /** The parts of a package written to a split target, each with the files it holds. */
  parts?: SplitPart[];
}

export interface PackageOptions {
  exportId?: string;
  onProgress?: (p: { dataset: string; records: number; bytes: number }) => void;
  signal?: AbortSignal;
  /** The data map that says which datasets go in the package, and how (default: the reference map). */
  datamap?: DataMap;
  /**
   * The export time the package records (metadata, datapackage.json, index.html, its root folder
   * and file times); now by default. Packages of the same data, id and time have the same bytes.
   */
  now?: Date;
}

/** Conversations read per page when writing one file per conversation. */
const CONVERSATION_PAGE = 200;

/** A data file of the package described by a schema file (JSON Schema, or XSD next to an XML file). */
interface Described {
  file: string;
  dataset: string;
  fields: FieldSpec[];
  format: 'json' | 'ndjson' | 'xml';
}

/** A data file of the package as datapackage.json describes it, before its bytes and hash are known. */
type DataFile = Omit<DataResourceInput, 'name' | 'bytes' | 'hash' | 'jsonSchema'> & { path: string };

/** Where the JSON Schema of a JSON or NDJSON file of the package goes (`schemas/<path with _>.schema.json`). */
function jsonSchemaPath(file: string): string {
  return `schemas/${file.replace(/\.n?json$/, '').replaceAll('/', '_')}.schema.json`;
}

/** A JSON file of the package (not a tabular one). */
function jsonFile(path: string, title: string, description?: string): DataFile {
  return {
    path,
    title,
    ...(description ? { description } : {}),
    format: 'json',
    mediatype: 'application/json',
  };
}

/**
 * Lists a written data file in datapackage.json, with the bytes and SHA-256 the package writer
 * measured, and the path of its JSON Schema when `addSchemas` writes one (JSON and NDJSON
 * dataset files). Resource names come from the paths (`analytics/daily.csv` is
 * `analytics_daily`). The list goes to disk as it grows: a package holds a file per conversation.
 */
async function describe(ctx: Ctx, file: DataFile, entry: PackageEntryResult, schema = false): Promise<void> {
  const base = file.path
    .toLowerCase()
    .replace(/\.[a-z0-9]+$/, '')
    .replace(/[^a-z0-9]+/g, '_');
  const resource: DataResourceInput = {
    ...file,
    name: await ctx.resources.freeName(base),
    bytes: entry.bytes,
    hash: entry.sha256,
    ...(schema ? { jsonSchema: jsonSchemaPath(file.path) } : {}),
  };
  await ctx.resources.add(resource);
}

interface Ctx {
  database: Database;
  datamap: DataMap;
  request: PackageRequest;
  /** Format of the tabular files. */
  format: ExportFormat;
  tenant: TenantInfo;
  exportId: string;
  anonymizeKey: string;
  pkg: PackageWriter;
  counts: Record<string, number>;
  /** Every data file, for datapackage.json, in a spool on disk. */
  resources: DataPackageSpool;
  described: Described[];
  datasetFiles: Record<string, string[]>;
  tmp: string;
  onProgress: PackageOptions['onProgress'];
  signal: AbortSignal | undefined;
  /** The export time the package records. */
  now: Date;
  /** The conversation browser's index, fed by the conversations builder. */
  viewer: ConversationIndexWriter;
  viewerDone: Promise<void>;
}

function datasetRequest(
  ctx: Ctx,
  dataset: string,
  format: string,
  extra: Readonly<Record<string, string>> = {},
): ExportRequest {
  const dated = ctx.datamap.datasets[dataset]?.package?.dated ?? false;
  const parsed = parseExportRequest(
    {
      tenantId: ctx.tenant.id,
      dataset,
      format,
      pii: ctx.request.pii,
      ...(dated ? { from: ctx.request.from, to: ctx.request.to } : {}),
      csvGuard: ctx.request.csvGuard ?? true,
      options: extra,
      scope: ctx.request.scope,
    },
    ctx.datamap,
  );
  const subject = ctx.request.subject?.rows(ctx.datamap.datasets[dataset]!);
  return subject ? { ...parsed, subject } : parsed;
}

function note(ctx: Ctx, dataset: string, file: string, records: number) {
  ctx.counts[file] = records;
  ctx.datasetFiles[dataset] = [...(ctx.datasetFiles[dataset] ?? []), file];
  ctx.onProgress?.({ dataset, records, bytes: 0 });
}

/**
 * Streams one dataset export straight into a package entry: a tabular file in the package's
 * format (listed in datapackage.json), or a JSON file (with a JSON Schema).
 */
async function addDataset(
  ctx: Ctx,
  dataset: string,
  entry: PackageFile,
  tabularFormat: ExportFormat = ctx.format,
): Promise<void> {
  const format = entry.format === 'tabular' ? tabularFormat : 'json';
  const writer = getWriter(format);
  const file = `${entry.path}.${writer.extension}`;
  const request = datasetRequest(ctx, dataset, format, entry.parameters);
  const pass = new PassThrough();
  const [outcome, written] = await Promise.all([
    writeDataset(ctx.database, request, pass, {
      exportId: ctx.exportId,
      anonymizeKey: ctx.anonymizeKey,
      datamap: ctx.datamap,
      now: ctx.now,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    }),
    ctx.pkg.add(file, pass),
  ]);
  note(ctx, dataset, file, outcome.records);
  const declaration = ctx.datamap.datasets[dataset]!;
  const fields = selectedFields(declaration, request).map((f) => ({
    name: f.name,
    type: f.type,
    description: f.description,
  }));
  const schema = format === 'json' || format === 'ndjson';
  if (entry.format === 'tabular') {
    const tabular: DataFile = {
      path: file,
      title: dataset,
      description: declaration.description,
      format: writer.extension,
      mediatype: writer.contentType.split(';')[0]!,
      // A JSON export holds its rows under `data`, after `export_metadata`.
      ...(format === 'json' ? { dialect: { property: 'data', itemType: 'object' } } : {}),
      fields,
    };
    await describe(ctx, tabular, written, schema);
  } else await describe(ctx, jsonFile(file, dataset, declaration.description), written, schema);
  if (schema || format === 'xml') ctx.described.push({ file, dataset, fields, format });
}

/** JSON Schemas of the JSON files (a record schema per NDJSON line), an XSD next to each XML file and under `schemas/`. */
async function addSchemas(ctx: Ctx): Promise<void> {
  const xsds = new Set<string>();
  for (const d of ctx.described) {
    if (d.format === 'xml') {
      // Where the file's xsi:schemaLocation points: `<dataset>.xsd` in the same folder.
      const xsd = path.posix.join(path.posix.dirname(d.file), xsdFileName(d.dataset));
      if (xsds.has(xsd)) continue;
      xsds.add(xsd);
      const text = xsdFor({ dataset: d.dataset, fields: d.fields });
      await ctx.pkg.add(xsd, text);
      // And with the package's other schemas, where docs/package.md lists them.
      const listed = `schemas/${xsdFileName(d.dataset)}`;
      if (listed !== xsd && !xsds.has(listed)) {
        xsds.add(listed);
        await ctx.pkg.add(listed, text);
      }
      continue;
    }
    const id = jsonSchemaPath(d.file);
    const input = { dataset: d.dataset, fields: d.fields, id };
    const schema = d.format === 'json' ? exportFileJsonSchema(input) : recordJsonSchema(input);
    await ctx.pkg.add(id, `${JSON.stringify(schema, null, 2)}\n`);
  }
}

async function addJson(
  ctx: Ctx,
  dataset: string,
  file: string,
  value: unknown,
  records: number,
): Promise<void> {
  const entry = await ctx.pkg.add(file, `${JSON.stringify(value, null, 2)}\n`);
  await describe(ctx, jsonFile(file, dataset, ctx.datamap.datasets[dataset]?.description), entry);
  note(ctx, dataset, file, records);
}

async function addAccount(ctx: Ctx): Promise<void> {
  const request = datasetRequest(ctx, 'account', 'json');
  const zones = zonesFor(request, ctx.tenant);
  const account = await accountDocument(ctx.database, request, {
    tenant: ctx.tenant,
    timezone: zones.timezone,
    anonymizeKey: ctx.anonymizeKey,
    metadata: {},
  });
  const { tenant, plan_and_usage, settings, sites, integrations } = account as Record<
    string,
    unknown[] & Record<string, unknown>
  >;
  await addJson(ctx, 'account', 'company.json', { ...(tenant as object), plan_and_usage }, 1);
  await addJson(ctx, 'account', 'sites.json', sites, (sites as unknown[]).length);
  await addJson(ctx, 'account', 'settings.json', settings, Object.keys(settings as object).length);
  await addJson(ctx, 'account', 'integrations.json', integrations, (integrations as unknown[]).length);
}

interface PageRow {
  j: string;
  k: string[];
}

async function rows(database: Database, statement: string): Promise<{ j: string; keys: string[] }[]> {
  const result = await sql<Record<string, string>>`${sql.raw(statement)}`.execute(database.db);
  return result.rows.map((r) => ({
    j: r.j!,
    keys: Object.keys(r)
      .filter((k) => k.startsWith('k'))
      .sort()
      .map((k) => r[k]!),
  }));
}

/** `conversations/index.json`, one `conversations/<id>.json` (with messages) per conversation, and the viewer files. */
async function addConversations(ctx: Ctx): Promise<void> {
  const { viewer, viewerDone } = ctx;
  const conversations: DatasetDeclaration = ctx.datamap.datasets.conversations!;
  const messages: DatasetDeclaration = ctx.datamap.datasets.messages!;
  const cRequest = datasetRequest(ctx, 'conversations', 'json');
  const mRequest: ExportRequest = { ...datasetRequest(ctx, 'messages', 'json'), filters: {} };
  const zones = zonesFor(cRequest, ctx.tenant);
  const qctx = { ...zones, anonymizeKey: ctx.anonymizeKey, input: 'ndjson' as const };
  const cq = buildExportQuery(conversations, cRequest, qctx);
  const mq = buildExportQuery(messages, mRequest, qctx);
  const indexFile = path.join(ctx.tmp, 'conversations-index.json');
  const index = createWriteStream(indexFile);
  const write = (s: string) =>
    index.write(s) ? Promise.resolve() : new Promise<void>((r) => index.once('drain', () => r()));
  await write('[\n');
  let count = 0;
  let pages = 0;
  const keySelect = cq.key.map((k, i) => `(${k})::text AS k${i}`).join(', ');
  /** One page of conversations after `after` (a key literal), with their messages; null past the last. */
  const fetchPage = async (after: string | null) => {
    const page: PageRow[] = (
      await rows(
        ctx.database,
        `SELECT ${cq.projection} AS j, ${keySelect} ${rangeFrom(cq, { after })} ORDER BY ${cq.key.join(', ')} LIMIT ${CONVERSATION_PAGE}`,
      )
    ).map((r) => ({ j: r.j, k: r.keys }));
    if (!page.length) return null;
    const convs = page.map((p) => JSON.parse(p.j) as Record<string, unknown>);
    const ids = convs.map((c) => String(c.conversation_id));
    const inList = ids.map((id) => `'${id.replaceAll("'", "''")}'`).join(', ');
    const msgRows = await rows(
      ctx.database,
      `SELECT ${mq.projection} AS j ${mq.from.replace('{{KEY_RANGE}}', ` AND t.conversation_id IN (${inList})`)} ORDER BY t.conversation_id, t.created_at, t.id`,
    );
    const last = page[page.length - 1]!.k.map((v) => `'${v.replaceAll("'", "''")}'`).join(', ');
    return { page, convs, msgRows, last };
  };
  // The next page is read while this one is written, so the database and the archive work side by side.
  let next = fetchPage(null);
  for (;;) {
    if (ctx.signal?.aborted) {
      next.catch(() => {});
      throw ctx.signal.reason ?? new Error('aborted');
    }
    const current = await next;
    if (!current) break;
    const { page, convs, msgRows } = current;
    next = fetchPage(current.last);
    // Settled here if writing this page fails first; the loop awaits it otherwise.
    next.catch(() => {});
    // Parsed values feed the index and the viewer; the conversation files are the
    // database's JSON text, so numbers stay exact (a bigint in custom_fields, say).
    const byConversation = new Map<string, { message: Record<string, unknown>; text: string }[]>();
    for (const m of msgRows) {
      const message = JSON.parse(m.j) as Record<string, unknown>;
      const list = byConversation.get(String(message.conversation_id)) ?? [];
      list.push({ message, text: m.j });
      byConversation.set(String(message.conversation_id), list);
    }
    // One viewer file per page of conversations: half as many files in the package.
    const viewerFile = viewerPageFile(++pages);
    let viewerText = '';
    for (const [i, conversation] of convs.entries()) {
      const id = String(conversation.conversation_id);
      const entries = byConversation.get(id) ?? [];
      const list = entries.map((e) => e.message);
      const document = `{"conversation":${page[i]!.j},"messages":[${entries.map((e) => e.text).join(',')}]}`;
      const entry = await ctx.pkg.add(`conversations/${id}.json`, `${indentJsonText(document)}\n`);
      await describe(
        ctx,
        jsonFile(`conversations/${id}.json`, `conversation ${id} with its messages`),
        entry,
      );
      const customer = (conversation.customer_name ?? conversation.customer_email ?? null) as string | null;
      const summary = {
        conversation_id: id,
        start_timestamp: conversation.start_timestamp,
        conversation_status: conversation.conversation_status,
        satisfaction_score: conversation.satisfaction_score,
        message_count: list.length,
        customer,
        file: `${id}.json`,
      };
      await write(`${count ? ',\n' : ''}${JSON.stringify(summary)}`);
      viewerConversationPath(id);
      const viewerMessages: ViewerMessage[] = list.map((m) => ({
        sender: String(m.sender_type),
        sentAt: String(m.timestamp),
        text: String(m.message_content ?? ''),
      }));
      viewerText += conversationScriptText(
        {
          id,
          startedAt: String(conversation.start_timestamp),
          endedAt: (conversation.end_timestamp as string | null) ?? null,
          customer,
          status: (conversation.conversation_status as string | null) ?? null,
          rating: (conversation.satisfaction_score as number | null) ?? null,
          feedback: (conversation.satisfaction_feedback as string | null) ?? null,
          site: (conversation.site_url as string | null) ?? null,
          pageUrl: (conversation.page_url as string | null) ?? null,
          language: (conversation.language as string | null) ?? null,
        },
        viewerMessages,
      );
      await viewer.add({
        id,
        startedAt: String(conversation.start_timestamp),
        customer,
        status: (conversation.conversation_status as string | null) ?? null,
        rating: (conversation.satisfaction_score as number | null) ?? null,
        preview: viewerMessages[0]?.text ?? null,
        messages: list.length,
        file: viewerFile.name,
      });
      count++;
    }
    await ctx.pkg.add(viewerFile.path, viewerText);
    ctx.onProgress?.({ dataset: 'conversations', records: count, bytes: 0 });
  }
  await write('\n]\n');
  index.end();
  await new Promise<void>((resolve, reject) => index.once('close', resolve).once('error', reject));
  viewer.end();
  await viewerDone;
  const entry = await ctx.pkg.add('conversations/index.json', createReadStream(indexFile));
  await describe(
    ctx,
    jsonFile('conversations/index.json', 'conversations', 'One summary row per conversation.'),
    entry,
  );
  note(ctx, 'conversations', 'conversations/index.json', count);
  ctx.counts['conversations/*.json'] = count;
}

async function addKnowledgeBase(ctx: Ctx): Promise<void> {
  const index: Record<string, unknown>[] = [];
  for await (const doc of knowledgeBaseDocuments(ctx.database, ctx.tenant.id, { includeEmbeddings: false })) {
    const file = `knowledge/${markdownFileName(doc)}`;
    const front = {
      document_id: doc.document_id,
      title: doc.title,
      url: doc.url,
      ...doc.metadata,
      total_references: doc.usage_statistics.total_references,
    };
    const yaml = Object.entries(front)
      .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
      .join('\n');
    const entry = await ctx.pkg.add(file, `---\n${yaml}\n---\n\n${doc.content}\n`);
    await describe(
      ctx,
      {
        path: file,
        title: doc.title,
        description: 'A knowledge-base document: YAML front matter, then its Markdown text.',
        format: 'md',
        mediatype: 'text/markdown',
      },
      entry,
    );
    index.push({
      document_id: doc.document_id,
      title: doc.title,
      file: path.posix.basename(file),
      category: doc.metadata.category,
      language: doc.metadata.language,
      usage_statistics: doc.usage_statistics,
    });
  }
  await addJson(ctx, 'knowledge_base', 'knowledge/index.json', index, index.length);
}

/** The package layouts written by code of their own, by the name a dataset's placement gives. */
const BUILDERS = {
  account: addAccount,
  conversations: addConversations,
  knowledge_base: addKnowledgeBase,
} satisfies Record<PackageBuilder, (ctx: Ctx) => Promise<void>>;

/** The asked datasets in package order (all the map places in the package when none are asked). */
function validateDatasets(map: DataMap, datasets: readonly string[] | undefined): string[] {
  const placed = packageDatasets(map);
  if (!datasets || datasets.length === 0) return placed;
  for (const d of datasets) {
    if (!placed.includes(d)) throw invalid('datasets', `"${d}" cannot go in a package`, placed);
  }
  return placed.filter((d) => datasets.includes(d));
}

/** The format of the package's tabular files: one of the export formats, csv by default. */
function packageFormat(format: string | undefined): ExportFormat {
  if (format === undefined) return 'csv';
  if (!(EXPORT_FORMATS as readonly string[]).includes(format))
    throw invalid(
      'format',
      `a package writes its tabular files as ${EXPORT_FORMATS.join(', ')}`,
      EXPORT_FORMATS,
    );
  return format as ExportFormat;
}

/**
 * Writes the company package: every chosen dataset as files, the data dictionary,
 * datapackage.json, JSON Schemas, metadata.json, an offline index.html and
 * checksums.sha256, streamed into one archive (or folder), whose SHA-256 it returns.
 */
export async function exportCompanyPackage(
  database: Database,
  request: PackageRequest,
  out: Writable | { dir: string },
  options: PackageOptions = {},
): Promise<PackageOutcome> {
  if (!isStream(out)) return { ...(await writeCompanyPackage(database, request, out, options)), sha256: '' };
  const meter = new MeteredHash();
  const sink = pipeline(meter, out);
  // A failed package tears the meter down; the package's own error is the one reported.
  sink.catch(() => {});
  const written = await writeCompanyPackage(database, request, meter, options);
  await sink;
  return { ...written, bytes: meter.bytes, sha256: meter.sha256 };
}

function isStream(out: Writable | { dir: string }): out is Writable {
  return !('dir' in out && !('write' in out));
}

/**
 * The same package without a hash of the archive, for a caller that meters the bytes
 * itself (the file run), so each byte is hashed once; or in parts, to a split target.
 */
export async function writeCompanyPackage(
  database: Database,
  request: PackageRequest,
  target: PackageOutput,
  options: PackageOptions = {},
): Promise<Omit<PackageOutcome, 'sha256'>> {
  const datamap = options.datamap ?? REFERENCE_DATAMAP;
  const subject = request.subject;
  // A subject's package holds the datasets with rows linked to them, and no others.
  const datasets = validateDatasets(datamap, request.datasets).filter(
    (d) => !subject || subject.rows(datamap.datasets[d]!) !== null,
  );
  const format = packageFormat(request.format);
  const tenant = await loadTenant(database, request.tenantId);
  const exportId = options.exportId ?? randomUUID();
  const now = options.now ?? new Date();
  const root = `${subject ? 'personal-data' : 'company-export'}-${now.toISOString().slice(0, 10)}`;
  const writer = createPackageWriter(request.kind, target, { root, mtime: now });
  // What was written, summarised for the file list of index.html.
  const files = new FileListSummary();
  const pkg: PackageWriter = {
    add: async (file, source) => {
      const entry: PackageEntryResult = await writer.add(file, source);
      files.add(entry);
      return entry;
    },
    finish: () => writer.finish(),
    abort: (err) => writer.abort(err),
  };
  const tmp = await mkdtemp(path.join(tmpdir(), 'ferry-package-'));
  const resources = new DataPackageSpool(path.join(tmp, 'datapackage-resources.json'));
  const viewer = new ConversationIndexWriter();
  const viewerFile = path.join(tmp, 'viewer-index.js');
  const viewerDone = pipeline(viewer.stream, createWriteStream(viewerFile));
  const ctx: Ctx = {
    database,
    datamap,
    request,
    format,
    tenant,
    exportId,
    anonymizeKey: randomBytes(16).toString('hex'),
    pkg,
    counts: {},
    resources,
    described: [],
    datasetFiles: {},
    tmp,
    onProgress: options.onProgress,
    signal: options.signal,
    now,
    viewer,
    viewerDone,
  };
  try {
    for (const dataset of datasets) {
      const placement = datamap.datasets[dataset]!.package!;
      if ('builder' in placement) await BUILDERS[placement.builder](ctx);
      else
        for (const entry of placement.files) {
          await addDataset(ctx, dataset, entry);
          if (entry.format !== 'tabular') continue;
          for (const also of request.subject?.alsoFormats ?? [])
            if (also !== format) await addDataset(ctx, dataset, entry, also);
        }
    }
    // The conversation browser of index.html has data only when the conversations were written.
    const browsable = datasets.some((d) => {
      const placement = datamap.datasets[d]!.package!;
      return 'builder' in placement && placement.builder === 'conversations';
    });
    if (!browsable) {
      viewer.end();
      await viewerDone;
    } else {
      await pkg.add(VIEWER_INDEX_PATH, createReadStream(viewerFile));
    }
    await addSchemas(ctx);
    await pkg.add('data_dictionary.md', dataDictionaryMarkdown(datamap, { datasets }));
    if (resources.count) {
      const descriptor = resources.text({
        name: root,
        title: subject ? `Your personal data held by ${tenant.name}` : `${tenant.name} data export`,
        description: subject
          ? `The personal data ${tenant.name} holds about one person, exported by Ferry for request ${subject.requestId}.`
          : `Data of ${tenant.name} exported by Ferry (anonymization level: ${request.pii}).`,
        created: now,
      });
      await pkg.add('datapackage.json', Readable.from(descriptor, { objectMode: false }));
    }
    const records = Object.entries(ctx.counts)
      .filter(([file]) => file !== 'conversations/*.json')
      .reduce((n, [, c]) => n + c, 0);
    const metadata = {
      export_id: exportId,
      export_date: now.toISOString(),
      tenant: {
        id: tenant.id,
        name: tenant.name,
        slug: tenant.slug,
        plan: tenant.plan,
        timezone: tenant.timezone,
      },
      schema_version: datamap.version,
      ferry_version: FERRY_VERSION,
      datasets,
      filters: {
        from: request.from ?? null,
        to: request.to ?? null,
        scope: request.scope ?? { kind: 'tenant' },
      },
      anonymization_level: request.pii,
      ...(subject
        ? {
            data_subject_request: subject.requestId,
            other_people:
              "Other people's email addresses and phone numbers in free text are replaced by [email] and [phone]; " +
              'team members appear by role (sender_type) and an opaque id.',
          }
        : {}),
      timestamps: 'ISO 8601, UTC',
      counts: ctx.counts,
    };
    await pkg.add('metadata.json', `${JSON.stringify(metadata, null, 2)}\n`);
    // The third parties that also hold the tenant's data (docs/processors.md), when any are registered.
    const processors = await sql<Record<string, unknown>>`
      SELECT name, purpose, data_categories, location, retention, deletion_channel, included_in_exports, export_instructions_url
      FROM processors WHERE tenant_id = ${tenant.id} ORDER BY name`.execute(database.db);
    if (processors.rows.length)
      await pkg.add(
        'processors.json',
        `${JSON.stringify({ description: 'Third parties that process this data on behalf of the company', processors: processors.rows }, null, 2)}\n`,
      );
    await pkg.add(
      'index.html',
      buildIndexHtml({
        company: tenant.name,
        exportedAt: now,
        datasets: datasets.map((d) => ({
          name: d,
          description: datamap.datasets[d]?.description,
          rows: (ctx.datasetFiles[d] ?? []).reduce((n, f) => n + (ctx.counts[f] ?? 0), 0),
          files: ctx.datasetFiles[d] ?? [],
        })),
        files,
        ...(browsable ? { conversations: { count: ctx.counts['conversations/*.json'] ?? 0 } } : {}),
        generator: `Ferry ${FERRY_VERSION}`,
      }),
    );
    const done = await pkg.finish();
    return {
      exportId,
      root,
      records,
      bytes: done.bytes,
      counts: ctx.counts,
      ...(done.parts ? { parts: done.parts } : {}),
    };
  } catch (err) {
    pkg.abort(err as Error);
    viewer.stream.destroy();
    throw err;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
