/** Escapes text for HTML element content and quoted attributes (`& < > " '` as numeric references). */
export function escapeHtml(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
