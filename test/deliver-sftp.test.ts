import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { DELIVERY_CLIENTS } from '../src/compose.ts';
import { deliver } from '../src/deliver/deliver.ts';
import { parseTarget, sealTarget } from '../src/deliver/targets.ts';
import type { DeliveryArtifact, DeliveryContext, DeliveryTarget } from '../src/deliver/types.ts';
import { outboundPolicy, type Resolver } from '../src/lib/ssrf.ts';
import { sshdAvailable, startSftpServer, type TestSftpServer } from './support/sftp-server.ts';
import type { SecretBox } from '../src/crypto/secret-box.ts';
import { scratchSecrets } from './support/keyring.ts';

let secrets: SecretBox;
let scratch: Awaited<ReturnType<typeof scratchSecrets>> | undefined;

/** An artifact whose stream yields `chunks` pieces, waiting `pauseMs` before each. */
function artifactOf(
  bytes: Buffer,
  options: { chunks?: number; pauseMs?: number; filename?: string } = {},
): DeliveryArtifact {
  const pieces = options.chunks ?? 4;
  const size = Math.ceil(bytes.length / pieces);
  return {
    async open() {
      return Readable.from(
        (async function* () {
          for (let i = 0; i < bytes.length; i += size) {
            if (options.pauseMs) await sleep(options.pauseMs);
            yield bytes.subarray(i, i + size);
          }
        })(),
      );
    },
    filename: options.filename ?? 'messages-2026-11-22.ndjson',
    bytes: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    contentType: 'application/x-ndjson',
    exportId: 'exp_sftp',
    tenantId: '7d0c5b2e-1111-4a6b-9a57-000000000002',
    tenantSlug: 'acme',
    recordCounts: { messages: 10 },
    expiresAt: new Date('2026-11-29T00:00:00Z'),
    downloadUrl: 'https://ferry.example.com/d/xyz',
  };
}

describe.skipIf(!sshdAvailable())('SFTP delivery against OpenSSH sshd on 127.0.0.1', () => {
  let server: TestSftpServer;
  let ctx: DeliveryContext;
  beforeAll(async () => {
    scratch = await scratchSecrets();
    secrets = scratch.secrets;
    server = await startSftpServer();
    ctx = {
      secrets,
      outbound: outboundPolicy(['127.0.0.1']),
      clients: DELIVERY_CLIENTS,
      retryDelays: [1, 1, 1],
    };
  }, 30_000);
  afterAll(async () => {
    await scratch?.close();
    await server?.stop();
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  async function sftpTarget(extra: Record<string, unknown> = {}): Promise<DeliveryTarget> {
    return sealTarget(
      parseTarget({
        type: 'sftp',
        name: 'Warehouse',
        host: server.host,
        port: server.port,
        username: server.username,
        private_key: server.privateKey,
        directory: server.uploadDir,
        host_key: server.hostKeyFingerprint,
        ...extra,
      }),
      secrets,
    );
  }

  test('uploads to a .part name and renames it; readers never see a partial file under the final name', async () => {
    const bytes = randomBytes(2 * 1024 * 1024);
    const artifact = artifactOf(bytes, { chunks: 32, pauseMs: 15 });
    const finalPath = path.join(server.uploadDir, artifact.filename);
    const partName = `.${artifact.filename}.part`;
    let sawPart = false;
    let finalSizes: number[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const names = readdirSync(server.uploadDir);
        if (names.includes(partName)) sawPart = true;
        if (names.includes(artifact.filename)) {
          try {
            finalSizes.push(statSync(finalPath).size);
          } catch {
            // renamed away between readdir and stat: nothing to see
          }
        }
        await sleep(2);
      }
    })();
    const result = await deliver(await sftpTarget(), artifact, ctx);
    polling = false;
    await poller;
    expect(result).toEqual({
      target: {
        type: 'sftp',
        name: 'Warehouse',
        label: `sftp://${server.username}@127.0.0.1:${server.port}/${server.uploadDir.slice(1)}/`,
      },
      status: 'delivered',
      attempts: 1,
      location: `sftp://127.0.0.1:${server.port}/${finalPath.slice(1)}`,
      bytesSent: bytes.length,
      checksumVerified: true,
    });
    expect(sawPart).toBe(true);
    finalSizes = [...new Set(finalSizes)];
    expect(finalSizes.every((size) => size === bytes.length)).toBe(true);
    expect(readFileSync(finalPath).equals(bytes)).toBe(true);
    expect(readdirSync(server.uploadDir)).not.toContain(partName);
  });

  test('a second delivery of the same file replaces it without duplicates', async () => {
    const first = randomBytes(1000);
    const second = randomBytes(1500);
    await deliver(
      await sftpTarget({ directory: `${server.uploadDir}/again` }),
      artifactOf(first, { filename: 'a.csv' }),
      ctx,
    );
    const result = await deliver(
      await sftpTarget({ directory: `${server.uploadDir}/again` }),
      artifactOf(second, { filename: 'a.csv' }),
      ctx,
    );
    expect(result.status).toBe('delivered');
    expect(readdirSync(path.join(server.uploadDir, 'again'))).toEqual(['a.csv']);
    expect(readFileSync(path.join(server.uploadDir, 'again', 'a.csv')).equals(second)).toBe(true);
  });

  test('the directory may use placeholders and is created when missing', async () => {
    const result = await deliver(
      await sftpTarget({ directory: `${server.uploadDir}/{tenant}/{date}` }),
      artifactOf(randomBytes(10), { filename: 'b.csv' }),
      { ...ctx, now: () => new Date('2026-11-22T10:00:00Z') },
    );
    expect(result.status).toBe('delivered');
    expect(readdirSync(path.join(server.uploadDir, 'acme', '2026-11-22'))).toEqual(['b.csv']);
  });

  test('a source that breaks mid-upload leaves neither the final file nor a .part file', async () => {
    const directory = `${server.uploadDir}/broken`;
    const artifact: DeliveryArtifact = {
      ...artifactOf(randomBytes(10), { filename: 'broken.csv' }),
      bytes: 300_000,
      async open() {
        return Readable.from(
          (async function* () {
            yield randomBytes(100_000);
            await sleep(20);
            throw new Error('the export file went away');
          })(),
        );
      },
    };
    const result = await deliver(await sftpTarget({ directory }), artifact, ctx);
    expect(result).toMatchObject({ status: 'failed', attempts: 4, errorCode: 'delivery_failed' });
    expect(result.error).toContain('the export file went away');
    expect(readdirSync(path.join(server.uploadDir, 'broken'))).toEqual([]);
  });

  test('a host key that does not match the pinned fingerprint fails at once, with a clear error', async () => {
    const result = await deliver(
      await sftpTarget({ host_key: server.otherFingerprint, directory: `${server.uploadDir}/mismatch` }),
      artifactOf(randomBytes(10)),
      ctx,
    );
    expect(result).toMatchObject({
      status: 'failed',
      attempts: 1,
      errorCode: 'host_key_mismatch',
      bytesSent: 0,
    });
    expect(result.error).toBe(
      `sftp: the server at 127.0.0.1:${server.port} presented host key ${server.hostKeyFingerprint}, not the pinned ` +
        `${server.otherFingerprint}; Ferry did not log in. If the server's key really changed, update host_key`,
    );
    expect(() => readdirSync(path.join(server.uploadDir, 'mismatch'))).toThrow();
  });

  test('insecure-accept-any connects to whatever key the server has', async () => {
    const result = await deliver(
      await sftpTarget({ host_key: 'insecure-accept-any', directory: `${server.uploadDir}/any` }),
      artifactOf(randomBytes(10), { filename: 'c.csv' }),
      ctx,
    );
    expect(result.status).toBe('delivered');
  });

  test('a wrong key is retried with backoff, then reported; no secret in the error', async () => {
    const sleeps: number[] = [];
    const wrongKey = readFileSync(path.join(path.dirname(server.uploadDir), 'other_key'), 'utf8');
    const result = await deliver(await sftpTarget({ private_key: wrongKey }), artifactOf(randomBytes(10)), {
      ...ctx,
      retryDelays: [1000, 4000, 16000],
      sleep: async (ms) => {
        sleeps.push(ms);
      },
    });
    expect(result).toMatchObject({ status: 'failed', attempts: 4, errorCode: 'delivery_failed' });
    expect(sleeps).toEqual([1000, 4000, 16000]);
    expect(result.error).toContain('authentication');
    expect(result.error).not.toContain('PRIVATE KEY');
  });

  test('a host resolving to a private address is refused before any socket is opened', async () => {
    const resolver: Resolver = async () => [{ address: '10.1.2.3', family: 4 }];
    const connect = vi.spyOn(net.Socket.prototype, 'connect');
    const result = await deliver(
      await sftpTarget({ host: 'sftp.partner.example' }),
      artifactOf(randomBytes(10)),
      {
        ...ctx,
        outbound: outboundPolicy([], resolver),
      },
    );
    expect(result).toMatchObject({ status: 'failed', attempts: 1, errorCode: 'outbound_blocked' });
    expect(result.error).toContain('sftp.partner.example resolves to 10.1.2.3, which is a private address');
    expect(connect).not.toHaveBeenCalled();
  });
});
