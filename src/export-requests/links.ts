import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config/config.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';

/**
 * Signed download links: `/api/v1/downloads/{export_id}/{file_id}?expires=<unix
 * seconds>&signature=<hex>`, where the signature is HMAC-SHA256 over the tenant, the
 * export, the file and the expiry, under a key derived from FERRY_SECRET_KEY (or the
 * per-install key file). A link is bound to one file of one export of one tenant;
 * changing any part, or using it after `expires`, fails verification. Deleting or
 * expiring the export kills its links (the route answers 410).
 */
export const DOWNLOAD_PATH = '/api/v1/downloads';

export interface LinkTarget {
  tenantId: string;
  exportId: string;
  fileId: string;
  /** Unix seconds. */
  expires: number;
}

export interface LinkSigner {
  sign(target: LinkTarget): string;
  verify(target: LinkTarget, signature: string): boolean;
}

const SIGNATURE = /^[0-9a-f]{64}$/;

/** The signer for download links, keyed from the configured secret. */
export function createLinkSigner(config: Pick<Config, 'secretKey' | 'dataDir'>): LinkSigner {
  const key = Buffer.from(
    hkdfSync('sha256', loadOrCreateSecretKey(config), 'ferry', 'ferry download links v1', 32),
  );
  const mac = (t: LinkTarget) =>
    createHmac('sha256', key).update(`v1\n${t.tenantId}\n${t.exportId}\n${t.fileId}\n${t.expires}`).digest();
  return {
    sign: (target) => mac(target).toString('hex'),
    verify(target, signature) {
      if (!SIGNATURE.test(signature) || !Number.isSafeInteger(target.expires)) return false;
      return timingSafeEqual(mac(target), Buffer.from(signature, 'hex'));
    },
  };
}

/** The path and query of a signed link (without scheme and host). */
export function downloadPath(target: LinkTarget, signature: string): string {
  return `${DOWNLOAD_PATH}/${target.exportId}/${target.fileId}?expires=${target.expires}&signature=${signature}`;
}
