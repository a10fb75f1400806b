import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import type Client from 'ssh2-sftp-client';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import type { Logger } from '../lib/logger.ts';
import type { OutboundPolicy } from '../lib/ssrf.ts';
import type { Mailer } from './mailer.ts';

/**
 * One finished export file, as delivery targets see it. `open()` may be called once
 * per attempt and per target; each call returns a fresh stream of the same bytes.
 */
export interface DeliveryArtifact {
  open(): Promise<Readable>;
  /** File name at the destination, e.g. `conversations-2026-11-22.csv.gz`. */
  readonly filename: string;
  readonly bytes: number;
  /** Hex SHA-256 of the file's bytes. */
  readonly sha256: string;
  readonly contentType: string;
  readonly exportId: string;
  readonly tenantId: string;
  /** Records per dataset, e.g. `{ conversations: 1200, messages: 20311 }`. */
  readonly recordCounts: Readonly<Record<string, number>>;
  /** When the download link stops working. */
  readonly expiresAt: Date;
  /** The signed download link of the export (the email target's content). */
  readonly downloadUrl: string;
  /** For `{tenant}` in prefixes and for messages; the tenant id when absent. */
  readonly tenantSlug?: string;
  readonly tenantName?: string;
  /** For `{dataset}` in prefixes and `export_type` in webhooks: the dataset, or `package`. */
  readonly dataset?: string;
  /** For the `export.completed` webhook: format, compression and the exported date range. */
  readonly format?: string;
  readonly compression?: string;
  readonly dateRange?: { readonly start: string | null; readonly end: string | null };
}

/** A sealed secret inside a stored target: `SecretBox.seal` output, opened only while delivering. */
export interface SealedSecret {
  readonly sealed: string;
}

export const SERVER_SIDE_ENCRYPTION = ['AES256', 'aws:kms'] as const;
export type ServerSideEncryption = (typeof SERVER_SIDE_ENCRYPTION)[number];

/** `S` is `string` while a target is being entered, `SealedSecret` once stored. */
export interface S3Target<S = SealedSecret> {
  readonly type: 's3';
  readonly name?: string;
  readonly bucket: string;
  /** Key prefix with placeholders: `{date}`, `{datetime}`, `{tenant}`, `{dataset}`, `{export_id}`. */
  readonly prefix: string;
  readonly region: string;
  /** For S3-compatible providers (MinIO, R2, Wasabi, …); AWS when absent. */
  readonly endpoint?: string;
  readonly force_path_style: boolean;
  /** Required: a tenant's target never uses the server's own AWS credentials. */
  readonly access_key_id: string;
  readonly secret_access_key: S;
  readonly server_side_encryption?: ServerSideEncryption;
  /** With `aws:kms`: the KMS key; the bucket's default key when absent. */
  readonly kms_key_id?: string;
  /** `head` (default): size and the sha256 metadata via HEAD; `read`: download again and hash. */
  readonly verify: 'head' | 'read';
}

export const INSECURE_ACCEPT_ANY = 'insecure-accept-any';

export interface SftpTarget<S = SealedSecret> {
  readonly type: 'sftp';
  readonly name?: string;
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly password?: S;
  readonly private_key?: S;
  readonly passphrase?: S;
  /** Remote directory the file is written to. */
  readonly directory: string;
  /** The pinned host key, `SHA256:<base64>` as `ssh-keygen -l` prints it, or `insecure-accept-any`. */
  readonly host_key: string;
}

export interface EmailTarget {
  readonly type: 'email';
  readonly name?: string;
  readonly to: readonly string[];
  /** Attach the file itself when it is at most `ATTACHMENT_LIMIT` bytes. */
  readonly attach: boolean;
}

export interface WebhookTarget {
  readonly type: 'webhook';
  readonly name?: string;
  /** A webhook endpoint registered with `POST /api/v1/webhooks`. */
  readonly endpoint_id: string;
}

/**
 * A folder of the Ferry server's own file system (a mounted share, a disk a data team reads).
 * Only an operator sets one (the `ferry` command line), never a tenant through the API or the
 * dashboard: a tenant must not choose where the server writes.
 */
export interface FolderTarget {
  readonly type: 'folder';
  readonly name?: string;
  /** Absolute path of the folder; created when missing. */
  readonly path: string;
}

export type DeliveryTarget<S = SealedSecret> =
  | S3Target<S>
  | SftpTarget<S>
  | EmailTarget
  | WebhookTarget
  | FolderTarget;
/** A target as entered, with plain-text secrets: never stored, never shown. */
export type DeliveryTargetInput = DeliveryTarget<string>;
export type TargetType = DeliveryTarget['type'];
export const TARGET_TYPES = [
  's3',
  'sftp',
  'email',
  'webhook',
  'folder',
] as const satisfies readonly TargetType[];

export interface DeliveryResult {
  /** Which target, without secrets: its type, name and a readable label such as `s3://bucket/prefix/`. */
  readonly target: { readonly type: TargetType; readonly name: string | null; readonly label: string };
  readonly status: 'delivered' | 'failed';
  /**
   * Attempts this delivery made; for a webhook target, the attempts its message has had
   * so far (the message keeps them from one call to the next).
   */
  readonly attempts: number;
  /** Where the file went: `s3://bucket/key`, `sftp://host:port/path`, `mailto:…`, `webhook:<endpoint>#<message>`, `file:///path`. */
  readonly location: string | null;
  /** Why the last attempt failed (no secrets). */
  readonly error?: string;
  /** The catalog code of that failure, e.g. `host_key_mismatch`, `outbound_blocked`. */
  readonly errorCode?: string;
  readonly bytesSent: number;
  /** True when the bytes at the destination were checked against the artifact's size and SHA-256. */
  readonly checksumVerified: boolean;
  /** On a failure that no further attempt can fix (a refused address, a message that failed for good). */
  readonly permanent?: boolean;
  /**
   * On a failure the destination retries by itself (a webhook message in the outbox):
   * when its next attempt is due. The delivery is not given up; calling again then
   * reports how it went, without sending the file again.
   */
  readonly retryAt?: Date;
}

/** What an adapter returns for a successful attempt. */
export interface DeliveryOutcome {
  readonly location: string;
  readonly bytesSent: number;
  readonly checksumVerified: boolean;
  /** Attempts the destination counted itself (a webhook message's), instead of this call's. */
  readonly attempts?: number;
}

/** The part of an SFTP client (ssh2-sftp-client) that the SFTP target uses. */
export type SftpClient = Pick<
  Client,
  'connect' | 'mkdir' | 'put' | 'stat' | 'posixRename' | 'delete' | 'end'
>;

/**
 * What the targets send through, built by the composition root (src/compose.ts): the
 * targets themselves construct no client.
 */
export interface DeliveryClients {
  /** An S3 client for one tenant's bucket; every connection goes through the outbound guard. */
  s3(target: S3Target<string>, outbound: OutboundPolicy, timeoutMs?: number): S3Client;
  /** A new, unconnected SFTP client for one attempt. */
  sftp(): SftpClient;
  /**
   * The webhook target: hands the artifact's `export.completed` to one registered endpoint
   * through the webhook outbox (src/webhooks/), which lies above this folder.
   */
  webhook(target: WebhookTarget, artifact: DeliveryArtifact, ctx: DeliveryContext): Promise<DeliveryOutcome>;
}

/** What delivering needs besides the target and the file; built by the caller (a job). */
export interface DeliveryContext {
  /** Opens sealed secrets in stored targets. */
  readonly secrets: SecretBox;
  /** The SSRF guard for tenant-supplied hosts. */
  readonly outbound: OutboundPolicy;
  readonly clients: DeliveryClients;
  /** For email targets; they fail with `email_not_configured` without it. */
  readonly mailer?: Mailer;
  /** For webhook targets. */
  readonly database?: Database;
  /** Waits before retry n+1; default 1 s, 4 s, 16 s (four attempts in all). */
  readonly retryDelays?: readonly number[];
  readonly sleep?: (ms: number) => Promise<void>;
  readonly now?: () => Date;
  readonly logger?: Logger;
  /** Per-request timeouts of the adapters (S3 request, SSH handshake, SMTP; a webhook POST, 15 s by default); default 30 s. */
  readonly timeoutMs?: number;
  /**
   * The time that fills `{date}` and `{datetime}` in paths. A scheduled run passes when
   * it started, so every attempt of the run writes the same object key and file path;
   * without it `deliver` takes the time of its first attempt.
   */
  readonly pathTime?: Date;
  /**
   * Names one delivery of one file to one target across calls (a scheduled run: the
   * file and the target's index). A webhook target keeps one message per key: every
   * call finds the same message, so the endpoint gets one `webhook-id` for the file.
   */
  readonly deliveryKey?: string;
  /** Hands a failed webhook attempt's retry to a `webhooks.deliver` job; without it the outbox sweep (every minute) makes it. */
  readonly queue?: {
    send(name: string, data: { id: string }, options?: { startAfter?: Date }): Promise<string | null>;
  };
  /** The webhook retry schedule; default WEBHOOK_RETRY_DELAYS (docs/webhooks.md). */
  readonly webhookRetryDelays?: readonly number[];
}
