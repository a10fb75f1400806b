import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * A real S3-protocol server for tests: s3rver in a child process of its own, on
 * 127.0.0.1 and a random port, storing into a fresh temporary folder.
 *
 * What s3rver does and does not check (verified): it enforces presigned-URL expiry,
 * but it does NOT verify request signatures (a wrong secret, a flipped signature or a
 * swapped key in a presigned URL all succeed) and it ignores Content-MD5. Tests of
 * link tampering must target Ferry's own download route, not s3rver.
 *
 * s3rver lacks AbortMultipartUpload (it answers 405); the child adds it in front of
 * s3rver by deleting the upload's folder in s3rver's own layout, so that discarding a
 * pending write can be exercised. `incompleteUploads()` counts uploads that were
 * started and neither completed nor aborted.
 *
 * The SDK client must use `requestChecksumCalculation: 'WHEN_REQUIRED'` (as Ferry's
 * does): with the SDK defaults s3rver stores streamed bodies with their aws-chunked
 * framing.
 */
export interface TestS3Server {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
  /** Multipart uploads started but neither completed nor aborted. */
  incompleteUploads(): Promise<number>;
  stop(): Promise<void>;
}

const UPLOADS_DIR = '._S3rver_uploads'; // s3rver's folder for multipart uploads in progress

export async function startS3Server(options: { bucket?: string } = {}): Promise<TestS3Server> {
  const bucket = options.bucket ?? 'ferry-test';
  const directory = await mkdtemp(path.join(tmpdir(), 'ferry-s3rver-'));
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'serve', directory, bucket], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let port: number;
  try {
    port = await readPort(child);
  } catch (err) {
    child.kill('SIGKILL');
    await rm(directory, { recursive: true, force: true });
    throw err;
  }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    region: 'us-east-1',
    // s3rver's built-in account; it accepts any signature anyway.
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    bucket,
    async incompleteUploads() {
      try {
        return (await readdir(path.join(directory, bucket, UPLOADS_DIR))).length;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
        throw err;
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(directory, { recursive: true, force: true });
    },
  };
}

function readPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (line) => {
      const port = Number((JSON.parse(line) as { port: number }).port);
      if (Number.isInteger(port) && port > 0) resolve(port);
      else reject(new Error(`s3rver child printed ${line}`));
    });
    child.once('exit', (code) => reject(new Error(`s3rver child exited early with code ${code}`)));
    child.once('error', reject);
  });
}

/** The child process: s3rver behind a plain HTTP server on 127.0.0.1:0. */
async function serve(directory: string, bucket: string): Promise<void> {
  // s3rver ships no types: declare the part used here.
  const moduleName = 's3rver';
  const { default: S3rver } = (await import(moduleName)) as {
    default: new (options: {
      silent: boolean;
      directory: string;
      configureBuckets: { name: string }[];
    }) => {
      configureBuckets(): Promise<void>;
      callback(): (req: IncomingMessage, res: ServerResponse) => void;
    };
  };
  const s3rver = new S3rver({ silent: true, directory, configureBuckets: [{ name: bucket }] });
  await s3rver.configureBuckets();
  const handle = s3rver.callback();
  const server = createServer((req, res) => {
    if (req.method === 'DELETE' && req.url?.includes('uploadId=')) void abortUpload(req, res, directory);
    else handle(req, res);
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
  });
  // Exit with the parent: stdin closes when the test process goes away.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

async function abortUpload(req: IncomingMessage, res: ServerResponse, directory: string): Promise<void> {
  const url = new URL(req.url!, 'http://127.0.0.1');
  const bucket = url.pathname.split('/')[1] ?? '';
  const uploadId = url.searchParams.get('uploadId') ?? '';
  const folder = path.join(directory, bucket, UPLOADS_DIR, uploadId);
  const exists =
    /^[0-9a-f]+$/.test(uploadId) &&
    (await readdir(folder).then(
      () => true,
      () => false,
    ));
  if (!exists) {
    res.writeHead(404, { 'content-type': 'application/xml' });
    res.end(
      '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchUpload</Code>' +
        '<Message>The specified upload does not exist.</Message></Error>',
    );
    return;
  }
  await rm(folder, { recursive: true, force: true });
  res.writeHead(204);
  res.end();
}

if (import.meta.main && process.argv[2] === 'serve') {
  await serve(process.argv[3]!, process.argv[4]!);
}
