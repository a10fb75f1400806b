import type { JobDefinition } from '../jobs/types.ts';
import { pruneStreamEvents } from './retention.ts';

/** Prunes the stream outbox once a day: clients can resume from the last seven days. */
const prune: JobDefinition = {
  name: 'stream.prune',
  queue: () => ({ retryLimit: 2, retryDelay: 300, expireInSeconds: 30 * 60 }),
  schedule: { cron: '17 3 * * *' },
  work: () => ({ localConcurrency: 1 }),
  async handle(_job, ctx) {
    const deleted = await pruneStreamEvents(ctx.database);
    ctx.logger.info({ deleted }, 'pruned stream events');
  },
};

export const STREAM_JOBS: readonly JobDefinition[] = [prune];
