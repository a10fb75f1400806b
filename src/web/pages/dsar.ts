import type { FastifyReply, FastifyRequest } from 'fastify';
import { authorize } from '../../auth/policy.ts';
import { allows, DSAR_TYPES, type DsarOperation, REGULATIONS } from '../../domain/dsar-state.ts';
import { errorDefinition } from '../../domain/error-catalog.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import {
  approveDsar,
  cancelDsar,
  createDsar,
  type DsarCaller,
  type DsarDeps,
  type DsarView,
  denyDsar,
  dsarReceipt,
  dsarSummary,
  extendDsar,
  getDsar,
  listDsars,
  rerunDsar,
  verifyDsar,
} from '../../privacy/dsar-service.ts';
import { field, seeOther, sendPage, signedInOf, type WebPages } from '../context.ts';
import { type Fragment, html } from '../html.ts';
import { count, csrfField, when } from '../layout.ts';
import { brandingForm, saveBranding } from './privacy-center.ts';

/**
 * Privacy operations (admins and managers, `dsar:manage`): the DSAR dashboard (open
 * requests overdue first, due dates and days left, verify / approve / deny / extend /
 * cancel / run again, receipts), a request registered by hand, and the privacy center's
 * branding. Later capabilities (retention, holds, backups, imports) add their pages here.
 */

const TYPE_LABEL: Record<string, string> = {
  access: 'Access',
  portability: 'Portability',
  erasure: 'Erasure',
  rectification: 'Rectification',
  restriction: 'Restriction',
  opt_out: 'Opt-out',
};

function dueCell(v: DsarView, zone: string): Fragment {
  const closed = ['completed', 'denied', 'cancelled'].includes(v.status);
  if (closed) return html`${when(v.due_at, zone)}`;
  return html`${when(v.due_at, zone)} ${
    v.overdue
      ? html`<mark class="status status-overdue">overdue</mark>`
      : html`<small>(${v.days_left} ${v.days_left === 1 ? 'day' : 'days'} left)</small>`
  }`;
}

function subjectText(v: DsarView): string {
  const s = v.subject;
  if (!s) return '(identifiers removed after closing)';
  return [
    s.email,
    s.phone,
    s.customer_id && `customer ${s.customer_id}`,
    s.team_member_id && `member ${s.team_member_id}`,
  ]
    .filter(Boolean)
    .join(', ');
}

export const dsarPages: WebPages = (app, deps) => {
  const service: DsarDeps = {
    database: deps.database,
    config: deps.config,
    queue: deps.queue,
    now: deps.now,
    logger: app.log as DsarDeps['logger'],
  };
  const team = (request: FastifyRequest): DsarCaller => {
    const { auth } = signedInOf(request);
    authorize(auth, 'dsar:manage');
    return { kind: 'team', auth };
  };

  const home = async (request: FastifyRequest, reply: FastifyReply, error?: string) => {
    const caller = team(request);
    const { signedIn } = signedInOf(request);
    const zone = signedIn.tenant.timezone;
    const summary = await dsarSummary(service, caller);
    const list = await listDsars(service, caller, { limit: 200 });
    const open = list.data
      .filter((v) => !['completed', 'denied', 'cancelled'].includes(v.status))
      .sort((a, b) => a.due_at.localeCompare(b.due_at));
    const closed = list.data
      .filter((v) => ['completed', 'denied', 'cancelled'].includes(v.status))
      .slice(0, 20);
    const csrf = reply.generateCsrf();
    const row = (v: DsarView) =>
      html`<tr><td><a href="/app/privacy/requests/${v.id}">${TYPE_LABEL[v.type] ?? v.type}</a> <small>${v.regulation.toUpperCase()}</small></td><td>${subjectText(v)}</td><td><mark class="status status-${v.status}">${v.status.replace('_', ' ')}</mark></td><td>${when(v.received_at, zone)}</td><td>${dueCell(v, zone)}</td><td>${v.source.replace('_', ' ')}</td></tr>`;
    const table = (rows: DsarView[], caption: string) =>
      html`<table class="dsar"><caption>${caption}</caption><thead><tr><th scope="col">Request</th><th scope="col">Subject</th><th scope="col">Status</th><th scope="col">Received</th><th scope="col">Due</th><th scope="col">Source</th></tr></thead><tbody>${rows.map(row)}</tbody></table>`;
    return sendPage(
      request,
      reply,
      { title: 'Privacy operations', current: '/app/privacy', error: error ?? null },
      html`<div class="cards">
<article><header>Open</header><strong class="big">${count(summary.open)}</strong></article>
<article><header>Overdue</header><strong class="big">${count(summary.overdue)}</strong></article>
<article><header>Due this week</header><strong class="big">${count(summary.due_this_week)}</strong></article>
<article><header>Median days to complete</header><strong class="big">${summary.median_days_to_complete ?? '—'}</strong></article>
</div>
<p><a href="/privacy/${signedIn.tenant.slug}">Your privacy center</a> · <a href="/app/privacy/center">Privacy center branding</a> · <a href="/api/v1/dsar?format=csv" hx-boost="false">Request register (CSV, API key needed)</a></p>
${open.length ? table(open, 'Open requests, the most urgent first') : html`<p>No open requests.</p>`}
${closed.length ? table(closed, 'Recently closed') : null}
<details><summary role="button" class="secondary">Register a request received by email or phone</summary>
<form method="post" action="/app/privacy/requests">${csrfField(csrf)}
<div class="grid"><label>Type <select name="type">${DSAR_TYPES.map((t) => html`<option value="${t}">${TYPE_LABEL[t]}</option>`)}</select></label>
<label>Regulation <select name="regulation">${REGULATIONS.map((r) => html`<option value="${r}">${r.toUpperCase()}</option>`)}</select></label>
<label>Source <select name="source"><option value="email">Email</option><option value="manual">Phone, letter or in person</option></select></label></div>
<label>Subject's email <input type="email" name="email" required></label>
<label>Note <textarea name="note" maxlength="2000"></textarea></label>
<button type="submit">Register request</button>
</form></details>`,
    );
  };

  app.get('/app/privacy', async (request, reply) => home(request, reply));

  app.post('/app/privacy/requests', async (request, reply) => {
    const caller = team(request);
    const body = request.body;
    try {
      const view = await createDsar(service, caller, {
        type: field(body, 'type'),
        regulation: field(body, 'regulation'),
        source: field(body, 'source') || 'manual',
        subject: { email: field(body, 'email') },
        note: field(body, 'note') || undefined,
      });
      return seeOther(
        reply,
        `/app/privacy/requests/${view.id}`,
        'The request is registered; its deadline runs from today.',
      );
    } catch (err) {
      const status = err instanceof FerryError ? errorDefinition(err.code).status : 500;
      if (status >= 500) throw err;
      reply.code(status);
      return home(request, reply, (err as Error).message);
    }
  });

  app.get<{ Params: { id: string } }>('/app/privacy/requests/:id', async (request, reply) => {
    const caller = team(request);
    const { signedIn } = signedInOf(request);
    const zone = signedIn.tenant.timezone;
    const v = await getDsar(service, caller, request.params.id);
    const csrf = reply.generateCsrf();
    const stage = v.stage;
    const action = (op: DsarOperation, label: string, input: Fragment = null, style = '') =>
      allows(op, stage)
        ? html`<form method="post" action="/app/privacy/requests/${v.id}/${op}" class="inline-form">${csrfField(csrf)}${input}<button type="submit" class="${style}">${label}</button></form>`
        : null;
    const reason = (op: string, required = true) =>
      html`<label>Reason <input name="reason" maxlength="500" ${required ? html`required` : null} aria-describedby="${op}-help"></label><small id="${op}-help">Recorded in the request and its audit trail.</small>`;
    const steps = (v.result?.steps ?? {}) as Record<string, unknown>;
    return sendPage(
      request,
      reply,
      { title: `${TYPE_LABEL[v.type] ?? v.type} request`, current: '/app/privacy' },
      html`<dl class="details">
<dt>Status</dt><dd><mark class="status status-${v.status}">${v.status.replace('_', ' ')}</mark>${v.overdue ? html` <mark class="status status-overdue">overdue</mark>` : null}</dd>
<dt>Subject</dt><dd>${subjectText(v)}</dd>
<dt>Regulation</dt><dd>${v.regulation.toUpperCase()}</dd>
<dt>Source</dt><dd>${v.source.replace('_', ' ')}</dd>
<dt>Received</dt><dd>${when(v.received_at, zone)}</dd>
<dt>Due</dt><dd>${dueCell(v, zone)}${v.extension_reason ? html` <small>(extended: ${v.extension_reason})</small>` : null}</dd>
<dt>Verified</dt><dd>${v.verified_at ? html`${when(v.verified_at, zone)} (${v.verification_method ?? ''})` : 'not yet'}</dd>
${v.changes ? html`<dt>Changes asked for</dt><dd><code>${JSON.stringify(v.changes)}</code></dd>` : null}
${v.note ? html`<dt>Note</dt><dd>${v.note}</dd>` : null}
${v.outcome ? html`<dt>Outcome</dt><dd>${v.outcome}</dd>` : null}
${v.closed_reason ? html`<dt>Reason</dt><dd>${v.closed_reason}</dd>` : null}
${v.error ? html`<dt>Error</dt><dd class="error">${v.failed_step ?? ''}: ${v.error}</dd>` : null}
${Object.keys(steps).length ? html`<dt>Steps done</dt><dd>${Object.keys(steps).join(', ')}</dd>` : null}
</dl>
${v.receipt_id ? html`<p><a role="button" class="secondary" href="/app/privacy/requests/${v.id}/receipt" hx-boost="false" download>Download the signed receipt</a></p>` : null}
<section class="actions" aria-label="Actions">
${action('verify', 'Mark identity verified', reason('verify'))}
${action('approve', 'Approve and run', null)}
${action('run', 'Run again', null)}
${action('extend', 'Extend the deadline', reason('extend'), 'secondary')}
${action('deny', 'Deny', reason('deny'), 'secondary outline')}
${action('cancel', 'Cancel', reason('cancel', false), 'secondary outline')}
</section>
<p><a href="/app/privacy">All requests</a></p>`,
    );
  });

  const ops: Record<
    string,
    (caller: DsarCaller, id: string, reason: string | undefined) => Promise<DsarView>
  > = {
    verify: (c, id, reason) => verifyDsar(service, c, id, { reason }),
    approve: (c, id) => approveDsar(service, c, id),
    run: (c, id) => rerunDsar(service, c, id),
    extend: (c, id, reason) => extendDsar(service, c, id, reason),
    deny: (c, id, reason) => denyDsar(service, c, id, reason),
    cancel: (c, id, reason) => cancelDsar(service, c, id, reason),
  };
  app.post<{ Params: { id: string; op: string } }>(
    '/app/privacy/requests/:id/:op',
    async (request, reply) => {
      const caller = team(request);
      const run = ops[request.params.op];
      if (!run) throw new FerryError('not_found', `no action "${request.params.op}" on a request`);
      const view = await run(caller, request.params.id, field(request.body, 'reason') || undefined);
      return seeOther(
        reply,
        `/app/privacy/requests/${view.id}`,
        `Done: the request is now ${view.status.replace('_', ' ')}.`,
      );
    },
  );

  app.get<{ Params: { id: string } }>('/app/privacy/requests/:id/receipt', async (request, reply) => {
    const document = await dsarReceipt(service, team(request), request.params.id);
    return reply
      .header('content-disposition', `attachment; filename="receipt-${request.params.id}.json"`)
      .type('application/json')
      .send(JSON.stringify(document, null, 2));
  });

  app.get('/app/privacy/center', async (request, reply) => {
    team(request);
    const { signedIn } = signedInOf(request);
    return sendPage(
      request,
      reply,
      { title: 'Privacy center branding', current: '/app/privacy' },
      await brandingForm(deps, signedIn.tenant, reply.generateCsrf()),
    );
  });

  app.post('/app/privacy/center', async (request, reply) => {
    team(request);
    const { signedIn } = signedInOf(request);
    await saveBranding(deps, signedIn.tenant.id, request.body);
    return seeOther(reply, '/app/privacy/center', 'Saved: the privacy center shows the new branding.');
  });
};
