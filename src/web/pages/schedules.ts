import type { FastifyReply, FastifyRequest } from 'fastify';
import { DateTime } from 'luxon';
import type { AuthContext } from '../../auth/context.ts';
import { authorize, datasetRule, isAllowed } from '../../auth/policy.ts';
import { REFERENCE_DATAMAP } from '../../datamap/datamap.ts';
import { targetLabel } from '../../deliver/targets.ts';
import { type DeliveryTarget, TARGET_TYPES, type TargetType } from '../../deliver/types.ts';
import { COMPRESSIONS } from '../../domain/compression.ts';
import { errorDefinition } from '../../domain/error-catalog.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { REQUEST_PACKAGE_KINDS } from '../../domain/package-kind.ts';
import { DEFAULT_PII_LEVEL, PII_LEVELS, type PiiLevel } from '../../domain/pii-level.ts';
import type { ScheduleInput } from '../../schedules/automated-export-config.ts';
import { type Frequency, nextRuns, parseTiming, WEEKDAYS } from '../../schedules/frequency.ts';
import { defaultSelection, hasChangeFeed, hasWindow, WINDOW_PERIODS } from '../../schedules/model.ts';
import type { RunView, ScheduleView } from '../../schedules/presenter.ts';
import {
  createSchedule,
  deleteSchedule,
  getSchedule,
  listRuns,
  listSchedules,
  pauseSchedule,
  registerScheduleUsage,
  resumeSchedule,
  runScheduleNow,
  type ScheduleServiceDeps,
  testScheduleTarget,
  updateSchedule,
} from '../../schedules/service.ts';
import { listEndpoints } from '../../webhooks/endpoints.ts';
import { field, fields, seeOther, sendPage, signedInOf, type WebPages } from '../context.ts';
import { PII_LABELS } from './export.ts';
import { type Fragment, type Html, html } from '../html.ts';
import { bytes, count, csrfField, when } from '../layout.ts';

/**
 * Schedules: the list, one schedule with its next runs and run history, and the form
 * that creates or changes one. Every change goes through the schedule service
 * (src/schedules/service.ts), so roles, validation, plan limits and the audit log are
 * the API's own; the form only turns fields into the body `POST /api/v1/schedules` takes.
 *
 * Routes:
 * - `GET /app/schedules`: the list; `GET /app/schedules/new` + `POST /app/schedules`: create
 * - `POST /app/schedules/preview`: the next five runs of the form's timing (an htmx fragment)
 * - `GET /app/schedules/:id`: details, next runs, actions, run history
 * - `GET /app/schedules/:id/edit` + `POST /app/schedules/:id`: change
 * - `POST /app/schedules/:id/pause|resume|run|delete`
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const PREVIEW_RUNS = 5;
const RUNS_PER_PAGE = 20;

/** Service errors the form shows next to the entered values (others become the error page). */
const FORM_ERRORS = new Set<string>(['invalid_parameter', 'quota_exceeded']);

const PERIOD_LABELS: Record<(typeof WINDOW_PERIODS)[number], string> = {
  previous_day: 'The previous day',
  previous_week: 'The previous week (Monday to Sunday)',
  previous_month: 'The previous month',
};

const TARGET_LABELS: Record<TargetType, string> = {
  email: 'Email',
  sftp: 'SFTP',
  s3: 'S3-compatible storage',
  webhook: 'Webhook',
  folder: 'Server folder',
};

/** The destination types a member may choose; a server folder is set by an operator (`ferry schedules`). */
const FORM_TARGET_TYPES = TARGET_TYPES.filter((t) => t !== 'folder');

interface TargetField {
  /** The target's field (docs/destinations.md); the form input is `<type>_<key>`. */
  readonly key: string;
  readonly label: string;
  readonly kind?: 'number' | 'password' | 'textarea' | 'checkbox' | 'list';
  readonly hint?: string;
}

/** The fields of each destination type the form offers (secrets as password inputs, never shown again). */
const TARGET_FIELDS: Record<TargetType, readonly TargetField[]> = {
  email: [
    { key: 'to', label: 'Recipients', kind: 'list', hint: 'Email addresses, separated by commas' },
    { key: 'attach', label: 'Attach the file when it is small enough', kind: 'checkbox' },
  ],
  sftp: [
    { key: 'host', label: 'Host' },
    { key: 'port', label: 'Port', kind: 'number', hint: 'Default 22' },
    { key: 'username', label: 'User name' },
    { key: 'password', label: 'Password', kind: 'password' },
    {
      key: 'private_key',
      label: 'Private key',
      kind: 'textarea',
      hint: 'OpenSSH or PEM; instead of a password',
    },
    { key: 'passphrase', label: 'Key passphrase', kind: 'password' },
    { key: 'directory', label: 'Directory', hint: 'e.g. /incoming/{date}' },
    {
      key: 'host_key',
      label: 'Host key fingerprint',
      hint: 'SHA256:… as ssh-keygen -l prints it',
    },
  ],
  s3: [
    { key: 'bucket', label: 'Bucket' },
    { key: 'prefix', label: 'Prefix', hint: 'e.g. ferry/{dataset}/' },
    { key: 'region', label: 'Region', hint: 'Default us-east-1' },
    { key: 'endpoint', label: 'Endpoint URL', hint: 'For S3-compatible providers; empty for AWS' },
    { key: 'access_key_id', label: 'Access key id' },
    { key: 'secret_access_key', label: 'Secret access key', kind: 'password' },
  ],
  webhook: [{ key: 'endpoint_id', label: 'Webhook endpoint' }],
  folder: [{ key: 'path', label: 'Folder' }],
};

const isSecret = (f: TargetField) => f.kind === 'password' || f.kind === 'textarea';

/** What the form holds, as entered (text), so a refused form comes back as it was sent. */
interface FormValues {
  name: string;
  frequency: string;
  time: string;
  days: string[];
  dayOfMonth: string;
  expression: string;
  timezone: string;
  datasets: string[];
  /** Per dataset: its selection, and its own format when it has one (kept as set through the API). */
  selection: Record<string, { mode: string; period: string; days: string; format: string }>;
  format: string;
  compression: string;
  package: string;
  pii: string;
  /** `files` or `lake`. */
  layout: string;
  /** `` none, `keep` the stored destinations (editing), or a target type. */
  destination: string;
  targetName: string;
  /** Non-secret destination fields by input name (`s3_bucket`); secrets are never echoed. */
  target: Record<string, string>;
  notifySuccess: string;
  notifyFailure: string;
  localDays: string;
  targetDays: string;
}

const datasetNames = () => Object.keys(REFERENCE_DATAMAP.datasets);
const inputName = (type: TargetType, key: string) => `${type}_${key}`;
const list = (text: string) =>
  text
    .split(/[\s,;]+/)
    .map((s) => s.trim())
    .filter(Boolean);
const integerOr = (text: string) => (/^\d{1,9}$/.test(text) ? Number(text) : text);

/** The form as the body of a new schedule's defaults. */
function blankValues(timezone: string): FormValues {
  return {
    name: '',
    frequency: 'daily',
    time: '02:00',
    days: ['monday'],
    dayOfMonth: '1',
    expression: '',
    timezone,
    datasets: [],
    selection: {},
    format: '',
    compression: 'none',
    package: 'none',
    pii: DEFAULT_PII_LEVEL,
    layout: 'files',
    destination: '',
    targetName: '',
    target: {},
    notifySuccess: '',
    notifyFailure: '',
    localDays: '',
    targetDays: '',
  };
}

/** The form filled with a stored schedule (its destinations kept unless the member replaces them). */
function valuesOfView(view: ScheduleView): FormValues {
  const f = view.frequency;
  const selection: FormValues['selection'] = {};
  for (const d of view.datasets)
    selection[d.dataset] = {
      mode: d.mode ?? '',
      period: d.days !== undefined ? 'days' : (d.period ?? ''),
      days: d.days !== undefined ? String(d.days) : '',
      format: d.format ?? '',
    };
  return {
    name: view.name,
    frequency: f.type,
    time: view.time ?? '',
    days: f.days ?? [],
    dayOfMonth: f.day_of_month !== undefined ? String(f.day_of_month) : '1',
    expression: f.expression ?? '',
    timezone: view.timezone,
    datasets: view.datasets.map((d) => d.dataset),
    selection,
    format: view.format ?? '',
    compression: view.compression,
    package: view.package,
    pii: view.pii,
    layout: view.layout,
    destination: view.targets.length ? 'keep' : '',
    targetName: '',
    target: {},
    notifySuccess: view.notifications.success.join(', '),
    notifyFailure: view.notifications.failure.join(', '),
    localDays: String(view.retention.local_days),
    targetDays: view.retention.target_days === null ? '' : String(view.retention.target_days),
  };
}

/** The form as posted. */
function valuesOfForm(body: unknown): FormValues {
  const selection: FormValues['selection'] = {};
  for (const d of datasetNames())
    selection[d] = {
      mode: field(body, `mode_${d}`),
      period: field(body, `period_${d}`),
      days: field(body, `days_${d}`),
      format: field(body, `format_${d}`),
    };
  const target: Record<string, string> = {};
  for (const type of TARGET_TYPES)
    for (const f of TARGET_FIELDS[type])
      if (!isSecret(f)) target[inputName(type, f.key)] = field(body, inputName(type, f.key));
  return {
    name: field(body, 'name'),
    frequency: field(body, 'frequency'),
    time: field(body, 'time'),
    days: fields(body, 'days'),
    dayOfMonth: field(body, 'day_of_month'),
    expression: field(body, 'expression'),
    timezone: field(body, 'timezone'),
    datasets: fields(body, 'datasets'),
    selection,
    format: field(body, 'format'),
    compression: field(body, 'compression'),
    package: field(body, 'package'),
    pii: field(body, 'pii'),
    layout: field(body, 'layout'),
    destination: field(body, 'destination'),
    targetName: field(body, 'target_name'),
    target,
    notifySuccess: field(body, 'notify_success'),
    notifyFailure: field(body, 'notify_failure'),
    localDays: field(body, 'local_days'),
    targetDays: field(body, 'target_days'),
  };
}

/** Frequency, time and zone as the service reads them. */
function timingOf(v: FormValues): { frequency: unknown; time: unknown; timezone: unknown } {
  const frequency =
    v.frequency === 'weekly'
      ? { type: 'weekly', days: v.days }
      : v.frequency === 'monthly'
        ? {
            type: 'monthly',
            day_of_month:
              v.dayOfMonth === 'last' ? 'last' : v.dayOfMonth ? integerOr(v.dayOfMonth) : undefined,
          }
        : v.frequency === 'cron'
          ? { type: 'cron', expression: v.expression }
          : { type: v.frequency };
  return { frequency, time: v.frequency === 'cron' ? undefined : v.time, timezone: v.timezone };
}

/** The one destination of the form, as a target of the service (secrets read from the body only). */
function targetOf(type: TargetType, v: FormValues, body: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = { type };
  if (v.targetName) out.name = v.targetName;
  for (const f of TARGET_FIELDS[type]) {
    const raw = field(body, inputName(type, f.key));
    if (f.kind === 'checkbox') {
      out[f.key] = raw === 'true';
      continue;
    }
    if (raw === '') continue;
    out[f.key] = f.kind === 'list' ? list(raw) : f.kind === 'number' ? integerOr(raw) : raw;
  }
  return out;
}

/** The request body the form stands for (`targets` left out while the stored ones are kept). */
function inputOf(v: FormValues, body: unknown): ScheduleInput {
  const timing = timingOf(v);
  const chosen = datasetNames().filter((d) => v.datasets.includes(d));
  const unknown = v.datasets.filter((d) => !chosen.includes(d));
  const datasets = [
    ...chosen.map((dataset) => {
      const s = v.selection[dataset];
      const entry: Record<string, unknown> = { dataset };
      if (s?.mode) entry.mode = s.mode;
      if (s?.format) entry.format = s.format;
      if (s?.mode === 'window') {
        if (s.period === 'days') entry.days = integerOr(s.days);
        else if (s.period) entry.period = s.period;
      }
      return entry;
    }),
    // Names the data map does not know go to the service, which says so.
    ...unknown.map((dataset) => ({ dataset })),
  ];
  const destination = v.destination;
  const targets =
    destination === 'keep'
      ? undefined
      : (TARGET_TYPES as readonly string[]).includes(destination)
        ? [targetOf(destination as TargetType, v, body)]
        : destination === ''
          ? []
          : [{ type: destination }];
  return {
    name: v.name,
    ...timing,
    datasets,
    format: v.format || null,
    compression: v.compression || undefined,
    package: v.package || undefined,
    pii: v.pii || undefined,
    layout: v.layout || undefined,
    ...(targets ? { targets } : {}),
    notifications: { success: list(v.notifySuccess), failure: list(v.notifyFailure) },
    retention: {
      local_days: v.localDays ? integerOr(v.localDays) : undefined,
      target_days: v.targetDays ? integerOr(v.targetDays) : null,
    },
  };
}

/** An instant in a zone with its abbreviation and UTC offset: `2026-03-08 09:00 EDT (UTC-04:00)`. */
export function localTime(value: Date | string, zone: string): string {
  const d = typeof value === 'string' ? new Date(value) : value;
  return DateTime.fromJSDate(d, { zone }).setLocale('en-US').toFormat("yyyy-MM-dd HH:mm ZZZZ '(UTC'ZZ')'");
}

function runTimes(runs: readonly Date[], zone: string): Html {
  return html`<ol class="next-runs">${runs.map(
    (r) => html`<li><time datetime="${r.toISOString()}">${localTime(r, zone)}</time></li>`,
  )}</ol>`;
}

/** The next five runs of the form's timing, or why there are none. */
function preview(v: FormValues, now: Date): Html {
  try {
    const timing = parseTiming(timingOf(v));
    const runs = nextRuns(timing, now, PREVIEW_RUNS);
    if (runs.length === 0) return html`<p>It never runs.</p>`;
    return html`<p>The next ${runs.length} runs, in ${timing.timezone}:</p>${runTimes(runs, timing.timezone)}`;
  } catch (err) {
    if (err instanceof FerryError && err.code === 'invalid_parameter')
      return html`<p class="error" role="alert">${err.message}</p>`;
    throw err;
  }
}

/** The next five runs of a stored schedule, from its next due slot. */
function upcoming(view: ScheduleView): Date[] {
  if (view.status !== 'active' || !view.next_run_at) return [];
  const timing = { frequency: view.frequency as Frequency, cron: view.cron, timezone: view.timezone };
  const first = new Date(view.next_run_at);
  return [first, ...nextRuns(timing, first, PREVIEW_RUNS - 1)];
}

const capital = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

/** "Daily at 02:30", "Weekly on Monday, Friday at 06:00", "Monthly on the last day at 01:00", … */
export function frequencyText(frequency: ScheduleView['frequency'], time: string | null): string {
  switch (frequency.type) {
    case 'daily':
      return `Daily at ${time}`;
    case 'weekly':
      return `Weekly on ${(frequency.days ?? []).map(capital).join(', ')} at ${time}`;
    case 'monthly':
      return frequency.day_of_month === 'last'
        ? `Monthly on the last day at ${time}`
        : `Monthly on day ${frequency.day_of_month}${
            Number(frequency.day_of_month) > 28 ? ' (or the last day of shorter months)' : ''
          } at ${time}`;
    case 'cron':
      return `Custom (cron ${frequency.expression})`;
  }
}

function statusBadge(status: string): Html {
  return html`<mark class="status status-${status}">${status}</mark>`;
}

function selectionText(d: ScheduleView['datasets'][number]): string {
  if (d.mode === 'window')
    return d.days !== undefined
      ? `window: the last ${d.days} days`
      : `window: ${(d.period ? PERIOD_LABELS[d.period] : '').toLowerCase()}`;
  return d.mode ?? '';
}

function option(value: string, label: string, selected: string): Html {
  return html`<option value="${value}"${value === selected ? html` selected` : null}>${label}</option>`;
}

/** Datasets the role may schedule (the policy's), plus any the schedule already has. */
function offeredDatasets(auth: AuthContext, chosen: readonly string[]): string[] {
  return datasetNames().filter((d) => datasetRule(auth.role, d) !== undefined || chosen.includes(d));
}

/** Anonymization levels the role may ask for on at least one dataset it may schedule. */
function offeredPii(auth: AuthContext): PiiLevel[] {
  const rules = datasetNames().flatMap((d) => datasetRule(auth.role, d) ?? []);
  return PII_LEVELS.filter((level) => rules.some((r) => r.pii.includes(level)));
}

function datasetRows(auth: AuthContext, v: FormValues): Html {
  return html`<table class="datasets"><thead><tr><th scope="col">Dataset</th><th scope="col">Selection</th><th scope="col">Window</th><th scope="col">Last N days</th></tr></thead><tbody>${offeredDatasets(
    auth,
    v.datasets,
  ).map((d) => {
    const s = v.selection[d];
    const fallback = defaultSelection(d);
    const mode = s?.mode || fallback.mode;
    const period = s?.period || fallback.period || 'previous_day';
    const modes = [
      ...(hasChangeFeed(d) ? [['incremental', 'Incremental: changes since the last delivered run']] : []),
      ...(hasWindow(d) ? [['window', 'Window: a time range before the run']] : []),
      ['full', 'Full: everything'],
    ];
    return html`<tr><td><label><input type="checkbox" name="datasets" value="${d}"${
      v.datasets.includes(d) ? html` checked` : null
    }> ${d}</label>${
      s?.format
        ? html` <small>as ${s.format}</small><input type="hidden" name="format_${d}" value="${s.format}">`
        : null
    }</td>
<td><label><span class="visually-hidden">Selection for ${d}</span><select name="mode_${d}">${modes.map(
      ([value, label]) => option(value!, label!, mode),
    )}</select></label></td>
<td>${
      hasWindow(d)
        ? html`<label><span class="visually-hidden">Window for ${d}</span><select name="period_${d}">${WINDOW_PERIODS.map(
            (p) => option(p, PERIOD_LABELS[p], period),
          )}${option('days', 'The last N days', period)}</select></label>`
        : html`<small>—</small>`
    }</td>
<td>${
      hasWindow(d)
        ? html`<label><span class="visually-hidden">Days for ${d}</span><input type="number" name="days_${d}" min="1" max="366" value="${s?.days ?? ''}" inputmode="numeric"></label>`
        : null
    }</td></tr>`;
  })}</tbody></table>`;
}

function targetInputs(
  type: TargetType,
  v: FormValues,
  endpoints: readonly { id: string; label: string }[] | null,
): Html {
  return html`<fieldset class="target target-${type}"><legend>${TARGET_LABELS[type]} destination</legend>${TARGET_FIELDS[
    type
  ].map((f) => {
    const name = inputName(type, f.key);
    const id = `target-${name}`;
    const value = v.destination === type ? (v.target[name] ?? '') : '';
    const hint = f.hint ? html`<small id="${id}-hint">${f.hint}</small>` : null;
    const described = f.hint ? html` aria-describedby="${id}-hint"` : null;
    if (type === 'webhook' && endpoints)
      return html`<label for="${id}">${f.label}</label><select id="${id}" name="${name}"><option value="">Choose an endpoint</option>${endpoints.map(
        (e) => option(e.id, e.label, value),
      )}</select>`;
    switch (f.kind) {
      case 'checkbox':
        return html`<label><input type="checkbox" name="${name}" value="true"${
          value === 'true' ? html` checked` : null
        }> ${f.label}</label>`;
      case 'password':
        return html`<label for="${id}">${f.label}</label><input type="password" id="${id}" name="${name}" autocomplete="new-password"${described}>${hint}`;
      case 'textarea':
        return html`<label for="${id}">${f.label}</label><textarea id="${id}" name="${name}" rows="3" autocomplete="off" spellcheck="false"${described}></textarea>${hint}`;
      case 'number':
        return html`<label for="${id}">${f.label}</label><input type="number" id="${id}" name="${name}" min="1" max="65535" value="${value}"${described}>${hint}`;
      default:
        return html`<label for="${id}">${f.label}</label><input id="${id}" name="${name}" value="${value}"${described}>${hint}`;
    }
  })}</fieldset>`;
}

interface FormContext {
  readonly auth: AuthContext;
  readonly csrf: string;
  /** The stored schedule being changed, or null for a new one. */
  readonly editing: ScheduleView | null;
  readonly endpoints: readonly { id: string; label: string }[] | null;
  readonly preview: Html | null;
}

function scheduleForm(c: FormContext, v: FormValues): Html {
  const action = c.editing ? `/app/schedules/${c.editing.id}` : '/app/schedules';
  const pii = offeredPii(c.auth);
  const piiShown = pii.includes(v.pii as PiiLevel) || !v.pii ? pii : [...pii, v.pii as PiiLevel];
  const formats = [...new Set(Object.values(REFERENCE_DATAMAP.datasets).flatMap((d) => d.formats))];
  const destinations: [string, string][] = [
    ...(c.editing?.targets.length
      ? [
          [
            'keep',
            `Keep the current destinations (${c.editing.targets
              .map((t) => targetLabel(t as unknown as DeliveryTarget))
              .join(', ')})`,
          ] as [string, string],
        ]
      : []),
    ['', 'None: files are kept for download only'],
    ...FORM_TARGET_TYPES.map((t) => [t, TARGET_LABELS[t]] as [string, string]),
  ];
  return html`<form method="post" action="${action}" class="schedule-form">${csrfField(c.csrf)}
<label>Name <input name="name" value="${v.name}" maxlength="200" required placeholder="Nightly changes"></label>
<fieldset><legend>When it runs</legend>
<div class="grid">
<label>Frequency <select name="frequency">${[
    ['daily', 'Daily'],
    ['weekly', 'Weekly'],
    ['monthly', 'Monthly'],
    ['cron', 'Custom (cron expression)'],
  ].map(([value, label]) => option(value!, label!, v.frequency))}</select></label>
<label>Time <input type="time" name="time" value="${v.time}" aria-describedby="time-hint"></label>
<label>Time zone <input name="timezone" value="${v.timezone}" list="zones" autocomplete="off" required aria-describedby="zone-hint"></label>
</div>
<small id="time-hint">HH:MM on the 24-hour clock, in the schedule's time zone (not used with a cron expression).</small>
<small id="zone-hint">An IANA time zone such as America/New_York; daylight saving is followed.</small>
<fieldset><legend>Weekly: on these days</legend>${WEEKDAYS.map(
    (d) =>
      html`<label><input type="checkbox" name="days" value="${d}"${v.days.includes(d) ? html` checked` : null}> ${capital(d)}</label>`,
  )}</fieldset>
<div class="grid">
<label>Monthly: on day <select name="day_of_month">${Array.from({ length: 31 }, (_, i) => String(i + 1)).map(
    (d) => option(d, d, v.dayOfMonth),
  )}${option('last', 'The last day', v.dayOfMonth)}</select></label>
<label>Custom: cron expression <input name="expression" value="${v.expression}" maxlength="120" placeholder="30 2 * * 1-5" aria-describedby="cron-hint" autocomplete="off" spellcheck="false"></label>
</div>
<small id="cron-hint">Five fields (minute, hour, day of month, month, day of week) in the schedule's time zone; at most every 15 minutes.</small>
<div class="actions"><button type="submit" name="intent" value="preview" class="secondary" formnovalidate hx-post="/app/schedules/preview" hx-target="#schedule-preview" hx-swap="innerHTML">Preview next runs</button></div>
<div id="schedule-preview" aria-live="polite">${c.preview}</div>
</fieldset>
<fieldset><legend>What it exports</legend>
${datasetRows(c.auth, v)}
<div class="grid">
<label>Format <select name="format">${option('', "Each dataset's default", v.format)}${formats.map((f) =>
    option(f, f === 'ndjson' ? 'NDJSON' : f === 'markdown' ? 'Markdown' : f.toUpperCase(), v.format),
  )}</select></label>
<label>Compression <select name="compression">${COMPRESSIONS.map((x) => option(x, x === 'none' ? 'None' : x, v.compression))}</select></label>
<label>Package <select name="package">${REQUEST_PACKAGE_KINDS.map((x) =>
    option(x, x === 'none' ? 'None: one file per dataset' : `${x}: one archive per run`, v.package),
  )}</select></label>
</div>
<label>Personal data <select name="pii">${piiShown.map((level) => option(level, PII_LABELS[level] ?? level, v.pii))}</select></label>
<label>Layout <select name="layout" aria-describedby="layout-hint">${option('files', 'Files: one file per dataset (or one package) per run', v.layout)}${option(
    'lake',
    'Data lake: Parquet partitioned by day, kept up to date at the destination',
    v.layout,
  )}</select></label>
<small id="layout-hint">A data lake writes <code>dataset=…/date=…/part-0.parquet</code> under an S3 prefix, rewriting only the days that changed, with a <code>_manifest.json</code> and a <code>_SUCCESS</code> marker per run (Parquet, no package or compression).</small>
</fieldset>
<fieldset><legend>Where files go</legend>
<div class="grid">
<label>Destination <select name="destination">${destinations.map(([value, label]) => option(value, label, v.destination))}</select></label>
<label>Destination name <input name="target_name" value="${v.targetName}" maxlength="100" placeholder="Optional"></label>
</div>
${
  c.editing?.targets.length
    ? html`<p><small>Choosing a destination type replaces the current destinations; give its secrets again.</small></p>`
    : null
}
<small>Fill in the fields of the chosen type. Secrets are stored encrypted and never shown again${
    v.destination && v.destination !== 'keep' ? ', so enter them again after an error' : ''
  }.</small>
${FORM_TARGET_TYPES.map((t) => targetInputs(t, v, c.endpoints))}
</fieldset>
<fieldset><legend>Notifications and retention</legend>
<div class="grid">
<label>Email on success <input name="notify_success" value="${v.notifySuccess}" placeholder="data@example.com"></label>
<label>Email on failure <input name="notify_failure" value="${v.notifyFailure}" placeholder="oncall@example.com"></label>
</div>
<div class="grid">
<label>Keep files in Ferry for (days) <input type="number" name="local_days" min="1" max="3650" value="${v.localDays}" placeholder="The plan's retention"></label>
<label>Keep files at S3 destinations for (days) <input type="number" name="target_days" min="1" max="3650" value="${v.targetDays}" placeholder="Forever"></label>
</div>
</fieldset>
<div class="actions">
<button type="submit" name="intent" value="save">${c.editing ? 'Save changes' : 'Create schedule'}</button>
<a href="${c.editing ? `/app/schedules/${c.editing.id}` : '/app/schedules'}">Cancel</a>
</div>
</form>
<datalist id="zones">${Intl.supportedValuesOf('timeZone').map((z) => html`<option value="${z}">`)}</datalist>`;
}

function details(view: ScheduleView, test: ((index: number) => Fragment) | null = null): Html {
  return html`<dl class="details">
<dt>Status</dt><dd>${statusBadge(view.status)}</dd>
<dt>Runs</dt><dd>${frequencyText(view.frequency, view.time)}</dd>
<dt>Time zone</dt><dd>${view.timezone}</dd>
<dt>Cron</dt><dd><code>${view.cron}</code></dd>
<dt>Datasets</dt><dd><ul>${view.datasets.map(
    (d) => html`<li>${d.dataset}: ${selectionText(d)}${d.format ? html` (${d.format})` : null}</li>`,
  )}</ul></dd>
<dt>Layout</dt><dd>${
    view.layout === 'lake'
      ? html`Data lake: Parquet by day (<code>dataset=…/date=…/part-0.parquet</code>), <code>_manifest.json</code> and <code>_SUCCESS</code> per run`
      : 'Files: one per dataset (or one package) per run'
  }</dd>
<dt>Format</dt><dd>${view.format ?? "each dataset's default"}${
    view.compression !== 'none' ? html` + ${view.compression}` : null
  }${view.package !== 'none' ? html`, in a ${view.package} package` : null}</dd>
<dt>Personal data</dt><dd>${PII_LABELS[view.pii as PiiLevel] ?? view.pii}</dd>
<dt>Destinations</dt><dd>${
    view.targets.length
      ? html`<ul>${view.targets.map((t, index) => {
          const name = (t as Record<string, unknown>).name;
          return html`<li>${TARGET_LABELS[t.type as TargetType] ?? t.type}: <code>${targetLabel(t as unknown as DeliveryTarget)}</code>${
            typeof name === 'string' ? html` (${name})` : null
          }${t.required ? null : html` <small>optional</small>`}${t.type !== 'webhook' && test ? test(index) : null}</li>`;
        })}</ul>`
      : 'None: files are kept for download only'
  }</dd>
<dt>Notifications</dt><dd>${
    view.notifications.success.length || view.notifications.failure.length
      ? html`success: ${view.notifications.success.join(', ') || '—'}; failure: ${view.notifications.failure.join(', ') || '—'}`
      : 'None'
  }</dd>
<dt>Retention</dt><dd>${view.retention.local_days} days in Ferry; ${
    view.retention.target_days === null ? 'forever' : `${view.retention.target_days} days`
  } at S3 destinations</dd>
${
  view.checkpoints?.length
    ? html`<dt>Checkpoints</dt><dd><ul>${view.checkpoints.map(
        (c) => html`<li>${c.dataset}: ${when(c.updated_at, view.timezone)}</li>`,
      )}</ul></dd>`
    : null
}
<dt>Created</dt><dd>${when(view.created_at, view.timezone)}</dd>
<dt>Changed</dt><dd>${when(view.updated_at, view.timezone)}</dd>
</dl>`;
}

function deliveryCell(run: RunView): Fragment {
  if (run.deliveries.length === 0) return html`<small>Kept for download only</small>`;
  return html`<ul>${run.deliveries.map((d) => {
    const errors = d.files.filter((f) => f.error);
    return html`<li><code>${d.target.label}</code>${d.target.name ? html` (${d.target.name})` : null}: ${statusBadge(
      d.status,
    )}${d.target.required ? null : html` <small>optional</small>`}${errors.map(
      (f) =>
        html`<br><small class="error">${
          run.files.find((x) => x.export_id === f.export_id)?.name ??
          // A lake run's deliveries are the run's own (it makes no file).
          (f.export_id === run.id ? 'data lake' : f.export_id)
        }: ${
          f.error
        }${f.error_code ? html` (${f.error_code})` : null}${f.attempts > 1 ? html`, ${f.attempts} attempts` : null}</small>`,
    )}</li>`;
  })}</ul>`;
}

function runRows(runs: readonly RunView[], zone: string): Html {
  return html`<table class="runs"><caption>Times in ${zone}</caption><thead><tr><th scope="col">Run</th><th scope="col">Slot</th><th scope="col">Started</th><th scope="col">Finished</th><th scope="col">Status</th><th scope="col">Files</th><th scope="col">Rows</th><th scope="col">Size</th><th scope="col">Delivery</th></tr></thead><tbody>${runs.map(
    (r) =>
      html`<tr><td>#${r.run_number} <small>${r.trigger}</small></td><td>${when(r.due_at, zone)}</td><td>${when(
        r.started_at,
        zone,
      )}</td><td>${when(r.finished_at, zone)}</td><td>${statusBadge(r.status)}${
        r.attempts > 1 ? html` <small>${r.attempts} attempts</small>` : null
      }${r.error ? html`<br><small class="error">${r.error.message} (${r.error.code})</small>` : null}</td><td>${
        r.files.length
          ? html`<ul>${r.files.map((f) => html`<li>${f.name} <small>${bytes(f.bytes)}</small></li>`)}</ul>`
          : '—'
      }</td><td>${count(r.records)}${r.tombstones ? html` <small>+ ${count(r.tombstones)} deletions</small>` : null}</td><td>${bytes(
        r.bytes,
      )}</td><td>${deliveryCell(r)}</td></tr>`,
  )}</tbody></table>`;
}

export const schedulePages: WebPages = (app, deps) => {
  registerScheduleUsage();
  const service: ScheduleServiceDeps = {
    database: deps.database,
    config: deps.config,
    secrets: deps.secrets,
    queue: deps.queue,
    now: deps.now,
    logger: deps.exports.logger,
  };

  const idOf = (request: FastifyRequest<{ Params: { id: string } }>): string => {
    const id = request.params.id;
    if (!UUID.test(id)) throw new FerryError('not_found', `no schedule "${id}" in this tenant`);
    return id;
  };

  /** Webhook endpoints to choose from, for members who manage webhooks (others type the id). */
  const endpointsFor = async (auth: AuthContext) => {
    if (!isAllowed(auth, 'webhooks:manage')) return null;
    const endpoints = await listEndpoints(deps.database, auth.tenantId, deps.secrets);
    return endpoints.map((e) => ({
      id: e.id,
      label: `${e.description ? `${e.description}: ` : ''}${e.url}${e.status === 'disabled' ? ' (disabled)' : ''}`,
    }));
  };

  const renderForm = async (
    request: FastifyRequest,
    reply: FastifyReply,
    values: FormValues,
    extra: { editing?: ScheduleView; error?: string; preview?: Html } = {},
  ) => {
    const { auth } = signedInOf(request);
    const editing = extra.editing ?? null;
    return sendPage(
      request,
      reply,
      {
        title: editing ? `Change ${editing.name}` : 'New schedule',
        current: '/app/schedules',
        error: extra.error ?? null,
      },
      scheduleForm(
        {
          auth,
          csrf: reply.generateCsrf(),
          editing,
          endpoints: await endpointsFor(auth),
          preview: extra.preview ?? null,
        },
        values,
      ),
    );
  };

  /** A refusal the member can fix on the form comes back with the values; anything else is the error page. */
  const formError = (err: unknown): { status: number; message: string } | null =>
    err instanceof FerryError && FORM_ERRORS.has(err.code)
      ? { status: errorDefinition(err.code).status, message: err.message }
      : null;

  app.get<{ Querystring: { cursor?: string } }>('/app/schedules', async (request, reply) => {
    const { auth } = signedInOf(request);
    const cursor = typeof request.query.cursor === 'string' ? request.query.cursor : undefined;
    const page = await listSchedules(service, auth, { limit: 50, ...(cursor ? { cursor } : {}) });
    const manage = isAllowed(auth, 'schedules:manage');
    return sendPage(
      request,
      reply,
      { title: 'Schedules', current: '/app/schedules' },
      html`${manage ? html`<p><a href="/app/schedules/new" role="button">New schedule</a></p>` : null}
${
  page.items.length === 0
    ? html`<p>No schedules yet.</p>`
    : html`<table class="schedules"><thead><tr><th scope="col">Name</th><th scope="col">Runs</th><th scope="col">Time zone</th><th scope="col">Next run</th><th scope="col">Status</th><th scope="col">Last run</th></tr></thead><tbody>${page.items.map(
        (s) =>
          html`<tr><td><a href="/app/schedules/${s.id}">${s.name}</a></td><td>${frequencyText(s.frequency, s.time)}</td><td>${s.timezone}</td><td>${
            s.next_run_at ? localTime(s.next_run_at, s.timezone) : '—'
          }</td><td>${statusBadge(s.status)}</td><td>${
            s.last_run
              ? html`#${s.last_run.run_number} ${statusBadge(s.last_run.status)} <small>${when(
                  s.last_run.finished_at ?? s.last_run.due_at,
                  s.timezone,
                )}</small>`
              : html`<small>No runs yet</small>`
          }</td></tr>`,
      )}</tbody></table>`
}
<nav aria-label="Pages" class="pager">${cursor ? html`<a href="/app/schedules">First page</a>` : null} ${
        page.next_cursor
          ? html`<a href="/app/schedules?cursor=${encodeURIComponent(page.next_cursor)}" rel="next">More</a>`
          : null
      }</nav>`,
    );
  });

  app.get('/app/schedules/new', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'schedules:manage');
    return renderForm(request, reply, blankValues(signedIn.tenant.timezone));
  });

  // The preview as a fragment, for htmx (the form's "Preview next runs" button).
  app.post('/app/schedules/preview', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'schedules:manage');
    return reply
      .header('cache-control', 'no-store')
      .type('text/html; charset=utf-8')
      .send(preview(valuesOfForm(request.body), deps.now()).value);
  });

  app.post('/app/schedules', async (request, reply) => {
    const { auth } = signedInOf(request);
    const values = valuesOfForm(request.body);
    if (field(request.body, 'intent') === 'preview') {
      authorize(auth, 'schedules:manage');
      return renderForm(request, reply, values, { preview: preview(values, deps.now()) });
    }
    try {
      const created = await createSchedule(service, auth, inputOf(values, request.body));
      return seeOther(reply, `/app/schedules/${created.id}`, `The schedule ${created.name} is created.`);
    } catch (err) {
      const shown = formError(err);
      if (!shown) throw err;
      reply.code(shown.status);
      return renderForm(request, reply, values, { error: shown.message });
    }
  });

  app.get<{ Params: { id: string }; Querystring: { before?: string } }>(
    '/app/schedules/:id',
    async (request, reply) => {
      const { auth } = signedInOf(request);
      const id = idOf(request);
      const view = await getSchedule(service, auth, id);
      const before = /^\d{1,10}$/.test(request.query.before ?? '') ? Number(request.query.before) : undefined;
      const runs = await listRuns(service, auth, id, {
        limit: RUNS_PER_PAGE,
        ...(before && before <= 2_147_483_647 ? { before } : {}),
      });
      const manage = isAllowed(auth, 'schedules:manage');
      const csrf = reply.generateCsrf();
      const next = upcoming(view);
      const action = (path: string, label: string, extra: Fragment = null) =>
        html`<form method="post" action="/app/schedules/${view.id}/${path}" class="inline"${extra}>${csrfField(csrf)}<button type="submit" class="secondary">${label}</button></form>`;
      return sendPage(
        request,
        reply,
        { title: view.name, current: '/app/schedules' },
        html`${
          manage
            ? html`<div class="actions">
<a href="/app/schedules/${view.id}/edit" role="button" class="secondary outline">Change</a>
${view.status === 'active' ? action('pause', 'Pause') : action('resume', 'Resume')}
${action('run', 'Run now')}
${action('delete', 'Delete', html` hx-confirm="${`Delete the schedule ${view.name} and its run history? Files already made stay until their retention ends.`}"`)}
</div>`
            : null
        }
${details(
  view,
  manage
    ? (index) =>
        html` <form method="post" action="/app/schedules/${view.id}/targets/${index}/test" class="inline">${csrfField(csrf)}<button type="submit" class="secondary outline">Test connection</button></form>`
    : null,
)}
<section aria-labelledby="next-runs"><h2 id="next-runs">Next runs</h2>${
          next.length
            ? html`<p>In ${view.timezone}:</p>${runTimes(next, view.timezone)}`
            : html`<p>${view.status === 'paused' ? 'Paused: no runs until it is resumed.' : 'No further runs.'}</p>`
        }</section>
<section aria-labelledby="history"><h2 id="history">Run history</h2>${
          runs.items.length ? runRows(runs.items, view.timezone) : html`<p>No runs yet.</p>`
        }
<nav aria-label="Run pages" class="pager">${before ? html`<a href="/app/schedules/${view.id}">Newest</a>` : null} ${
          runs.next_before
            ? html`<a href="/app/schedules/${view.id}?before=${runs.next_before}" rel="next">Older</a>`
            : null
        }</nav></section>
<p><a href="/app/schedules">All schedules</a></p>`,
      );
    },
  );

  app.get<{ Params: { id: string } }>('/app/schedules/:id/edit', async (request, reply) => {
    const { auth } = signedInOf(request);
    const view = await getSchedule(service, auth, idOf(request));
    authorize(auth, 'schedules:manage');
    return renderForm(request, reply, valuesOfView(view), { editing: view });
  });

  app.post<{ Params: { id: string } }>('/app/schedules/:id', async (request, reply) => {
    const { auth } = signedInOf(request);
    const id = idOf(request);
    const values = valuesOfForm(request.body);
    if (field(request.body, 'intent') === 'preview') {
      const view = await getSchedule(service, auth, id);
      authorize(auth, 'schedules:manage');
      return renderForm(request, reply, values, { editing: view, preview: preview(values, deps.now()) });
    }
    try {
      const updated = await updateSchedule(service, auth, id, inputOf(values, request.body));
      return seeOther(reply, `/app/schedules/${updated.id}`, 'The changes are saved.');
    } catch (err) {
      const shown = formError(err);
      if (!shown) throw err;
      const view = await getSchedule(service, auth, id);
      reply.code(shown.status);
      return renderForm(request, reply, values, { editing: view, error: shown.message });
    }
  });

  // "Test connection": one small file through the destination's own adapter and credentials.
  app.post<{ Params: { id: string; index: string } }>(
    '/app/schedules/:id/targets/:index/test',
    async (request, reply) => {
      const { auth } = signedInOf(request);
      const id = idOf(request);
      const index = /^\d$/.test(request.params.index) ? Number(request.params.index) : -1;
      const result = await testScheduleTarget(service, auth, id, index, {
        clients: deps.deliveryClients,
        mailer: deps.mailer,
      });
      const message =
        result.status === 'delivered'
          ? `Connection test passed: ${result.target.label} received ferry-connection-test.txt${result.location ? ` (${result.location})` : ''}${result.checksumVerified ? ', checksum verified' : ''}.`
          : `Connection test failed for ${result.target.label}: ${result.error ?? 'unknown error'}`;
      return seeOther(reply, `/app/schedules/${id}`, message);
    },
  );

  app.post<{ Params: { id: string } }>('/app/schedules/:id/pause', async (request, reply) => {
    const { auth } = signedInOf(request);
    const view = await pauseSchedule(service, auth, idOf(request));
    return seeOther(reply, `/app/schedules/${view.id}`, 'Paused: no new runs until it is resumed.');
  });

  app.post<{ Params: { id: string } }>('/app/schedules/:id/resume', async (request, reply) => {
    const { auth } = signedInOf(request);
    const view = await resumeSchedule(service, auth, idOf(request));
    return seeOther(
      reply,
      `/app/schedules/${view.id}`,
      view.next_run_at
        ? `Resumed: the next run is at ${localTime(view.next_run_at, view.timezone)}.`
        : 'Resumed.',
    );
  });

  app.post<{ Params: { id: string } }>('/app/schedules/:id/run', async (request, reply) => {
    const { auth } = signedInOf(request);
    const id = idOf(request);
    const run = await runScheduleNow(service, auth, id);
    return seeOther(
      reply,
      `/app/schedules/${id}`,
      `Run #${run.run_number} is queued; it starts once earlier runs have finished.`,
    );
  });

  app.post<{ Params: { id: string } }>('/app/schedules/:id/delete', async (request, reply) => {
    const { auth } = signedInOf(request);
    const view = await deleteSchedule(service, auth, idOf(request));
    return seeOther(reply, '/app/schedules', `The schedule ${view.name} is deleted.`);
  });
};
