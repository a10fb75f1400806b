import type { DataMap } from './types.ts';

const escapeCell = (s: string) => s.replaceAll('|', '\\|').replaceAll('\n', ' ');

/** The data dictionary as Markdown: every dataset and column, then every table. Shipped in packages and in docs/. */
export function dataDictionaryMarkdown(map: DataMap, options: { datasets?: readonly string[] } = {}): string {
  const out: string[] = [
    '# Data dictionary',
    '',
    `Data map version ${map.version}. Column classes: identifier, contact (email, phone, name), network (IP, user agent),`,
    'location, free_text (may contain personal data), secret (never exported), internal, none.',
    '',
    '## Datasets',
    '',
  ];
  for (const d of Object.values(map.datasets)) {
    if (options.datasets && !options.datasets.includes(d.name)) continue;
    out.push(`### ${d.name}`, '', d.description, '', `Formats: ${d.formats.join(', ')}.`, '');
    if (d.filters.length)
      out.push(
        `Filters: ${d.filters.map((f) => `\`${f.name}\` (${f.description.replace(/\.$/, '')})`).join('; ')}.`,
        '',
      );
    if (d.parameters.length)
      out.push(
        `Parameters: ${d.parameters.map((p) => `\`${p.name}\` (${p.description.replace(/\.$/, '')})`).join('; ')}.`,
        '',
      );
    const ranges = Object.entries(d.ranges ?? {});
    if (ranges.length)
      out.push(
        `Ranges (saved export configurations, \`{"min", "max"}\`): ${ranges.map(([name, r]) => `\`${name}\` (\`${r.min}\`, \`${r.max}\`)`).join('; ')}.`,
        '',
      );
    const related = Object.keys(d.related ?? {});
    if (related.length)
      out.push(
        `Narrowed to the rows related to a selection of: ${related.map((n) => `\`${n}\``).join(', ')}.`,
        '',
      );
    out.push('| column | type | class | description |', '|---|---|---|---|');
    for (const f of d.fields)
      out.push(
        `| ${f.name} | ${f.money ? `${f.type} (money)` : f.type} | ${f.pii ? `${f.class} (${f.pii})` : f.class} | ${escapeCell(f.description)} |`,
      );
    out.push('');
    if (d.relatedFields?.length) {
      out.push('Related columns, written only when `columns` names them:', '');
      out.push('| column | type | class | description |', '|---|---|---|---|');
      for (const f of d.relatedFields)
        out.push(
          `| ${f.name} | ${f.type} | ${f.pii ? `${f.class} (${f.pii})` : f.class} | ${escapeCell(f.description)} |`,
        );
      out.push('');
    }
  }
  if (options.datasets) return out.join('\n');
  out.push('## Reference tables', '');
  for (const [name, t] of Object.entries(map.tables)) {
    const retention = `${t.retention.action} ${t.retention.keep} after ${t.retention.after.replace('_', ' ')}: ${t.retention.note}`;
    out.push(`### ${name}`, '', t.description, '');
    out.push(
      `Tenant key: ${t.tenantKey ?? '-'}. Time column: ${t.timeColumn ?? '-'}. Retention: ${retention}`,
      '',
    );
    if (t.subjectLinks.length)
      out.push(
        `Data subjects: ${t.subjectLinks.map((l) => `${l.column} → ${l.subject} (by ${l.by === 'parent' ? `${l.parent}` : l.by})`).join(', ')}.`,
        '',
      );
    out.push(
      `Erasure: ${t.erasure.action}${t.erasure.basis ? `: ${t.erasure.basis.replace(/\.$/, '')}` : ''}.` +
        (t.erasure.scrub?.length
          ? ` Scrubbed of the subject's identifiers: ${t.erasure.scrub.join(', ')}.`
          : ''),
      '',
    );
    if (t.relations.length)
      out.push(`Relations: ${t.relations.map((r) => `${r.column} → ${r.references}`).join(', ')}.`, '');
    out.push('| column | type | class | description |', '|---|---|---|---|');
    for (const [col, c] of Object.entries(t.columns))
      out.push(
        `| ${col} | ${c.type} | ${c.pii ? `${c.class} (${c.pii})` : c.class} | ${escapeCell(c.description)} |`,
      );
    out.push('');
  }
  return out.join('\n');
}
