import type { LinkTarget } from '../crypto/link-signer.ts';

/**
 * Signed download links: `/api/v1/downloads/{export_id}/{file_id}?expires=<unix
 * seconds>&signature=<hex>`, where the signature (src/crypto/link-signer.ts) is
 * HMAC-SHA256 over the tenant, the export, the file and the expiry, under a key derived
 * from FERRY_SECRET_KEY (or the per-install key file). A link is bound to one file of one
 * export of one tenant; changing any part, or using it after `expires`, fails
 * verification. Deleting or expiring the export kills its links (the route answers 410).
 * A link bound to the tenant's IP allow-list carries `&bound=1` (signed as well) and is
 * refused (403 `ip_not_allowed`) from an address outside the list at download time.
 */
export const DOWNLOAD_PATH = '/api/v1/downloads';

/** The path and query of a signed link (without scheme and host). */
export function downloadPath(target: LinkTarget, signature: string): string {
  const bound = target.bound ? '&bound=1' : '';
  return `${DOWNLOAD_PATH}/${target.exportId}/${target.fileId}?expires=${target.expires}${bound}&signature=${signature}`;
}

/**
 * Where signed links point: FERRY_PUBLIC_URL, or else the server's own listen address
 * (a wildcard address read as `localhost`). Never the request's `Host` header: a client
 * could otherwise make Ferry sign a link to a host of its choosing.
 */
export function linkBase(config: { publicUrl: string | undefined; host: string; port: number }): string {
  if (config.publicUrl) return config.publicUrl.replace(/\/+$/, '');
  const host = ['0.0.0.0', '::', ''].includes(config.host) ? 'localhost' : config.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.port}`;
}
