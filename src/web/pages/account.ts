import type { WebPages } from '../context.ts';

export const accountPages: WebPages = () => {};
