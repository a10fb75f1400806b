import type { WebPages } from '../context.ts';

export const privacyCenterPages: WebPages = () => {};
