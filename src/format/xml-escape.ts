// XML escaping for everything Ferry writes as XML: exports, their XSDs, knowledge base documents.

// Characters XML 1.0 does not allow anywhere (even as references), plus lone surrogates.
const ILLEGAL =
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const TEXT_SPECIAL = /[&<>\r\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF\uD800-\uDFFF]/;

/** Removes the characters XML 1.0 cannot carry (control characters, U+FFFE/U+FFFF, lone surrogates). */
export function stripIllegal(text: string): string {
  return text.replace(ILLEGAL, '');
}

/**
 * Escapes element content: `& < >` as entities, and CR as `&#13;` so that a parser's
 * line-end normalisation does not turn `\r\n` into `\n`. Illegal characters are dropped.
 */
export function escapeText(text: string): string {
  if (!TEXT_SPECIAL.test(text)) return text;
  return stripIllegal(text)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('\r', '&#13;');
}

/** Escapes an attribute value (double-quoted). */
export function escapeAttribute(text: string): string {
  return escapeText(text).replaceAll('"', '&quot;').replaceAll('\t', '&#9;').replaceAll('\n', '&#10;');
}
