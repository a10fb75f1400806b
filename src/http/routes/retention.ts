import type { RoutePlugin } from '../types.ts';

/** Retention policies, preview and legal holds (docs/retention.md, docs/legal-holds.md). */
export const retentionRoutes: RoutePlugin = async () => {};
