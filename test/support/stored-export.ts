import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Database } from '../../src/db/database.ts';
import { TENANT_SCOPE } from '../../src/domain/export-scope.ts';
import { exportPrefix } from '../../src/export-requests/export-job.ts';
import { exportJobs, tenantExports } from '../../src/export-requests/repository.ts';
import type { ObjectStore } from '../../src/store/object-store.ts';

/**
 * A completed export whose one file is `source`, stored through `store` and recorded by
 * the export tables' own state changes (accepted, claimed, packaging, completed), without
 * running the pipeline: for tests of downloads of files larger than a seeded tenant makes.
 */
export async function storedExport(
  database: Database,
  store: ObjectStore,
  tenantId: string,
  file: { name: string; contentType: string; source: Readable },
): Promise<{ exportId: string; fileId: string; bytes: number; sha256: string }> {
  const exportId = randomUUID();
  const attemptId = randomUUID();
  const fileId = randomUUID();
  const now = new Date();
  await tenantExports(database, tenantId).insert({
    id: exportId,
    tenantId,
    actor: 'test',
    apiKeyId: null,
    teamMemberId: null,
    config: {
      datasets: ['messages'],
      scope: TENANT_SCOPE,
      format: 'csv',
      compression: null,
      package: 'none',
      from: null,
      to: null,
      filters: {},
      columns: null,
      pii: 'full',
      timezone: null,
      options: {},
      bom: false,
      csv_guard: true,
      recipients: [],
    },
    retentionDays: 30,
    maxFileBytes: null,
    repeatOf: null,
    createdAt: now,
  });
  const jobs = exportJobs(database);
  if (!(await jobs.claim(exportId, attemptId, now))) throw new Error('the export was not claimed');
  const key = `${exportPrefix(tenantId, exportId)}${attemptId}/${file.name}`;
  const pending = await store.put(key, file.source, { contentType: file.contentType });
  await pending.commit();
  await jobs.toPackaging(exportId, attemptId, now);
  const completed = await jobs.complete(
    exportId,
    attemptId,
    {
      id: fileId,
      name: file.name,
      storageKey: key,
      contentType: file.contentType,
      bytes: pending.bytes,
      records: 0,
      sha256: pending.sha256,
      encrypted: false,
    },
    { records: 0, estimated: null, bytes: pending.bytes, at: now },
    new Date(now.getTime() + 86_400_000),
  );
  if (!completed) throw new Error('the export was not completed');
  return { exportId, fileId, bytes: pending.bytes, sha256: pending.sha256 };
}
