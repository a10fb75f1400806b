import type { RoutePlugin } from '../types.ts';

/** Consent records: `POST /api/v1/consent`, `GET /api/v1/consent?subject=…` (docs/consent.md). */
export const consentRoutes: RoutePlugin = async () => {};
