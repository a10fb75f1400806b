import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { FerryError } from '../domain/ferry-error.ts';
import { type OutboundPolicy, pinnedLookup, resolveOutbound } from '../lib/ssrf.ts';

/** How long one attempt may take, connect to last response byte. */
export const WEBHOOK_TIMEOUT_MS = 15_000;
/** How much of a response body is kept for the delivery log. */
const EXCERPT_BYTES = 512;

export interface PostResult {
  /** The response status, or null when no response arrived (refused, timeout, network error). */
  readonly statusCode: number | null;
  readonly latencyMs: number;
  /** Why the attempt failed; null on a 2xx. */
  readonly error: string | null;
  readonly excerpt: string | null;
  /** A 429/503 answer's Retry-After, in milliseconds. */
  readonly retryAfterMs: number | null;
}

/**
 * POSTs one signed message. The host goes through the outbound guard and the socket
 * connects to the checked address (TLS still verifies the name). Redirects are not
 * followed (a 3xx is a failure); the whole exchange must finish within the timeout.
 */
export async function postWebhook(
  url: string,
  headers: Record<string, string>,
  body: string,
  options: { outbound: OutboundPolicy; timeoutMs?: number },
): Promise<PostResult> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  const target = new URL(url);
  let pinned: Awaited<ReturnType<typeof resolveOutbound>>;
  try {
    pinned = await resolveOutbound(target.hostname, options.outbound);
  } catch (err) {
    const message = err instanceof FerryError ? err.message : String(err);
    return { statusCode: null, latencyMs: elapsed(), error: message, excerpt: null, retryAfterMs: null };
  }
  const timeoutMs = options.timeoutMs ?? WEBHOOK_TIMEOUT_MS;
  const payload = Buffer.from(body, 'utf8');
  const send = target.protocol === 'https:' ? https.request : http.request;
  return new Promise<PostResult>((resolve) => {
    let settled = false;
    const finish = (result: Omit<PostResult, 'latencyMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...result, latencyMs: elapsed() });
    };
    const req = send(
      target,
      {
        method: 'POST',
        agent: false,
        lookup: pinnedLookup(pinned),
        headers: { ...headers, 'content-length': String(payload.length) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let kept = 0;
        res.on('data', (chunk: Buffer) => {
          if (kept < EXCERPT_BYTES) {
            chunks.push(chunk.subarray(0, EXCERPT_BYTES - kept));
            kept += Math.min(chunk.length, EXCERPT_BYTES - kept);
          }
        });
        res.on('error', (err) => finish(networkFailure(err)));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const excerpt = kept > 0 ? Buffer.concat(chunks).toString('utf8') : null;
          const ok = status >= 200 && status < 300;
          finish({
            statusCode: status,
            error: ok ? null : describeStatus(status, res.headers.location),
            excerpt,
            retryAfterMs: status === 429 || status === 503 ? retryAfter(res.headers['retry-after']) : null,
          });
        });
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`no complete answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    req.on('error', (err) => finish(networkFailure(err)));
    req.end(payload);
  });
}

function networkFailure(err: Error): Omit<PostResult, 'latencyMs'> {
  const code = (err as NodeJS.ErrnoException).code;
  return {
    statusCode: null,
    error: code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message,
    excerpt: null,
    retryAfterMs: null,
  };
}

function describeStatus(status: number, location: string | undefined): string {
  if (status >= 300 && status < 400)
    return `HTTP ${status} redirect${location ? ` to ${location.slice(0, 200)}` : ''}: redirects are not followed; register the final URL`;
  if (status === 410) return 'HTTP 410 Gone: the endpoint asked to stop deliveries';
  return `HTTP ${status}`;
}

/** Retry-After as seconds or an HTTP date, capped at a day. */
function retryAfter(value: string | string[] | undefined): number | null {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return null;
  const seconds = /^\d+$/.test(text.trim()) ? Number(text.trim()) : (Date.parse(text) - Date.now()) / 1000;
  if (!Number.isFinite(seconds) || seconds <= 0) return null;
  return Math.min(seconds, 86_400) * 1000;
}
