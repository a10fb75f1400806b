import type { RoutePlugin } from '../types.ts';
import { registerExportEndpoints, serviceDeps } from './exports.ts';

/**
 * The export endpoints under the paths of the data-portability compliance checklist.
 * Same handlers, schemas and rules as /api/v1/exports (see docs/api.md):
 *
 * | checklist path                     | same as                              |
 * |------------------------------------|--------------------------------------|
 * | POST   /api/export/request         | POST   /api/v1/exports               |
 * | GET    /api/export/status/{id}     | GET    /api/v1/exports/{id}          |
 * | GET    /api/export/download/{id}   | GET    /api/v1/exports/{id}/download |
 * | DELETE /api/export/{id}            | DELETE /api/v1/exports/{id}          |
 */
export const complianceRoutes: RoutePlugin = async (app, deps) => {
  registerExportEndpoints(
    app,
    deps,
    serviceDeps(app, deps),
    {
      create: '/api/export/request',
      get: '/api/export/status/:id',
      remove: '/api/export/:id',
      download: '/api/export/download/:id',
    },
    'compliance',
  );
};
