import { sql } from 'kysely';
import { listAudit } from '../../auth/audit.ts';
import { authorize, datasetRule } from '../../auth/policy.ts';
import { createExport } from '../../export-requests/service.ts';
import { field, seeOther, sendPage, signedInOf, type WebDeps, type WebPages } from '../context.ts';
import { html } from '../html.ts';
import { bytes, count, csrfField, when } from '../layout.ts';

/**
 * The audit log (admins see every action; managers exports and downloads, as in the API):
 * filters by action and dates, pages of 50, and "Export as CSV", which is an export of the
 * `audit_log` dataset through the pipeline (streamed, formula-guarded, checksummed).
 */

/** Names for the actors of a page: team members by name, API keys by prefix. */
async function actorNames(deps: WebDeps, tenantId: string, actors: readonly string[]) {
  const members = actors
    .filter((a) => a.startsWith('team_member:'))
    .map((a) => a.slice('team_member:'.length));
  const keys = actors.filter((a) => a.startsWith('api_key:')).map((a) => a.slice('api_key:'.length));
  const names = new Map<string, string>();
  const uuid = (s: string) => /^[0-9a-f-]{36}$/.test(s);
  if (members.some(uuid)) {
    const { rows } = await sql<{ id: string; name: string }>`SELECT id, name FROM team_members
      WHERE tenant_id = ${tenantId} AND id IN (${sql.join(members.filter(uuid))})`.execute(deps.database.db);
    for (const r of rows) names.set(`team_member:${r.id}`, r.name);
  }
  if (keys.some(uuid)) {
    const { rows } = await sql<{
      id: string;
      prefix: string;
      name: string | null;
    }>`SELECT id, prefix, name FROM api_keys
      WHERE tenant_id = ${tenantId} AND id IN (${sql.join(keys.filter(uuid))})`.execute(deps.database.db);
    for (const r of rows)
      names.set(`api_key:${r.id}`, `API key ${r.name ?? ''} ${r.prefix}…`.replace('  ', ' '));
  }
  return names;
}

export const auditPages: WebPages = (app, deps) => {
  app.get<{ Querystring: { action?: string; from?: string; to?: string; cursor?: string } }>(
    '/app/audit',
    async (request, reply) => {
      const { auth, signedIn } = signedInOf(request);
      authorize(auth, 'audit:read');
      const zone = signedIn.tenant.timezone;
      const q = request.query;
      const filters = {
        ...(q.action ? { action: q.action.slice(0, 100) } : {}),
        ...(q.from ? { from: q.from.slice(0, 40) } : {}),
        ...(q.to ? { to: q.to.slice(0, 40) } : {}),
      };
      const page = await listAudit(deps.database, auth, {
        ...filters,
        ...(q.cursor ? { cursor: q.cursor } : {}),
        limit: 50,
      });
      const names = await actorNames(deps, auth.tenantId, [...new Set(page.items.map((e) => e.actor))]);
      const params = new URLSearchParams(filters);
      const next = page.next_cursor
        ? `/app/audit?${new URLSearchParams([...params, ['cursor', page.next_cursor]])}`
        : null;
      const csv = datasetRule(auth.role, 'audit_log');
      return sendPage(
        request,
        reply,
        { title: 'Audit log', current: '/app/audit' },
        html`<form method="get" action="/app/audit" class="filters" role="search">
<div class="grid">
<label>Action <input name="action" value="${q.action ?? ''}" placeholder="export.downloaded" maxlength="100"></label>
<label>From <input type="date" name="from" value="${q.from ?? ''}"></label>
<label>To <input type="date" name="to" value="${q.to ?? ''}"></label>
</div>
<button type="submit" class="secondary">Filter</button>
</form>
${
  csv
    ? html`<form method="post" action="/app/audit/export" class="inline">${csrfField(reply.generateCsrf())}
<input type="hidden" name="from" value="${q.from ?? ''}"><input type="hidden" name="to" value="${q.to ?? ''}">
<button type="submit" class="secondary outline">Export as CSV</button></form>`
    : null
}
${
  page.items.length === 0
    ? html`<p>No events match.</p>`
    : html`<table class="audit"><thead><tr><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Data</th><th scope="col">Records</th><th scope="col">Size</th><th scope="col">Address</th><th scope="col">Result</th></tr></thead><tbody>${page.items.map(
        (e) =>
          html`<tr><td>${when(e.occurred_at, zone)}</td><td>${names.get(e.actor) ?? e.actor}</td><td><code>${e.action}</code></td><td><small>${e.target_id ?? '—'}</small></td><td>${e.data_type ?? '—'}</td><td>${count(e.record_count)}</td><td>${bytes(e.file_bytes)}</td><td>${e.ip_address ?? '—'}<br><small>${e.user_agent ?? ''}</small></td><td>${
            e.success ? 'ok' : html`<span class="error">${e.error ?? 'failed'}</span>`
          }</td></tr>`,
      )}</tbody></table>`
}
<nav aria-label="Pages" class="pager">${q.cursor ? html`<a href="/app/audit?${params.toString()}">Newest</a>` : null} ${
          next ? html`<a href="${next}" rel="next">Older</a>` : null
        }</nav>`,
      );
    },
  );

  app.post('/app/audit/export', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'audit:read');
    const from = field(request.body, 'from');
    const to = field(request.body, 'to');
    const accepted = await createExport(
      deps.exports,
      auth,
      { datasets: ['audit_log'], format: 'csv', ...(from ? { from } : {}), ...(to ? { to } : {}) },
      undefined,
    );
    return seeOther(reply, `/app/exports/${accepted.body.id}`, 'The audit log is being exported as CSV.');
  });
};
