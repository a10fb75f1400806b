import type { Selectable } from 'kysely';
import type { Database } from '../db/database.ts';
import { afterPosition, instantText } from '../db/keyset.ts';
import type { SavedConfigDefinition } from './definition.ts';
import { type ExportConfigsTable, exportConfigDb } from './tables.ts';

export type ExportConfigRow = Selectable<ExportConfigsTable>;

/** Whether an error is PostgreSQL's unique violation (the name taken, case aside). */
function isUniqueViolation(err: unknown): boolean {
  return String((err as { code?: unknown } | null)?.code) === '23505';
}

/**
 * The saved export configurations of one tenant: every query is scoped to `tenantId`, so
 * another tenant's configuration cannot be reached by forgetting a `where`.
 */
export function tenantExportConfigs(database: Database, tenantId: string) {
  const db = exportConfigDb(database);
  return {
    /** Inserts the configuration; false when the tenant already has one of that name (any case). */
    async insert(row: {
      id: string;
      definition: SavedConfigDefinition;
      createdBy: string;
      scheduleId: string | null;
      now: Date;
    }): Promise<boolean> {
      try {
        await db
          .insertInto('export_configs')
          .values({
            id: row.id,
            tenant_id: tenantId,
            name: row.definition.export_name,
            definition: JSON.stringify(row.definition),
            created_by: row.createdBy,
            created_at: row.now,
            updated_at: row.now,
            last_run_at: null,
            last_export_id: null,
            schedule_id: row.scheduleId,
          })
          .execute();
        return true;
      } catch (err) {
        if (isUniqueViolation(err)) return false;
        throw err;
      }
    },

    async find(id: string): Promise<ExportConfigRow | undefined> {
      return db
        .selectFrom('export_configs')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .executeTakeFirst();
    },

    /** The configuration of that name, compared without case. */
    async findByName(name: string): Promise<ExportConfigRow | undefined> {
      return db
        .selectFrom('export_configs')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where((eb) => eb(eb.fn('lower', ['name']), '=', name.trim().toLowerCase()))
        .executeTakeFirst();
    },

    /** One page, oldest first; each row carries `cursor_at`, its position for the next page. */
    async list(options: {
      limit: number;
      after?: { at: string; id: string } | undefined;
    }): Promise<(ExportConfigRow & { cursor_at: string })[]> {
      let query = db
        .selectFrom('export_configs')
        .selectAll()
        .select(instantText('created_at').as('cursor_at'))
        .where('tenant_id', '=', tenantId);
      if (options.after) query = query.where(afterPosition('created_at', options.after, 'asc'));
      return query.orderBy('created_at').orderBy('id').limit(options.limit).execute();
    },

    /** Replaces the definition (and its schedule); `'taken'` when the new name is another configuration's. */
    async update(
      id: string,
      change: { definition: SavedConfigDefinition; scheduleId: string | null },
      now: Date,
    ): Promise<ExportConfigRow | undefined | 'taken'> {
      try {
        return await db
          .updateTable('export_configs')
          .set({
            name: change.definition.export_name,
            definition: JSON.stringify(change.definition),
            schedule_id: change.scheduleId,
            updated_at: now,
          })
          .where('tenant_id', '=', tenantId)
          .where('id', '=', id)
          .returningAll()
          .executeTakeFirst();
      } catch (err) {
        if (isUniqueViolation(err)) return 'taken';
        throw err;
      }
    },

    async setSchedule(id: string, scheduleId: string | null): Promise<void> {
      await db
        .updateTable('export_configs')
        .set({ schedule_id: scheduleId })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .execute();
    },

    async recordRun(id: string, exportId: string, at: Date): Promise<ExportConfigRow | undefined> {
      return db
        .updateTable('export_configs')
        .set({ last_run_at: at, last_export_id: exportId })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .returningAll()
        .executeTakeFirst();
    },

    async delete(id: string): Promise<ExportConfigRow | undefined> {
      return db
        .deleteFrom('export_configs')
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .returningAll()
        .executeTakeFirst();
    },
  };
}
