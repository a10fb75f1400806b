import { sql } from 'kysely';
import { auditInsert } from '../auth/audit.ts';
import { type Database, literal } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, PiiKind, SubjectLink, TableDeclaration } from '../datamap/types.ts';
import { type ResolvedSubject, subjectRowCondition } from './subject.ts';
import { subjectKey } from './subject-key.ts';

/**
 * Rectification (GDPR Art. 16): the corrected values written everywhere the data map
 * stores that kind of personal data about the subject — their own record and every
 * denormalized copy (a conversation's `customer_email` and `customer_name`). Columns are
 * found by their `pii` kind; free-form custom fields are merged into `custom_fields`.
 */

/** Which kind of personal data each correctable field is. */
const FIELD_KINDS: Readonly<Record<string, PiiKind | null>> = {
  email: 'email',
  name: 'name',
  phone: 'phone',
  country: 'country',
  language: null,
  custom_fields: null,
};

/** Identifiers are hashed in the audit trail; other values are shown as they are. */
const IDENTIFYING: ReadonlySet<string> = new Set(['email', 'name', 'phone']);

export interface RectificationOutcome {
  tables: { table: string; rows: number; columns: string[] }[];
  /** Fields no column of the data map stores for this subject (e.g. a language the platform does not keep). */
  not_stored: string[];
  changes: { field: string; before: string[]; after: string }[];
}

function rowKinds(table: TableDeclaration): Set<SubjectLink['subject']> {
  const first = table.subjectLinks[0];
  return new Set(
    first ? table.subjectLinks.filter((l) => l.column === first.column).map((l) => l.subject) : [],
  );
}

export async function rectify(
  database: Database,
  tenantId: string,
  subject: ResolvedSubject,
  changes: Readonly<Record<string, unknown>>,
  options: { secretKey: string; requestId: string; now?: Date; map?: DataMap },
): Promise<RectificationOutcome> {
  const map = options.map ?? REFERENCE_DATAMAP;
  const now = options.now ?? new Date();
  const hash = (value: string) => `hmac:${subjectKey(options.secretKey, tenantId, value).slice(0, 16)}`;
  const outcome: RectificationOutcome = { tables: [], not_stored: [], changes: [] };
  const touched = new Set<string>();
  const before = new Map<string, Set<string>>();
  await database.db.transaction().execute(async (trx) => {
    for (const [table, decl] of Object.entries(map.tables)) {
      if (!decl.tenantKey) continue;
      for (const kind of rowKinds(decl)) {
        const condition = subjectRowCondition(table, subject, 't', map, kind);
        if (!condition) continue;
        const sets: string[] = [];
        const columns: string[] = [];
        for (const [field, value] of Object.entries(changes)) {
          const pii = FIELD_KINDS[field];
          const targets =
            field === 'custom_fields'
              ? Object.keys(decl.columns).filter((c) => c === 'custom_fields')
              : Object.entries(decl.columns)
                  .filter(([, c]) => pii && c.pii === pii)
                  .map(([c]) => c);
          for (const column of targets) {
            touched.add(field);
            columns.push(column);
            if (field === 'custom_fields') {
              sets.push(
                `${column} = coalesce(${column}, '{}'::jsonb) || ${literal(JSON.stringify(value))}::jsonb`,
              );
              continue;
            }
            const previous = await sql<{ v: string | null }>`${sql.raw(
              `SELECT DISTINCT t.${column}::text AS v FROM ${table} t WHERE t.${decl.tenantKey} = ${literal(tenantId)} AND (${condition})`,
            )}`.execute(trx);
            const seen = before.get(field) ?? new Set<string>();
            for (const r of previous.rows) if (r.v !== null) seen.add(r.v);
            before.set(field, seen);
            sets.push(`${column} = ${literal(String(value))}`);
          }
        }
        if (!sets.length) continue;
        const result = await sql`${sql.raw(
          `UPDATE ${table} t SET ${sets.join(', ')} WHERE t.${decl.tenantKey} = ${literal(tenantId)} AND (${condition})`,
        )}`.execute(trx);
        const rows = Number(result.numAffectedRows ?? 0);
        if (rows > 0) outcome.tables.push({ table, rows, columns: [...new Set(columns)] });
      }
    }
    outcome.not_stored = Object.keys(changes).filter((f) => !touched.has(f));
    for (const [field, value] of Object.entries(changes)) {
      if (!touched.has(field)) continue;
      const shown = (v: string) => (IDENTIFYING.has(field) ? hash(v) : v);
      outcome.changes.push({
        field,
        before: [...(before.get(field) ?? [])].map(shown),
        after: field === 'custom_fields' ? Object.keys(value as object).join(',') : shown(String(value)),
      });
    }
    await trx.executeQuery(
      auditInsert(database, {
        tenantId,
        actor: `dsar:${options.requestId}`,
        action: 'dsar.rectified',
        targetId: options.requestId,
        dataType: 'rectification',
        recordCount: outcome.tables.reduce((n, t) => n + t.rows, 0),
        success: true,
        error: JSON.stringify(outcome.changes).slice(0, 2000),
        occurredAt: now,
      }).compile(),
    );
  });
  return outcome;
}
