import { randomBytes } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import path from 'node:path';
import { pipeline, Readable } from 'node:stream';
import Client from 'ssh2-sftp-client';
import { hostKeyFingerprint } from '../deliver/sftp-target.ts';
import { INSECURE_ACCEPT_ANY } from '../deliver/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import { type OutboundPolicy, outboundPolicy, resolveOutbound } from '../lib/ssrf.ts';
import {
  checkExpiry,
  checkRange,
  notFound,
  resolveRange,
  validateKey,
  validatePrefix,
} from './object-key.ts';
import type {
  ByteRange,
  ListedObject,
  ObjectInfo,
  ObjectStore,
  PendingObject,
  StoredObject,
} from './object-store.ts';

export interface SftpStoreOptions {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly privateKey?: string | undefined;
  readonly passphrase?: string | undefined;
  readonly password?: string | undefined;
  /** `SHA256:…` fingerprint of the server's host key, as `ssh-keygen -l` prints it, or `insecure-accept-any`. */
  readonly hostKeyFingerprint: string;
  /** Directory on the server under which keys are stored (created when missing). */
  readonly root: string;
  /** The guard the host is checked with; without one, only public addresses are allowed. */
  readonly outbound?: OutboundPolicy | undefined;
}

/** An object store on an SFTP server; `close()` ends its connection. */
export type SftpObjectStore = ObjectStore & { readonly kind: 'sftp'; close(): Promise<void> };

/**
 * Objects up to this size are written and read in one request; larger ones stream. Every
 * backup chunk (at most 1 MiB before compression and sealing), key file and manifest fits,
 * which saves a round trip per 64 KiB block of the client's streams, and bounds the memory
 * a put holds.
 */
const WHOLE_OBJECT = 2 * 1024 * 1024;
const READY_TIMEOUT_MS = 30_000;
const KEEPALIVE_MS = 15_000;
const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}=?$/;
/**
 * Requests in flight at once on one connection. ssh2-sftp-client adds three listeners to the
 * connection per call, and the server answers one channel's requests in turn anyway.
 */
const MAX_IN_FLIGHT = 8;

/** The part of ssh2-sftp-client this store uses. */
type SftpClient = Pick<
  Client,
  | 'connect'
  | 'stat'
  | 'list'
  | 'mkdir'
  | 'put'
  | 'get'
  | 'createReadStream'
  | 'delete'
  | 'posixRename'
  | 'rename'
  | 'end'
>;

/** One SSH connection and what this store learnt on it. */
interface Session {
  readonly client: SftpClient;
  /** Folders known to exist (or being made): concurrent puts into one folder share one mkdir. */
  readonly dirs: Map<string, Promise<void>>;
  /** False once the server turned down posix-rename@openssh.com. */
  posixRename: boolean;
}

type PathKind = 'file' | 'dir' | 'other';

/** `client` with at most `max` of its requests in flight; the others wait their turn. */
function gated(client: SftpClient, max: number): SftpClient {
  let active = 0;
  const waiting: (() => void)[] = [];
  const run = async <T>(call: () => Promise<T>): Promise<T> => {
    while (active >= max) await new Promise<void>((wake) => waiting.push(wake));
    active++;
    try {
      return await call();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
  return {
    connect: (config) => client.connect(config),
    stat: (file) => run(() => client.stat(file)),
    list: (dir, filter) => run(() => client.list(dir, filter)),
    mkdir: (dir, recursive) => run(() => client.mkdir(dir, recursive)),
    put: (input, file, options) => run(() => client.put(input, file, options)),
    get: (file, dst, options) => run(() => client.get(file, dst, options)),
    delete: (file, notFoundOk) => run(() => client.delete(file, notFoundOk)),
    posixRename: (from, to) => run(() => client.posixRename(from, to)),
    rename: (from, to) => run(() => client.rename(from, to)),
    createReadStream: (file, options) => client.createReadStream(file, options),
    end: () => client.end(),
  };
}

const sameFingerprint = (a: string, b: string) => a.replace(/=+$/, '') === b.replace(/=+$/, '');

/** The SFTP status "no such file" as ssh2-sftp-client reports it (the status code or a mapped name). */
function isMissing(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === 2 || code === 'ENOENT' || code === 'ENOTDIR';
}

function unavailable(action: string, err: unknown): Error {
  if (err instanceof FerryError) return err;
  return new FerryError('service_unavailable', `sftp: ${action} failed: ${(err as Error).message}`);
}

function keyConflict(key: string): FerryError {
  return new FerryError(
    'conflict',
    `cannot store "${key}": on an SFTP server a key cannot also be the folder of other keys`,
  );
}

/**
 * Objects in a directory tree on an SFTP server (a tenant's backup destination). One
 * connection, opened on first use and reused by every call (SFTP requests are multiplexed
 * on it); when it drops, the next call opens a new one. The host is checked by the
 * outbound guard and the connection goes to the checked address; the server's host key
 * must match the pinned fingerprint, as for SFTP delivery.
 *
 * A put streams into `<dir>/.<name>.<random>.part` beside the key while hashing, and commit
 * renames it over the key with the POSIX rename extension, so readers see nothing or the
 * whole object. Servers without that extension get delete-then-rename: briefly no object,
 * never a partial one. Names starting with a dot are never keys, so `.part` files are not
 * listed; a crashed writer's `.part` files stay behind until removed by hand. Content types
 * are not kept: `head` returns none.
 */
export async function sftpObjectStore(options: SftpStoreOptions): Promise<SftpObjectStore> {
  const pinnedKey = options.hostKeyFingerprint;
  if (pinnedKey !== INSECURE_ACCEPT_ANY && !FINGERPRINT.test(pinnedKey ?? ''))
    throw invalid(
      'hostKeyFingerprint',
      `must be the server's host key fingerprint as \`ssh-keygen -l\` prints it (SHA256:…) or "${INSECURE_ACCEPT_ANY}"`,
    );
  if (!options.privateKey && !options.password)
    throw invalid('privateKey', 'give a private key or a password');
  if (typeof options.root !== 'string' || options.root.trim() === '')
    throw invalid('root', 'must name a directory on the server');
  const root = path.posix.normalize(options.root).replace(/(.)\/+$/, '$1');
  const outbound = options.outbound ?? outboundPolicy();
  const where = `${options.host}:${options.port}`;
  const full = (key: string) => path.posix.join(root, key);

  let current: Promise<Session> | undefined;

  /** Connects; `drop` runs when the connection ends (the calls in flight on it fail with the reason). */
  const open = async (drop: () => void): Promise<Session> => {
    const pinned = await resolveOutbound(options.host, outbound);
    const address = pinned.addresses[0]!.address;
    const client = new Client('ferry-sftp-store', { error: drop, end: drop, close: drop });
    // Without TCP_NODELAY each small SFTP request waits for the peer's delayed ACK (~40 ms).
    const sock = netConnect({ host: address, port: options.port, noDelay: true });
    let presented: string | undefined;
    try {
      await client.connect({
        sock,
        host: address,
        port: options.port,
        username: options.username,
        ...(options.password ? { password: options.password } : {}),
        ...(options.privateKey ? { privateKey: options.privateKey } : {}),
        ...(options.passphrase ? { passphrase: options.passphrase } : {}),
        readyTimeout: READY_TIMEOUT_MS,
        keepaliveInterval: KEEPALIVE_MS,
        hostVerifier: (key: Buffer) => {
          presented = hostKeyFingerprint(key);
          return pinnedKey === INSECURE_ACCEPT_ANY || sameFingerprint(presented, pinnedKey);
        },
      });
    } catch (err) {
      sock.destroy();
      if (presented && pinnedKey !== INSECURE_ACCEPT_ANY && !sameFingerprint(presented, pinnedKey))
        throw new FerryError(
          'host_key_mismatch',
          `sftp: the server at ${where} presented host key ${presented}, not the pinned ${pinnedKey}; ` +
            "Ferry did not log in. If the server's key really changed, update the destination's host key",
        );
      throw new FerryError(
        'service_unavailable',
        `sftp: cannot connect to ${where}: ${(err as Error).message}`,
      );
    }
    return { client: gated(client, MAX_IN_FLIGHT), dirs: new Map(), posixRename: true };
  };

  /** The open connection, or a new one when there is none (or the last one ended or failed). */
  const connect = (): Promise<Session> => {
    if (!current) {
      const forget = () => {
        if (current === attempt) current = undefined;
      };
      const attempt = open(forget);
      attempt.catch(forget);
      current = attempt;
    }
    return current;
  };

  const statPath = async (
    client: SftpClient,
    file: string,
  ): Promise<{ kind: PathKind; size: number } | null> => {
    try {
      const info = await client.stat(file);
      return { kind: info.isFile ? 'file' : info.isDirectory ? 'dir' : 'other', size: info.size };
    } catch (err) {
      if (isMissing(err)) return null;
      throw unavailable(`stat of ${file}`, err);
    }
  };

  /** Makes `dir` and its missing parents, one level at a time (an existing folder is one stat). */
  const ensureDir = (session: Session, dir: string, key: string): Promise<void> => {
    let made = session.dirs.get(dir);
    if (!made) {
      made = (async () => {
        const found = await statPath(session.client, dir);
        if (found?.kind === 'dir') return;
        if (found) throw keyConflict(key);
        const parent = path.posix.dirname(dir);
        if (parent !== dir) await ensureDir(session, parent, key);
        try {
          await session.client.mkdir(dir, false);
        } catch (err) {
          // Made meanwhile by another writer: fine.
          if ((await statPath(session.client, dir))?.kind !== 'dir') throw unavailable(`mkdir ${dir}`, err);
        }
      })();
      made.catch(() => session.dirs.delete(dir));
      session.dirs.set(dir, made);
    }
    return made;
  };

  /** Renames the `.part` file over the key, atomically where the server allows it. */
  const publish = async (part: string, target: string, key: string): Promise<void> => {
    const session = await connect();
    const { client } = session;
    try {
      if (session.posixRename) {
        try {
          await client.posixRename(part, target);
          return;
        } catch (err) {
          // ssh2 throws this before sending anything when the server lacks the extension.
          if (!/does not support/i.test((err as Error).message)) throw err;
          session.posixRename = false;
        }
      }
      await client.delete(target, true);
      await client.rename(part, target);
    } catch (err) {
      if ((await statPath(client, target).catch(() => null))?.kind === 'dir') throw keyConflict(key);
      throw unavailable(`committing ${key}`, err);
    }
  };

  async function* walk(client: SftpClient, dirKey: string, prefix: string): AsyncGenerator<ListedObject> {
    let entries: Client.FileInfo[];
    try {
      entries = await client.list(dirKey ? full(dirKey) : root);
    } catch (err) {
      if (isMissing(err)) return;
      throw unavailable(`listing ${dirKey || root}`, err);
    }
    // Sort as S3 does (by key bytes): a folder `a` sorts as `a/`, after `a-b`. Names starting
    // with a dot are never keys (this hides `.part` files).
    const items = entries
      .filter((entry) => !entry.name.startsWith('.'))
      .map((entry) => ({ entry, sortKey: entry.type === 'd' ? `${entry.name}/` : entry.name }))
      .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    for (const { entry } of items) {
      const key = dirKey ? `${dirKey}/${entry.name}` : entry.name;
      if (entry.type === 'd') {
        if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* walk(client, key, prefix);
      } else if (entry.type === '-' && key.startsWith(prefix))
        yield { key, bytes: entry.size, lastModified: new Date(entry.modifyTime) };
    }
  }

  return {
    kind: 'sftp',

    async put(key: string, source: Readable, _options?: { contentType?: string }): Promise<PendingObject> {
      let session: Session;
      const target = full(key);
      const dir = path.posix.dirname(target);
      try {
        validateKey(key);
        session = await connect();
        await ensureDir(session, dir, key);
      } catch (err) {
        source.destroy(); // release whatever feeds the source (a database cursor, a file)
        throw err;
      }
      const part = path.posix.join(
        dir,
        `.${path.posix.basename(target)}.${randomBytes(6).toString('hex')}.part`,
      );
      const meter = new MeteredHash();
      pipeline(source, meter, () => {}); // its error reaches the reads below
      const reads = meter[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      // The source's own error (a broken export, a size limit) is what the caller gets back.
      let sourceFailure: { error: unknown } | undefined;
      const next = async () => {
        try {
          return await reads.next();
        } catch (error) {
          sourceFailure = { error };
          throw error;
        }
      };
      let body: Readable | undefined;
      try {
        const head: Buffer[] = [];
        let held = 0;
        let read = await next();
        while (!read.done) {
          head.push(read.value);
          held += read.value.length;
          if (held > WHOLE_OBJECT) break;
          read = await next();
        }
        if (read.done) await session.client.put(Buffer.concat(head), part);
        else {
          body = Readable.from(
            (async function* () {
              yield Buffer.concat(head);
              for (let more = await next(); !more.done; more = await next()) yield more.value;
            })(),
            { objectMode: false },
          );
          await session.client.put(body, part);
        }
      } catch (err) {
        source.destroy();
        meter.destroy();
        body?.destroy();
        // Best effort: a leftover `.part` file is hidden from every read and listing.
        await session.client.delete(part, true).catch(() => undefined);
        if (sourceFailure) throw sourceFailure.error;
        throw unavailable(`writing ${key}`, err);
      }

      const stored: StoredObject = { key, bytes: meter.bytes, sha256: meter.sha256 };
      let state: 'pending' | 'committed' | 'discarded' = 'pending';
      let committing: Promise<StoredObject> | undefined;
      return {
        ...stored,
        commit() {
          if (state === 'discarded')
            return Promise.reject(new FerryError('conflict', `the pending write of "${key}" was discarded`));
          if (!committing) {
            const attempt = publish(part, target, key).then(() => {
              state = 'committed';
              return stored;
            });
            // A failed commit may be tried again, or discarded.
            attempt.catch(() => {
              if (committing === attempt) committing = undefined;
            });
            committing = attempt;
          }
          return committing;
        },
        async discard() {
          if (state === 'committed' || committing)
            throw new FerryError('conflict', `"${key}" is already committed`);
          if (state === 'discarded') return;
          state = 'discarded';
          const { client } = await connect();
          try {
            await client.delete(part, true);
          } catch (err) {
            throw unavailable(`discarding the pending write of ${key}`, err);
          }
        },
      };
    },

    async get(key: string, range?: ByteRange): Promise<Readable> {
      validateKey(key);
      if (range) checkRange(range);
      const { client } = await connect();
      const file = full(key);
      const found = await statPath(client, file);
      if (found?.kind !== 'file') throw notFound(key);
      // A delete between this stat and the read below surfaces as an error of the stream.
      if (range) return client.createReadStream(file, resolveRange(range, found.size)) as unknown as Readable;
      if (found.size > WHOLE_OBJECT) return client.createReadStream(file) as unknown as Readable;
      try {
        const bytes = await client.get(file);
        // Of an empty file the client returns an empty array instead of a buffer.
        return Readable.from(Buffer.isBuffer(bytes) && bytes.length > 0 ? [bytes] : [], {
          objectMode: false,
        });
      } catch (err) {
        if (isMissing(err)) throw notFound(key);
        throw unavailable(`reading ${key}`, err);
      }
    },

    async head(key: string): Promise<ObjectInfo | null> {
      validateKey(key);
      const { client } = await connect();
      const found = await statPath(client, full(key));
      return found?.kind === 'file' ? { bytes: found.size } : null;
    },

    async delete(key: string): Promise<void> {
      validateKey(key);
      const { client } = await connect();
      const file = full(key);
      try {
        await client.delete(file, true);
      } catch (err) {
        // A folder under the key is not an object: nothing to delete, as on local disk.
        if ((await statPath(client, file).catch(() => undefined))?.kind === 'dir') return;
        throw unavailable(`deleting ${key}`, err);
      }
    },

    async *list(prefix: string): AsyncIterable<ListedObject> {
      validatePrefix(prefix);
      const { client } = await connect();
      const slash = prefix.lastIndexOf('/');
      yield* walk(client, slash >= 0 ? prefix.slice(0, slash) : '', prefix);
    },

    async presignGet(key: string, expiresInSeconds: number): Promise<string | null> {
      validateKey(key);
      checkExpiry(expiresInSeconds);
      return null;
    },

    async close() {
      const session = await current?.catch(() => undefined);
      current = undefined;
      await session?.client.end().catch(() => undefined);
    },
  };
}
