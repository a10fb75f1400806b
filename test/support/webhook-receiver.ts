import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Webhook } from 'standardwebhooks';

/** One request the receiver got, and what the reference library said about it. */
export interface ReceivedWebhook {
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** Indexes (into the secrets set with `setSecrets`) whose `Webhook.verify` accepted the request. */
  readonly verifiedWith: number[];
  /** The reference library's error for the first secret, when it rejected the request. */
  readonly verifyError: string | null;
  /** The status answered, or null when the request was left hanging. */
  readonly answered: number | null;
}

type Behaviour = { status: number; location?: string; retryAfter?: string } | 'hang';

/**
 * A webhook endpoint for tests on 127.0.0.1: it checks every request with the
 * Standard Webhooks reference library (`new Webhook(secret).verify(body, headers)`,
 * which also enforces the 5-minute timestamp tolerance) and answers per plan:
 * 200 by default, or whatever `failNext`, `answer`, `hangNext` asked for.
 */
export interface TestWebhookReceiver {
  readonly url: string;
  readonly requests: ReceivedWebhook[];
  /** The secrets to verify with (the current one first during a rotation). */
  setSecrets(secrets: readonly string[]): void;
  /** Answer the next `count` requests with `status` (default 500). */
  failNext(count: number, status?: number, extra?: { location?: string; retryAfter?: string }): void;
  /** Answer every later request with `status` (e.g. 410). */
  answer(status: number): void;
  /** Never answer the next `count` requests (a hanging receiver). */
  hangNext(count: number): void;
  stop(): Promise<void>;
}

export async function startWebhookReceiver(path = '/hooks/ferry'): Promise<TestWebhookReceiver> {
  const requests: ReceivedWebhook[] = [];
  let secrets: readonly string[] = [];
  const plan: Behaviour[] = [];
  let fallback = 200;
  const sockets = new Set<Socket>();

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers = req.headers as Record<string, string>;
      const verifiedWith: number[] = [];
      let verifyError: string | null = null;
      secrets.forEach((secret, i) => {
        try {
          new Webhook(secret).verify(body, headers);
          verifiedWith.push(i);
        } catch (err) {
          if (i === 0) verifyError = (err as Error).message;
        }
      });
      const behaviour = plan.shift() ?? { status: fallback };
      const known = req.url === path;
      const answered = behaviour === 'hang' ? null : known ? behaviour.status : 404;
      requests.push({ headers: req.headers, body, verifiedWith, verifyError, answered });
      if (answered === null) return;
      respond(res, answered, behaviour === 'hang' ? {} : behaviour);
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}${path}`,
    requests,
    setSecrets(list) {
      secrets = [...list];
    },
    failNext(count, status = 500, extra = {}) {
      for (let i = 0; i < count; i++) plan.push({ status, ...extra });
    },
    answer(status) {
      fallback = status;
    },
    hangNext(count) {
      for (let i = 0; i < count; i++) plan.push('hang');
    },
    stop() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function respond(
  res: ServerResponse,
  status: number,
  extra: { location?: string; retryAfter?: string },
): void {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (extra.location) headers.location = extra.location;
  if (extra.retryAfter) headers['retry-after'] = extra.retryAfter;
  res.writeHead(status, headers);
  res.end(JSON.stringify({ status }));
}
