import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import path from 'node:path';
import { PassThrough, pipeline, Readable } from 'node:stream';
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

export type SftpObjectStore = ObjectStore & { readonly kind: 'sftp'; close(): Promise<void> };

/** Objects up to this size are written and read in one request. */
const WHOLE_WRITE = 16 * 1024 * 1024;

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

  // Directories made (or being made) on this connection: concurrent puts share one mkdir.
  const made = new Map<string, Promise<void>>();
  const ensureDir = (client: Client, dir: string): Promise<void> => {
    let p = made.get(dir);
    if (!p) {
      p = (async () => {
        const parent = path.posix.dirname(dir);
        if (parent !== dir && parent !== root && parent !== '/') await ensureDir(client, parent);
        if ((await client.exists(dir)) === 'd') return;
        await client.mkdir(dir, false).catch(async (err: Error) => {
          // Made meanwhile by another writer: fine.
          if ((await client.exists(dir)) !== 'd') throw err;
        });
      })();
      p.catch(() => made.delete(dir));
      made.set(dir, p);
    }
    return p;
  };

  const connect = () => {
    connected ??= (async () => {
      const client = new Client('ferry-backup');
      const pinned = options.outbound ? await resolveOutbound(options.host, options.outbound) : null;
      let presented: string | undefined;
      try {
        const host = pinned?.addresses[0]?.address ?? options.host;
        // Without TCP_NODELAY every small SFTP request waits for the peer's delayed ACK (~40 ms).
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = netConnect({ host, port: options.port, noDelay: true }, () => resolve(s));
          s.once('error', reject);
        });
        await client.connect({
          sock,
          host,
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
      if (root !== '/' && (await client.exists(root)) !== 'd')
        await client.mkdir(root, true).catch(() => undefined);
      await ensureDir(client, dir);
      const part = path.posix.join(
        dir,
        `.${path.posix.basename(target)}.${randomBytes(6).toString('hex')}.part`,
      );
      const meter = new MeteredHash();
      const sink = new PassThrough();
      pipeline(source, meter, sink, () => {});
      try {
        // Small objects (every backup chunk, key file and manifest) go in one write: the
        // client's stream writes cost a round trip per small block. Larger ones stream.
        const reads = sink[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
        const head: Buffer[] = [];
        let held = 0;
        let next = await reads.next();
        while (!next.done) {
          head.push(next.value);
          held += next.value.length;
          if (held >= WHOLE_WRITE) break;
          next = await reads.next();
        }
        if (next.done) await client.put(Buffer.concat(head), part);
        else
          await client.put(
            Readable.from(
              (async function* () {
                yield Buffer.concat(head);
                for (let n = await reads.next(); !n.done; n = await reads.next()) yield n.value;
              })(),
            ),
            part,
          );
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
      if (!range && found.size <= WHOLE_WRITE)
        return Readable.from([(await client.get(full(key))) as Buffer]);
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
