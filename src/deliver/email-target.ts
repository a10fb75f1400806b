import { createHash } from 'node:crypto';
import { FerryError } from '../domain/ferry-error.ts';
import { escapeHtml } from '../lib/escape-html.ts';
import type { MailMessage } from './mailer.ts';
import type { DeliveryArtifact, DeliveryContext, DeliveryOutcome, EmailTarget } from './types.ts';

/** Files up to this size may be attached (when the target asks); larger ones are sent as a link only. */
export const ATTACHMENT_LIMIT = 1024 * 1024;

/**
 * Emails the download link with the file's size, record counts, SHA-256 and the
 * link's expiry. The file itself is attached only when the target says `attach` and
 * it is at most 1 MiB; exports are otherwise never sent through mail.
 */
export async function deliverByEmail(
  target: EmailTarget,
  artifact: DeliveryArtifact,
  ctx: DeliveryContext,
): Promise<DeliveryOutcome> {
  if (!ctx.mailer)
    throw new FerryError(
      'email_not_configured',
      'email delivery needs an SMTP server; the operator has not set FERRY_SMTP_URL',
    );
  const attach = target.attach && artifact.bytes <= ATTACHMENT_LIMIT;
  let attachment: Buffer | undefined;
  if (attach) {
    attachment = await readSmall(artifact);
    const sha256 = createHash('sha256').update(attachment).digest('hex');
    if (attachment.length !== artifact.bytes || sha256 !== artifact.sha256)
      throw new FerryError(
        'checksum_mismatch',
        `the file read for the attachment has ${attachment.length} bytes with sha256 ${sha256}, expected ${artifact.bytes} with ${artifact.sha256}`,
      );
  }
  const message = deliveryEmail(target.to, artifact, {
    attached: attach,
    attachLimitExceeded: target.attach && !attach,
  });
  const sent = await ctx.mailer
    .send(
      attachment
        ? {
            ...message,
            attachments: [
              { filename: artifact.filename, content: attachment, contentType: artifact.contentType },
            ],
          }
        : message,
    )
    .catch((err: unknown) => {
      throw new FerryError(
        'delivery_failed',
        `email: the SMTP server refused the message: ${(err as Error).message}`,
      );
    });
  return {
    location: `mailto:${target.to.join(',')}?message-id=${encodeURIComponent(sent.messageId)}`,
    bytesSent: attachment?.length ?? 0,
    checksumVerified: attachment !== undefined,
  };
}

async function readSmall(artifact: DeliveryArtifact): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of await artifact.open()) {
    total += (chunk as Buffer).length;
    if (total > ATTACHMENT_LIMIT)
      throw new FerryError('checksum_mismatch', 'the file is larger than its recorded size');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** `1.2 MB (1,234,567 bytes)`. */
export function formatSize(bytes: number): string {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  const short = unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]}`;
  return unit === 0 ? short : `${short} (${bytes.toLocaleString('en-US')} bytes)`;
}

function formatTime(date: Date): string {
  return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** The delivery email: plain text and the same as simple HTML. */
export function deliveryEmail(
  to: readonly string[],
  artifact: DeliveryArtifact,
  options: { attached: boolean; attachLimitExceeded: boolean },
): MailMessage {
  const counts = Object.entries(artifact.recordCounts);
  const total = counts.reduce((sum, [, n]) => sum + n, 0);
  const countText = counts.map(([name, n]) => `${name} ${n.toLocaleString('en-US')}`).join(', ');
  const who = artifact.tenantName ? ` for ${artifact.tenantName}` : '';
  const lines: [string, string][] = [
    ['File', artifact.filename],
    ['Size', formatSize(artifact.bytes)],
    [
      'Records',
      `${total.toLocaleString('en-US')}${counts.length > 1 ? ` (${countText})` : counts.length === 1 ? ` ${counts[0]![0]}` : ''}`,
    ],
    ['SHA-256', artifact.sha256],
    ['Download', artifact.downloadUrl],
    ['Link expires', formatTime(artifact.expiresAt)],
    ['Export id', artifact.exportId],
  ];
  const note = options.attached
    ? 'The file is attached to this message as well.'
    : options.attachLimitExceeded
      ? `The file is larger than ${formatSize(ATTACHMENT_LIMIT)}, so it is not attached; use the download link.`
      : 'Use the download link to fetch the file; it is not attached.';
  const text = [
    `Your export${who} is ready.`,
    '',
    ...lines.map(([k, v]) => `${k}: ${v}`),
    '',
    note,
    'Check the file after downloading with: sha256sum <file> (it must print the SHA-256 above).',
    '',
  ].join('\n');
  const html =
    `<p>Your export${escapeHtml(who)} is ready.</p><table>` +
    lines
      .map(([k, v]) =>
        k === 'Download'
          ? `<tr><th align="left">${k}</th><td><a href="${escapeHtml(v)}">Download the file</a></td></tr>`
          : `<tr><th align="left">${k}</th><td>${escapeHtml(v)}</td></tr>`,
      )
      .join('') +
    `</table><p>${escapeHtml(note)}</p>`;
  return { to, subject: `Export ready: ${artifact.filename}`, text, html };
}
