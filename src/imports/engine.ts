import { createHash, randomUUID } from 'node:crypto';
import canonicalize from 'canonicalize';
import { type Kysely, sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { quoteIdent } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { FerryError } from '../domain/ferry-error.ts';
import {
  type ColumnInfo,
  type EntityColumns,
  loadEntityColumns,
  NO_PASSWORD,
  recordsetColumns,
  rowHashSql,
} from './columns.ts';
import { normalizeValue } from './normalize.ts';
import {
  IMPORT_ENTITIES,
  type ImportEntity,
  type ImportItem,
  type ImportRef,
  type ImportSource,
} from './types.ts';

/**
 * The import engine: one code path for the plan and the apply (docs/import.md).
 *
 * Items come from a source entity by entity, parents first, in batches. For each batch the
 * engine looks the items up in the import map, resolves their references, decides what each
 * item is (create, update, unchanged, conflict, rejected) and writes the creates and updates
 * with one statement each, the map rows with one more. A plan runs every batch in one
 * transaction that is rolled back, so the preview is what the apply would do; an
 * all-or-nothing apply runs them in one transaction committed only when nothing was rejected;
 * a partial apply commits each batch with its checkpoint, so a crashed run resumes after its
 * last committed batch with exact counts.
 */

export const CONFLICT_POLICIES = ['skip', 'overwrite', 'newest_wins', 'fail'] as const;
export type ConflictPolicy = (typeof CONFLICT_POLICIES)[number];
/** A policy for every entity, and optionally per entity. */
export type ConflictPolicies = { readonly default: ConflictPolicy } & Partial<
  Record<ImportEntity, ConflictPolicy>
>;

export type EntityReport = {
  created: number;
  updated: number;
  unchanged: number;
  conflicts: number;
  rejected: number;
  /** Conflicts (first ones): the item, the fields that differ, what the policy did. */
  conflict_samples: {
    source_type: string;
    source_id: string;
    id: string;
    fields: string[];
    resolution: string;
  }[];
  /** Ids assigned to created rows (first ones). */
  assigned: { source_type: string; source_id: string; id: string }[];
  /** Rejections (first ones): the item and why. */
  rejected_samples: { location: string; source_id: string; errors: string[] }[];
};

export type ImportReport = {
  entities: Partial<Record<ImportEntity, EntityReport>>;
  items: number;
  warnings: string[];
};

export type Checkpoint = {
  /** The entity of the last committed batch. */
  readonly entity: ImportEntity;
  /** Items of that entity done (committed) so far. */
  readonly items: number;
};

export interface Rejection {
  readonly entity: ImportEntity;
  readonly location: string;
  readonly errors: readonly string[];
  readonly raw: string;
}

export interface EngineRun {
  readonly database: Database;
  readonly tenantId: string;
  readonly importId: string;
  readonly source: ImportSource;
  readonly conflict: ConflictPolicies;
  readonly mode: 'plan' | 'apply';
  readonly allOrNothing: boolean;
  /** Live-stream events for imported rows (default: silent). */
  readonly notify: boolean;
  readonly batchSize?: number;
  /** A resumed run: its checkpoint and the report so far. */
  readonly resume?: { checkpoint: Checkpoint; report: ImportReport; rejected: number } | null;
  /** After each batch; in a partial apply, inside the batch's transaction (`db`), so the checkpoint commits with it. */
  readonly onBatch?: (state: BatchState, db: Kysely<DB>) => Promise<void>;
  /** Rejections of a batch; in a partial apply inside its transaction. */
  readonly onRejected?: (rejections: readonly Rejection[], db: Kysely<DB>, seq: number) => Promise<void>;
  readonly signal?: AbortSignal;
  /**
   * Whether a normalized identifier (`email:…`, `phone:…`, `customer:<id>`, `team_member:<id>`)
   * names a person whose data was erased in this tenant (the erasure ledger). Absent: nobody was.
   */
  readonly erased?: ((identifier: string) => boolean) | undefined;
}

export interface BatchState {
  readonly checkpoint: Checkpoint;
  readonly report: ImportReport;
  readonly itemsDone: number;
  readonly rejected: number;
}

export interface EngineOutcome {
  readonly report: ImportReport;
  readonly rejected: number;
  /** Rejections held back by a run that was rolled back (plan, failed all-or-nothing), to record after it. */
  readonly heldRejections: readonly Rejection[];
}

const SAMPLES = 20;

/** Conversations of a run that belong to an erased person: their messages are refused too. */
const erasedConversations = new WeakMap<EngineRun, Set<string>>();

const ERASED = 'belongs to a person whose data was erased in Ferry (the erasure ledger): not imported again';

/** Whether an item names a person of the erasure ledger. */
function erasedItem(run: EngineRun, item: ImportItem, values: Record<string, unknown>): boolean {
  const erased = run.erased;
  if (!erased) return false;
  const email = (v: unknown) =>
    typeof v === 'string' && v !== '' ? erased(`email:${v.toLowerCase()}`) : false;
  const own = run.source.system === 'ferry';
  switch (item.entity) {
    case 'customers':
      return (
        email(values.email) ||
        (typeof values.phone === 'string' && erased(`phone:${values.phone}`)) ||
        (own && erased(`customer:${item.sourceId.toLowerCase()}`))
      );
    case 'team_members':
      return email(values.email) || (own && erased(`team_member:${item.sourceId.toLowerCase()}`));
    case 'conversations': {
      const customer = item.refs?.customer_id;
      const byId =
        own && customer && !('natural' in customer) && erased(`customer:${customer.sourceId.toLowerCase()}`);
      if (email(values.customer_email) || byId) {
        const set = erasedConversations.get(run) ?? new Set<string>();
        erasedConversations.set(run, set);
        set.add(`${item.sourceType}\u0000${item.sourceId}`);
        return true;
      }
      return false;
    }
    case 'messages': {
      const parent = item.refs?.conversation_id;
      return Boolean(
        parent &&
          !('natural' in parent) &&
          erasedConversations.get(run)?.has(`${parent.sourceType}\u0000${parent.sourceId}`),
      );
    }
    default:
      return false;
  }
}
const HELD_REJECTIONS = 10_000;
const DEFAULT_BATCH = 2000;

class Rollback extends Error {}

function emptyReport(): ImportReport {
  return { entities: {}, items: 0, warnings: [] };
}

function entityReport(report: ImportReport, entity: ImportEntity): EntityReport {
  let r = report.entities[entity];
  if (!r) {
    r = {
      created: 0,
      updated: 0,
      unchanged: 0,
      conflicts: 0,
      rejected: 0,
      conflict_samples: [],
      assigned: [],
      rejected_samples: [],
    };
    report.entities[entity] = r;
  }
  return r;
}

export async function runImport(run: EngineRun): Promise<EngineOutcome> {
  const report: ImportReport = run.resume ? structuredClone(run.resume.report) : emptyReport();
  const state = {
    report,
    itemsDone: report.items,
    rejected: run.resume?.rejected ?? 0,
    held: [] as Rejection[],
  };
  const wholeRun = run.mode === 'plan' || run.allOrNothing;
  if (wholeRun) {
    try {
      await run.database.session('write', async (session) => {
        await prepare(session.db, run);
        await runEntities(run, state, async (work) => work(session.db));
        if (run.mode === 'plan' || state.rejected > 0) throw new Rollback();
      });
    } catch (err) {
      if (!(err instanceof Rollback)) throw err;
    }
    mergeWarnings(report, run.source.warnings);
    return { report, rejected: state.rejected, heldRejections: state.held };
  }
  await runEntities(run, state, (work) =>
    run.database.session('write', async (session) => {
      await prepare(session.db, run);
      return work(session.db);
    }),
  );
  mergeWarnings(report, run.source.warnings);
  return { report, rejected: state.rejected, heldRejections: [] };
}

async function prepare(db: Kysely<DB>, run: EngineRun): Promise<void> {
  // Every batch runs the same statements with lists of a different length, against tables this
  // very import is filling: a generic plan (chosen by a prepared statement after five runs,
  // with no idea of the list sizes or of the map's growth) scanned the tenant's whole import map
  // for each batch. Custom plans see the parameters.
  await sql`SELECT set_config('plan_cache_mode', 'force_custom_plan', true)`.execute(db);
  // The batch statements are many short lookups whose estimated cost (a list of unknown length,
  // a map growing under them) crosses PostgreSQL's JIT thresholds: compiling them took seconds
  // per batch, running them milliseconds.
  await sql`SELECT set_config('jit', 'off', true)`.execute(db);
  // One writer per tenant at a time: two imports of the same source (or two runs of one import)
  // would otherwise both find no map row and both create. Batches of concurrent imports take
  // turns, and each sees what the other committed.
  await sql`SELECT pg_advisory_xact_lock(hashtext(${`ferry.import:${run.tenantId}`}))`.execute(db);
  if (!run.notify) await sql`SELECT set_config('ferry.silent', 'on', true)`.execute(db);
}

type InTransaction = <T>(work: (db: Kysely<DB>) => Promise<T>) => Promise<T>;

async function runEntities(
  run: EngineRun,
  state: { report: ImportReport; itemsDone: number; rejected: number; held: Rejection[] },
  inTransaction: InTransaction,
): Promise<void> {
  const size = run.batchSize ?? DEFAULT_BATCH;
  const resumeAt = run.resume?.checkpoint;
  const startIndex = resumeAt ? IMPORT_ENTITIES.indexOf(resumeAt.entity) : 0;
  const columnsCache = new Map<ImportEntity, EntityColumns>();
  for (const entity of IMPORT_ENTITIES.slice(startIndex)) {
    let skip = resumeAt && resumeAt.entity === entity ? resumeAt.items : 0;
    let done = skip;
    const flush = async (items: ImportItem[]) => {
      done += items.length;
      await inTransaction(async (db) => {
        let cols = columnsCache.get(entity);
        if (!cols) {
          cols = await loadEntityColumns(db, entity);
          columnsCache.set(entity, cols);
        }
        const rejections = await applyBatch(db, run, cols, items, state.report);
        state.itemsDone += items.length;
        state.report.items = state.itemsDone;
        mergeWarnings(state.report, run.source.warnings);
        if (rejections.length > 0) {
          const seq = state.rejected;
          state.rejected += rejections.length;
          if (run.mode === 'plan' || run.allOrNothing) {
            for (const r of rejections) if (state.held.length < HELD_REJECTIONS) state.held.push(r);
          } else {
            await run.onRejected?.(rejections, db, seq);
          }
        }
        await run.onBatch?.(
          {
            checkpoint: { entity, items: done },
            report: state.report,
            itemsDone: state.itemsDone,
            rejected: state.rejected,
          },
          db,
        );
      });
    };
    // The next batch is read and mapped while the current one is written (sources never touch
    // the database, so this holds on PGlite too).
    const items = run.source.items(entity)[Symbol.asyncIterator]();
    const read = async (): Promise<ImportItem[]> => {
      const batch: ImportItem[] = [];
      while (batch.length < size) {
        const next = await items.next();
        if (next.done) break;
        if (skip > 0) {
          skip -= 1;
          continue;
        }
        batch.push(next.value);
      }
      return batch;
    };
    let pending = read();
    try {
      for (;;) {
        const batch = await pending;
        if (batch.length === 0) break;
        if (run.signal?.aborted) throw new FerryError('conflict', 'the import was cancelled');
        pending = read();
        // A read that fails while this batch is written is reported when it is awaited.
        pending.catch(() => {});
        await flush(batch);
      }
    } finally {
      await items.return?.();
    }
    // Resuming inside this entity is done; later entities start at their first item.
  }
  if (run.source.deriveCounts) {
    await inTransaction((db) => recountConversations(db, run));
  }
}

interface Decided {
  readonly item: ImportItem;
  readonly hash: string;
  readonly row: Record<string, unknown>;
  readonly targetId: string;
  readonly kind: 'create' | 'update' | 'link';
  /** An update that resolves a conflict (counted as a conflict, not as an update). */
  readonly resolvesConflict?: boolean;
}

/** Plans and writes one batch; returns its rejections. */
async function applyBatch(
  db: Kysely<DB>,
  run: EngineRun,
  cols: EntityColumns,
  items: readonly ImportItem[],
  report: ImportReport,
): Promise<Rejection[]> {
  const entity = cols.entity;
  const r = entityReport(report, entity);
  const rejections: Rejection[] = [];
  const system = run.source.system;
  const policy: ConflictPolicy = run.conflict[entity] ?? run.conflict.default;
  const reject = (item: ImportItem, errors: readonly string[]) => {
    r.rejected += 1;
    if (r.rejected_samples.length < SAMPLES)
      r.rejected_samples.push({
        location: clean(item.location),
        source_id: clean(item.sourceId),
        errors: errors.map((e) => clean(e)),
      });
    rejections.push({
      entity,
      location: clean(item.location),
      errors: errors.map((e) => clean(e, 2000)),
      raw: rawText(item),
    });
  };

  // 1. Validate and normalise, hash, drop duplicates within the batch.
  const byColumn = new Map(cols.columns.map((c) => [c.name, c]));
  const valid: { item: ImportItem; values: Record<string, unknown>; hash: string }[] = [];
  const seen = new Set<string>();
  for (const item of items) {
    const errors = [...(item.errors ?? [])];
    const values: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(item.values)) {
      const col = byColumn.get(name);
      if (!col) {
        errors.push(`${name}: not a column of ${entity}`);
        continue;
      }
      const normal = normalizeValue(cols.types[name]!, value, col.notNull, col.sqlType);
      if (normal.error) errors.push(`${name}: ${normal.error}`);
      else values[name] = normal.value;
    }
    for (const col of cols.columns) {
      if (
        col.notNull &&
        col.defaultSql === null &&
        !(col.name in (item.refs ?? {})) &&
        (values[col.name] ?? null) === null
      )
        if (!errors.some((e) => e.startsWith(`${col.name}: `))) errors.push(`${col.name}: required`);
    }
    const key = `${item.sourceType}\u0000${item.sourceId}`;
    if (!item.sourceId) {
      if (errors.length === 0) errors.push('the record has no id');
    } else if (!wellFormedKey(item.sourceId) || !wellFormedKey(item.sourceType)) {
      errors.push("the record's id holds a NUL or an unpaired surrogate");
    } else if (seen.has(key)) errors.push(`duplicate ${item.sourceType} ${item.sourceId} in this import`);
    seen.add(key);
    if (errors.length === 0 && erasedItem(run, item, values)) errors.push(ERASED);
    if (errors.length > 0) {
      reject(item, errors);
      continue;
    }
    const hash = contentHash(values, item);
    valid.push({ item, values, hash });
  }
  if (valid.length === 0) return rejections;

  // 2. The map rows of the items, and of the parents their references name.
  const mapKeys = valid.map((v) => [entity, v.item.sourceType, v.item.sourceId] as const);
  const refKeys: (readonly [ImportEntity, string, string])[] = [];
  const naturalRefs = new Map<ImportEntity, Set<string>>();
  for (const v of valid) {
    for (const ref of [...Object.values(v.item.refs ?? {}), ...Object.values(v.item.soft ?? {})]) {
      if (!ref) continue;
      if ('natural' in ref) {
        const set = naturalRefs.get(ref.entity) ?? new Set();
        set.add(ref.natural);
        naturalRefs.set(ref.entity, set);
      } else refKeys.push([ref.entity, ref.sourceType, ref.sourceId]);
    }
    for (const [column, list] of Object.entries(v.item.softLists ?? {})) {
      const ids = v.values[column];
      if (Array.isArray(ids))
        for (const id of ids) if (typeof id === 'string') refKeys.push([list.entity, list.sourceType, id]);
    }
  }
  const mapped = await loadMap(db, run.tenantId, system, [...mapKeys, ...refKeys]);
  const natural = new Map<string, string>();
  for (const [ent, values] of naturalRefs) {
    for (const [k, id] of await loadNatural(db, run.tenantId, ent, [...values]))
      natural.set(`${ent}\u0000${k}`, id);
  }
  // Ferry's own files carry Ferry ids: a parent not in the map may be a row the tenant has.
  const own = new Map<string, string>();
  if (system === 'ferry') {
    const wanted = new Map<ImportEntity, Set<string>>();
    for (const v of valid)
      for (const ref of [...Object.values(v.item.refs ?? {}), ...Object.values(v.item.soft ?? {})])
        if (ref && !('natural' in ref) && !mapped.has(mapKey(ref.entity, ref.sourceType, ref.sourceId))) {
          const set = wanted.get(ref.entity) ?? new Set();
          set.add(ref.sourceId);
          wanted.set(ref.entity, set);
        }
    for (const [ent, ids] of wanted)
      for (const id of await loadOwn(db, run.tenantId, ent, [...ids])) own.set(`${ent}\u0000${id}`, id);
  }
  const resolve = (ref: ImportRef): string | null => {
    if ('natural' in ref)
      return natural.get(`${ref.entity}\u0000${naturalKeyText(ref.entity, ref.natural)}`) ?? null;
    const m = mapped.get(mapKey(ref.entity, ref.sourceType, ref.sourceId));
    if (m) return m.target_id;
    return own.get(`${ref.entity}\u0000${ref.sourceId.toLowerCase()}`) ?? null;
  };

  // 3. Resolve references into the row to write.
  const rows: {
    item: ImportItem;
    hash: string;
    row: Record<string, unknown>;
    existing: MapRow | undefined;
  }[] = [];
  for (const v of valid) {
    const row: Record<string, unknown> = { ...v.values };
    const errors: string[] = [];
    for (const [column, ref] of Object.entries(v.item.refs ?? {})) {
      const col = byColumn.get(column);
      if (!col) {
        errors.push(`${column}: not a column of ${entity}`);
        continue;
      }
      const id = ref ? resolve(ref) : null;
      if (ref && !id && col.notNull)
        errors.push(`${column}: ${describeRef(ref)} is not imported (import it first, or fix the reference)`);
      row[column] = id;
    }
    for (const [column, ref] of Object.entries(v.item.soft ?? {})) {
      const id = resolve(ref);
      if (id) row[column] = id;
    }
    for (const [column, list] of Object.entries(v.item.softLists ?? {})) {
      const ids = row[column];
      if (Array.isArray(ids))
        row[column] = ids.map((id) =>
          typeof id === 'string'
            ? (resolve({ entity: list.entity, sourceType: list.sourceType, sourceId: id }) ?? id)
            : id,
        );
    }
    if (errors.length > 0) {
      reject(v.item, errors);
      continue;
    }
    rows.push({
      item: v.item,
      hash: v.hash,
      row,
      existing: mapped.get(mapKey(entity, v.item.sourceType, v.item.sourceId)),
    });
  }
  // 4. Current rows: mapped targets, and natural-key matches of unmapped items.
  const naturalMatches = new Map<string, string>();
  if (cols.natural) {
    const keys = rows
      .filter((x) => !x.existing && x.row[cols.natural!.column] != null)
      .map((x) => String(x.row[cols.natural!.column]));
    for (const [k, id] of await loadNatural(db, run.tenantId, entity, keys)) naturalMatches.set(k, id);
  }
  // An item of Ferry's own files whose id is a row of this tenant is that row (a package imported back into its tenant).
  const ownRows =
    system === 'ferry'
      ? await loadOwn(
          db,
          run.tenantId,
          entity,
          rows.filter((x) => !x.existing).map((x) => x.item.sourceId),
        )
      : new Set<string>();
  const candidates = new Map<string, { targetId: string; via: 'map' | 'natural' }>();
  for (const x of rows) {
    if (!x.existing && ownRows.has(x.item.sourceId.toLowerCase()))
      candidates.set(x.item.sourceId + '\u0000' + x.item.sourceType, {
        targetId: x.item.sourceId.toLowerCase(),
        via: 'natural',
      });
    else if (x.existing)
      candidates.set(x.item.sourceId + '\u0000' + x.item.sourceType, {
        targetId: x.existing.target_id,
        via: 'map',
      });
    else if (cols.natural && x.row[cols.natural.column] != null) {
      const id = naturalMatches.get(naturalKeyText(entity, String(x.row[cols.natural.column])));
      if (id)
        candidates.set(x.item.sourceId + '\u0000' + x.item.sourceType, { targetId: id, via: 'natural' });
    }
  }
  // An item whose source content is what the map recorded needs no comparison: only whether its
  // row is still there (the common case of a re-run, kept cheap).
  const same = (x: (typeof rows)[number]) => x.existing?.content_hash === x.hash;
  const still = await loadOwn(
    db,
    run.tenantId,
    entity,
    rows
      .filter((x) => same(x) && candidates.has(x.item.sourceId + '\u0000' + x.item.sourceType))
      .map((x) => x.existing!.target_id),
  );
  const { diffs, refused } = await diffEach(
    db,
    run.tenantId,
    cols,
    rows.flatMap((x) => {
      if (same(x)) return [];
      const c = candidates.get(x.item.sourceId + '\u0000' + x.item.sourceType);
      return c ? [{ id: c.targetId, row: existingRow(x.item, x.row), updatedAt: x.item.updatedAt }] : [];
    }),
  );

  // 5. Decide.
  const decided: Decided[] = [];
  for (const x of rows) {
    const c = candidates.get(x.item.sourceId + '\u0000' + x.item.sourceType);
    if (!c) {
      const id = randomUUID();
      decided.push({ item: x.item, hash: x.hash, row: x.row, targetId: id, kind: 'create' });
      continue;
    }
    if (same(x)) {
      if (still.has(c.targetId)) r.unchanged += 1;
      // Mapped, but the row is gone from Ferry (deleted or erased since): never recreated.
      else conflict(r, x.item, c.targetId, ['(deleted in Ferry)'], 'kept deleted');
      continue;
    }
    const reason = refused.get(c.targetId);
    if (reason) {
      reject(x.item, [reason]);
      continue;
    }
    const current = diffs.get(c.targetId);
    if (!current) {
      // Mapped, but the row is gone from Ferry (deleted or erased since): never recreated.
      conflict(r, x.item, c.targetId, ['(deleted in Ferry)'], 'kept deleted');
      continue;
    }
    const mapRow = x.existing;
    if (current.fields.length === 0) {
      // Same values already: link (a natural-key match) or record the new source hash.
      r.unchanged += 1;
      decided.push({ item: x.item, hash: x.hash, row: x.row, targetId: c.targetId, kind: 'link' });
      continue;
    }
    if (mapRow && mapRow.row_hash === current.rowHash) {
      // A newer export of the same source, and nobody changed the row in Ferry since.
      decided.push({
        item: x.item,
        hash: x.hash,
        row: existingRow(x.item, x.row),
        targetId: c.targetId,
        kind: 'update',
      });
      continue;
    }
    // The tenant's row differs and is not the import's own last write: a conflict.
    if (policy === 'fail')
      throw new FerryError(
        'import_conflict',
        `${entity} ${x.item.sourceType} ${x.item.sourceId} (${x.item.location}) differs from the tenant's row ${c.targetId} in ${current.fields.join(', ')}`,
        { entity, source_id: x.item.sourceId, id: c.targetId, fields: current.fields },
      );
    const take = policy === 'overwrite' || (policy === 'newest_wins' && current.incomingNewer === true);
    conflict(r, x.item, c.targetId, current.fields, take ? 'overwritten' : 'kept');
    decided.push({
      item: x.item,
      hash: x.hash,
      row: existingRow(x.item, x.row),
      targetId: c.targetId,
      kind: take ? 'update' : 'link',
      resolvesConflict: true,
    });
  }

  // 6. Write: creates, updates, then the map rows with the hashes of the rows as written.
  const creates = decided.filter((d) => d.kind === 'create');
  const updates = decided.filter((d) => d.kind === 'update');
  const written = new Map<string, string>();
  const failed = new Set<string>();
  for (const [kind, list] of [
    ['create', creates],
    ['update', updates],
  ] as const) {
    if (list.length === 0) continue;
    const outcome = await writeRows(db, run.tenantId, cols, kind, list);
    for (const [id, hash] of outcome.written) written.set(id, hash);
    for (const [d, message] of outcome.failed) {
      failed.add(d.targetId);
      reject(d.item, [message]);
    }
  }
  for (const d of creates) {
    if (failed.has(d.targetId)) continue;
    r.created += 1;
    if (r.assigned.length < SAMPLES)
      r.assigned.push({ source_type: d.item.sourceType, source_id: d.item.sourceId, id: d.targetId });
  }
  for (const d of updates) if (!failed.has(d.targetId) && !d.resolvesConflict) r.updated += 1;
  const links = decided.filter((d) => d.kind === 'link');
  if (links.length > 0) {
    for (const [id, hash] of await currentRowHashes(
      db,
      cols,
      links.map((d) => d.targetId),
    ))
      written.set(id, hash);
  }
  const mapRows = decided
    .filter((d) => !failed.has(d.targetId) && written.has(d.targetId))
    .map((d) => ({
      source_type: d.item.sourceType,
      source_id: d.item.sourceId,
      target_id: d.targetId,
      content_hash: d.hash,
      // A conflict the tenant's row won: its row stays marked as the tenant's own, so a later
      // change at the source is a conflict again, never a silent update over the tenant's edit.
      row_hash:
        d.kind === 'link' && d.resolvesConflict
          ? `kept:${written.get(d.targetId)!}`
          : written.get(d.targetId)!,
    }));
  await saveMap(db, run, entity, mapRows);
  return rejections;
}

/** The values an existing row is compared with and updated to: all but the create-only columns. */
function existingRow(item: ImportItem, row: Record<string, unknown>): Record<string, unknown> {
  if (!item.createOnly?.length) return row;
  const out = { ...row };
  for (const column of item.createOnly) delete out[column];
  return out;
}

function wellFormedKey(text: string): boolean {
  return !text.includes('\u0000') && text.isWellFormed();
}

/** Text that goes into the report (jsonb): no NUL, no unpaired surrogate, not endless. */
function clean(text: string, max = 500): string {
  const out = text.replace(/\u0000/g, '\\0').toWellFormed();
  return out.length > max ? `${out.slice(0, max)}…` : out;
}

function mergeWarnings(report: ImportReport, warnings: readonly string[]): void {
  for (const w of warnings) {
    const c = clean(w);
    if (!report.warnings.includes(c)) report.warnings.push(c);
  }
}

function conflict(r: EntityReport, item: ImportItem, id: string, fields: string[], resolution: string): void {
  r.conflicts += 1;
  if (r.conflict_samples.length < SAMPLES)
    r.conflict_samples.push({
      source_type: item.sourceType,
      source_id: item.sourceId,
      id,
      fields,
      resolution,
    });
}

function describeRef(ref: ImportRef): string {
  return 'natural' in ref ? `${ref.entity} "${ref.natural}"` : `${ref.sourceType} ${ref.sourceId}`;
}

function naturalKeyText(entity: ImportEntity, value: string): string {
  return entity === 'sites' ? value : value.toLowerCase();
}

export function contentHash(values: Record<string, unknown>, item: ImportItem): string {
  const refs: Record<string, string | null> = {};
  for (const [k, ref] of Object.entries(item.refs ?? {})) refs[k] = ref ? describeRef(ref) : null;
  for (const [k, ref] of Object.entries(item.soft ?? {})) refs[`~${k}`] = describeRef(ref);
  return createHash('sha256')
    .update(canonicalize({ values, refs }) ?? '')
    .digest('hex');
}

function rawText(item: ImportItem): string {
  return JSON.stringify(item.raw);
}

interface MapRow {
  source_type: string;
  source_id: string;
  entity: ImportEntity;
  target_id: string;
  content_hash: string;
  row_hash: string;
}

/** The map's key of an item: the same source id may be two things (a Zendesk user who is an agent and a requester). */
function mapKey(entity: ImportEntity, sourceType: string, sourceId: string): string {
  return `${entity}\u0000${sourceType}\u0000${sourceId}`;
}

async function loadMap(
  db: Kysely<DB>,
  tenantId: string,
  system: string,
  keys: readonly (readonly [ImportEntity, string, string])[],
): Promise<Map<string, MapRow>> {
  const out = new Map<string, MapRow>();
  if (keys.length === 0) return out;
  const unique = new Map(keys.map((k) => [mapKey(k[0], k[1], k[2]), k]));
  const entities = [...unique.values()].map((k) => k[0]);
  const types = [...unique.values()].map((k) => k[1]);
  const ids = [...unique.values()].map((k) => k[2]);
  // One primary-key probe per key: LIMIT keeps the subquery a per-row lookup, where a join would
  // be free to hash the tenant's whole map (a million rows) for a batch of a few thousand.
  const { rows } =
    await sql<MapRow>`SELECT m.source_type, m.source_id, m.entity, m.target_id::text AS target_id, m.content_hash, m.row_hash
    FROM unnest(${entities}::text[], ${types}::text[], ${ids}::text[]) AS k(entity, source_type, source_id)
    CROSS JOIN LATERAL (
      SELECT * FROM import_map x WHERE x.tenant_id = ${tenantId} AND x.source_system = ${system} AND x.entity = k.entity
        AND x.source_type = k.source_type AND x.source_id = k.source_id LIMIT 1
    ) m`.execute(db);
  for (const row of rows) out.set(mapKey(row.entity, row.source_type, row.source_id), row);
  return out;
}

async function loadNatural(
  db: Kysely<DB>,
  tenantId: string,
  entity: ImportEntity,
  values: readonly string[],
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (values.length === 0) return out;
  const key =
    entity === 'sites' ? 'url' : entity === 'customers' || entity === 'team_members' ? 'email' : null;
  if (!key) return out;
  const caseless = entity !== 'sites';
  const expr = caseless ? `lower(${key})` : key;
  const wanted = [...new Set(values.map((v) => (caseless ? v.toLowerCase() : v)))];
  const { rows } = await sql<{ k: string; id: string }>`SELECT ${sql.raw(expr)} AS k, min(id::text) AS id
    FROM ${sql.table(entity)} WHERE tenant_id = ${tenantId} AND ${sql.raw(expr)} = ANY(${wanted}::text[])
    GROUP BY 1`.execute(db);
  for (const row of rows) out.set(row.k, row.id);
  return out;
}

/** The given ids that are rows of this tenant's table (ids that are not UUIDs are not). */
async function loadOwn(
  db: Kysely<DB>,
  tenantId: string,
  entity: ImportEntity,
  ids: readonly string[],
): Promise<Set<string>> {
  const uuids = ids
    .filter((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id))
    .map((id) => id.toLowerCase());
  if (uuids.length === 0) return new Set();
  const { rows } = await sql<{ id: string }>`SELECT id::text AS id FROM ${sql.table(entity)}
    WHERE tenant_id = ${tenantId} AND id = ANY(${uuids}::uuid[])`.execute(db);
  return new Set(rows.map((r) => r.id));
}

interface CurrentRow {
  fields: string[];
  rowHash: string;
  incomingNewer: boolean | null;
}

/**
 * `diffRows` with the same fallback as the writes: when the database refuses the comparison
 * (a value it cannot cast), each row is compared alone under a savepoint, and the ones it
 * refuses are given with the database's reason.
 */
async function diffEach(
  db: Kysely<DB>,
  tenantId: string,
  cols: EntityColumns,
  list: readonly { id: string; row: Record<string, unknown>; updatedAt: string | null }[],
): Promise<{ diffs: Map<string, CurrentRow>; refused: Map<string, string> }> {
  const refused = new Map<string, string>();
  const attempt = async (part: typeof list) => {
    await sql`SAVEPOINT ferry_import_diff`.execute(db);
    try {
      const out = await diffRows(db, tenantId, cols, part);
      await sql`RELEASE SAVEPOINT ferry_import_diff`.execute(db);
      return out;
    } catch (err) {
      await sql`ROLLBACK TO SAVEPOINT ferry_import_diff`.execute(db);
      await sql`RELEASE SAVEPOINT ferry_import_diff`.execute(db);
      return databaseReason(err);
    }
  };
  const whole = list.length === 0 ? new Map<string, CurrentRow>() : await attempt(list);
  if (typeof whole !== 'string') return { diffs: whole, refused };
  const diffs = new Map<string, CurrentRow>();
  for (const one of list) {
    const out = await attempt([one]);
    if (typeof out === 'string') refused.set(one.id, out);
    else for (const [id, d] of out) diffs.set(id, d);
  }
  return { diffs, refused };
}

/** For each current row: the fields the incoming values would change, its row hash, and whether the incoming item is newer. */
async function diffRows(
  db: Kysely<DB>,
  tenantId: string,
  cols: EntityColumns,
  list: readonly { id: string; row: Record<string, unknown>; updatedAt: string | null }[],
): Promise<Map<string, CurrentRow>> {
  const out = new Map<string, CurrentRow>();
  if (list.length === 0) return out;
  const all = cols.columns;
  const given = all.filter((c) => list.some((x) => c.name in x.row));
  const payload = list.map((x) => recordOf(x.id, x.row, given, { _updated: x.updatedAt }));
  const checks = given
    .map(
      (c) =>
        `CASE WHEN t.${quoteIdent(c.name)} IS DISTINCT FROM v.${quoteIdent(c.name)} THEN ${sqlText(c.name)} END`,
    )
    .join(', ');
  const newer = cols.updatedColumn
    ? `CASE WHEN v._updated IS NULL THEN NULL ELSE v._updated > t.${quoteIdent(cols.updatedColumn)} END`
    : 'NULL::boolean';
  const { rows } = await sql<{
    id: string;
    fields: string[] | null;
    row_hash: string;
    newer: boolean | null;
  }>`
    SELECT t.id::text AS id, array_remove(ARRAY[${sql.raw(checks || 'NULL::text')}]::text[], NULL) AS fields,
      ${sql.raw(rowHashSql(all, 't'))} AS row_hash, ${sql.raw(newer)} AS newer
    FROM jsonb_to_recordset(${JSON.stringify(payload)}::jsonb) AS v(${sql.raw(recordsetColumns(given, ['_updated timestamptz']))})
    CROSS JOIN LATERAL (
      SELECT * FROM ${sql.table(cols.entity)} x WHERE x.id = v._id AND x.tenant_id = ${tenantId} LIMIT 1
    ) t`.execute(db);
  for (const row of rows)
    out.set(row.id, { fields: row.fields ?? [], rowHash: row.row_hash, incomingNewer: row.newer });
  return out;
}

function sqlText(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

function recordOf(
  id: string,
  row: Record<string, unknown>,
  given: readonly ColumnInfo[],
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const out: Record<string, unknown> = { _id: id, ...extra };
  for (const c of given) out[c.name] = row[c.name] ?? null;
  return out;
}

interface WriteOutcome {
  written: Map<string, string>;
  failed: [Decided, string][];
}

/**
 * Inserts or updates rows with one statement; when the database refuses it (a value its type
 * or a constraint rejects), the rows are written one by one, each under a savepoint, so the
 * bad ones are rejected with the database's reason and the rest go in.
 */
async function writeRows(
  db: Kysely<DB>,
  tenantId: string,
  cols: EntityColumns,
  kind: 'create' | 'update',
  list: readonly Decided[],
): Promise<WriteOutcome> {
  const written = new Map<string, string>();
  const failed: [Decided, string][] = [];
  const attempt = async (part: readonly Decided[]) => {
    await sql`SAVEPOINT ferry_import_rows`.execute(db);
    try {
      const hashes =
        kind === 'create'
          ? await insertRows(db, tenantId, cols, part)
          : await updateRows(db, tenantId, cols, part);
      await sql`RELEASE SAVEPOINT ferry_import_rows`.execute(db);
      for (const [id, hash] of hashes) written.set(id, hash);
      return null;
    } catch (err) {
      await sql`ROLLBACK TO SAVEPOINT ferry_import_rows`.execute(db);
      await sql`RELEASE SAVEPOINT ferry_import_rows`.execute(db);
      return databaseReason(err);
    }
  };
  const whole = await attempt(list);
  if (whole === null) return { written, failed };
  if (list.length === 1) return { written, failed: [[list[0]!, whole]] };
  for (const d of list) {
    const reason = await attempt([d]);
    if (reason !== null) failed.push([d, reason]);
  }
  return { written, failed };
}

function databaseReason(err: unknown): string {
  const e = err as { message?: string; detail?: string; column?: string };
  const message = (e.message ?? String(err)).split('\n')[0]!.slice(0, 300);
  return `the database refused the row: ${message}`;
}

async function insertRows(
  db: Kysely<DB>,
  tenantId: string,
  cols: EntityColumns,
  list: readonly Decided[],
): Promise<Map<string, string>> {
  const all = cols.columns;
  const payload = list.map((d) => recordOf(d.targetId, d.row, all));
  const names = all.map((c) => quoteIdent(c.name));
  const values = all.map((c) =>
    c.defaultSql !== null ? `COALESCE(v.${quoteIdent(c.name)}, ${c.defaultSql})` : `v.${quoteIdent(c.name)}`,
  );
  const extraNames = cols.entity === 'team_members' ? ', password_hash' : '';
  const extraValues = cols.entity === 'team_members' ? `, ${sqlText(NO_PASSWORD)}` : '';
  const { rows } = await sql<{ id: string; row_hash: string }>`
    INSERT INTO ${sql.table(cols.entity)} AS t (id, tenant_id, ${sql.raw(names.join(', '))}${sql.raw(extraNames)})
    SELECT v._id, ${tenantId}::uuid, ${sql.raw(values.join(', '))}${sql.raw(extraValues)}
    FROM jsonb_to_recordset(${JSON.stringify(payload)}::jsonb) AS v(${sql.raw(recordsetColumns(all))})
    RETURNING t.id::text AS id, ${sql.raw(rowHashSql(all, 't'))} AS row_hash`.execute(db);
  return new Map(rows.map((r) => [r.id, r.row_hash]));
}

async function updateRows(
  db: Kysely<DB>,
  tenantId: string,
  cols: EntityColumns,
  list: readonly Decided[],
): Promise<Map<string, string>> {
  const all = cols.columns;
  const given = all.filter((c) => list.some((d) => c.name in d.row));
  const payload = list.map((d) => recordOf(d.targetId, d.row, given));
  const sets = given.map((c) =>
    c.notNull && c.defaultSql !== null
      ? `${quoteIdent(c.name)} = COALESCE(v.${quoteIdent(c.name)}, ${c.defaultSql})`
      : `${quoteIdent(c.name)} = v.${quoteIdent(c.name)}`,
  );
  const { rows } = await sql<{ id: string; row_hash: string }>`
    UPDATE ${sql.table(cols.entity)} AS t SET ${sql.raw(sets.join(', '))}
    FROM jsonb_to_recordset(${JSON.stringify(payload)}::jsonb) AS v(${sql.raw(recordsetColumns(given))})
    WHERE t.id = v._id AND t.tenant_id = ${tenantId}
    RETURNING t.id::text AS id, ${sql.raw(rowHashSql(all, 't'))} AS row_hash`.execute(db);
  return new Map(rows.map((r) => [r.id, r.row_hash]));
}

async function currentRowHashes(
  db: Kysely<DB>,
  cols: EntityColumns,
  ids: readonly string[],
): Promise<Map<string, string>> {
  const { rows } = await sql<{ id: string; row_hash: string }>`
    SELECT t.id::text AS id, ${sql.raw(rowHashSql(cols.columns, 't'))} AS row_hash
    FROM ${sql.table(cols.entity)} t WHERE t.id = ANY(${ids}::uuid[])`.execute(db);
  return new Map(rows.map((r) => [r.id, r.row_hash]));
}

async function saveMap(
  db: Kysely<DB>,
  run: EngineRun,
  entity: ImportEntity,
  rows: readonly {
    source_type: string;
    source_id: string;
    target_id: string;
    content_hash: string;
    row_hash: string;
  }[],
): Promise<void> {
  if (rows.length === 0) return;
  await sql`INSERT INTO import_map (tenant_id, source_system, source_type, source_id, entity, target_id, content_hash, row_hash, import_id)
    SELECT ${run.tenantId}::uuid, ${run.source.system}, v.source_type, v.source_id, ${entity}, v.target_id, v.content_hash, v.row_hash, ${run.importId}::uuid
    FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS v(source_type text, source_id text, target_id uuid, content_hash text, row_hash text)
    ON CONFLICT (tenant_id, source_system, entity, source_type, source_id) DO UPDATE SET
      target_id = EXCLUDED.target_id, content_hash = EXCLUDED.content_hash, row_hash = EXCLUDED.row_hash,
      import_id = EXCLUDED.import_id, updated_at = now()`.execute(db);
}

/**
 * Sources whose conversations do not carry their message counts: the counts come from the
 * messages, and the map keeps the hash of the row as recounted (so the next run sees no change
 * of its own; a row the tenant won a conflict over stays the tenant's).
 */
async function recountConversations(db: Kysely<DB>, run: EngineRun): Promise<void> {
  const cols = await loadEntityColumns(db, 'conversations');
  // Every conversation of this source, counted again where its counts differ from its messages:
  // a run that found its messages unchanged (a re-run after a failure) still mends them.
  await sql`WITH conv AS (
      SELECT target_id AS id FROM import_map
      WHERE tenant_id = ${run.tenantId} AND source_system = ${run.source.system} AND entity = 'conversations'
    ), counts AS (
      SELECT m.conversation_id AS id, count(*)::int AS n,
        count(*) FILTER (WHERE m.sender_type = 'customer')::int AS customer_n,
        count(*) FILTER (WHERE m.sender_type = 'ai')::int AS ai_n,
        count(*) FILTER (WHERE m.sender_type = 'human')::int AS human_n
      FROM messages m WHERE m.conversation_id IN (SELECT id FROM conv) GROUP BY 1
    ), recounted AS (
      UPDATE conversations t SET message_count = c.n, customer_message_count = c.customer_n,
        ai_message_count = c.ai_n, human_message_count = c.human_n
      FROM counts c WHERE t.id = c.id AND t.tenant_id = ${run.tenantId}
        AND (t.message_count, t.customer_message_count, t.ai_message_count, t.human_message_count)
          IS DISTINCT FROM (c.n, c.customer_n, c.ai_n, c.human_n)
      RETURNING t.id, ${sql.raw(rowHashSql(cols.columns, 't'))} AS row_hash
    )
    UPDATE import_map im
    SET row_hash = CASE WHEN im.row_hash LIKE 'kept:%' THEN 'kept:' || r.row_hash ELSE r.row_hash END
    FROM recounted r
    WHERE im.tenant_id = ${run.tenantId} AND im.source_system = ${run.source.system}
      AND im.entity = 'conversations' AND im.target_id = r.id`.execute(db);
}
