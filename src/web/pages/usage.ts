import { sql } from 'kysely';
import { PLANS, type Plan } from '../../auth/context.ts';
import { type PlanLimits, planLimits } from '../../auth/limits.ts';
import { authorize, isAllowed } from '../../auth/policy.ts';
import { limitsFor } from '../../auth/quotas.ts';
import { rateWindows } from '../../auth/rate-limit.ts';
import { type QuotaUsage, usageReport } from '../../auth/usage.ts';
import type { ExportStatus } from '../../domain/export-state.ts';
import type { ExportView } from '../../export-requests/presenter.ts';
import { listExports } from '../../export-requests/service.ts';
import { sendPage, signedInOf, type WebDeps, type WebPages } from '../context.ts';
import { type Fragment, type Html, html } from '../html.ts';
import { bytes, count, when } from '../layout.ts';

/**
 * Usage (`usage:read`, admins and managers): the plan, each quota with what is used (the
 * numbers `GET /api/v1/usage` shows, from the same `usageReport`), storage, the last ten
 * exports, charts of the last 30 days (UTC days) and what the next plan would change.
 *
 * Route: `GET /app/usage`.
 */

const DAY_SECONDS = 86_400;
const CHART_DAYS = 30;
const RECENT_EXPORTS = 10;
/** Keys listed with their requests in the current hour (the busiest first). */
const KEYS_SHOWN = 20;

const PLAN_LABEL: Record<Plan, string> = {
  starter: 'Starter',
  pro: 'Pro',
  agency: 'Agency',
  enterprise: 'Enterprise',
};

const QUOTA_LABEL: Record<QuotaUsage['quota'], string> = {
  exports_per_month: 'Manual exports this month',
  max_file_bytes: 'Largest file',
  history_window: 'History an export may reach',
  concurrent_jobs: 'Export jobs running at once',
  retention_days: 'Days files are kept',
  active_schedules: 'Active schedules',
  rate_limit: 'API requests per key this hour',
};

/** A limit as text: `unlimited`, a size, or a number with its unit. */
function limitText(value: number | null, unit: QuotaUsage['unit']): string {
  if (value === null) return 'Unlimited';
  if (unit === 'bytes') return bytes(value);
  if (unit === 'days') return `${count(value)} days`;
  return count(value);
}

/** The plan limits compared with the next plan, with the unit each is shown in. */
const LIMIT_ROWS: readonly { key: keyof PlanLimits; label: string; unit: QuotaUsage['unit'] }[] = [
  { key: 'exportsPerMonth', label: 'Manual exports per month', unit: 'exports' },
  { key: 'maxFileBytes', label: 'Largest file', unit: 'bytes' },
  { key: 'historyDays', label: 'History an export may reach', unit: 'days' },
  { key: 'concurrentJobs', label: 'Export jobs running at once', unit: 'jobs' },
  { key: 'retentionDays', label: 'Days files are kept', unit: 'days' },
  { key: 'activeSchedules', label: 'Active schedules', unit: 'schedules' },
  { key: 'rateLimitPerHour', label: 'API requests per key and hour', unit: 'requests_per_hour' },
];

/** One number per UTC day over the last CHART_DAYS days (today last), as the chart and its table show it. */
interface Series {
  readonly days: readonly number[];
  readonly values: readonly number[];
}

/** The UTC days (Unix seconds of midnight) of the chart, oldest first, and the window they span. */
function chartDays(now: Date): { days: number[]; start: Date; end: Date } {
  const today = Math.floor(now.getTime() / 1000 / DAY_SECONDS) * DAY_SECONDS;
  const days = Array.from({ length: CHART_DAYS }, (_, i) => today - (CHART_DAYS - 1 - i) * DAY_SECONDS);
  return { days, start: new Date(days[0]! * 1000), end: new Date((today + DAY_SECONDS) * 1000) };
}

/** Rows of `day` (days since 1970, UTC) and `n`, spread over every day of the chart (missing days are 0). */
function spread(
  days: readonly number[],
  rows: readonly { day: number | string; n: number | string }[],
): Series {
  const byDay = new Map(rows.map((r) => [Number(r.day) * DAY_SECONDS, Number(r.n)]));
  return { days, values: days.map((d) => byDay.get(d) ?? 0) };
}

/**
 * The three daily series, each one grouped query over the tenant's own rows: exports
 * asked for (export_requests), bytes of files written (export_files), and API requests
 * (the hourly rate-limit windows of the tenant's keys, see the note on the page).
 */
async function dailySeries(deps: WebDeps, tenantId: string, now: Date) {
  const { days, start, end } = chartDays(now);
  const db = deps.database.db;
  type Row = { day: number | string; n: number | string };
  const exports = await sql<Row>`
    SELECT floor(extract(epoch FROM created_at) / ${DAY_SECONDS})::int AS day, count(*)::int AS n
    FROM export_requests
    WHERE tenant_id = ${tenantId} AND created_at >= ${start} AND created_at < ${end}
    GROUP BY 1`.execute(db);
  const written = await sql<Row>`
    SELECT floor(extract(epoch FROM created_at) / ${DAY_SECONDS})::int AS day, sum(bytes)::float8 AS n
    FROM export_files
    WHERE tenant_id = ${tenantId} AND created_at >= ${start} AND created_at < ${end}
    GROUP BY 1`.execute(db);
  const requests = await sql<Row>`
    SELECT floor(extract(epoch FROM c.window_start) / ${DAY_SECONDS})::int AS day, sum(c.count)::float8 AS n
    FROM rate_limit_counters c
    JOIN api_keys k ON k.id = c.api_key_id
    WHERE k.tenant_id = ${tenantId} AND c.window_kind = 'hour'
      AND c.window_start >= ${start} AND c.window_start < ${end}
    GROUP BY 1`.execute(db);
  return {
    exports: spread(days, exports.rows),
    bytes: spread(days, written.rows),
    requests: spread(days, requests.rows),
  };
}

/** Bytes of the tenant's export files still kept (completed exports; expired ones have no files). */
async function storageUsed(deps: WebDeps, tenantId: string): Promise<{ bytes: number; files: number }> {
  const { rows } = await sql<{ bytes: number | string; files: number | string }>`
    SELECT coalesce(sum(f.bytes), 0)::float8 AS bytes, count(f.id)::int AS files
    FROM export_files f
    JOIN export_requests r ON r.id = f.export_id AND r.tenant_id = ${tenantId}
    WHERE f.tenant_id = ${tenantId} AND r.status = 'completed'`.execute(deps.database.db);
  return { bytes: Number(rows[0]?.bytes ?? 0), files: Number(rows[0]?.files ?? 0) };
}

/** The tenant's keys that made requests in the current clock hour, with the count `usageReport` shows for each. */
async function keysThisHour(deps: WebDeps, tenantId: string, now: Date, limit: number) {
  const hourStart = new Date(rateWindows(now).hourStart * 1000);
  const { rows } = await sql<{ id: string; name: string | null; prefix: string; count: number | string }>`
    SELECT k.id, k.name, k.prefix, c.count
    FROM rate_limit_counters c
    JOIN api_keys k ON k.id = c.api_key_id
    WHERE k.tenant_id = ${tenantId} AND c.window_kind = 'hour' AND c.window_start = ${hourStart}
    ORDER BY c.count DESC, k.id
    LIMIT ${KEYS_SHOWN}`.execute(deps.database.db);
  // Refused requests are counted too; like `usageReport`, the count shown stops at the limit.
  return rows.map((r) => ({ ...r, count: Math.min(Number(r.count), limit) }));
}

function chart(
  id: string,
  spec: { title: string; label: string; series: Series; format: (n: number) => string },
  note: Fragment = null,
): Html {
  const data = JSON.stringify({
    title: spec.title,
    label: spec.label,
    x: spec.series.days,
    y: spec.series.values,
  });
  const total = spec.series.values.reduce((a, b) => a + b, 0);
  return html`<section aria-labelledby="${id}"><h3 id="${id}">${spec.title}</h3>
<div class="chart" id="${id}-chart" data-chart="${data}" role="img" aria-label="${`${spec.title}: ${spec.format(total)} over the last ${CHART_DAYS} days. The table below has the numbers of each day.`}"></div>
${note}
<details><summary>${spec.title} as a table</summary>
<table class="chart-data"><caption>${spec.title}, last ${CHART_DAYS} days (UTC)</caption>
<thead><tr><th scope="col">Day (UTC)</th><th scope="col">${spec.label}</th></tr></thead>
<tbody>${spec.series.days.map(
    (d, i) =>
      html`<tr><td>${new Date(d * 1000).toISOString().slice(0, 10)}</td><td>${spec.format(spec.series.values[i]!)}</td></tr>`,
  )}</tbody></table></details></section>`;
}

const STATUS_LABEL: Record<ExportStatus, string> = {
  queued: 'Queued',
  running: 'Running',
  packaging: 'Packaging',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
  expired: 'Expired',
};

function recentExports(list: readonly ExportView[], zone: string): Html {
  if (list.length === 0) return html`<p>No exports yet.</p>`;
  return html`<table class="recent"><thead><tr><th scope="col">Requested</th><th scope="col">Data</th><th scope="col">Status</th><th scope="col">Records</th><th scope="col">Size</th></tr></thead>
<tbody>${list.map(
    (e) =>
      html`<tr><td><a href="/app/exports/${e.id}">${when(e.created_at, zone)}</a></td><td>${
        e.kind === 'package' ? `Company package (${e.request.package})` : e.datasets.join(', ')
      }</td><td><mark class="status status-${e.status}">${STATUS_LABEL[e.status]}</mark></td><td>${count(
        e.progress.records,
      )}</td><td>${bytes(e.files.reduce((n, f) => n + f.bytes, 0) || e.progress.bytes)}</td></tr>`,
  )}</tbody></table>
<p><a href="/app/exports">All exports</a></p>`;
}

/** What moving to the next plan (in PLANS order) would change; the largest plan says so. */
function nextPlan(plan: Plan, current: PlanLimits): Html {
  const next = PLANS[PLANS.indexOf(plan) + 1];
  if (!next)
    return html`<p>${PLAN_LABEL[plan]} is the largest plan; its limits can be raised per tenant by the operator.</p>`;
  const limits = planLimits(next);
  return html`<table class="plans"><caption>${PLAN_LABEL[plan]} compared with ${PLAN_LABEL[next]}</caption>
<thead><tr><th scope="col">Limit</th><th scope="col">${PLAN_LABEL[plan]} (now)</th><th scope="col">${PLAN_LABEL[next]}</th></tr></thead>
<tbody>${LIMIT_ROWS.map((row) => {
    const now = limitText(current[row.key], row.unit);
    const then = limitText(limits[row.key], row.unit);
    return html`<tr><th scope="row">${row.label}</th><td>${now}</td><td>${
      now === then ? then : html`<strong>${then}</strong>`
    }</td></tr>`;
  })}</tbody></table>`;
}

/** `used` of `limit` as text and, when both are numbers, a progress bar. */
function usedOf(used: number | null, limit: number | null, unit: QuotaUsage['unit'], label: string): Html {
  return html`<p><strong>${used === null ? '—' : unit === 'bytes' ? bytes(used) : count(used)}</strong> of ${limitText(
    limit,
    unit,
  )}</p>${
    used !== null && limit !== null
      ? html`<progress value="${Math.min(used, limit)}" max="${limit}" aria-label="${label}"></progress>`
      : null
  }`;
}

export const usagePages: WebPages = (app, deps) => {
  app.get('/app/usage', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'usage:read');
    const zone = signedIn.tenant.timezone;
    const now = deps.now();
    const limits = await limitsFor(deps.database, auth);
    const report = await usageReport(deps.database, auth, limits, now);
    const quota = (name: QuotaUsage['quota']) => report.quotas.find((q) => q.quota === name)!;
    const monthly = quota('exports_per_month');
    const schedules = quota('active_schedules');
    const rate = quota('rate_limit');
    const keys = await keysThisHour(deps, auth.tenantId, now, limits.rateLimitPerHour);
    const busiest = keys[0]?.count ?? 0;
    const storage = await storageUsed(deps, auth.tenantId);
    const series = await dailySeries(deps, auth.tenantId, now);
    const recent = isAllowed(auth, 'exports:read')
      ? (await listExports(deps.exports, auth, { limit: RECENT_EXPORTS })).data
      : null;
    const resetsAt = monthly.resets_at ? new Date(monthly.resets_at) : null;
    const resetDays = resetsAt
      ? Math.ceil((resetsAt.getTime() - now.getTime()) / (DAY_SECONDS * 1000))
      : null;

    // The rate limit is per API key; the dashboard session has none, so the line shows the busiest key.
    const shown = (q: QuotaUsage): number | null => (q.quota === 'rate_limit' ? busiest : q.used);

    return sendPage(
      request,
      reply,
      {
        title: 'Usage',
        current: '/app/usage',
        head: html`<link rel="stylesheet" href="/assets/uplot/uPlot.min.css">
<script src="/assets/uplot/uPlot.iife.min.js" defer></script>`,
      },
      html`<section aria-labelledby="summary"><h2 id="summary" class="visually-hidden">Summary</h2>
<div class="cards">
<article><header>Plan</header><p><strong>${PLAN_LABEL[report.plan]}</strong></p></article>
<article><header>${QUOTA_LABEL.exports_per_month}</header>${usedOf(
        monthly.used,
        monthly.limit,
        monthly.unit,
        'Manual exports used this month',
      )}<p><small>Scheduled runs do not count.</small></p></article>
<article><header>${QUOTA_LABEL.active_schedules}</header>${usedOf(
        schedules.used,
        schedules.limit,
        schedules.unit,
        'Active schedules of the limit',
      )}</article>
<article><header>API requests this hour</header>${usedOf(
        busiest,
        rate.limit,
        rate.unit,
        'API requests of the busiest key this hour',
      )}<p><small>The limit is per key; this is the busiest key. Resets at ${when(rate.resets_at, zone)}.</small></p></article>
<article><header>Storage used</header><p><strong>${bytes(storage.bytes)}</strong></p><p><small>${count(
        storage.files,
      )} export file(s) kept; each is removed after ${count(limits.retentionDays)} days.</small></p></article>
<article><header>Monthly reset</header><p><strong>${
        resetDays === null ? '—' : resetDays === 1 ? 'in 1 day' : `in ${resetDays} days`
      }</strong></p><p><small>${when(resetsAt, zone)} (${zone})</small></p></article>
</div></section>

<section aria-labelledby="quotas"><h2 id="quotas">Plan quotas</h2>
<table class="quotas"><thead><tr><th scope="col">Quota</th><th scope="col">Used</th><th scope="col">Limit</th><th scope="col">Remaining</th><th scope="col">Resets</th></tr></thead>
<tbody>${report.quotas.map((q) => {
        const used = shown(q);
        const left = used === null || q.limit === null ? null : Math.max(0, q.limit - used);
        return html`<tr id="quota-${q.quota}"><th scope="row">${QUOTA_LABEL[q.quota]}<br><small>${
          q.quota === 'rate_limit'
            ? 'The requests of the busiest API key in the current clock hour; the limit applies to each key (see the table below).'
            : q.description
        }</small></th><td class="used"${
          used === null ? null : html` data-value="${used}"`
        }>${used === null ? '—' : q.unit === 'bytes' ? bytes(used) : count(used)}</td><td>${limitText(
          q.limit,
          q.unit,
        )}</td><td>${left === null ? '—' : count(left)}</td><td>${q.resets_at ? when(q.resets_at, zone) : '—'}</td></tr>`;
      })}</tbody></table>
<h3 id="keys-hour">API requests this hour, per key</h3>
${
  keys.length === 0
    ? html`<p>No API requests in the current hour.</p>`
    : html`<table class="keys-hour" aria-labelledby="keys-hour"><thead><tr><th scope="col">Key</th><th scope="col">Prefix</th><th scope="col">Requests</th><th scope="col">Limit</th></tr></thead>
<tbody>${keys.map(
        (k) =>
          html`<tr><td>${k.name ?? '—'}</td><td><code>${k.prefix}…</code></td><td class="requests" data-value="${k.count}">${count(
            k.count,
          )}</td><td>${count(rate.limit)}</td></tr>`,
      )}</tbody></table>`
}
</section>

<section aria-labelledby="activity"><h2 id="activity">Last ${CHART_DAYS} days</h2>
${chart('chart-exports', {
  title: 'Exports per day',
  label: 'Exports',
  series: series.exports,
  format: count,
})}
${chart('chart-bytes', {
  title: 'Bytes exported per day',
  label: 'Bytes',
  series: series.bytes,
  format: bytes,
})}
${chart(
  'chart-requests',
  {
    title: 'API requests per day',
    label: 'Requests',
    series: series.requests,
    format: count,
  },
  html`<p><small>Ferry keeps request counts only for rate limiting: each key's current hour, and its last active hour until it is used again. Earlier hours are not recorded, so this chart shows the hours still on record, not every request.</small></p>`,
)}
</section>

${
  recent
    ? html`<section aria-labelledby="recent"><h2 id="recent">Recent exports</h2>${recentExports(recent, zone)}</section>`
    : null
}

<section aria-labelledby="next-plan"><h2 id="next-plan">What the next plan would change</h2>${nextPlan(report.plan, limits)}</section>`,
    );
  });
};
