import { invalid } from '../domain/ferry-error.ts';
import { stamp } from '../lib/stamp.ts';

/** Placeholders a destination path may use; see docs/destinations.md. */
export const PATH_PLACEHOLDERS = ['date', 'datetime', 'tenant', 'dataset', 'export_id'] as const;
export type PathPlaceholder = (typeof PATH_PLACEHOLDERS)[number];

const LITERAL = /^[A-Za-z0-9._=+@/-]*$/;

/**
 * Checks a path template (an S3 prefix or an SFTP directory) and returns it with a
 * trailing `/` when it is not empty, so the file name is always appended as a new
 * segment. Literal parts may use letters, digits and `. _ = + @ / -`; no `..`
 * segment, no empty segment, no leading `/` unless `absolute` is allowed.
 */
export function checkPathTemplate(
  template: string,
  field: string,
  options: { absolute?: boolean } = {},
): string {
  if (template === '') return '';
  const literal = template.replace(/\{([a-z_]+)\}/g, (match, name: string) => {
    if (!(PATH_PLACEHOLDERS as readonly string[]).includes(name))
      throw invalid(
        field,
        `unknown placeholder ${match}`,
        PATH_PLACEHOLDERS.map((p) => `{${p}}`),
      );
    return 'x';
  });
  if (!LITERAL.test(literal))
    throw invalid(field, 'may only contain letters, digits, . _ = + @ / - and placeholders such as {date}');
  const body = options.absolute && literal.startsWith('/') ? literal.slice(1) : literal;
  if (body.startsWith('/')) throw invalid(field, 'must not start with /');
  const segments = body.replace(/\/$/, '').split('/');
  if (segments.some((s) => s === '' || s === '..' || s === '.') && body !== '')
    throw invalid(field, 'must not contain empty, "." or ".." segments');
  return template.endsWith('/') ? template : `${template}/`;
}

export interface PathValues {
  readonly now: Date;
  readonly tenant: string;
  readonly dataset: string;
  readonly exportId: string;
}

/** Fills a checked template: dates in UTC (`2026-11-22`, `20261122T031500Z`). */
export function renderPathTemplate(template: string, values: PathValues): string {
  const iso = values.now.toISOString();
  const filled: Record<PathPlaceholder, string> = {
    date: iso.slice(0, 10),
    datetime: stamp(values.now),
    tenant: values.tenant,
    dataset: values.dataset,
    export_id: values.exportId,
  };
  return template.replace(/\{([a-z_]+)\}/g, (_, name: PathPlaceholder) =>
    filled[name].replace(/[^A-Za-z0-9._=+@-]/g, '-'),
  );
}

/** The part of a template before its first placeholder: what retention may sweep. */
export function staticPrefix(template: string): string {
  const at = template.indexOf('{');
  const head = at === -1 ? template : template.slice(0, at);
  return head.slice(0, head.lastIndexOf('/') + 1);
}
