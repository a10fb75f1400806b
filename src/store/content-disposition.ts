/**
 * A `Content-Disposition: attachment` value for a download file name (RFC 6266):
 * an ASCII fallback in `filename` and the exact UTF-8 name in `filename*`
 * (RFC 8187). Folders, quotes, backslashes and control characters are removed, so
 * a name can neither break out of the header nor choose a path on the client.
 */
export function contentDisposition(filename: string): string {
  const base = filename.split(/[/\\]/).pop() ?? '';
  const clean = base.replace(/[\x00-\x1f\x7f"]/g, '').trim() || 'download';
  const ascii = clean.replace(/[^\x20-\x7e]/g, '_').replace(/[%;]/g, '_');
  const encoded = encodeURIComponent(clean).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}
