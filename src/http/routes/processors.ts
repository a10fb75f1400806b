import type { RoutePlugin } from '../types.ts';

/** The processors registry and the record of processing activities (docs/processors.md). */
export const processorRoutes: RoutePlugin = async () => {};
