import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../domain/ferry-error.ts';
import { writeFileAtomically } from '../lib/atomic-file.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import type { DeliveryArtifact, DeliveryContext, DeliveryOutcome, FolderTarget } from './types.ts';

/**
 * Copies the file into the folder (created when missing): written under a temporary name
 * beside it, its size and SHA-256 compared with the artifact's, then renamed over
 * `<path>/<filename>`, so the folder shows the file whole or not at all. A mismatch removes
 * the copy and fails the attempt.
 */
export async function deliverToFolder(
  target: FolderTarget,
  artifact: DeliveryArtifact,
  _ctx: DeliveryContext,
): Promise<DeliveryOutcome> {
  const file = path.join(target.path, path.basename(artifact.filename));
  const digest = new MeteredHash();
  await writeFileAtomically(file, async (out) => {
    await pipeline(await artifact.open(), digest, out);
    if (digest.bytes !== artifact.bytes || digest.sha256 !== artifact.sha256)
      throw new FerryError(
        'checksum_mismatch',
        `the copy for ${target.path} had ${digest.bytes} bytes with sha256 ${digest.sha256}, expected ` +
          `${artifact.bytes} bytes with sha256 ${artifact.sha256}; it was removed`,
      );
  });
  return { location: `file://${file}`, bytesSent: digest.bytes, checksumVerified: true };
}
