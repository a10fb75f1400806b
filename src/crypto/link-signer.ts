import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config/config.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';

/** What a download link is bound to: one file of one export of one tenant, until `expires`. */
export interface LinkTarget {
  tenantId: string;
  exportId: string;
  fileId: string;
  /** Unix seconds. */
  expires: number;
  /** Bound to the tenant's IP allow-list: the download is refused from outside it (`&bound=1`, signed too). */
  bound?: boolean | undefined;
}

/** Signs and checks download links (src/export-requests/links.ts); built once by the composition root. */
export interface LinkSigner {
  sign(target: LinkTarget): string;
  verify(target: LinkTarget, signature: string): boolean;
}

const SIGNATURE = /^[0-9a-f]{64}$/;

/**
 * The signer for download links, keyed from the configured secret: HMAC-SHA256 over the
 * tenant, the export, the file and the expiry, under a key derived from FERRY_SECRET_KEY
 * (or the per-install key file). Changing any part of a link fails verification.
 */
export function createLinkSigner(config: Pick<Config, 'secretKey' | 'dataDir'>): LinkSigner {
  const key = Buffer.from(
    hkdfSync('sha256', loadOrCreateSecretKey(config), 'ferry', 'ferry download links v1', 32),
  );
  const mac = (t: LinkTarget) =>
    createHmac('sha256', key)
      .update(`v1\n${t.tenantId}\n${t.exportId}\n${t.fileId}\n${t.expires}${t.bound ? '\nbound' : ''}`)
      .digest();
  return {
    sign: (target) => mac(target).toString('hex'),
    verify(target, signature) {
      if (!SIGNATURE.test(signature) || !Number.isSafeInteger(target.expires)) return false;
      return timingSafeEqual(mac(target), Buffer.from(signature, 'hex'));
    },
  };
}
