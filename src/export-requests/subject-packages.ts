import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { SubjectPackage } from '../pipeline/company-package.ts';

/**
 * How an export that answers a data subject request finds that person's rows. The privacy
 * code (src/privacy/, above this folder) registers it once at load; the export job asks it
 * when it runs such an export, so the stored request carries only the request's id.
 */
export type SubjectPackageSource = (
  database: Database,
  tenantId: string,
  requestId: string,
) => Promise<SubjectPackage>;

let source: SubjectPackageSource | undefined;

export function registerSubjectPackages(fn: SubjectPackageSource): void {
  source = fn;
}

export function subjectPackageFor(
  database: Database,
  tenantId: string,
  requestId: string,
): Promise<SubjectPackage> {
  if (!source) throw new FerryError('internal', 'no source of data subject packages is registered');
  return source(database, tenantId, requestId);
}
