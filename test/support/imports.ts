import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import type { Database } from '../../src/db/database.ts';
import { DEFAULT_IMPORT_LIMITS } from '../../src/imports/types.ts';
import type { ImportContext } from '../../src/imports/service.ts';
import { exportCompanyPackage } from '../../src/pipeline/company-package.ts';
import { LocalObjectStore } from '../../src/store/local-object-store.ts';

/** An import context on a database, with a local store in a temporary folder. */
export function testImportContext(
  database: Database,
  batchSize = 500,
  secretKey = 'import-test-secret-key-0123456789abcdef',
): ImportContext {
  return {
    database,
    secretKey,
    store: new LocalObjectStore({ root: mkdtempSync(path.join(tmpdir(), 'ferry-import-store-')) }),
    limits: DEFAULT_IMPORT_LIMITS,
    batchSize,
  };
}

/** An empty tenant like `like` (same name, plan and time zone: reports in its zone compare equal). */
export async function emptyTenantLike(database: Database, like: string): Promise<string> {
  const id = randomUUID();
  await sql`INSERT INTO tenants (id, name, slug, plan, timezone, home_country)
    SELECT ${id}, name, ${`import-${id.slice(0, 8)}`}, plan, timezone, home_country FROM tenants WHERE id = ${like}`.execute(
    database.db,
  );
  return id;
}

/** The tenant's company package as a folder; returns its root. */
export async function exportPackageDir(
  database: Database,
  tenantId: string,
  datasets?: string[],
): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-import-pkg-'));
  const outcome = await exportCompanyPackage(
    database,
    { tenantId, kind: 'directory', pii: 'full', ...(datasets ? { datasets } : {}) },
    { dir },
  );
  return path.join(dir, outcome.root);
}

export function listFiles(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listFiles(root, p));
    else out.push(p);
  }
  return out.sort();
}

/** Source id → Ferry id of everything a tenant imported from Ferry files, and the source tenant → the target. */
export async function idMap(database: Database, tenantId: string): Promise<Map<string, string>> {
  const { rows } = await sql<{
    source_id: string;
    target_id: string;
  }>`SELECT source_id, target_id::text AS target_id
    FROM import_map WHERE tenant_id = ${tenantId} AND source_system = 'ferry'`.execute(database.db);
  return new Map(rows.map((r) => [r.source_id, r.target_id]));
}

/** The files an import reads back. */
export const COMPARED =
  /^(sites\.json|team_members\.json|customers\.csv|consent_records\.json|messages\.csv|conversations\/[^/]+\.json|knowledge\/[^/]+\.(md|json))$/;
/** With the analytics computed from them (equal when the tenant has no revenue events, which a package does not carry). */
export const COMPARED_WITH_REPORTS =
  /^(sites\.json|team_members\.json|customers\.csv|consent_records\.json|messages\.csv|conversations\/[^/]+\.json|knowledge\/[^/]+\.(md|json)|analytics\/[a-z]+\.csv)$/;

/** A package file with every mapped id (and the tenant id) replaced, export stamps removed. */
export function normalized(
  text: string,
  file: string,
  ids: ReadonlyMap<string, string>,
  names: ReadonlyMap<string, string> = new Map(),
): string {
  let out = text.replace(
    /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g,
    (id) => ids.get(id) ?? id,
  );
  for (const [from, to] of names) out = out.replaceAll(from, to);
  if (file.endsWith('.json')) {
    let parsed = JSON.parse(out) as unknown;
    if (parsed && typeof parsed === 'object' && 'export_metadata' in parsed)
      parsed = (parsed as unknown as { data: unknown }).data;
    // Rows with equal sort keys come in id order, and ids were reassigned: compare as sets of rows.
    if (Array.isArray(parsed))
      return parsed
        .map((row) => JSON.stringify(row))
        .sort()
        .join('\n');
    return JSON.stringify(parsed);
  }
  if (file.endsWith('.csv')) {
    const [header, ...rows] = splitCsvRows(out);
    return [header, ...rows.sort()].join('\n');
  }
  return out;
}

/** CSV records (a quoted field may hold newlines). */
function splitCsvRows(text: string): string[] {
  const rows: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') quoted = !quoted;
    else if (ch === '\n' && !quoted) {
      rows.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (start < text.length) rows.push(text.slice(start));
  return rows;
}

/**
 * Compares two packages file by file: each compared file of `a`, its ids mapped, equals the file
 * of `b` at the mapped path (knowledge-base files are named after their document's id).
 * Returns the differences (empty when equal) and the number of files compared.
 */
export function comparePackages(
  a: string,
  b: string,
  ids: ReadonlyMap<string, string>,
  files: RegExp = COMPARED,
): { differences: string[]; compared: number } {
  const differences: string[] = [];
  const bFiles = new Set(listFiles(b).filter((f) => files.test(f)));
  const aFiles = listFiles(a).filter((f) => files.test(f));
  const kbName = (root: string) => {
    const index = JSON.parse(readFileSync(path.join(root, 'knowledge/index.json'), 'utf8')) as {
      document_id: string;
      file: string;
    }[];
    return new Map(index.map((d) => [d.document_id, d.file]));
  };
  const aKb = bFiles.has('knowledge/index.json') ? kbName(a) : new Map<string, string>();
  const bKb = bFiles.has('knowledge/index.json') ? kbName(b) : new Map<string, string>();
  const aKbById = new Map([...aKb].map(([id, file]) => [file, id]));
  let compared = 0;
  for (const file of aFiles) {
    let target = file.replace(
      /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g,
      (id) => ids.get(id) ?? id,
    );
    if (/^knowledge\/.+\.md$/.test(file)) {
      const doc = aKbById.get(file.slice('knowledge/'.length));
      const mapped = doc ? ids.get(doc) : undefined;
      target = mapped && bKb.get(mapped) ? `knowledge/${bKb.get(mapped)}` : target;
    }
    if (!bFiles.has(target)) {
      differences.push(`${file}: no ${target} in the second export`);
      continue;
    }
    bFiles.delete(target);
    compared += 1;
    const names = new Map<string, string>();
    for (const [id, name] of aKb) {
      const other = bKb.get(ids.get(id) ?? '');
      if (other) names.set(name, other);
    }
    const left = normalized(readFileSync(path.join(a, file), 'utf8'), file, ids, names);
    const right = normalized(readFileSync(path.join(b, target), 'utf8'), target, new Map());
    if (left !== right) {
      let at = 0;
      while (at < left.length && left[at] === right[at]) at++;
      differences.push(
        `${file}: differs at ${at}: ${JSON.stringify(left.slice(Math.max(0, at - 60), at + 60))} vs ${JSON.stringify(right.slice(Math.max(0, at - 60), at + 60))}`,
      );
    }
  }
  for (const extra of bFiles) differences.push(`${extra}: only in the second export`);
  return { differences, compared };
}

/** md5 of every row of the tenant's imported tables and its import map: equal means nothing was written. */
export async function tenantFingerprint(
  database: Database,
  tenantId: string,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const table of [
    'sites',
    'team_members',
    'customers',
    'consent_records',
    'documents',
    'conversations',
    'messages',
    'import_map',
  ]) {
    const { rows } = await sql<{
      h: string | null;
      n: number;
    }>`SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) AS h, count(*)::int AS n
      FROM ${sql.table(table)} t WHERE tenant_id = ${tenantId}`.execute(database.db);
    out[table] = `${rows[0]!.n}:${rows[0]!.h ?? ''}`;
  }
  return out;
}
