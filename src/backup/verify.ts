import { createHash } from 'node:crypto';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { KeySecrets } from './keys.ts';
import { listChunkIds } from './repository.ts';
import { chunkStream, openBackup } from './restore.ts';

export const VERIFY_LEVELS = ['quick', 'full'] as const;
export type VerifyLevel = (typeof VERIFY_LEVELS)[number];

export interface DestinationCheck {
  readonly destination: string;
  readonly ok: boolean;
  /** What failed: the backup, table or file, and chunk (`backup_corrupt` messages). */
  readonly error: string | null;
  readonly signature: 'valid' | 'unknown_key' | null;
  readonly chunks_checked: number;
  readonly bytes_read: number;
}

/**
 * Checks one backup at one destination, as restic's `check` does:
 * - `quick`: the manifest parses, its MAC (under the data key) and Ed25519 signature hold,
 *   the key file opens, and every chunk it lists is present with the size it was written
 *   with (so a truncated chunk is found without reading it);
 * - `full` (`check --read-data`): besides, every chunk is read, decrypted (its tag checked),
 *   decompressed and hashed against its name, and every table's stream against the
 *   manifest's row count and SHA-256, which is what a restore would read.
 */
export async function verifyAt(
  store: ObjectStore,
  destination: string,
  input: {
    readonly tenantId: string;
    readonly backupId: string;
    readonly level: VerifyLevel;
    readonly secrets: KeySecrets;
    readonly verifier: Database | null;
  },
): Promise<DestinationCheck> {
  let checked = 0;
  let read = 0;
  let signature: DestinationCheck['signature'] = null;
  try {
    const opened = await openBackup(
      store,
      input.tenantId,
      input.backupId,
      input.secrets,
      input.verifier,
      destination,
    );
    signature = opened.signature;
    const manifest = opened.signed.manifest;
    const present = await listChunkIds(store, input.tenantId);
    const streams = [
      ...manifest.tables.map((t) => ({
        what: `table ${t.name}`,
        chunks: t.chunks,
        rows: t.rows,
        bytes: t.bytes,
        sha256: t.sha256,
      })),
      ...manifest.files
        .filter((f) => f.chunks)
        .map((f) => ({
          what: `stored file ${f.name}`,
          chunks: f.chunks!,
          rows: null,
          bytes: f.bytes,
          sha256: f.sha256,
        })),
    ];
    for (const s of streams) {
      for (const [id, , stored] of s.chunks) {
        const size = present.get(id);
        if (size === undefined)
          throw new FerryError(
            'backup_corrupt',
            `${destination}: backup ${input.backupId}, ${s.what}: chunk ${id} is missing`,
          );
        if (stored > 0 && size !== stored)
          throw new FerryError(
            'backup_corrupt',
            `${destination}: backup ${input.backupId}, ${s.what}: chunk ${id} has ${size} bytes, ${stored} were written (truncated or altered)`,
          );
        checked++;
      }
    }
    if (input.level === 'full') {
      for (const s of streams) {
        const where = `${destination}: backup ${input.backupId}, ${s.what}`;
        const hash = createHash('sha256');
        let bytes = 0;
        let rows = 0;
        for await (const plain of chunkStream(store, opened.key, input.tenantId, s.chunks, where)) {
          hash.update(plain);
          bytes += plain.length;
          if (s.rows !== null) for (let i = plain.indexOf(10); i >= 0; i = plain.indexOf(10, i + 1)) rows++;
        }
        read += bytes;
        if (bytes !== s.bytes || (s.rows !== null && rows !== s.rows) || hash.digest('hex') !== s.sha256)
          throw new FerryError(
            'backup_corrupt',
            `${where}: the stream does not match the manifest's checksum`,
          );
      }
    }
    return { destination, ok: true, error: null, signature, chunks_checked: checked, bytes_read: read };
  } catch (err) {
    if (!(err instanceof FerryError) || !['backup_corrupt', 'backup_key_unavailable'].includes(err.code))
      throw err;
    return {
      destination,
      ok: false,
      error: err.message,
      signature,
      chunks_checked: checked,
      bytes_read: read,
    };
  }
}
