import type { TenantInfo } from '../collect/tenant.ts';
import type { Config } from '../config/config.ts';
import type { LinkSigner } from '../crypto/link-signer.ts';
import type { DeliveryArtifact } from '../deliver/types.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { LakeTargetResult } from './lake.ts';
import type { RunFile } from './model.ts';
import type { DeliveryRound, RunDeliveryDeps } from './run-delivery.ts';
import type { RunConfig } from './run-file.ts';

/** What a run needs; built once per worker from the job context (tests pass their own delays). */
export interface RunDeps extends RunDeliveryDeps {
  readonly config: Config;
  readonly store: ObjectStore;
  /** Signs the download links the targets receive. */
  readonly signer: LinkSigner;
}

/** What one attempt of a run produced and delivered; the follow-ups (notices.ts) read it. */
export interface Outcome extends DeliveryRound {
  files: RunFile[];
  tenant: TenantInfo;
  config: RunConfig;
  artifacts: Map<string, DeliveryArtifact>;
  /** A `lake` run: what it did at each target. */
  lake?: LakeTargetResult[];
}
