import type { WebPages } from '../context.ts';

/** The schedules page (filled in by its own change). */
export const schedulePages: WebPages = () => {};
