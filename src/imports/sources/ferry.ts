import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../../domain/ferry-error.ts';
import { CHECKSUMS_FILE } from '../../packaging/entry-path.ts';
import { jsonRecords, limitExceeded, unreadable } from '../read.ts';
import {
  DEFAULT_IMPORT_LIMITS,
  type ImportEntity,
  type ImportInput,
  type ImportItem,
  type ImportSource,
  type SourceOptions,
} from '../types.ts';
import { datasetFileItems, datasetMapping, itemOf } from './dataset-records.ts';

/**
 * A Ferry company package (ZIP, tar.gz or folder, docs/package.md) as an import source.
 * Before anything is read, every file is checked against `checksums.sha256` (no file missing,
 * none added, every digest equal) and every resource of `datapackage.json` against the
 * same digests and sizes. Then the package's files go back to the tables they came from:
 * sites, the team, customers, consent records, one file per conversation, the messages and
 * the knowledge base. What the package holds but Ferry does not import is listed in the
 * report's warnings (docs/import.md#ferry-packages).
 */
export async function ferrySource(input: ImportInput, options: SourceOptions): Promise<ImportSource> {
  const manifest = input.files
    .filter((f) => f === CHECKSUMS_FILE || f.endsWith(`/${CHECKSUMS_FILE}`))
    .sort((a, b) => a.length - b.length)[0];
  if (!manifest)
    throw new FerryError(
      'import_unreadable',
      `not a Ferry package: no ${CHECKSUMS_FILE} (a package is a ZIP, tar.gz or folder Ferry wrote)`,
    );
  const prefix = manifest.slice(0, manifest.length - CHECKSUMS_FILE.length);
  const root = path.join(input.root, prefix);
  const files = input.files.filter((f) => f.startsWith(prefix)).map((f) => f.slice(prefix.length));
  await verifyPackage(root, files);
  const metadata = await readJson<{ anonymization_level?: string; tenant?: { name?: string } }>(
    root,
    'metadata.json',
  );
  const warnings: string[] = [];
  if (metadata.anonymization_level && metadata.anonymization_level !== 'full')
    warnings.push(
      `the package was exported with anonymization level "${metadata.anonymization_level}": what it replaced or removed is imported as it is in the package`,
    );
  const skipped = files.filter(
    (f) =>
      /^(analytics|revenue|activity_logs|billing)\//.test(f) || /^(settings|integrations)\.json$/.test(f),
  );
  if (skipped.length > 0)
    warnings.push(
      `not imported: ${[...new Set(skipped.map((f) => f.split('/')[0]))].join(', ')} (analytics and revenue attribution are computed from the imported rows; activity logs, billing, settings and integrations belong to the platform account, and a package holds no credentials)`,
    );
  const tabular = (name: string): string | null => {
    const hit = files.find((f) => new RegExp(`^${name}\\.(csv|json|ndjson|xml|parquet)$`).test(f));
    if (hit && /\.(xml|parquet)$/.test(hit))
      throw new FerryError(
        'unsupported_format',
        `${hit}: imports read packages whose tabular files are CSV, JSON or NDJSON; export the package again with one of those formats`,
      );
    return hit ?? null;
  };
  const warn = (m: string) => {
    if (!warnings.includes(m)) warnings.push(m);
  };
  const { limits } = options;
  const full = (f: string) => path.join(root, f);

  async function* items(entity: ImportEntity): AsyncGenerator<ImportItem> {
    switch (entity) {
      case 'sites': {
        if (!files.includes('sites.json')) return;
        for await (const { value, key } of jsonRecords(full('sites.json'), {
          paths: ['$.*'],
          limits,
          name: 'sites.json',
        })) {
          const v = value as Record<string, unknown>;
          yield {
            entity,
            sourceType: 'sites',
            sourceId: typeof v.id === 'string' ? v.id : '',
            values: { url: v.url ?? null, name: v.name ?? null, created_at: v.created_at ?? null },
            updatedAt: null,
            location: `sites.json record ${Number(key) + 1}`,
            raw: { kind: 'json', value },
          };
        }
        return;
      }
      case 'team_members':
        if (files.includes('team_members.json'))
          yield* datasetFileItems(
            full('team_members.json'),
            'team_members.json',
            'team_members',
            limits,
            'ferry',
            warn,
          );
        return;
      case 'customers': {
        const file = tabular('customers');
        if (file) yield* datasetFileItems(full(file), file, 'customers', limits, 'ferry', warn);
        return;
      }
      case 'consent_records':
        if (files.includes('consent_records.json'))
          yield* datasetFileItems(
            full('consent_records.json'),
            'consent_records.json',
            'consent_records',
            limits,
            'ferry',
            warn,
          );
        return;
      case 'conversations': {
        const mapping = datasetMapping('conversations');
        const conversationFiles = files.filter(
          (f) => /^conversations\/[^/]+\.json$/.test(f) && f !== 'conversations/index.json',
        );
        // One small file per conversation: read 16 ahead, in order, so the disk is never idle.
        const read = async (file: string) => {
          const out: unknown[] = [];
          for await (const { value } of jsonRecords(full(file), {
            paths: ['$.conversation'],
            limits,
            name: file,
          }))
            out.push(value);
          return out;
        };
        const ahead: Promise<unknown[]>[] = [];
        for (let i = 0; i < conversationFiles.length; i++) {
          while (ahead.length < 16 && i + ahead.length < conversationFiles.length) {
            const next = read(conversationFiles[i + ahead.length]!);
            next.catch(() => {});
            ahead.push(next);
          }
          const file = conversationFiles[i]!;
          for (const value of await ahead.shift()!) {
            if (!value || typeof value !== 'object')
              throw unreadable(file, '', '"conversation" must be an object');
            yield itemOf(
              mapping,
              value as Record<string, unknown>,
              { csv: false, location: file, raw: { kind: 'json', value }, system: 'ferry' },
              (f) =>
                warn(
                  `conversations/*.json: field "${f}" is not a field of the conversations dataset and was not imported`,
                ),
            );
          }
        }
        return;
      }
      case 'messages': {
        const file = tabular('messages');
        if (file) yield* datasetFileItems(full(file), file, 'messages', limits, 'ferry', warn);
        return;
      }
      case 'documents':
        yield* documents();
        return;
    }
  }

  async function* documents(): AsyncGenerator<ImportItem> {
    for (const file of files) {
      if (!/^knowledge\/[^/]+\.md$/.test(file)) continue;
      const size = (await stat(full(file))).size;
      if (size > limits.maxRecordBytes)
        throw limitExceeded('maxRecordBytes', limits.maxRecordBytes, `${file}: a document`);
      const text = await readFile(full(file), 'utf8');
      const parsed = parseMarkdownDocument(text);
      if (!parsed) {
        yield {
          entity: 'documents',
          sourceType: 'documents',
          sourceId: file,
          values: {},
          updatedAt: null,
          location: file,
          raw: { kind: 'json', value: { file, text } },
          errors: ['not a knowledge-base document as Ferry writes it (front matter between --- lines)'],
        };
        continue;
      }
      const f = parsed.front;
      yield {
        entity: 'documents',
        sourceType: 'documents',
        sourceId: typeof f.document_id === 'string' ? f.document_id : '',
        values: {
          title: f.title ?? null,
          url: f.url ?? null,
          content: parsed.content,
          content_type: f.content_type ?? null,
          category: f.category ?? null,
          tags: f.tags ?? [],
          language: f.language ?? null,
          created_at: f.created_date ?? null,
          updated_at: f.last_updated ?? null,
        },
        updatedAt: typeof f.last_updated === 'string' ? f.last_updated : null,
        location: file,
        raw: { kind: 'json', value: { file, front: f } },
      };
    }
  }

  return { system: 'ferry', items, warnings };
}

/** A knowledge-base Markdown file as the company package writes it: JSON-valued front matter, a blank line, the content. */
export function parseMarkdownDocument(
  text: string,
): { front: Record<string, unknown>; content: string } | null {
  if (!text.startsWith('---\n')) return null;
  const end = text.indexOf('\n---\n', 3);
  if (end === -1) return null;
  const front: Record<string, unknown> = {};
  for (const line of text.slice(4, end).split('\n')) {
    const m = /^([a-z_]+): (.*)$/.exec(line);
    if (!m) return null;
    try {
      front[m[1]!] = JSON.parse(m[2]!);
    } catch {
      return null;
    }
  }
  // The package writes `---\n<front>\n---\n\n<content>\n`.
  let body = text.slice(end + 5);
  if (body.startsWith('\n')) body = body.slice(1);
  return { front, content: body.endsWith('\n') ? body.slice(0, -1) : body };
}

/** Package metadata files are read whole: bounded, before anything else is trusted. */
const MAX_METADATA_BYTES = 512 * 1024 * 1024;

async function readJson<T>(root: string, file: string): Promise<T> {
  if ((await stat(path.join(root, file))).size > MAX_METADATA_BYTES)
    throw unreadable(
      file,
      '',
      `larger than ${MAX_METADATA_BYTES / 1024 / 1024} MiB: not a package Ferry wrote`,
    );
  try {
    return JSON.parse(await readFile(path.join(root, file), 'utf8')) as T;
  } catch (err) {
    throw unreadable(file, '', `not readable JSON (${(err as Error).message.slice(0, 120)})`);
  }
}

/** Every file against checksums.sha256 and datapackage.json; the first difference is the error. */
export async function verifyPackage(root: string, files: readonly string[]): Promise<void> {
  const listed = new Map<string, string>();
  if ((await stat(path.join(root, CHECKSUMS_FILE))).size > MAX_METADATA_BYTES)
    throw unreadable(
      CHECKSUMS_FILE,
      '',
      `larger than ${MAX_METADATA_BYTES / 1024 / 1024} MiB: not a package Ferry wrote`,
    );
  const text = await readFile(path.join(root, CHECKSUMS_FILE), 'utf8');
  let line = 0;
  for (const row of text.split('\n')) {
    line += 1;
    if (row === '') continue;
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(row);
    if (!m) throw unreadable(CHECKSUMS_FILE, `line ${line}`, 'not a "<sha256>  <path>" line');
    listed.set(m[2]!, m[1]!);
  }
  const present = new Set(files.filter((f) => f !== CHECKSUMS_FILE));
  for (const file of listed.keys())
    if (!present.has(file))
      throw unreadable(CHECKSUMS_FILE, '', `"${file}" is listed but not in the package`);
  for (const file of present)
    if (!listed.has(file))
      throw unreadable(
        CHECKSUMS_FILE,
        '',
        `"${file}" is in the package but not listed: the package was changed`,
      );
  // A package holds a few large files and many small ones (one per conversation): hashed 8 at a time.
  const entries = [...listed];
  let next = 0;
  const worker = async () => {
    while (next < entries.length) {
      const [file, digest] = entries[next++]!;
      const actual = await sha256File(path.join(root, file));
      if (actual !== digest)
        throw unreadable(
          file,
          '',
          `its SHA-256 differs from ${CHECKSUMS_FILE}: the file was changed or damaged`,
        );
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  if (!listed.has('datapackage.json')) throw unreadable('datapackage.json', '', 'missing from the package');
  // One resource per file of the package (hundreds of thousands in a large one): read as a stream.
  let resources = 0;
  for await (const { value } of jsonRecords(path.join(root, 'datapackage.json'), {
    paths: ['$.resources.*'],
    limits: { ...DEFAULT_IMPORT_LIMITS, maxFieldBytes: 64 * 1024, maxRecordBytes: 1024 * 1024 },
    name: 'datapackage.json',
  })) {
    resources += 1;
    const resource = (value ?? {}) as { path?: unknown; hash?: unknown; bytes?: unknown };
    if (typeof resource.path !== 'string') throw unreadable('datapackage.json', '', 'a resource has no path');
    const digest = listed.get(resource.path);
    if (!digest)
      throw unreadable('datapackage.json', '', `resource "${resource.path}" is not in the package`);
    if (typeof resource.hash === 'string' && resource.hash !== `sha256:${digest}`)
      throw unreadable(
        'datapackage.json',
        '',
        `the hash of "${resource.path}" differs from ${CHECKSUMS_FILE}`,
      );
    if (
      typeof resource.bytes === 'number' &&
      resource.bytes !== (await stat(path.join(root, resource.path))).size
    )
      throw unreadable('datapackage.json', '', `the size of "${resource.path}" differs from the file`);
  }
  if (resources === 0) throw unreadable('datapackage.json', '', 'has no resources');
}

async function sha256File(file: string): Promise<string> {
  const size = (await stat(file)).size;
  if (size <= 1024 * 1024)
    return createHash('sha256')
      .update(await readFile(file))
      .digest('hex');
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}
