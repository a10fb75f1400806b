import nodemailer from 'nodemailer';

/** One outgoing email. Attachments are streams or buffers, never read whole by the mailer. */
export interface MailMessage {
  readonly to: readonly string[];
  readonly subject: string;
  readonly text: string;
  readonly html?: string;
  readonly attachments?: readonly {
    readonly filename: string;
    readonly content: NodeJS.ReadableStream | Buffer;
    readonly contentType?: string;
  }[];
}

/** Sends email through the operator's SMTP server (FERRY_SMTP_URL). */
export interface Mailer {
  readonly from: string;
  send(message: MailMessage): Promise<{ messageId: string }>;
  close(): void;
}

/**
 * A mailer over nodemailer's SMTP transport. The SMTP server is the operator's own
 * (configured, not tenant-supplied), so it is not subject to the outbound guard.
 * `smtps://` connects with TLS; `smtp://` upgrades with STARTTLS when offered.
 */
export function createMailer(settings: { url: string; from: string }, timeoutMs = 30_000): Mailer {
  const transport = nodemailer.createTransport({
    url: settings.url,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
  });
  return {
    from: settings.from,
    async send(message) {
      const info = await transport.sendMail({
        from: settings.from,
        to: [...message.to],
        subject: message.subject,
        text: message.text,
        ...(message.html ? { html: message.html } : {}),
        attachments: (message.attachments ?? []).map((a) => ({
          filename: a.filename,
          content: a.content as Buffer,
          ...(a.contentType ? { contentType: a.contentType } : {}),
        })),
      });
      return { messageId: String(info.messageId) };
    },
    close() {
      transport.close();
    },
  };
}
