import type { WebPages } from '../context.ts';

/** The usage page (filled in by its own change). */
export const usagePages: WebPages = () => {};
