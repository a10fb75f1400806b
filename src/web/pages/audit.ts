import type { WebPages } from '../context.ts';

/** The audit page (filled in by its own change). */
export const auditPages: WebPages = () => {};
