import { DateTime } from 'luxon';
import { authorize, isAllowed } from '../../auth/policy.ts';
import { FerryError, invalid } from '../../domain/ferry-error.ts';
import { outboundPolicy } from '../../lib/ssrf.ts';
import {
  COMPLIANCE_REPORT_CSP,
  complianceReport,
  complianceReportHtml,
} from '../../privacy/compliance-report.ts';
import { listConsent } from '../../privacy/consent.ts';
import {
  createProcessor,
  DELETION_CHANNELS,
  deleteProcessor,
  PROCESSOR_CATEGORIES,
  tenantProcessors,
} from '../../privacy/processors.ts';
import { recordOfProcessing, ropaCsv } from '../../privacy/ropa.ts';
import { selfAudit } from '../../privacy/self-audit.ts';
import { checkEndpointUrl } from '../../webhooks/endpoints.ts';
import { field, fields, seeOther, sendPage, signedInOf, type WebPages } from '../context.ts';
import { type Fragment, html } from '../html.ts';
import { count, csrfField, when } from '../layout.ts';

/**
 * Compliance (admins and managers, `compliance:read`; changes need `processors:manage`):
 * the portability self-audit with its scores and gaps, the month's compliance report, the
 * processors registry, the record of processing (with its CSV), and a person's consents.
 * Every number comes from the same service functions as the API.
 */

const mark = (ok: boolean) =>
  ok
    ? html`<mark class="status status-completed">yes</mark>`
    : html`<mark class="status status-failed">no</mark>`;

export const compliancePages: WebPages = (app, deps) => {
  const render = async (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    query: { period?: string | undefined; subject?: string | undefined },
    error: string | null = null,
  ) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'compliance:read');
    const zone = signedIn.tenant.timezone;
    const now = deps.now();
    const thisMonth = DateTime.fromJSDate(now).setZone(zone).toFormat('yyyy-LL');
    const period = query.period && /^\d{4}-\d{2}$/.test(query.period) ? query.period : thisMonth;
    const audit = await selfAudit({ database: deps.database, tenantId: auth.tenantId, now: deps.now });
    const report = await complianceReport(deps.database, auth.tenantId, period, now).catch((err: unknown) => {
      if (err instanceof FerryError && err.code === 'invalid_parameter') return null;
      throw err;
    });
    const processors = await tenantProcessors(deps.database, auth.tenantId);
    const ropa = await recordOfProcessing(deps.database, auth.tenantId);
    const canManage = isAllowed(auth, 'processors:manage');
    const canConsent = isAllowed(auth, 'consent:manage');
    let consent: Fragment | null = null;
    if (canConsent && query.subject) {
      try {
        const view = await listConsent(deps.database, auth.tenantId, query.subject.slice(0, 254));
        consent = view.history.length
          ? html`<table><caption>Consents of customer <code>${view.subject.customer_id}</code></caption><thead><tr><th scope="col">Purpose</th><th scope="col">Status</th><th scope="col">Basis</th><th scope="col">Since</th><th scope="col">Policy</th></tr></thead>
<tbody>${view.current.map((c) => html`<tr><td>${c.purpose}</td><td>${c.status}</td><td>${c.legal_basis}</td><td>${when(c.given_at ?? c.withdrawn_at, zone)}</td><td>${c.policy_version ?? '—'}</td></tr>`)}</tbody></table>
<p>${count(view.history.length)} records in the history.</p>`
          : html`<p>No consent records for this customer.</p>`;
      } catch (err) {
        if (err instanceof FerryError && (err.code === 'not_found' || err.code === 'invalid_parameter'))
          consent = html`<p role="alert">${err.message}</p>`;
        else throw err;
      }
    }
    const csrf = reply.generateCsrf();
    const score = (title: string, s: { score: number; rule: string }) =>
      html`<article><h3>${title}: ${s.score}/10</h3><p><small>${s.rule}</small></p></article>`;
    return sendPage(
      request,
      reply,
      { title: 'Compliance', current: '/app/compliance', error },
      html`<section aria-labelledby="self-audit"><h2 id="self-audit">Portability self-audit</h2>
<p>Computed now from the data map, the retention policies, the processors and the audit trail. <a href="/docs">API</a>: <code>GET /api/v1/compliance/self-audit</code>.</p>
<div class="grid">${score('Data portability', audit.data_portability_score)}${score('GDPR Article 20', audit.gdpr_article_20_compliance)}${score('Export completeness', audit.export_completeness)}</div>
${
  audit.critical_gaps.length
    ? html`<table><caption>Gaps</caption><thead><tr><th scope="col">Priority</th><th scope="col">Gap</th><th scope="col">Regulation</th><th scope="col">Remediation</th></tr></thead>
<tbody>${audit.critical_gaps.map((g) => html`<tr><td>${g.priority}</td><td>${g.gap}</td><td>${g.regulation}</td><td>${g.remediation}</td></tr>`)}</tbody></table>`
    : html`<p>No gaps.</p>`
}
<details><summary>Export and deletion coverage</summary>
<table><thead><tr><th scope="col">Data</th><th scope="col">Exportable</th><th scope="col">Formats</th><th scope="col">Self-service</th><th scope="col">Erasure</th><th scope="col">Third parties</th></tr></thead>
<tbody>${audit.export_coverage.map((e, i) => {
        const d = audit.deletion_coverage[i]!;
        return html`<tr><td>${e.category}</td><td>${mark(e.exportable)}</td><td>${e.formats.join(', ') || '—'}</td><td>${mark(e.self_service)}</td><td>${d.erasure}</td><td>${d.third_party}</td></tr>`;
      })}</tbody></table></details></section>
<section aria-labelledby="report"><h2 id="report">Monthly report</h2>
<form method="get" action="/app/compliance" class="inline"><label>Month <input type="month" name="period" value="${period}" max="${thisMonth}"></label> <button type="submit" class="secondary">Show</button></form>
${
  report
    ? html`<div class="grid"><article><h3>Exports</h3><p>${count(report.exports.requested)} requested, ${count(report.exports.completed)} completed, ${count(report.exports.failed)} failed, ${count(report.exports.downloads)} downloads</p></article>
<article><h3>Data subject requests</h3><p>${count(Object.values(report.dsar.received).reduce((a, b) => a + b, 0))} received, ${count(Object.values(report.dsar.completed).reduce((a, b) => a + b, 0))} completed; median ${report.dsar.median_hours_to_complete ?? '—'} h, worst ${report.dsar.worst_hours_to_complete ?? '—'} h; ${count(report.dsar.overdue)} overdue</p></article>
<article><h3>Retention and holds</h3><p>${count(report.retention.sweeps)} sweeps: ${count(report.retention.deleted)} deleted, ${count(report.retention.anonymized)} anonymized, ${count(report.retention.archived)} archived; ${count(report.legal_holds.active_at_end)} holds active</p></article></div>
<p><a href="/app/compliance/report.html?period=${period}" hx-boost="false">Printable report</a></p>`
    : html`<p>No report for ${period}.</p>`
}</section>
<section aria-labelledby="processors"><h2 id="processors">Processors</h2>
${
  processors.length
    ? html`<table><thead><tr><th scope="col">Name</th><th scope="col">Purpose</th><th scope="col">Data</th><th scope="col">Location</th><th scope="col">Erasure reaches them by</th>${canManage ? html`<th scope="col"><span class="visually-hidden">Remove</span></th>` : null}</tr></thead>
<tbody>${processors.map(
        (p) =>
          html`<tr><td>${p.name}</td><td>${p.purpose}</td><td>${p.data_categories.join(', ')}</td><td>${p.location}</td><td>${p.channel}</td>${
            canManage
              ? html`<td><form method="post" action="/app/compliance/processors/${p.id}/remove" class="inline">${csrfField(csrf)}<button type="submit" class="secondary outline" aria-label="Remove ${p.name}">Remove</button></form></td>`
              : null
          }</tr>`,
      )}</tbody></table>`
    : html`<p>No processors registered.</p>`
}
${
  canManage
    ? html`<details><summary role="button" class="secondary">Register a processor</summary>
<form method="post" action="/app/compliance/processors">${csrfField(csrf)}
<div class="grid"><label>Name <input name="name" required maxlength="200"></label><label>Purpose <input name="purpose" required maxlength="1000"></label><label>Location <input name="location" required maxlength="200" placeholder="US"></label></div>
<fieldset><legend>Data they receive</legend>${PROCESSOR_CATEGORIES.map((c) => html`<label><input type="checkbox" name="data_categories" value="${c}"> ${c.replace('_', ' ')}</label>`)}</fieldset>
<div class="grid"><label>Retention <input name="retention" required maxlength="500" placeholder="30 days after deletion"></label>
<label>Erasure reaches them by <select name="deletion_channel">${DELETION_CHANNELS.map((c) => html`<option value="${c}">${c}</option>`)}</select></label>
<label>Email or URL <input name="deletion_contact" maxlength="2000"></label></div>
<label>Instructions (manual) <input name="deletion_instructions" maxlength="4000"></label>
<button type="submit">Register</button></form></details>`
    : null
}</section>
<section aria-labelledby="ropa"><h2 id="ropa">Record of processing</h2>
<p>${ropa.source === 'default' ? 'Ferry’s built-in activities for a support platform.' : 'The activities your team declared.'} <a href="/app/compliance/ropa.csv" hx-boost="false" download>Download CSV</a></p>
<table><thead><tr><th scope="col">Activity</th><th scope="col">Legal basis</th><th scope="col">Data</th><th scope="col">Retention</th><th scope="col">Recipients</th></tr></thead>
<tbody>${ropa.activities.map((a) => html`<tr><td>${a.processing_activity}</td><td>${a.legal_basis}</td><td>${a.data_categories.join(', ')}</td><td>${a.retention_period}</td><td>${a.recipients.join(', ') || '—'}</td></tr>`)}</tbody></table></section>
${
  canConsent
    ? html`<section aria-labelledby="consents"><h2 id="consents">Consents</h2>
<form method="get" action="/app/compliance" class="inline"><input type="hidden" name="period" value="${period}"><label>Customer email or id <input name="subject" maxlength="254" value="${query.subject ?? ''}"></label> <button type="submit" class="secondary">Look up</button></form>
${consent}</section>`
    : null
}`,
    );
  };

  app.get<{ Querystring: { period?: string; subject?: string } }>('/app/compliance', async (request, reply) =>
    render(request, reply, request.query),
  );

  app.get<{ Querystring: { period?: string } }>('/app/compliance/report.html', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'compliance:read');
    const report = await complianceReport(
      deps.database,
      auth.tenantId,
      String(request.query.period ?? ''),
      deps.now(),
    );
    // The printable page carries its own stylesheet, allowed by its hash.
    return reply
      .header('cache-control', 'no-store')
      .header('content-security-policy', COMPLIANCE_REPORT_CSP)
      .type('text/html; charset=utf-8')
      .send(complianceReportHtml(report));
  });

  app.get('/app/compliance/ropa.csv', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'compliance:read');
    const ropa = await recordOfProcessing(deps.database, auth.tenantId);
    return reply
      .header('cache-control', 'no-store')
      .header('content-disposition', 'attachment; filename="records-of-processing.csv"')
      .type('text/csv; charset=utf-8')
      .send(ropaCsv(ropa));
  });

  app.post('/app/compliance/processors', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'processors:manage');
    const body = request.body;
    try {
      // A webhook address is held to the same outbound rules as through the API.
      if (field(body, 'deletion_channel') === 'webhook' && field(body, 'deletion_contact'))
        await checkEndpointUrl(
          field(body, 'deletion_contact'),
          outboundPolicy(deps.config.outboundAllow),
        ).catch((err: unknown) => {
          throw err instanceof FerryError
            ? invalid('deletion_contact', err.message.replace(/^url: /, ''))
            : err;
        });
      const p = await createProcessor(
        deps.database,
        auth.tenantId,
        {
          name: field(body, 'name'),
          purpose: field(body, 'purpose'),
          data_categories: fields(body, 'data_categories'),
          location: field(body, 'location'),
          retention: field(body, 'retention'),
          deletion_channel: field(body, 'deletion_channel'),
          deletion_contact: field(body, 'deletion_contact') || null,
          deletion_instructions: field(body, 'deletion_instructions') || null,
        },
        { actor: auth.actor, ip: auth.ip, userAgent: auth.userAgent },
      );
      return seeOther(reply, '/app/compliance', `${p.name} is registered.`);
    } catch (err) {
      if (err instanceof FerryError && (err.code === 'invalid_parameter' || err.code === 'conflict')) {
        reply.code(err.code === 'conflict' ? 409 : 400);
        return render(request, reply, {}, err.message);
      }
      throw err;
    }
  });

  app.post<{ Params: { id: string } }>('/app/compliance/processors/:id/remove', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'processors:manage');
    const removed = await deleteProcessor(deps.database, auth.tenantId, request.params.id, {
      actor: auth.actor,
      ip: auth.ip,
      userAgent: auth.userAgent,
    });
    return seeOther(reply, '/app/compliance', `${removed.name} is removed.`);
  });
};
