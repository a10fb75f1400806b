import type { WebPages } from '../context.ts';

export const dsarPages: WebPages = () => {};
