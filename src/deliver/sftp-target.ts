import { createHash } from 'node:crypto';
import path from 'node:path';
import { pipeline } from 'node:stream';
import { FerryError } from '../domain/ferry-error.ts';
import { resolveOutbound } from '../lib/ssrf.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import { renderPathTemplate } from './template.ts';
import {
  type DeliveryArtifact,
  type DeliveryContext,
  type DeliveryOutcome,
  INSECURE_ACCEPT_ANY,
  type SftpTarget,
} from './types.ts';

/** A host key's fingerprint as `ssh-keygen -l` prints it: `SHA256:` and unpadded base64. */
export function hostKeyFingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

function sameFingerprint(a: string, b: string): boolean {
  return a.replace(/=+$/, '') === b.replace(/=+$/, '');
}

/**
 * Uploads over SFTP. The host is checked by the outbound guard and the connection goes
 * to the checked address; the server's host key must match the pinned fingerprint
 * (unless the target says `insecure-accept-any`). The file is written as
 * `.<name>.part` in the target directory, its size checked, then renamed to `<name>`
 * (POSIX rename, which replaces an older copy atomically), so a reader never sees a
 * partial file under the final name. A failed attempt removes its `.part` file. The
 * path depends on the file and `ctx.pathTime` only, so a retry replaces what an
 * earlier attempt wrote instead of adding a second copy.
 */
export async function deliverBySftp(
  target: SftpTarget<string>,
  artifact: DeliveryArtifact,
  ctx: DeliveryContext,
): Promise<DeliveryOutcome> {
  const pinned = await resolveOutbound(target.host, ctx.outbound);
  const address = pinned.addresses[0]!.address;
  const directory = renderPathTemplate(target.directory, {
    now: ctx.pathTime ?? (ctx.now ?? (() => new Date()))(),
    tenant: artifact.tenantSlug ?? artifact.tenantId,
    dataset: artifact.dataset ?? 'export',
    exportId: artifact.exportId,
  }).replace(/\/$/, '');
  const finalPath = path.posix.join(directory, artifact.filename);
  const partPath = path.posix.join(directory, `.${artifact.filename}.part`);
  const location = `sftp://${target.host}:${target.port}/${finalPath.replace(/^\//, '')}`;

  const client = ctx.clients.sftp();
  let presented: string | undefined;
  try {
    try {
      await client.connect({
        host: address,
        port: target.port,
        username: target.username,
        ...(target.password ? { password: target.password } : {}),
        ...(target.private_key ? { privateKey: target.private_key } : {}),
        ...(target.passphrase ? { passphrase: target.passphrase } : {}),
        readyTimeout: ctx.timeoutMs ?? 30_000,
        hostVerifier: (key: Buffer) => {
          presented = hostKeyFingerprint(key);
          return target.host_key === INSECURE_ACCEPT_ANY || sameFingerprint(presented, target.host_key);
        },
      });
    } catch (err) {
      if (
        presented &&
        target.host_key !== INSECURE_ACCEPT_ANY &&
        !sameFingerprint(presented, target.host_key)
      )
        throw new FerryError(
          'host_key_mismatch',
          `sftp: the server at ${target.host}:${target.port} presented host key ${presented}, not the pinned ` +
            `${target.host_key}; Ferry did not log in. If the server's key really changed, update host_key`,
        );
      throw new FerryError(
        'delivery_failed',
        `sftp: cannot connect to ${target.host}:${target.port}: ${(err as Error).message}`,
      );
    }

    if (directory !== '.' && directory !== '') await client.mkdir(directory, true).catch(() => undefined);
    const source = await artifact.open();
    const digest = new MeteredHash();
    pipeline(source, digest, () => {});
    try {
      await client.put(digest, partPath);
      const sent = { bytes: digest.bytes, sha256: digest.sha256 };
      if (sent.bytes !== artifact.bytes || sent.sha256 !== artifact.sha256)
        throw new FerryError(
          'checksum_mismatch',
          `sftp: the file read had ${sent.bytes} bytes with sha256 ${sent.sha256}, expected ${artifact.bytes} with ${artifact.sha256}`,
        );
      const stat = await client.stat(partPath);
      if (stat.size !== artifact.bytes)
        throw new FerryError(
          'checksum_mismatch',
          `sftp: ${partPath} has ${stat.size} bytes on the server after the upload, expected ${artifact.bytes}`,
        );
      await client.posixRename(partPath, finalPath);
      return { location, bytesSent: sent.bytes, checksumVerified: true };
    } catch (err) {
      // Best effort: a leftover .part file is harmless (hidden, replaced by the next attempt).
      await client.delete(partPath, true).catch(() => undefined);
      if (err instanceof FerryError) throw err;
      throw new FerryError('delivery_failed', `sftp: writing ${finalPath} failed: ${(err as Error).message}`);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}
