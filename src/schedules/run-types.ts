import type { TenantInfo } from '../collect/tenant.ts';
import type { Config } from '../config/config.ts';
import type { LinkSigner } from '../crypto/link-signer.ts';
import type { Database } from '../db/database.ts';
import type { Mailer } from '../deliver/mailer.ts';
import type { DeliveryArtifact, DeliveryClients } from '../deliver/types.ts';
import type { JobQueue } from '../jobs/types.ts';
import type { Logger } from '../lib/logger.ts';
import type { OutboundPolicy } from '../lib/ssrf.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { RunFile } from './model.ts';
import type { DeliveryRow } from './repository.ts';
import type { RunConfig } from './run-file.ts';

/** What a run needs; built once per worker from the job context (tests pass their own delays). */
export interface RunDeps {
  readonly database: Database;
  readonly config: Config;
  readonly logger: Logger;
  readonly store: ObjectStore;
  readonly queue: Pick<JobQueue, 'send'>;
  readonly now: () => Date;
  readonly secretKey: string;
  readonly outbound: OutboundPolicy;
  readonly mailer?: Mailer | undefined;
  /** Signs the download links the targets receive. */
  readonly signer: LinkSigner;
  readonly deliveryClients: DeliveryClients;
  /** Waits between delivery attempts within one run attempt; default 1 s, 4 s, 16 s. */
  readonly deliveryRetryDelays?: readonly number[] | undefined;
  readonly deliveryTimeoutMs?: number | undefined;
}

/** What one attempt of a run produced and delivered; the follow-ups (notices.ts) read it. */
export interface Outcome {
  delivered: boolean;
  /** Every missing delivery failed in a way no retry fixes. */
  permanent: boolean;
  reason: string;
  files: RunFile[];
  deliveries: DeliveryRow[];
  tenant: TenantInfo;
  config: RunConfig;
  artifacts: Map<string, DeliveryArtifact>;
}
