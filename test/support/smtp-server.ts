import type { AddressInfo } from 'node:net';
import { type ParsedMail, simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

/** A message the test SMTP server accepted, parsed, with its SMTP envelope. */
export interface ReceivedMail {
  readonly from: string;
  readonly to: string[];
  readonly mail: ParsedMail;
}

/**
 * A real SMTP server for tests (smtp-server on 127.0.0.1, any port), no TLS and no
 * authentication, that parses each message with mailparser. `rejectNext(n)` answers
 * the next n messages with a permanent 550 error.
 */
export interface TestSmtpServer {
  /** For FERRY_SMTP_URL / createMailer. */
  readonly url: string;
  readonly messages: ReceivedMail[];
  rejectNext(count: number): void;
  stop(): Promise<void>;
}

export async function startSmtpServer(): Promise<TestSmtpServer> {
  const messages: ReceivedMail[] = [];
  let rejecting = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      simpleParser(stream).then(
        (mail) => {
          if (rejecting > 0) {
            rejecting--;
            const err = new Error('mailbox unavailable') as Error & { responseCode: number };
            err.responseCode = 550;
            callback(err);
            return;
          }
          messages.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            mail,
          });
          callback();
        },
        (err: Error) => callback(err),
      );
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.server.address() as AddressInfo;
  return {
    url: `smtp://127.0.0.1:${port}`,
    messages,
    rejectNext(count) {
      rejecting = count;
    },
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
