import { sql } from 'kysely';
import type { JobDefinition } from '../jobs/types.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { runDeletion } from './deletion.ts';

/** Runs (or resumes) one deletion: payload `{ id: <deletion id> }`. */
export const DELETION_RUN_JOB = 'deletions.run';

/** Selective deletions (docs/deletion.md). */
export const DELETION_JOBS: readonly JobDefinition[] = [
  {
    name: DELETION_RUN_JOB,
    // A retry resumes at the first batch not committed: 1, 2, 4, 8, 16, 32 minutes.
    queue: () => ({ retryLimit: 6, retryDelay: 60, retryBackoff: true, expireInSeconds: 6 * 3600 }),
    async handle(job, ctx) {
      const id = job.data.id;
      if (!id) return;
      const row = await sql<{ tenant_id: string }>`SELECT tenant_id FROM deletions WHERE id = ${id}`.execute(
        ctx.database.db,
      );
      const tenantId = row.rows[0]?.tenant_id;
      if (!tenantId) return;
      await runDeletion(
        {
          database: ctx.database,
          store: ctx.store,
          secretKey: loadOrCreateSecretKey(ctx.config),
          secrets: ctx.secrets,
          now: ctx.now,
        },
        tenantId,
        id,
      );
    },
  },
];
