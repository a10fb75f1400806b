import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { PassThrough, type Readable, pipeline } from 'node:stream';
import Client from 'ssh2-sftp-client';
import { hostKeyFingerprint } from '../deliver/sftp-target.ts';
import { INSECURE_ACCEPT_ANY } from '../deliver/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import { type OutboundPolicy, resolveOutbound } from '../lib/ssrf.ts';
import { checkRange, notFound, resolveRange, validateKey, validatePrefix } from './object-key.ts';
import type { ByteRange, ListedObject, ObjectInfo, ObjectStore, PendingObject } from './object-store.ts';

export interface SftpStoreOptions {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly privateKey?: string;
  readonly password?: string;
  /** `SHA256:…` fingerprint of the server's host key, or `insecure-accept-any`. */
  readonly hostKeyFingerprint: string;
  /** Directory on the server under which keys are stored (created when missing). */
  readonly root: string;
  readonly outbound?: OutboundPolicy | undefined;
}

export type SftpObjectStore = Omit<ObjectStore, 'kind'> & { readonly kind: 'sftp'; close(): Promise<void> };

const same = (a: string, b: string) => a.replace(/=+$/, '') === b.replace(/=+$/, '');

/**
 * An object store on an SFTP server (backup destinations). One connection, opened on first
 * use: the host is checked by the outbound guard and its key pinned by fingerprint, as for
 * SFTP delivery. A put streams to a hidden `.part` file beside the key while hashing, and
 * commit renames it into place (POSIX rename), so readers see nothing or everything.
 */
export function sftpObjectStore(options: SftpStoreOptions): SftpObjectStore {
  let connected: Promise<Client> | undefined;
  const root = options.root.replace(/\/+$/, '') || '/';
  const full = (key: string) => path.posix.join(root, key);

  const connect = () => {
    connected ??= (async () => {
      const client = new Client('ferry-backup');
      const pinned = options.outbound ? await resolveOutbound(options.host, options.outbound) : null;
      let presented: string | undefined;
      try {
        await client.connect({
          host: pinned?.addresses[0]?.address ?? options.host,
          port: options.port,
          username: options.username,
          ...(options.password ? { password: options.password } : {}),
          ...(options.privateKey ? { privateKey: options.privateKey } : {}),
          readyTimeout: 30_000,
          hostVerifier: (key: Buffer) => {
            presented = hostKeyFingerprint(key);
            return (
              options.hostKeyFingerprint === INSECURE_ACCEPT_ANY ||
              same(presented, options.hostKeyFingerprint)
            );
          },
        });
      } catch (err) {
        connected = undefined;
        if (
          presented &&
          options.hostKeyFingerprint !== INSECURE_ACCEPT_ANY &&
          !same(presented, options.hostKeyFingerprint)
        )
          throw new FerryError(
            'host_key_mismatch',
            `sftp: the server at ${options.host}:${options.port} presented host key ${presented}, not the pinned ${options.hostKeyFingerprint}`,
          );
        throw new FerryError(
          'service_unavailable',
          `sftp: cannot connect to ${options.host}:${options.port}: ${(err as Error).message}`,
        );
      }
      return client;
    })();
    return connected;
  };

  const stat = async (key: string): Promise<{ size: number } | null> => {
    const client = await connect();
    try {
      const s = await client.stat(full(key));
      return s.isFile ? { size: s.size } : null;
    } catch {
      return null;
    }
  };

  async function* walk(client: Client, dir: string, prefix: string): AsyncGenerator<ListedObject> {
    let entries: Client.FileInfo[];
    try {
      entries = await client.list(path.posix.join(root, dir));
    } catch {
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const key = dir ? `${dir}/${e.name}` : e.name;
      if (e.type === 'd') {
        if (prefix.startsWith(`${key}/`) || `${key}/`.startsWith(prefix) || key.startsWith(prefix))
          yield* walk(client, key, prefix);
      } else if (e.type === '-' && key.startsWith(prefix))
        yield { key, bytes: e.size, lastModified: new Date(e.modifyTime) };
    }
  }

  return {
    kind: 'sftp',
    async put(key: string, source: Readable, _options?: { contentType?: string }): Promise<PendingObject> {
      validateKey(key);
      const client = await connect();
      const target = full(key);
      const dir = path.posix.dirname(target);
      await client.mkdir(dir, true).catch(() => undefined);
      const part = path.posix.join(
        dir,
        `.${path.posix.basename(target)}.${randomBytes(6).toString('hex')}.part`,
      );
      const meter = new MeteredHash();
      const sink = new PassThrough();
      pipeline(source, meter, sink, () => {});
      try {
        await client.put(sink, part);
      } catch (err) {
        await client.delete(part, true).catch(() => undefined);
        throw new FerryError('service_unavailable', `sftp: writing ${key} failed: ${(err as Error).message}`);
      }
      const stored = { key, bytes: meter.bytes, sha256: meter.sha256 };
      let done = false;
      return {
        ...stored,
        async commit() {
          if (done) throw new Error('the object was already committed or discarded');
          done = true;
          await client.posixRename(part, target);
          return stored;
        },
        async discard() {
          if (done) return;
          done = true;
          await client.delete(part, true).catch(() => undefined);
        },
      };
    },
    async get(key: string, range?: ByteRange): Promise<Readable> {
      validateKey(key);
      const found = await stat(key);
      if (!found) throw notFound(key);
      const client = await connect();
      if (!range) return client.createReadStream(full(key)) as unknown as Readable;
      const { start, end } = resolveRange(checkRange(range), found.size);
      return client.createReadStream(full(key), { start, end }) as unknown as Readable;
    },
    async head(key: string): Promise<ObjectInfo | null> {
      validateKey(key);
      const found = await stat(key);
      return found ? { bytes: found.size } : null;
    },
    async delete(key: string): Promise<void> {
      validateKey(key);
      const client = await connect();
      await client.delete(full(key), true).catch(() => undefined);
    },
    async *list(prefix: string): AsyncIterable<ListedObject> {
      if (prefix) validatePrefix(prefix);
      const client = await connect();
      const start = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
      yield* walk(client, start, prefix);
    },
    async presignGet(): Promise<string | null> {
      return null;
    },
    async close() {
      const client = await connected?.catch(() => undefined);
      connected = undefined;
      await client?.end().catch(() => undefined);
    },
  };
}
