import type { FastifyReply, FastifyRequest } from 'fastify';
import { DateTime } from 'luxon';
import { datasetRule, isAllowed } from '../../auth/policy.ts';
import type { AuthContext } from '../../auth/context.ts';
import {
  createExportConfig,
  deleteExportConfig,
  type ExportConfigView,
  listExportConfigs,
  runExportConfig,
} from '../../export-configs/service.ts';
import { REFERENCE_DATAMAP } from '../../datamap/datamap.ts';
import { errorDefinition } from '../../domain/error-catalog.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { PII_LEVELS, type PiiLevel } from '../../domain/pii-level.ts';
import { SPLIT_SIZE_NAMES } from '../../domain/split-size.ts';
import { ACCOUNT_SECTIONS, KB_PARTS } from '../../datamap/reference-datasets.ts';
import type { ExportBody } from '../../export-requests/export-body.ts';
import { shapingFromPairs } from '../../collect/shaping.ts';
import { createExport, estimateExport } from '../../export-requests/service.ts';
import { field, fields, seeOther, sendPage, signedInOf, type WebDeps, type WebPages } from '../context.ts';
import { type Fragment, html } from '../html.ts';
import { bytes, count, csrfField } from '../layout.ts';

/**
 * The export page: the four panels of the product documentation (conversation data,
 * analytics, knowledge base, account data) and the whole company package. Each panel is
 * a plain form that becomes the same request body `POST /api/v1/exports` takes, so every
 * rule (roles, anonymization, quotas, validation) is the API's own.
 */

export const PANELS = ['conversations', 'analytics', 'knowledge_base', 'account', 'package'] as const;

/** The reports the analytics panel offers, with their labels; each takes the options it declares. */
export const ANALYTICS_REPORTS = {
  analytics: 'Analytics: metrics per period and site',
  rollups: 'Rollups with trends (daily, weekly, monthly)',
  site_summary: 'Site summary with trends',
  topic_summary: 'Topic summary with trends',
  daily_totals: 'Daily totals with revenue',
  channel_performance: 'Channel performance (by referrer)',
  marketing_campaigns: 'Marketing campaigns',
  revenue_attribution: 'Revenue attribution',
} as const;
type AnalyticsReport = keyof typeof ANALYTICS_REPORTS;
type Panel = (typeof PANELS)[number];

const PRESETS = [
  ['last_7', 'Last 7 days'],
  ['last_30', 'Last 30 days'],
  ['last_90', 'Last 90 days'],
  ['this_month', 'This month'],
  ['last_month', 'Last month'],
  ['this_year', 'This year'],
  ['all', 'All time'],
  ['custom', 'Custom dates'],
] as const;

/** How each personal-data level reads on a form (export panels, schedules). */
export const PII_LABELS: Record<PiiLevel, string> = {
  full: 'Yes: names, emails and addresses as stored',
  basic: 'Anonymized (basic): identifiers masked',
  enhanced: 'Anonymized (enhanced): no names, emails or phones; free text scrubbed',
  complete: 'Excluded: every personal field removed',
};

/** The date range of a preset, as dates in the tenant's zone (inclusive `to`). */
export function presetRange(preset: string, timezone: string, now: Date): { from?: string; to?: string } {
  const today = DateTime.fromJSDate(now, { zone: timezone }).startOf('day');
  const d = (t: DateTime) => t.toISODate()!;
  switch (preset) {
    case 'last_7':
      return { from: d(today.minus({ days: 6 })), to: d(today) };
    case 'last_30':
      return { from: d(today.minus({ days: 29 })), to: d(today) };
    case 'last_90':
      return { from: d(today.minus({ days: 89 })), to: d(today) };
    case 'this_month':
      return { from: d(today.startOf('month')), to: d(today) };
    case 'last_month': {
      const start = today.minus({ months: 1 }).startOf('month');
      return { from: d(start), to: d(start.endOf('month')) };
    }
    case 'this_year':
      return { from: d(today.startOf('year')), to: d(today) };
    default:
      return {};
  }
}

/** The "Output" section of a form (docs/output-shaping.md) as the body's shaping fields. */
export function outputOfForm(form: unknown): Partial<ExportBody> {
  const lines = (name: string) => field(form, name).split(/\r?\n/);
  const delimiter = field(form, 'delimiter');
  const shaped = shapingFromPairs(
    {
      rename: lines('rename'),
      convert: lines('convert'),
      calculated: lines('calculated'),
      locale: field(form, 'locale'),
      currency: field(form, 'currency'),
      delimiter: delimiter === 'tab' ? '\t' : delimiter,
      decimal_separator: field(form, 'decimal_separator'),
    },
    (name) => name,
  );
  const columns = field(form, 'columns')
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean);
  // The API checks every value and names what it accepts.
  return { ...(shaped as Partial<ExportBody>), ...(columns.length ? { columns } : {}) };
}

/** The "Output" section of the conversation and analytics forms. */
function outputFields(panel: Panel): Fragment {
  const id = (name: string) => `${panel}-${name}`;
  return html`<details><summary>Output</summary>
<label>Columns <input name="columns" placeholder="conversation_id, start_timestamp, share" autocomplete="off" aria-describedby="${id('columns-help')}"></label>
<small id="${id('columns-help')}">Comma-separated, in order; calculated fields by name. Empty: every column.</small>
<label>Rename <textarea name="rename" rows="2" placeholder="customer_email=Email"></textarea></label>
<label>Convert <textarea name="convert" rows="2" placeholder="escalated=yes_no"></textarea></label>
<label>Calculated fields <textarea name="calculated" rows="2" placeholder="share=round(customer_message_count / message_count * 100, 1)" aria-describedby="${id('calculated-help')}"></textarea></label>
<small id="${id('calculated-help')}">One per line: name=expression. See the output shaping guide for the functions.</small>
<div class="grid"><label>Locale (CSV) <input name="locale" placeholder="de-DE" autocomplete="off"></label>
<label>Currency (CSV) <input name="currency" placeholder="EUR" autocomplete="off" maxlength="3"></label>
<label>Delimiter (CSV) <select name="delimiter"><option value="">From the locale</option><option value=",">,</option><option value=";">;</option><option value="tab">Tab</option><option value="|">|</option></select></label>
<label>Decimal separator (CSV) <select name="decimal_separator"><option value="">From the locale</option><option value=".">.</option><option value=",">,</option></select></label></div>
</details>`;
}

/** The request body a panel's form stands for. */
export function bodyOfForm(form: unknown, timezone: string, now: Date): ExportBody {
  const panel = field(form, 'panel') as Panel;
  if (!PANELS.includes(panel)) throw new FerryError('invalid_parameter', `unknown export panel "${panel}"`);
  const preset = field(form, 'range') || 'all';
  const range =
    preset === 'custom'
      ? { from: field(form, 'from') || undefined, to: field(form, 'to') || undefined }
      : presetRange(preset, timezone, now);
  const pii = (field(form, 'pii') || 'full') as PiiLevel;
  const format = field(form, 'format') || undefined;
  const filters: Record<string, string | boolean> = {};
  const options: Record<string, string> = {};
  const base = { ...range, ...(PII_LEVELS.includes(pii) ? { pii } : { pii }) } as Partial<ExportBody>;
  switch (panel) {
    case 'conversations': {
      const dataset = field(form, 'dataset') === 'messages' ? 'messages' : 'conversations';
      const site = field(form, 'site_url');
      if (site) filters.site_url = site;
      const status = field(form, 'status');
      if (status && dataset === 'conversations') filters.status = status;
      const escalated = field(form, 'escalated');
      if ((escalated === 'true' || escalated === 'false') && dataset === 'conversations')
        filters.escalated = escalated === 'true';
      const compression = field(form, 'compression');
      return {
        ...base,
        datasets: [dataset],
        ...(format ? { format: format as ExportBody['format'] } : {}),
        ...(compression && compression !== 'none'
          ? { compression: compression as ExportBody['compression'] }
          : {}),
        ...(Object.keys(filters).length ? { filters } : {}),
        ...outputOfForm(form),
      } as ExportBody;
    }
    case 'analytics': {
      const metrics = fields(form, 'metrics');
      if (metrics.length > 0 && metrics.length < 3) options.metrics = metrics.join(',');
      const granularity = field(form, 'granularity');
      if (granularity) options.granularity = granularity;
      const sites = fields(form, 'site_urls');
      if (sites.length) options.site_urls = sites.join(',');
      const zone = field(form, 'timezone');
      const asked = field(form, 'report') ?? 'analytics';
      const report: AnalyticsReport = Object.hasOwn(ANALYTICS_REPORTS, asked)
        ? (asked as AnalyticsReport)
        : 'analytics';
      // Each report takes only the options it declares (metrics are analytics' own).
      const declared = REFERENCE_DATAMAP.datasets[report]!.parameters.map((p) => p.name);
      for (const name of Object.keys(options)) if (!declared.includes(name)) delete options[name];
      return {
        ...base,
        datasets: [report],
        ...(format ? { format: format as ExportBody['format'] } : {}),
        ...(zone ? { timezone: zone } : {}),
        ...(Object.keys(options).length ? { options } : {}),
        ...outputOfForm(form),
      } as ExportBody;
    }
    case 'knowledge_base': {
      const include = partsOf(form, 'include', KB_PARTS);
      if (include) options.include = include;
      if (field(form, 'include_embeddings') === 'true') options.include_embeddings = 'true';
      return {
        datasets: ['knowledge_base'],
        format: (format ?? 'json') as ExportBody['format'],
        ...(Object.keys(options).length ? { options } : {}),
      } as ExportBody;
    }
    case 'account': {
      const sections = partsOf(form, 'sections', ACCOUNT_SECTIONS);
      return {
        datasets: ['account'],
        format: 'json',
        ...(sections ? { options: { sections } } : {}),
      } as ExportBody;
    }
    case 'package': {
      const kind = field(form, 'package') === 'tar.gz' ? 'tar.gz' : 'zip';
      const split = field(form, 'split_size');
      return {
        ...base,
        datasets: packageDatasets(field(form, 'role_for_package') as never),
        package: kind,
        ...(format ? { format: format as ExportBody['format'] } : {}),
        // The API checks the value and names the accepted sizes.
        ...(split ? { split_size: split } : {}),
      } as ExportBody;
    }
  }
}

/** Checked parts as the option's value: null when all are checked (the default). */
function partsOf(form: unknown, name: string, all: readonly string[]): string | null {
  // A form that shows the boxes says so, so that unticking all of them is an error, not "all".
  if (field(form, `${name}_shown`) !== '1') return null;
  const chosen = fields(form, name).filter((v) => all.includes(v));
  if (chosen.length === 0)
    throw new FerryError(
      'invalid_parameter',
      `choose at least one of ${all.join(', ').replaceAll('_', ' ')}`,
    );
  return chosen.length === all.length ? null : chosen.join(',');
}

/** Every dataset the company package holds, in package order. */
function packageDatasets(_role?: never): string[] {
  return Object.entries(REFERENCE_DATAMAP.datasets)
    .filter(([, d]) => d.package)
    .sort(([, a], [, b]) => (a.package?.order ?? 0) - (b.package?.order ?? 0))
    .map(([name]) => name);
}

async function tenantSites(deps: WebDeps, tenantId: string) {
  return deps.database.db
    .selectFrom('sites')
    .select(['url', 'name'])
    .where('tenant_id', '=', tenantId)
    .orderBy('name')
    .limit(200)
    .execute();
}

function rangeFields(prefix: string, zone: string): Html2 {
  return html`<fieldset class="range">
<legend>Date range <small>(${zone})</small></legend>
<select name="range" aria-label="Date range preset">${PRESETS.map(
    ([value, label]) =>
      html`<option value="${value}"${value === 'last_30' ? html` selected` : null}>${label}</option>`,
  )}</select>
<div class="grid"><label>From <input type="date" name="from" id="${prefix}-from"></label>
<label>To <input type="date" name="to" id="${prefix}-to"></label></div>
<small>From and To apply with "Custom dates".</small>
</fieldset>`;
}
type Html2 = ReturnType<typeof html>;

function piiField(levels: readonly PiiLevel[], name = 'pii'): Fragment {
  return html`<fieldset><legend>Include personal data</legend>${levels.map(
    (level, i) =>
      html`<label><input type="radio" name="${name}" value="${level}"${i === 0 ? html` checked` : null}> ${PII_LABELS[level]}</label>`,
  )}</fieldset>`;
}

function formatSelect(formats: readonly string[], label = 'Format'): Fragment {
  return html`<label>${label} <select name="format">${formats.map(
    (f) =>
      html`<option value="${f}">${f === 'ndjson' ? 'NDJSON' : f === 'markdown' ? 'Markdown' : f.toUpperCase()}</option>`,
  )}</select></label>`;
}

function panelButtons(panel: Panel, label: string): Fragment {
  return html`<div class="actions">
<button type="submit" name="intent" value="start">${label}</button>
<button type="submit" name="intent" value="estimate" class="secondary" hx-post="/app/export/estimate" hx-target="#estimate-${panel}" hx-swap="innerHTML" formnovalidate>Estimate</button>
</div>
<output id="estimate-${panel}" class="estimate" aria-live="polite"></output>`;
}

export function estimateText(e: {
  rows: number | null;
  bytes: number | null;
  seconds: number | null;
}): string {
  if (e.rows === null) return 'A document export: its size depends on the content; it usually takes seconds.';
  const time =
    e.seconds === null ? 'unknown' : e.seconds < 60 ? `${e.seconds} s` : `${Math.ceil(e.seconds / 60)} min`;
  return `About ${count(e.rows)} rows, ${bytes(e.bytes)}, ${time}.`;
}

/** What a saved configuration writes, in a few words. */
function writesText(c: ExportConfigView): string {
  const compiled = c.compiles_to;
  if (!compiled) return `nothing: ${c.error ?? 'it no longer compiles'}`;
  if (compiled.package === 'none') return `${compiled.files[0]}`;
  return `${compiled.package.toUpperCase()} of ${compiled.files.join(', ')}`;
}

/** The "Saved exports" section: the tenant's saved export configurations, run and delete buttons, and the form that saves one. */
async function savedExports(
  deps: Parameters<WebPages>[1],
  auth: AuthContext,
  csrf: string,
  form: { name: string; definition: string },
): Promise<Fragment> {
  if (!isAllowed(auth, 'export_configs:read')) return null;
  const { items } = await listExportConfigs(deps.exports, auth, { limit: 100 });
  const write = isAllowed(auth, 'export_configs:write');
  const run = isAllowed(auth, 'exports:create');
  const rows = items.map(
    (c) =>
      html`<tr><td>${c.export_name}</td><td>${writesText(c)}</td><td>${c.schedule ?? '-'}</td><td>${
        c.last_run
          ? html`<a href="/app/exports/${c.last_run.export_id}">${c.last_run.at.slice(0, 16).replace('T', ' ')}</a>`
          : '-'
      }</td><td>${
        run
          ? html`<form method="post" action="/app/export-configs/${c.id}/run" class="inline">${csrfField(csrf)}<button type="submit">Run</button></form>`
          : null
      }${
        write
          ? html` <form method="post" action="/app/export-configs/${c.id}/delete" class="inline" hx-confirm="${`Delete the saved export ${c.export_name}${c.schedule_id ? ' and its schedule' : ''}? Exports it ran stay.`}">${csrfField(csrf)}<button type="submit" class="secondary">Delete</button></form>`
          : null
      }</td></tr>`,
  );
  return html`<article id="saved-exports"><header><h2>Saved exports</h2></header>
${
  items.length
    ? html`<table><thead><tr><th scope="col">Name</th><th scope="col">Writes</th><th scope="col">Schedule</th><th scope="col">Last run</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead><tbody>${rows}</tbody></table>`
    : html`<p>No saved exports yet.</p>`
}
${
  write
    ? html`<details${form.definition ? html` open` : null}><summary>Save an export</summary>
<form method="post" action="/app/export-configs">${csrfField(csrf)}
<label>Name <input name="export_name" value="${form.name}" maxlength="200" required></label>
<label>Definition (JSON, as in the product documentation) <textarea name="definition" rows="8" spellcheck="false" aria-describedby="definition-help">${form.definition || '{"filters": {"escalated": true}, "columns": ["conversation_id", "start_timestamp", "status"], "format": "csv"}'}</textarea></label>
<small id="definition-help">Filters, columns, data_types, include_messages, annotations, join_with, aggregations, format and schedule: see the saved export configurations guide.</small>
<button type="submit">Save export</button>
</form></details>`
    : null
}
</article>`;
}

export const exportPages: WebPages = (app, deps) => {
  const render = async (
    request: FastifyRequest,
    reply: FastifyReply,
    extra: {
      error?: string;
      estimate?: { panel: string; text: string };
      saved?: { name: string; definition: string };
    } = {},
  ) => {
    const { auth, signedIn } = signedInOf(request);
    const zone = signedIn.tenant.timezone;
    const sites = await tenantSites(deps, auth.tenantId);
    const rule = (dataset: string) => datasetRule(auth.role, dataset);
    const panels: Fragment[] = [];
    const conv = rule('conversations');
    if (conv)
      panels.push(html`<article id="panel-conversations"><header><h2>Conversation data</h2></header>
<form method="post" action="/app/export">${csrfField(reply.generateCsrf())}<input type="hidden" name="panel" value="conversations">
<label>Data <select name="dataset"><option value="conversations">Conversations</option>${
        rule('messages') ? html`<option value="messages">Messages</option>` : null
      }</select></label>
${rangeFields('conversations', zone)}
<div class="grid">${formatSelect(['csv', 'json', 'xml', 'ndjson', 'parquet'])}
<label>Compression <select name="compression"><option value="none">None</option><option value="gzip">gzip</option><option value="zstd">zstd</option></select></label></div>
${piiField(conv.pii)}
<fieldset><legend>Filters</legend><div class="grid">
<label>Site <select name="site_url"><option value="">All sites</option>${sites.map((s) => html`<option value="${s.url}">${s.name} (${s.url})</option>`)}</select></label>
<label>Status <select name="status"><option value="">Any</option><option value="resolved">Resolved</option><option value="unresolved">Unresolved</option><option value="in_progress">In progress</option></select></label>
<label>Escalated <select name="escalated"><option value="">Any</option><option value="true">Escalated</option><option value="false">Not escalated</option></select></label>
</div></fieldset>
${outputFields('conversations')}
${panelButtons('conversations', 'Export conversations')}
${extra.estimate?.panel === 'conversations' ? html`<p class="estimate">${extra.estimate.text}</p>` : null}
</form></article>`);
    const analytics = rule('analytics');
    if (analytics)
      panels.push(html`<article id="panel-analytics"><header><h2>Analytics data</h2></header>
<form method="post" action="/app/export">${csrfField(reply.generateCsrf())}<input type="hidden" name="panel" value="analytics">
<label>Report <select name="report">${Object.entries(ANALYTICS_REPORTS)
        .filter(([name]) => rule(name))
        .map(([name, label]) => html`<option value="${name}">${label}</option>`)}</select></label>
<small>Metrics apply to Analytics; granularity to Analytics and Rollups; sites to Analytics, Rollups and the summaries.</small>
<fieldset><legend>Metrics</legend>
<label><input type="checkbox" name="metrics" value="performance" checked> Performance</label>
<label><input type="checkbox" name="metrics" value="attribution" checked> Attribution</label>
<label><input type="checkbox" name="metrics" value="revenue" checked> Revenue</label></fieldset>
<div class="grid"><label>Granularity <select name="granularity"><option value="hourly">Hourly</option><option value="daily" selected>Daily</option><option value="weekly">Weekly</option><option value="monthly">Monthly</option></select></label>
<label>Time zone <input name="timezone" value="${zone}" list="zones" autocomplete="off"></label>
${formatSelect(['csv', 'json', 'xml', 'ndjson', 'parquet'])}</div>
<label>Sites <select name="site_urls" multiple size="${Math.min(4, Math.max(2, sites.length))}" aria-describedby="sites-help">${sites.map((s) => html`<option value="${s.url}">${s.name}</option>`)}</select></label>
<small id="sites-help">None selected: all sites.</small>
${rangeFields('analytics', zone)}
${piiField(analytics.pii)}
${outputFields('analytics')}
${panelButtons('analytics', 'Export analytics')}
</form></article>`);
    if (rule('knowledge_base'))
      panels.push(html`<article id="panel-knowledge_base"><header><h2>Knowledge base</h2></header>
<form method="post" action="/app/export">${csrfField(reply.generateCsrf())}<input type="hidden" name="panel" value="knowledge_base">
${formatSelect(['json', 'xml', 'markdown'])}
<fieldset><legend>Include</legend><input type="hidden" name="include_shown" value="1">
<label><input type="checkbox" name="include" value="content" checked> Content</label>
<label><input type="checkbox" name="include" value="metadata" checked> Metadata</label>
<label><input type="checkbox" name="include" value="usage_stats" checked> Usage stats</label></fieldset>
<label><input type="checkbox" name="include_embeddings" value="true" aria-describedby="embeddings-warning"> Include embeddings</label>
<small id="embeddings-warning" class="warning">Vectors make the file many times larger (about 6 kB per chunk).</small>
${panelButtons('knowledge_base', 'Export knowledge base')}
</form></article>`);
    if (rule('account'))
      panels.push(html`<article id="panel-account"><header><h2>Account data</h2></header>
<form method="post" action="/app/export">${csrfField(reply.generateCsrf())}<input type="hidden" name="panel" value="account">
<fieldset><legend>Scope</legend><input type="hidden" name="sections_shown" value="1">
<label><input type="checkbox" name="sections" value="settings" checked> Settings</label>
<label><input type="checkbox" name="sections" value="users" checked> Users</label>
<label><input type="checkbox" name="sections" value="integrations" checked> Integrations</label></fieldset>
<p>Format: JSON, with the profile, plan, usage and sites. Credentials are always masked; password and key hashes are never exported.</p>
${panelButtons('account', 'Export account')}
</form></article>`);
    if (rule('account') && packageDatasets().every((d) => rule(d)))
      panels.push(html`<article id="panel-package"><header><h2>Company package</h2></header>
<p>Every dataset in one archive, with a data dictionary, schemas, checksums and an offline viewer.</p>
<form method="post" action="/app/export">${csrfField(reply.generateCsrf())}<input type="hidden" name="panel" value="package">
<div class="grid"><label>Archive <select name="package"><option value="zip">ZIP</option><option value="tar.gz">tar.gz</option></select></label>
${formatSelect(['csv', 'json', 'ndjson', 'xml', 'parquet'], 'Tables as')}
<label>Parts <select name="split_size"><option value="">One archive</option>${SPLIT_SIZE_NAMES.map(
        (size) => html`<option value="${size}">Parts of ${size.replace('GB', ' GB')}</option>`,
      )}</select></label></div>
<p><small>Parts are whole archives of whole files, each with its SHA-256, listed in a manifest (for upload limits and slow links).</small></p>
${rangeFields('package', zone)}
${piiField(rule('conversations')?.pii ?? PII_LEVELS)}
${panelButtons('package', 'Export company package')}
</form></article>`);
    return sendPage(
      request,
      reply,
      { title: 'Export data', current: '/app/export', error: extra.error ?? null },
      html`${panels.length ? panels : html`<p>Your role may not export data.</p>`}
${await savedExports(deps, auth, reply.generateCsrf(), extra.saved ?? { name: '', definition: '' })}
<datalist id="zones">${Intl.supportedValuesOf('timeZone').map((z) => html`<option value="${z}">`)}</datalist>`,
    );
  };

  app.get('/app/export', async (request, reply) => render(request, reply));

  app.post('/app/export/estimate', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    try {
      const body = bodyOfForm(request.body, signedIn.tenant.timezone, deps.now());
      const estimate = await estimateExport(deps.exports, auth, body);
      return reply.type('text/html; charset=utf-8').send(html`${estimateText(estimate)}`.value);
    } catch (err) {
      if (err instanceof FerryError && err.code !== 'internal')
        return reply
          .type('text/html; charset=utf-8')
          .send(html`<span class="error">${err.message}</span>`.value);
      throw err;
    }
  });

  app.post('/app/export', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    try {
      const body = bodyOfForm(request.body, signedIn.tenant.timezone, deps.now());
      if (field(request.body, 'intent') === 'estimate') {
        const estimate = await estimateExport(deps.exports, auth, body);
        return render(request, reply, {
          estimate: { panel: field(request.body, 'panel'), text: estimateText(estimate) },
        });
      }
      const accepted = await createExport(deps.exports, auth, body, undefined);
      return seeOther(reply, `/app/exports/${accepted.body.id}`, 'Export started.');
    } catch (err) {
      // A refusal the member can act on is shown on the form, with the API's status.
      const status = err instanceof FerryError ? errorDefinition(err.code).status : 500;
      if (status >= 500) throw err;
      reply.code(status);
      return render(request, reply, { error: (err as FerryError).message });
    }
  });

  /** A refusal the member can act on is shown on the page, with the API's status. */
  const refused = (
    request: FastifyRequest,
    reply: FastifyReply,
    err: unknown,
    saved?: { name: string; definition: string },
  ) => {
    const status = err instanceof FerryError ? errorDefinition(err.code).status : 500;
    if (status >= 500 || status === 404) throw err;
    reply.code(status);
    return render(request, reply, { error: (err as FerryError).message, ...(saved ? { saved } : {}) });
  };

  app.post('/app/export-configs', async (request, reply) => {
    const { auth } = signedInOf(request);
    const saved = { name: field(request.body, 'export_name'), definition: field(request.body, 'definition') };
    try {
      let definition: unknown;
      try {
        definition = JSON.parse(saved.definition || '{}');
      } catch (err) {
        throw new FerryError('invalid_parameter', `definition: is not JSON: ${(err as Error).message}`);
      }
      if (typeof definition !== 'object' || definition === null || Array.isArray(definition))
        throw new FerryError(
          'invalid_parameter',
          'definition: must be a JSON object such as {"filters": {…}}',
        );
      const created = await createExportConfig(deps.exports, auth, {
        ...(definition as Record<string, unknown>),
        ...(saved.name ? { export_name: saved.name } : {}),
      });
      return seeOther(reply, '/app/export#saved-exports', `Saved ${created.export_name}.`);
    } catch (err) {
      return refused(request, reply, err, saved);
    }
  });

  app.post<{ Params: { id: string } }>('/app/export-configs/:id/run', async (request, reply) => {
    const { auth } = signedInOf(request);
    try {
      const accepted = await runExportConfig(deps.exports, auth, request.params.id);
      return seeOther(
        reply,
        `/app/exports/${accepted.body.id}`,
        `Export started: ${accepted.config.export_name}.`,
      );
    } catch (err) {
      return refused(request, reply, err);
    }
  });

  app.post<{ Params: { id: string } }>('/app/export-configs/:id/delete', async (request, reply) => {
    const { auth } = signedInOf(request);
    try {
      const deleted = await deleteExportConfig(deps.exports, auth, request.params.id);
      return seeOther(reply, '/app/export#saved-exports', `Deleted ${deleted.export_name}.`);
    } catch (err) {
      return refused(request, reply, err);
    }
  });
};
