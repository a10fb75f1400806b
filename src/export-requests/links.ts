import type { LinkTarget } from '../crypto/link-signer.ts';

/**
 * Signed download links: `/api/v1/downloads/{export_id}/{file_id}?expires=<unix
 * seconds>&signature=<hex>`, where the signature (src/crypto/link-signer.ts) is
 * HMAC-SHA256 over the tenant, the export, the file and the expiry, under a key derived
 * from FERRY_SECRET_KEY (or the per-install key file). A link is bound to one file of one
 * export of one tenant; changing any part, or using it after `expires`, fails
 * verification. Deleting or expiring the export kills its links (the route answers 410).
 */
export const DOWNLOAD_PATH = '/api/v1/downloads';

/** The path and query of a signed link (without scheme and host). */
export function downloadPath(target: LinkTarget, signature: string): string {
  return `${DOWNLOAD_PATH}/${target.exportId}/${target.fileId}?expires=${target.expires}&signature=${signature}`;
}
