import type { RoutePlugin } from '../types.ts';

/** Compliance reports and the portability self-audit (docs/compliance.md). */
export const complianceReportRoutes: RoutePlugin = async () => {};
