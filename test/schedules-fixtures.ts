import { createServer, type Server, type Socket, connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { sql } from 'kysely';
import type { Database } from '../src/db/database.ts';
import type { TestS3Server } from './support/s3-server.ts';

/**
 * A TCP relay on 127.0.0.1 in front of a real server (the test sshd), to take the
 * server "down" and bring it back without changing its address: `forward` relays,
 * `refuse` closes each new connection at once, `hang` accepts and never answers.
 */
export interface TcpRelay {
  readonly port: number;
  mode: 'forward' | 'refuse' | 'hang';
  /** Connections accepted so far, per mode they met. */
  readonly accepted: Record<'forward' | 'refuse' | 'hang', number>;
  stop(): Promise<void>;
}

export async function startTcpRelay(target: { host: string; port: number }): Promise<TcpRelay> {
  const sockets = new Set<Socket>();
  const relay: TcpRelay = {
    port: 0,
    mode: 'forward',
    accepted: { forward: 0, refuse: 0, hang: 0 },
    stop: async () => {},
  };
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const mode = relay.mode;
    relay.accepted[mode]++;
    if (mode === 'refuse') {
      socket.destroy();
      return;
    }
    if (mode === 'hang') return;
    const upstream = connect(target.port, target.host);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => socket.destroy());
    socket.on('close', () => upstream.destroy());
    upstream.on('close', () => socket.destroy());
    socket.pipe(upstream);
    upstream.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  Object.assign(relay, {
    port: (server.address() as AddressInfo).port,
    stop: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
  return relay;
}

/**
 * Waits until every transaction that was open when our writes committed has ended: a
 * change-feed run covers transactions older than the oldest one still running, so on a
 * shared PostgreSQL other sessions' open transactions delay (never drop) changes.
 */
export async function settle(database: Database): Promise<void> {
  const read = async (fn: 'xmin' | 'xmax') =>
    BigInt(
      (
        await sql<{
          x: string;
        }>`SELECT ${sql.raw(`pg_snapshot_${fn}`)}(pg_current_snapshot())::text AS x`.execute(database.db)
      ).rows[0]!.x,
    );
  const mark = await read('xmax');
  for (let i = 0; (await read('xmin')) < mark; i++) {
    if (i > 12_000) throw new Error('a transaction of another session stayed open for minutes');
    await new Promise((r) => setTimeout(r, 10));
  }
}

export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  log?: () => string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}${log ? `\n${log()}` : ''}`);
}

/** Copies a row of `table` with a new id (and optional column overrides); returns the id. */
export async function cloneRow(
  database: Database,
  table: 'conversations' | 'messages',
  id: string,
  overrides: Record<string, string> = {},
): Promise<string> {
  const columns = await sql<{ column_name: string }>`
    SELECT column_name FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = ${table} ORDER BY ordinal_position`.execute(
    database.db,
  );
  const fresh = crypto.randomUUID();
  const names = columns.rows.map((c) => c.column_name);
  const values = names.map((name) =>
    name === 'id' ? sql`${fresh}::uuid` : name in overrides ? sql`${overrides[name]}::uuid` : sql.ref(name),
  );
  await sql`INSERT INTO ${sql.table(table)} (${sql.join(names.map((n) => sql.ref(n)))})
    SELECT ${sql.join(values)} FROM ${sql.table(table)} WHERE id = ${id}::uuid`.execute(database.db);
  return fresh;
}

function s3Client(s3: TestS3Server): S3Client {
  return new S3Client({
    region: s3.region,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/** The keys under a prefix of the test S3 server, in key order. */
export async function s3Keys(s3: TestS3Server, prefix: string): Promise<string[]> {
  const client = s3Client(s3);
  try {
    const listed = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix }));
    return (listed.Contents ?? []).map((o) => o.Key!).sort();
  } finally {
    client.destroy();
  }
}

/** The objects under a prefix of the test S3 server, with their bytes, in key order. */
export async function s3Objects(s3: TestS3Server, prefix: string): Promise<{ key: string; body: Buffer }[]> {
  const client = s3Client(s3);
  try {
    const listed = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix }));
    const out: { key: string; body: Buffer }[] = [];
    for (const object of listed.Contents ?? []) {
      const got = await client
        .send(new GetObjectCommand({ Bucket: s3.bucket, Key: object.Key! }))
        .catch((err: Error) => {
          throw new Error(`GET ${object.Key}: ${err.message}`);
        });
      out.push({ key: object.Key!, body: Buffer.from(await got.Body!.transformToByteArray()) });
    }
    return out.sort((a, b) => a.key.localeCompare(b.key));
  } finally {
    client.destroy();
  }
}
