import { sql } from 'kysely';
import { EXPORT_STATUSES, type ExportStatus, isActive } from '../../domain/export-state.ts';
import type { ExportView } from '../../export-requests/presenter.ts';
import {
  deleteExport,
  getExport,
  issueDownload,
  listExports,
  repeatExport,
} from '../../export-requests/service.ts';
import { REFERENCE_DATAMAP } from '../../datamap/datamap.ts';
import type { AuthContext } from '../../auth/context.ts';
import { isAllowed } from '../../auth/policy.ts';
import { seeOther, sendPage, signedInOf, type WebDeps, type WebPages } from '../context.ts';
import { type Fragment, type Html, html } from '../html.ts';
import { bytes, count, csrfField, when } from '../layout.ts';

/**
 * Exports: the history (filters, paging), one export's live progress over Server-Sent
 * Events, its files with checksums and download links, repeat, cancel and delete.
 */

const STATUS_LABEL: Record<ExportStatus, string> = {
  queued: 'Queued',
  running: 'Running',
  packaging: 'Packaging',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
  expired: 'Expired',
};

function statusBadge(status: ExportStatus): Fragment {
  return html`<mark class="status status-${status}">${STATUS_LABEL[status]}</mark>`;
}

/** Who asked for each export: a member's name or an API key's prefix. */
async function requesters(
  deps: WebDeps,
  tenantId: string,
  ids: readonly string[],
): Promise<Map<string, string>> {
  if (ids.length === 0) return new Map();
  const { rows } = await sql<{ id: string; actor: string; member: string | null; prefix: string | null }>`
    SELECT e.id, e.actor, m.name AS member, k.prefix
    FROM export_requests e
    LEFT JOIN team_members m ON m.id = e.team_member_id
    LEFT JOIN api_keys k ON k.id = e.api_key_id
    WHERE e.tenant_id = ${tenantId} AND e.id IN (${sql.join(ids)})`.execute(deps.database.db);
  const out = new Map<string, string>();
  for (const r of rows) out.set(r.id, r.member ?? (r.prefix ? `API key ${r.prefix}…` : r.actor));
  return out;
}

/** The live part of an export's page: status, progress, then files and downloads. */
export function exportStatus(view: ExportView, zone: string, canDownload: boolean): Html {
  const p = view.progress;
  const active = isActive(view.status);
  const pct = p.percentage === null ? null : Math.min(100, Math.max(0, Math.round(p.percentage)));
  return html`<p>${statusBadge(view.status)} <span class="records">${count(p.records)}${
    p.records_estimated !== null ? html` of about ${count(p.records_estimated)}` : null
  } records</span>, <span class="bytes">${bytes(p.bytes)}</span>${
    active && p.eta_seconds !== null ? html`, about ${p.eta_seconds} s left` : null
  }</p>
${
  active
    ? html`<progress id="progress-bar" ${pct === null ? null : html`value="${pct}"`} max="100" aria-label="Export progress">${pct ?? ''}%</progress>
<p><small>${pct === null ? 'Working…' : `${pct}%`}</small></p>`
    : null
}
${view.error ? html`<p class="error" role="alert">${view.error.message} <small>(${view.error.code})</small></p>` : null}
${
  view.files.length
    ? html`<table class="files"><caption>Files</caption><thead><tr><th scope="col">File</th><th scope="col">Records</th><th scope="col">Size</th><th scope="col">SHA-256</th><th scope="col"><span class="visually-hidden">Download</span></th></tr></thead><tbody>${view.files.map(
        (f) =>
          html`<tr><td>${f.name}${f.encrypted ? html` <small>(age-encrypted)</small>` : null}</td><td>${count(f.records)}</td><td>${bytes(f.bytes)}</td><td><code class="sha256">${f.sha256}</code></td><td>${
            canDownload
              ? html`<a role="button" href="/app/exports/${view.id}/download?file=${encodeURIComponent(f.name)}" hx-boost="false" download>Download</a>`
              : null
          }</td></tr>`,
      )}</tbody></table>
<p><small>Available until ${when(view.expires_at, zone)}. Links are signed and short-lived.</small></p>`
    : null
}`;
}

/** Everything on an export's page that changes while it runs: status, files, details, actions. */
function exportBody(
  view: ExportView,
  c: { zone: string; auth: AuthContext; who: string; csrf: string },
): Html {
  const r = view.request;
  const active = isActive(view.status);
  const filters = Object.entries(r.filters ?? {});
  return html`${exportStatus(view, c.zone, isAllowed(c.auth, 'exports:download'))}
<dl class="details">
<dt>Requested</dt><dd>${when(view.created_at, c.zone)} by ${c.who}</dd>
<dt>Finished</dt><dd>${when(view.finished_at, c.zone)}</dd>
<dt>Format</dt><dd>${formatText(view)}</dd>
<dt>Date range</dt><dd>${r.from ?? 'the beginning'} to ${r.to ?? 'now'}</dd>
<dt>Personal data</dt><dd>${r.pii}</dd>
${filters.length ? html`<dt>Filters</dt><dd>${filters.map(([k, v]) => `${k}=${String(v)}`).join(', ')}</dd>` : null}
<dt>Downloads</dt><dd>${view.download_count}</dd>
</dl>
<div class="actions">
${
  isAllowed(c.auth, 'exports:create')
    ? html`<form method="post" action="/app/exports/${view.id}/repeat" class="inline">${csrfField(c.csrf)}<button type="submit" class="secondary">Run again</button></form>`
    : null
}
${
  isAllowed(c.auth, 'exports:delete') && (active || view.status === 'completed')
    ? html`<form method="post" action="/app/exports/${view.id}/delete" class="inline">${csrfField(c.csrf)}<button type="submit" class="secondary outline">${
        active ? 'Cancel' : 'Delete files'
      }</button></form>`
    : null
}
</div>`;
}

function formatText(view: ExportView): string {
  const r = view.request;
  const compression = r.compression && r.compression !== 'none' ? ` + ${r.compression}` : '';
  const pack = view.kind === 'package' ? ` in a ${r.package} package` : '';
  return `${r.format ?? '—'}${compression}${pack}`;
}

function datasetsOf(view: ExportView): string {
  const organisation = view.request.organisation;
  if (organisation)
    return `${organisation.name}: ${view.datasets.join(', ')} from ${organisation.tenants.length} tenants`;
  return view.kind === 'package' ? `Company package (${view.request.package})` : view.datasets.join(', ');
}

export const historyPages: WebPages = (app, deps) => {
  app.get('/app', async (_request, reply) => reply.redirect('/app/exports', 302));

  app.get<{
    Querystring: { status?: string; dataset?: string; from?: string; to?: string; cursor?: string };
  }>('/app/exports', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    const zone = signedIn.tenant.timezone;
    const q = request.query;
    const status = EXPORT_STATUSES.find((s) => s === q.status);
    const list = await listExports(deps.exports, auth, {
      ...(status ? { status: [status] } : {}),
      ...(q.dataset ? { dataset: q.dataset } : {}),
      ...(q.from ? { from: q.from } : {}),
      ...(q.to ? { to: q.to } : {}),
      ...(q.cursor ? { cursor: q.cursor } : {}),
      limit: 25,
    });
    const who = await requesters(
      deps,
      auth.tenantId,
      list.data.map((e) => e.id),
    );
    const params = new URLSearchParams(
      Object.entries({ status: q.status, dataset: q.dataset, from: q.from, to: q.to }).filter(
        (e): e is [string, string] => Boolean(e[1]),
      ),
    );
    const next = list.next_cursor
      ? `/app/exports?${new URLSearchParams([...params, ['cursor', list.next_cursor]])}`
      : null;
    return sendPage(
      request,
      reply,
      { title: 'Exports', current: '/app/exports' },
      html`<form method="get" action="/app/exports" class="filters" role="search" hx-get="/app/exports" hx-target="body" hx-push-url="true">
<div class="grid">
<label>Status <select name="status"><option value="">Any</option>${EXPORT_STATUSES.map(
        (s) =>
          html`<option value="${s}"${q.status === s ? html` selected` : null}>${STATUS_LABEL[s]}</option>`,
      )}</select></label>
<label>Dataset <select name="dataset"><option value="">Any</option>${Object.keys(
        REFERENCE_DATAMAP.datasets,
      ).map(
        (d) => html`<option value="${d}"${q.dataset === d ? html` selected` : null}>${d}</option>`,
      )}</select></label>
<label>From <input type="date" name="from" value="${q.from ?? ''}"></label>
<label>To <input type="date" name="to" value="${q.to ?? ''}"></label>
</div>
<button type="submit" class="secondary">Filter</button>
</form>
${
  list.data.length === 0
    ? html`<p>No exports yet.${isAllowed(auth, 'exports:create') ? html` <a href="/app/export">Start one</a>.` : null}</p>`
    : html`<table class="history"><thead><tr><th scope="col">Requested</th><th scope="col">Data</th><th scope="col">Format</th><th scope="col">Status</th><th scope="col">Records</th><th scope="col">Size</th><th scope="col">By</th></tr></thead><tbody>${list.data.map(
        (e) =>
          html`<tr><td><a href="/app/exports/${e.id}">${when(e.created_at, zone)}</a></td><td>${datasetsOf(e)}</td><td>${formatText(e)}</td><td>${statusBadge(e.status)}</td><td>${count(e.progress.records)}</td><td>${bytes(e.files.reduce((n, f) => n + f.bytes, 0) || e.progress.bytes)}</td><td>${who.get(e.id) ?? '—'}</td></tr>`,
      )}</tbody></table>`
}
<nav aria-label="Pages" class="pager">${q.cursor ? html`<a href="/app/exports?${params.toString()}">Newest</a>` : null} ${next ? html`<a href="${next}" rel="next">Older</a>` : null}</nav>`,
    );
  });

  app.get<{ Params: { id: string } }>('/app/exports/:id', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    const view = await getExport(deps.exports, auth, request.params.id);
    const who = (await requesters(deps, auth.tenantId, [view.id])).get(view.id) ?? '—';
    const active = isActive(view.status);
    return sendPage(
      request,
      reply,
      { title: `Export of ${datasetsOf(view)}`, current: '/app/exports' },
      html`<section id="export-status" aria-live="polite" ${
        active
          ? html`hx-ext="sse" sse-connect="/app/exports/${view.id}/events" sse-swap="progress" sse-close="done" hx-swap="innerHTML"`
          : null
      }>${exportBody(view, { zone: signedIn.tenant.timezone, auth, who, csrf: reply.generateCsrf() })}</section>
${active ? html`<noscript><p><a href="/app/exports/${view.id}">Refresh</a> to see the progress.</p></noscript>` : null}
<p><a href="/app/exports">All exports</a></p>`,
    );
  });

  // Live progress: one `progress` event (the status fragment) whenever it changes, then `done`.
  app.get<{ Params: { id: string } }>('/app/exports/:id/events', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    let view = await getExport(deps.exports, auth, request.params.id);
    const who = (await requesters(deps, auth.tenantId, [view.id])).get(view.id) ?? '—';
    const context = { zone: signedIn.tenant.timezone, auth, who, csrf: reply.generateCsrf() };
    reply.hijack();
    reply.raw.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string>),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    });
    let closed = false;
    request.raw.on('close', () => {
      closed = true;
    });
    const event = (name: string, data: string) =>
      reply.raw.write(
        `event: ${name}\n${data
          .split('\n')
          .map((line) => `data: ${line}`)
          .join('\n')}\n\n`,
      );
    let last = '';
    const deadline = Date.now() + 30 * 60_000;
    while (!closed && Date.now() < deadline) {
      const fragment = exportBody(view, context).value;
      if (fragment !== last) {
        event('progress', fragment);
        last = fragment;
      }
      if (!isActive(view.status)) {
        event('done', view.status);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 700));
      if (closed) break;
      try {
        view = await getExport(deps.exports, auth, request.params.id);
      } catch {
        break;
      }
    }
    reply.raw.end();
  });

  app.get<{ Params: { id: string }; Querystring: { file?: string } }>(
    '/app/exports/:id/download',
    async (request, reply) => {
      const { auth } = signedInOf(request);
      const link = await issueDownload(deps.exports, auth, request.params.id, {
        fileName: request.query.file,
        baseUrl: deps.baseUrl,
      });
      return reply.header('cache-control', 'no-store').redirect(link.url, 302);
    },
  );

  app.post<{ Params: { id: string } }>('/app/exports/:id/repeat', async (request, reply) => {
    const { auth } = signedInOf(request);
    const accepted = await repeatExport(deps.exports, auth, request.params.id, undefined);
    return seeOther(
      reply,
      `/app/exports/${accepted.body.id}`,
      'The export runs again with the same settings.',
    );
  });

  app.post<{ Params: { id: string } }>('/app/exports/:id/delete', async (request, reply) => {
    const { auth } = signedInOf(request);
    const view = await deleteExport(deps.exports, auth, request.params.id);
    return seeOther(
      reply,
      `/app/exports/${view.id}`,
      view.status === 'cancelled' ? 'The export is cancelled.' : 'The files are deleted.',
    );
  });
};
