import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import type { CopyQuery, Database } from '../src/db/database.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import { defaultWindow, seed } from '../src/seed/seed.ts';
import { authTestConfig } from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { until } from './support/wait.ts';

/** What the database has produced for the page so far, seen from the real adapter's stream. */
interface Production {
  bytes: number;
  ended: boolean;
}

/** The real database, with its COPY streams observed (bytes produced, end reached). */
function observed(database: Database, production: Production): Database {
  return {
    ...database,
    copyOut(query: CopyQuery) {
      const stream = database.copyOut(query);
      stream.on('data', (chunk: Buffer) => {
        production.bytes += chunk.length;
      });
      stream.on('end', () => {
        production.ended = true;
      });
      return stream;
    },
  };
}

/** The real database, whose COPY streams fail at their next chunk once `fault.armed` is set (a connection lost mid-page). */
function failingMidway(database: Database, fault: { armed: boolean }): Database {
  return {
    ...database,
    copyOut(query: CopyQuery) {
      const source = database.copyOut(query);
      const out = new PassThrough();
      source.on('data', (chunk: Buffer) => {
        if (!fault.armed) {
          if (!out.write(chunk)) source.pause();
          return;
        }
        source.destroy();
        out.destroy(new Error('connection lost'));
      });
      out.on('drain', () => source.resume());
      source.on('end', () => out.end());
      return out;
    },
  };
}

const ROWS = 10_000;
/** Padding per message: the page is then ~35 MB, far more than socket and stream buffers hold. */
const PADDING = 3_000;

for (const dialect of DIALECTS) {
  describe(`a 10,000-row page on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let key: string;
    let tenantId: string;
    const production: Production = { bytes: 0, ended: false };

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 2_600,
        messagesPerConversation: 5,
        seed: 9,
        ...defaultWindow(),
        secretKey: 'paged-export-stream-secret-0123456789abcdef',
      });
      tenantId = summary.tenants[0]!.id;
      await sql`UPDATE tenants SET plan = 'enterprise'`.execute(t.database.db);
      await sql`UPDATE messages SET content = content || ' ' || repeat('x', ${PADDING})`.execute(
        t.database.db,
      );
      const count = await sql<{ n: number }>`SELECT count(*)::int AS n FROM messages`.execute(t.database.db);
      expect(count.rows[0]!.n).toBeGreaterThan(ROWS);
      // Keys are peppered per database object: create the key through the one the app uses.
      const database = observed(t.database, production);
      app = await buildApp({ database, config: authTestConfig() });
      key = (await createApiKey(database, { tenantId, role: 'admin' })).key;
      await app.listen({ host: '127.0.0.1', port: 0 });
    }, 300_000);
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    it('starts the response before the page is produced, then delivers all of it', async () => {
      const { port } = app.server.address() as AddressInfo;
      const result = await new Promise<{
        status: number;
        headers: http.IncomingHttpHeaders;
        atFirstChunk: Production;
        lines: number;
        bytes: number;
      }>((resolve, reject) => {
        const req = http.get(
          {
            host: '127.0.0.1',
            port,
            path: `/api/v1/export/messages?format=ndjson&page_size=${ROWS}&columns=message_id,message_content`,
            headers: { authorization: `Bearer ${key}` },
          },
          (res) => {
            let atFirstChunk: Production | undefined;
            let lines = 0;
            let bytes = 0;
            res.on('data', (chunk: Buffer) => {
              if (!atFirstChunk) {
                atFirstChunk = { ...production };
                // A slow reader: the server must wait for it rather than produce ahead.
                res.pause();
                setTimeout(() => res.resume(), 300);
              }
              bytes += chunk.length;
              for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
            });
            res.on('end', () =>
              resolve({
                status: res.statusCode!,
                headers: res.headers,
                atFirstChunk: atFirstChunk!,
                lines,
                bytes,
              }),
            );
            res.on('error', reject);
          },
        );
        req.on('error', reject);
      });
      expect(result.status).toBe(200);
      expect(result.headers['x-end-of-stream']).toBe('false');
      expect(result.headers['x-next-cursor']).toBeTruthy();
      // When the first bytes arrived, the database had not finished producing the page.
      expect(result.atFirstChunk.ended).toBe(false);
      expect(result.atFirstChunk.bytes).toBeLessThan(result.bytes);
      expect(result.lines).toBe(ROWS);
      expect(result.bytes).toBeGreaterThan(ROWS * PADDING);
      expect(production.ended).toBe(true);
    }, 300_000);

    it('breaks the transfer (never a short page) and audits the failure when the database fails mid-page', async () => {
      const fault = { armed: false };
      const database = failingMidway(t.database, fault);
      const broken = await buildApp({ database, config: authTestConfig() });
      await broken.listen({ host: '127.0.0.1', port: 0 });
      try {
        const brokenKey = (await createApiKey(database, { tenantId, role: 'admin' })).key;
        const { port } = broken.server.address() as AddressInfo;
        const outcome = await new Promise<{ status: number; exportId: string; error: string | null }>(
          (resolve) => {
            http.get(
              {
                host: '127.0.0.1',
                port,
                path: `/api/v1/export/messages?format=ndjson&page_size=${ROWS}`,
                headers: { authorization: `Bearer ${brokenKey}` },
              },
              (res) => {
                const done = (error: string | null) =>
                  resolve({ status: res.statusCode!, exportId: res.headers['x-export-id'] as string, error });
                // The status and headers are out: now the database fails.
                fault.armed = true;
                res.resume();
                res.on('end', () => done(null));
                res.on('error', (err) => done(err.message));
              },
            );
          },
        );
        expect(outcome.status).toBe(200);
        expect(outcome.error).toBe('aborted');
        const entry = await until(
          `the audit entry of export ${outcome.exportId}`,
          async () =>
            (
              await sql<
                Record<string, unknown>
              >`SELECT * FROM audit_events WHERE target_id = ${outcome.exportId}`.execute(t.database.db)
            ).rows[0],
          { timeoutMs: 10_000 },
        );
        expect(entry).toMatchObject({ action: 'export.page', success: false });
      } finally {
        await broken.close();
      }
    });
  });
}
