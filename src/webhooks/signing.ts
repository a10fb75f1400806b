import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { FERRY_VERSION_HEADER } from './version.ts';

/** A new signing secret: `whsec_` and the base64 of 32 random bytes (Standard Webhooks). */
export function generateSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

/**
 * The Standard Webhooks headers for one attempt. `secrets` lists the current secret
 * first and, during a rotation, the previous one: each adds a `v1,<signature>` to
 * `webhook-signature`, so receivers holding either secret verify the message.
 */
export function signedHeaders(
  messageId: string,
  timestamp: Date,
  body: string,
  secrets: readonly string[],
): Record<string, string> {
  const signature = secrets.map((secret) => new Webhook(secret).sign(messageId, timestamp, body)).join(' ');
  return {
    'content-type': 'application/json',
    'user-agent': FERRY_VERSION_HEADER,
    'webhook-id': messageId,
    'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
    'webhook-signature': signature,
  };
}
