import { recordAudit } from '../../auth/audit.ts';
import { refuseTenant } from '../../auth/organisations.ts';
import { packageDatasets, REFERENCE_DATAMAP } from '../../datamap/datamap.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { DEFAULT_PII_LEVEL, PII_LEVELS } from '../../domain/pii-level.ts';
import { issueDownload, listExports } from '../../export-requests/service.ts';
import { EXPORT_FORMATS } from '../../format/types.ts';
import { listMembers } from '../../organisations/admin.ts';
import { createOrganisationExport, type OrganisationExportBody } from '../../organisations/exports.ts';
import { organisationCaller } from '../../organisations/model.ts';
import { organisationUsage } from '../../organisations/usage.ts';
import { memberTenantId } from '../accounts.ts';
import {
  changeThenRedirect,
  clientOf,
  field,
  fields,
  seeOther,
  sendPage,
  signedInOf,
  type WebPages,
} from '../context.ts';
import { webDb } from '../tables.ts';
import { html } from '../html.ts';
import { count, csrfField, when } from '../layout.ts';

/** The organisation pages do not exist for a member of no organisation. */
const notMember = () => new FerryError('not_found', 'you are not a member of an organisation');

/**
 * The organisation of an agency's members (docs/organisations.md): the tenant switcher's
 * endpoint, and the organisation page with its tenants, usage per tenant and in total, members
 * and their roles, and the export across the tenants. Every change goes through the services the
 * API uses, with the member as `team_member:<id>` at home and `org_member:<id>` elsewhere.
 */
export const organisationPages: WebPages = (app, deps) => {
  app.post('/app/organisation/switch', async (request, reply) => {
    const { signedIn } = signedInOf(request);
    const client = clientOf(request);
    const wanted = field(request.body, 'tenant_id');
    const organisation = signedIn.organisation;
    const target = organisation?.tenants.find((t) => t.id === wanted.toLowerCase());
    if (!organisation || !target)
      throw await refuseTenant(deps.database, wanted, {
        homeTenantId: memberTenantId(signedIn),
        actor: `team_member:${signedIn.member.id}`,
        ip: client.ip,
        userAgent: client.userAgent,
        route: 'POST /app/organisation/switch',
        occurredAt: deps.now(),
      });
    if (!target.role)
      throw new FerryError('forbidden', `your organisation gives you no role in ${target.name}`);
    await webDb(deps.database)
      .updateTable('web_sessions')
      .set({ acting_tenant_id: target.home ? null : target.id })
      .where('id', '=', signedIn.sessionId)
      .execute();
    const at = deps.now();
    const entry = {
      action: 'session.tenant_switched',
      targetId: target.id,
      dataType: target.slug,
      ip: client.ip,
      userAgent: client.userAgent,
      success: true,
      occurredAt: at,
    };
    await recordAudit(deps.database, {
      ...entry,
      tenantId: organisation.homeTenantId,
      actor: `team_member:${signedIn.member.id}`,
    });
    if (!target.home)
      await recordAudit(deps.database, {
        ...entry,
        tenantId: target.id,
        actor: `org_member:${signedIn.member.id}`,
      });
    return seeOther(reply, '/app', `You are working in ${target.name} now, as ${target.role}.`);
  });

  const render = async (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    error: string | null = null,
  ) => {
    const { auth, signedIn } = signedInOf(request);
    if (!signedIn.organisation) throw new FerryError('not_found', 'you are not a member of an organisation');
    const caller = await organisationCaller(deps.database, auth);
    const now = deps.now();
    const zone = signedIn.tenant.timezone;
    const usage = await organisationUsage(deps.database, caller, now);
    const members = await listMembers(deps.database, caller.organisation);
    const slug = new Map(caller.tenants.map((t) => [t.id, t.slug]));
    const mine = (await listExports(deps.exports, caller.home, { limit: 50 })).data.filter(
      (e) => e.request.organisation,
    );
    const used = (quotas: { quota: string; used: number | null; limit: number | null }[], quota: string) => {
      const line = quotas.find((q) => q.quota === quota);
      return line ? `${count(line.used)}${line.limit === null ? '' : ` of ${count(line.limit)}`}` : '—';
    };
    const csrf = reply.generateCsrf();
    return sendPage(
      request,
      reply,
      { title: caller.organisation.name, current: '/app/organisation', error },
      html`<section aria-labelledby="tenants"><h2 id="tenants">Tenants</h2>
<table><thead><tr><th scope="col">Tenant</th><th scope="col">Slug</th><th scope="col">Plan</th><th scope="col">Your role</th></tr></thead>
<tbody>${caller.tenants.map(
        (t) =>
          html`<tr><th scope="row">${t.name}${t.home ? html` <small>(home)</small>` : null}</th><td><code>${t.slug}</code></td><td>${t.plan}</td><td>${caller.roles.get(t.id) ?? 'none'}</td></tr>`,
      )}</tbody></table></section>
<section aria-labelledby="usage"><h2 id="usage">Usage</h2>
<table><thead><tr><th scope="col">Tenant</th><th scope="col">Exports this month</th><th scope="col">Running exports</th><th scope="col">Active schedules</th></tr></thead>
<tbody>${usage.tenants.map(
        (t) =>
          html`<tr><th scope="row">${t.tenant.name}</th><td>${used(t.usage.quotas, 'exports_per_month')}</td><td>${used(t.usage.quotas, 'concurrent_jobs')}</td><td>${used(t.usage.quotas, 'active_schedules')}</td></tr>`,
      )}</tbody>
<tfoot><tr><th scope="row">Total</th>${usage.total.map((q) => html`<td id="total-${q.quota}">${count(q.used)}</td>`)}</tr></tfoot></table>
${usage.tenants.length < caller.tenants.length ? html`<p><small>Tenants where your role reads no usage are left out.</small></p>` : null}</section>
<section aria-labelledby="members"><h2 id="members">Members</h2>
<table><thead><tr><th scope="col">Member</th><th scope="col">Home role</th><th scope="col">Organisation admin</th><th scope="col">Default role</th><th scope="col">Per tenant</th></tr></thead>
<tbody>${members.map(
        (m) =>
          html`<tr><th scope="row">${m.name}<br><small>${m.email}</small></th><td>${m.home_role}</td><td>${m.admin ? 'yes' : 'no'}</td><td>${m.default_role ?? 'none'}</td><td>${
            Object.entries(m.tenant_roles)
              .map(([t, r]) => `${slug.get(t) ?? t}: ${r}`)
              .join(', ') || '—'
          }</td></tr>`,
      )}</tbody></table></section>
<section aria-labelledby="export"><h2 id="export">Export across the tenants</h2>
<p>One archive with a folder per tenant (what that tenant's own export holds), the analytics summed over the tenants, and checksums. Tenants where your role may not export the request are left out.</p>
<form method="post" action="/app/organisation/exports">${csrfField(csrf)}
<fieldset><legend>Datasets</legend>${packageDatasets(REFERENCE_DATAMAP).map(
        (d) => html`<label><input type="checkbox" name="datasets" value="${d}" checked> ${d}</label>`,
      )}</fieldset>
<div class="grid"><label>Format <select name="format">${EXPORT_FORMATS.map(
        (f) => html`<option value="${f}"${f === 'csv' ? html` selected` : null}>${f}</option>`,
      )}</select></label>
<label>Personal data <select name="pii">${PII_LEVELS.map(
        (p) => html`<option value="${p}"${p === DEFAULT_PII_LEVEL ? html` selected` : null}>${p}</option>`,
      )}</select></label>
<label>From <input type="date" name="from"></label><label>To <input type="date" name="to"></label></div>
<button type="submit">Export from all tenants</button></form>
${
  mine.length
    ? html`<table><thead><tr><th scope="col">Requested</th><th scope="col">Tenants</th><th scope="col">Status</th><th scope="col"><span class="visually-hidden">Download</span></th></tr></thead>
<tbody>${mine.map(
        (e) =>
          html`<tr><td>${when(e.created_at, zone)}</td><td>${(e.request.organisation?.tenants ?? []).map((t) => t.slug).join(', ')}</td><td><mark class="status status-${e.status}">${e.status}</mark></td><td>${
            e.status === 'completed'
              ? html`<a href="/app/organisation/exports/${e.id}/download" hx-boost="false" download>Download</a>`
              : null
          }</td></tr>`,
      )}</tbody></table>`
    : null
}</section>`,
    );
  };

  app.get('/app/organisation', async (request, reply) => render(request, reply));

  app.post('/app/organisation/exports', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    if (!signedIn.organisation) throw notMember();
    const caller = await organisationCaller(deps.database, auth);
    const body = request.body;
    const dates = { from: field(body, 'from'), to: field(body, 'to') };
    const requested = {
      datasets: fields(body, 'datasets'),
      package: 'zip',
      format: field(body, 'format') || 'csv',
      pii: field(body, 'pii') || DEFAULT_PII_LEVEL,
      ...(dates.from ? { from: dates.from } : {}),
      ...(dates.to ? { to: dates.to } : {}),
    } as OrganisationExportBody;
    return changeThenRedirect(
      reply,
      '/app/organisation',
      async () => {
        if (requested.datasets.length === 0)
          throw new FerryError('invalid_parameter', 'datasets: choose at least one dataset');
        const view = await createOrganisationExport(deps.exports, caller, requested);
        const tenants = view.request.organisation?.tenants.length ?? 0;
        return `The export from ${tenants} tenant${tenants === 1 ? '' : 's'} is queued; it appears below when it is ready.`;
      },
      (message) => render(request, reply, message),
      ['invalid_parameter', 'forbidden', 'quota_exceeded'],
    );
  });

  app.get<{ Params: { id: string } }>('/app/organisation/exports/:id/download', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    if (!signedIn.organisation) throw notMember();
    const caller = await organisationCaller(deps.database, auth);
    // Organisation exports are the home tenant's, whichever tenant the session is working in.
    const link = await issueDownload(deps.exports, caller.home, request.params.id, { baseUrl: deps.baseUrl });
    return reply.header('cache-control', 'no-store').redirect(link.url, 302);
  });
};
