import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAdapters } from '../src/compose.ts';
import { EXPORT_DEAD_QUEUE, EXPORT_JOBS, EXPORT_QUEUE } from '../src/export-requests/jobs.ts';
import { createLogger } from '../src/lib/logger.ts';
import type { ByteRange, ObjectStore, PendingObject } from '../src/store/object-store.ts';
import { bearer } from './support/fixtures/auth.ts';
import {
  type ExportHarness,
  type ExportJson,
  exportHarness,
  requestExport,
  getExport,
} from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';

/**
 * The real object store with a hand on its writes: `hold()` makes the next put wait
 * until released (so a test can act while an export is running), `failPuts` makes
 * puts fail as an unreachable storage service would.
 */
class GatedStore implements ObjectStore {
  readonly kind: ObjectStore['kind'];
  readonly inner: ObjectStore;
  failPuts = 0;
  #gate: { entered: () => void; opened: Promise<void> } | null = null;

  constructor(inner: ObjectStore) {
    this.inner = inner;
    this.kind = inner.kind;
  }

  /** The next put waits; resolves `entered` once a put is waiting, and `release()` lets it go. */
  hold(): { entered: Promise<void>; release: () => void } {
    let entered!: () => void;
    let release!: () => void;
    const enteredPromise = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const opened = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.#gate = { entered, opened };
    return { entered: enteredPromise, release };
  }

  async put(key: string, source: Readable, options?: { contentType?: string }): Promise<PendingObject> {
    if (this.failPuts > 0) {
      this.failPuts--;
      source.destroy();
      throw new Error('storage unreachable (injected)');
    }
    const gate = this.#gate;
    if (gate) {
      this.#gate = null;
      gate.entered();
      await gate.opened;
    }
    return this.inner.put(key, source, options);
  }
  get(key: string, range?: ByteRange) {
    return this.inner.get(key, range);
  }
  head(key: string) {
    return this.inner.head(key);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
  presignGet(key: string, expiresInSeconds: number, filename?: string) {
    return this.inner.presignGet(key, expiresInSeconds, filename);
  }
}

async function objectsUnder(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(prefix)) keys.push(o.key);
  return keys;
}

/** Writes in progress of the local store (its temp folder). */
async function tempFiles(h: ExportHarness): Promise<string[]> {
  return readdir(path.join(h.config.storage.localDir, '.tmp')).catch(() => []);
}

for (const dialect of DIALECTS) {
  describe(`export lifecycle on ${dialect}`, () => {
    let h: ExportHarness;
    let store: GatedStore;

    beforeAll(async () => {
      h = await exportHarness(dialect, {
        wrapStore: (real) => {
          store = new GatedStore(real);
          return store;
        },
      });
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    it('cancels a queued export: its job never runs', async () => {
      const created = await requestExport(h.app, h.keys.admin, { datasets: ['customers'] });
      const res = await h.app.inject({
        method: 'DELETE',
        url: `/api/v1/exports/${created.id}`,
        headers: bearer(h.keys.admin),
      });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json()).toMatchObject({ id: created.id, status: 'cancelled', files: [] });
      const [job] = await h.queue.boss.findJobs(EXPORT_QUEUE, { id: created.id });
      expect(job?.state).toBe('cancelled');

      await h.startWorkers();
      // A later export runs to completion, so the workers are running; the cancelled one stays put.
      const later = await requestExport(h.app, h.keys.admin, { datasets: ['sites'] });
      expect((await h.waitForExport(later.id, ['completed'])).status).toBe('completed');
      const again = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${created.id}`,
        headers: bearer(h.keys.admin),
      });
      expect((again.json() as ExportJson).status).toBe('cancelled');
      expect((again.json() as ExportJson).attempts).toBe(0);
      expect(await objectsUnder(h.store, `exports/${h.tenant.id}/${created.id}/`)).toEqual([]);
    });

    it('retries an attempt that failed (storage unreachable) with backoff, then completes', async () => {
      store.failPuts = 1;
      const created = await requestExport(h.app, h.keys.admin, { datasets: ['sites'], format: 'csv' });
      const done = await h.waitForExport(created.id, ['completed']);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      expect(done.attempts).toBe(2);
      expect(done.error).toBeNull();
      expect(await objectsUnder(h.store, `exports/${h.tenant.id}/${created.id}/`)).toHaveLength(1);
    });

    it('fails an export whose attempts all failed, with the last error and no file', async () => {
      store.failPuts = 4; // the first attempt and its three retries
      const created = await requestExport(h.app, h.keys.admin, { datasets: ['sites'] });
      const done = await h.waitForExport(created.id, ['failed']);
      expect(done.status).toBe('failed');
      expect(done.attempts).toBe(4);
      expect(done.error?.code).toBe('internal');
      expect(done.error?.message).not.toContain('injected'); // internals stay in the log
      expect(await objectsUnder(h.store, `exports/${h.tenant.id}/${created.id}/`)).toEqual([]);
    });

    it('marks an export failed when its job lands in the dead-letter queue (workers kept dying)', async () => {
      const created = await requestExport(h.app, h.keys.admin, { datasets: ['sites'] });
      await h.waitForExport(created.id, ['completed']);
      // An export whose attempts never finished: its worker died each time.
      await h.database.db
        .withTables<{ export_requests: { id: string; status: string } }>()
        .updateTable('export_requests')
        .set({ status: 'running' })
        .where('id', '=', created.id)
        .execute();
      const dead = EXPORT_JOBS.find((j) => j.name === EXPORT_DEAD_QUEUE)!;
      await dead.handle({ id: 'dead-letter-job', data: { id: created.id } } as never, {
        database: h.database,
        config: h.config,
        logger: createLogger({ logLevel: 'silent' }),
        store: h.store,
        queue: h.queue,
        now: h.clock.now,
        keyring: h.secrets.keyring,
        secrets: h.secrets,
        ...createAdapters(h.config),
      });
      const after = await getExport(h.app, h.keys.admin, created.id);
      expect(after.status).toBe('failed');
      expect(after.error?.code).toBe('export_interrupted');
    });

    it('cancels a running export: the worker notices, aborts and keeps no file', async () => {
      const gate = store.hold();
      const created = await requestExport(h.app, h.keys.admin, { datasets: ['messages'], format: 'ndjson' });
      await gate.entered;
      const running = await h.waitForExport(created.id, ['running']);
      expect(running.attempts).toBe(1);
      const res = await h.app.inject({
        method: 'DELETE',
        url: `/api/v1/exports/${created.id}`,
        headers: bearer(h.keys.admin),
      });
      expect(res.statusCode).toBe(200);
      expect((res.json() as ExportJson).status).toBe('cancelled');
      // The worker learns of it from its progress write (about once a second) and aborts the export.
      await h.waitForLog((l) => l.export_id === created.id && String(l.msg).includes('aborting'));
      gate.release();
      const stopped = await h.waitForLog(
        (l) => l.export_id === created.id && l.msg === 'export attempt stopped',
      );
      expect(stopped.reason).toBe('cancelled');
      const after = await h.waitForExport(created.id, ['cancelled']);
      expect(after.files).toEqual([]);
      expect(await objectsUnder(h.store, `exports/${h.tenant.id}/${created.id}/`)).toEqual([]);
      expect(await tempFiles(h)).toEqual([]);
    });

    it('deletes the files of a completed export: then 410 for its download', async () => {
      const created = await requestExport(h.app, h.keys.admin, { datasets: ['customers'], format: 'json' });
      const done = await h.waitForExport(created.id, ['completed']);
      expect(done.status).toBe('completed');
      const link = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${created.id}/download`,
        headers: bearer(h.keys.admin),
      });
      expect(link.statusCode).toBe(200);
      const url = (link.json() as { url: string }).url;

      const res = await h.app.inject({
        method: 'DELETE',
        url: `/api/v1/exports/${created.id}`,
        headers: bearer(h.keys.admin),
      });
      expect(res.statusCode).toBe(200);
      const deleted = res.json() as ExportJson;
      expect(deleted.status).toBe('expired');
      expect(deleted.files).toEqual([]);
      expect(deleted.files_deleted_at).toBeTruthy();
      expect(await objectsUnder(h.store, `exports/${h.tenant.id}/${created.id}/`)).toEqual([]);

      const again = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${created.id}/download`,
        headers: bearer(h.keys.admin),
      });
      expect(again.statusCode).toBe(410);
      expect(again.json()).toMatchObject({ code: 'gone' });
      const old = await h.app.inject({ method: 'GET', url: url.slice(url.indexOf('/api/')) });
      expect(old.statusCode).toBe(410);
    });
  });
}
