import type { JobContext, JobDefinition } from '../jobs/types.ts';
import { importContext } from './context.ts';
import { cleanupImports, runImportById } from './service.ts';

/** An import or plan registered by the API or the dashboard (payload: the import id). */
export const IMPORT_RUN_JOB = 'import.run';

/** Daily: uploaded files and rejected items past their keeping time. */
export const IMPORT_CLEANUP_JOB = 'import.cleanup';

/** Imports (docs/import.md). */
export const IMPORT_JOBS: readonly JobDefinition[] = [
  {
    name: IMPORT_RUN_JOB,
    // A worker that died mid-import loses its claim; the retry resumes after the last
    // committed batch (a plan or an all-or-nothing import starts over: it wrote nothing).
    queue: (config) => ({
      retryLimit: 3,
      retryDelay: config.jobs.retryDelaySeconds,
      retryBackoff: true,
      expireInSeconds: 24 * 3600,
      heartbeatSeconds: config.jobs.heartbeatSeconds,
    }),
    async handle(job, ctx: JobContext) {
      if (!job.data.id) return;
      await runImportById(importContext(ctx), job.data.id);
    },
  },
  {
    name: IMPORT_CLEANUP_JOB,
    schedule: { cron: '40 3 * * *' },
    queue: () => ({ retryLimit: 1, retryDelay: 600, expireInSeconds: 3600 }),
    work: () => ({ localConcurrency: 1 }),
    async handle(_job, ctx: JobContext) {
      const deleted = await cleanupImports(importContext(ctx));
      if (deleted.uploads + deleted.rejections > 0)
        ctx.logger.info(deleted, 'import uploads and rejected items deleted');
    },
  },
];
