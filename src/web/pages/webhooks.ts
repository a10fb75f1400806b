import type { WebPages } from '../context.ts';

/** The webhooks page (filled in by its own change). */
export const webhookPages: WebPages = () => {};
