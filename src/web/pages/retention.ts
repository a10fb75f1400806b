import { recordAudit } from '../../auth/audit.ts';
import { authorize, isAllowed } from '../../auth/policy.ts';
import { RETENTION_ACTIONS, RETENTION_AFTER } from '../../datamap/types.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { verifyAuditChain } from '../../privacy/audit-chain.ts';
import { closeAccount, closureState, reopenAccount } from '../../privacy/closure.ts';
import { RETENTION_SWEEP_JOB } from '../../privacy/compliance-jobs.ts';
import { createHold, HOLD_SCOPES, holdReport, listHolds, releaseHold } from '../../privacy/holds.ts';
import { listSweeps, previewRetention } from '../../privacy/retention.ts';
import { effectiveRetention, putRetention } from '../../privacy/retention-policies.ts';
import { changeThenRedirect, field, seeOther, sendPage, signedInOf, type WebPages } from '../context.ts';
import { html } from '../html.ts';
import { count, csrfField, when } from '../layout.ts';

/**
 * Retention and legal holds (admins, as in the API): the policies in force with their
 * published sentence and a form to override one, what the next sweep would do, the latest
 * sweeps, the legal holds with what each keeps, the audit chain's state, and closing the
 * account. Every action calls the same service as the API and the CLI.
 */
export const retentionPages: WebPages = (app, deps) => {
  const render = async (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    error: string | null = null,
  ) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'retention:manage');
    const zone = signedIn.tenant.timezone;
    const tenantId = auth.tenantId;
    const policies = await effectiveRetention(deps.database, tenantId);
    const preview = deps.store
      ? await previewRetention({ database: deps.database, store: deps.store, now: deps.now }, tenantId)
      : null;
    const sweeps = await listSweeps(deps.database, tenantId, 5);
    const canHold = isAllowed(auth, 'holds:manage');
    const holds = canHold ? await listHolds(deps.database, tenantId) : [];
    const keeps = new Map(
      canHold ? (await holdReport(deps.database, tenantId)).map((r) => [r.hold.id, r.datasets]) : [],
    );
    const chain = await verifyAuditChain(deps.database, tenantId);
    const closure = await closureState(deps.database, tenantId);
    const csrf = reply.generateCsrf();
    const due = preview?.datasets.filter((d) => d.rows > 0 || d.held > 0) ?? [];
    return sendPage(
      request,
      reply,
      { title: 'Retention and legal holds', current: '/app/retention', error },
      html`<section aria-labelledby="policies"><h2 id="policies">Retention policies</h2>
<p>How long each kind of data is kept, and what happens then. A legal hold wins over every policy. <a href="/docs">API</a>: <code>GET /api/v1/retention</code>.</p>
<table><thead><tr><th scope="col">Dataset</th><th scope="col">Keep</th><th scope="col">After</th><th scope="col">Then</th><th scope="col">Policy</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>${policies.map(
        (p) =>
          html`<tr><td>${p.dataset}</td><td><code>${p.keep}</code></td><td>${p.after.replace('_', ' ')}</td><td>${p.action}${p.archive_keep ? html` (kept ${p.archive_keep})` : null}</td><td>${p.statement}${p.source === 'tenant' ? html` <mark class="status">custom</mark>` : null}</td><td>${
            p.source === 'tenant'
              ? html`<form method="post" action="/app/retention/reset" class="inline">${csrfField(csrf)}<input type="hidden" name="dataset" value="${p.dataset}"><button type="submit" class="secondary outline" aria-label="Reset ${p.dataset} to its default">Reset</button></form>`
              : null
          }</td></tr>`,
      )}</tbody></table>
<details><summary role="button" class="secondary">Change a policy</summary>
<form method="post" action="/app/retention">${csrfField(csrf)}
<div class="grid"><label>Dataset <select name="dataset">${policies.map((p) => html`<option value="${p.dataset}">${p.dataset}</option>`)}</select></label>
<label>Keep (ISO 8601) <input name="keep" required maxlength="40" placeholder="P2Y" pattern="P.+"></label>
<label>After <select name="after">${RETENTION_AFTER.map((a) => html`<option value="${a}">${a.replace('_', ' ')}</option>`)}</select></label>
<label>Then <select name="action">${RETENTION_ACTIONS.map((a) => html`<option value="${a}">${a}</option>`)}</select></label>
<label>Keep archives (archive) <input name="archive_keep" maxlength="40" placeholder="P5Y"></label></div>
<button type="submit">Save policy</button></form></details></section>
<section aria-labelledby="next-sweep"><h2 id="next-sweep">Next sweep</h2>
<p>Sweeps run daily after 03:00 (${zone}). What the next one would do now:</p>
${
  due.length
    ? html`<table><thead><tr><th scope="col">Dataset</th><th scope="col">Action</th><th scope="col">Older than</th><th scope="col">Rows</th><th scope="col">Oldest</th><th scope="col">Kept by holds</th></tr></thead>
<tbody>${due.map((d) => html`<tr><td>${d.dataset}</td><td>${d.action}</td><td>${d.cutoff && d.cutoff < '9999' ? when(d.cutoff, zone) : 'all'}</td><td>${count(d.rows)}</td><td>${when(d.oldest, zone)}</td><td>${d.held ? html`${count(d.held)} (${d.holds.map((h) => h.matter).join(', ')})` : '—'}</td></tr>`)}</tbody></table>`
    : html`<p>Nothing is past its period.</p>`
}
<form method="post" action="/app/retention/run">${csrfField(csrf)}<button type="submit" class="secondary">Sweep now</button></form>
${
  sweeps.length
    ? html`<table><caption>Latest sweeps</caption><thead><tr><th scope="col">Started</th><th scope="col">Trigger</th><th scope="col">Status</th><th scope="col">Deleted</th><th scope="col">Anonymized</th><th scope="col">Archived</th></tr></thead>
<tbody>${sweeps.map((s) => {
        const total = (k: 'deleted' | 'anonymized' | 'archived') =>
          Object.values(s.datasets).reduce((n, c) => n + c[k], 0);
        return html`<tr><td>${when(s.started_at, zone)}</td><td>${s.trigger}</td><td><mark class="status status-${s.status}">${s.status}</mark></td><td>${count(total('deleted'))}</td><td>${count(total('anonymized'))}</td><td>${count(total('archived'))}</td></tr>`;
      })}</tbody></table>`
    : null
}</section>
${
  canHold
    ? html`<section aria-labelledby="holds"><h2 id="holds">Legal holds</h2>
${
  holds.length
    ? html`<table><thead><tr><th scope="col">Matter</th><th scope="col">Scope</th><th scope="col">Reason</th><th scope="col">Since</th><th scope="col">Keeps</th><th scope="col"><span class="visually-hidden">Release</span></th></tr></thead>
<tbody>${holds.map(
        (
          h,
        ) => html`<tr><td>${h.matter}</td><td>${h.scope}${h.subject ? html` (${Object.values(h.subject).join(', ')})` : null}${h.from || h.to ? html` ${h.from?.slice(0, 10) ?? '…'}–${h.to?.slice(0, 10) ?? '…'}` : null}</td><td>${h.reason}</td><td>${when(h.created_at, zone)}</td><td>${(keeps.get(h.id) ?? []).map((k) => `${k.dataset} ${k.rows}`).join(', ') || '—'}</td>
<td><form method="post" action="/app/retention/holds/${h.id}/release" class="inline">${csrfField(csrf)}<label class="visually-hidden" for="release-${h.id}">Why release ${h.matter}</label><input id="release-${h.id}" name="reason" required maxlength="2000" placeholder="Why it ends"><button type="submit" class="secondary outline">Release</button></form></td></tr>`,
      )}</tbody></table>`
    : html`<p>No legal hold is active.</p>`
}
<details><summary role="button" class="secondary">Place a hold</summary>
<form method="post" action="/app/retention/holds">${csrfField(csrf)}
<div class="grid"><label>Scope <select name="scope">${HOLD_SCOPES.map((s) => html`<option value="${s}">${s.replace('_', ' ')}</option>`)}</select></label>
<label>Matter <input name="matter" required maxlength="200" placeholder="26-CV-114"></label>
<label>Reason <input name="reason" required maxlength="2000" placeholder="Preservation letter"></label></div>
<div class="grid"><label>Subject email (subject) <input name="email" type="email" maxlength="254"></label>
<label>Datasets (dataset; comma-separated) <input name="datasets" maxlength="500" placeholder="conversations, messages"></label>
<label>Conversation ids (comma-separated) <input name="conversation_ids" maxlength="20000"></label></div>
<div class="grid"><label>From <input name="from" type="date"></label><label>To (exclusive) <input name="to" type="date"></label></div>
<button type="submit">Place hold</button></form></details></section>`
    : null
}
<section aria-labelledby="chain"><h2 id="chain">Audit trail</h2>
${
  chain.valid
    ? html`<p><mark class="status status-completed">verified</mark> ${count(chain.events)} events in an unbroken hash chain (events ${chain.first_seq}–${chain.last_seq}${chain.redacted ? html`, ${count(chain.redacted)} scrubbed by erasure` : null}; ${count(chain.anchors_checked)} signed anchors).</p>`
    : html`<p><mark class="status status-failed">broken</mark> at event ${chain.broken!.seq}: ${chain.broken!.reason}.</p>`
}</section>
${
  isAllowed(auth, 'account:close')
    ? html`<section aria-labelledby="closure"><h2 id="closure">Close the account</h2>
${
  closure.status === 'closing'
    ? html`<p>The account was closed ${when(closure.closed_at, zone)}. It is purged ${when(closure.purge_after, zone)}, except what legal holds keep.</p>
<form method="post" action="/app/retention/reopen">${csrfField(csrf)}<button type="submit">Reopen the account</button></form>`
    : html`<p>Take your data first: <a href="/app/export">export the company package</a>. Closing suspends the account for 30 days (it can still be read, exported and reopened), then every row, file and key is purged except what legal holds keep, and a signed receipt records it.</p>
<form method="post" action="/app/retention/close">${csrfField(csrf)}
<label>Type <strong>${signedIn.tenant.slug}</strong> to confirm <input name="confirm" required autocomplete="off"></label>
<button type="submit" class="secondary">Close the account</button></form>`
}</section>`
    : null
}`,
    );
  };

  const who = (request: Parameters<typeof signedInOf>[0]) => {
    const { auth } = signedInOf(request);
    return { actor: auth.actor, ip: auth.ip, userAgent: auth.userAgent };
  };

  /** A refused change shows the page again with the reason (400), anything else is an error page. */
  const attempt = (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    change: () => Promise<string>,
  ) => changeThenRedirect(reply, '/app/retention', change, (message) => render(request, reply, message));

  app.get('/app/retention', async (request, reply) => render(request, reply));

  app.post('/app/retention', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'retention:manage');
    const body = request.body;
    return attempt(request, reply, async () => {
      const dataset = field(body, 'dataset');
      const others = (await effectiveRetention(deps.database, auth.tenantId)).filter(
        (p) => p.source === 'tenant' && p.dataset !== dataset,
      );
      const archiveKeep = field(body, 'archive_keep');
      const saved = await putRetention(
        deps.database,
        auth.tenantId,
        [
          ...others,
          {
            dataset,
            keep: field(body, 'keep').trim(),
            after: field(body, 'after'),
            action: field(body, 'action'),
            archive_keep: archiveKeep ? archiveKeep.trim() : null,
          },
        ],
        auth.actor,
      );
      return saved.find((p) => p.dataset === dataset)?.statement ?? 'Saved.';
    });
  });

  app.post('/app/retention/reset', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'retention:manage');
    const dataset = field(request.body, 'dataset');
    const others = (await effectiveRetention(deps.database, auth.tenantId)).filter(
      (p) => p.source === 'tenant' && p.dataset !== dataset,
    );
    await putRetention(deps.database, auth.tenantId, others, auth.actor);
    return seeOther(reply, '/app/retention', `${dataset} follows its default policy again.`);
  });

  app.post('/app/retention/run', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'retention:manage');
    if (!deps.queue) throw new FerryError('service_unavailable', 'no job queue: run `ferry retention run`');
    await deps.queue.send(RETENTION_SWEEP_JOB, { id: auth.tenantId });
    await recordAudit(deps.database, {
      tenantId: auth.tenantId,
      actor: auth.actor,
      action: 'retention.requested',
      ip: auth.ip,
      userAgent: auth.userAgent,
      success: true,
    });
    return seeOther(reply, '/app/retention', 'The sweep is queued; its counts appear here when it finishes.');
  });

  app.post('/app/retention/holds', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'holds:manage');
    const body = request.body;
    const list = (name: string) =>
      field(body, name)
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    return attempt(request, reply, async () => {
      const email = field(body, 'email').trim();
      const hold = await createHold(
        deps.database,
        auth.tenantId,
        {
          scope: field(body, 'scope'),
          ...(email ? { subject: { email } } : {}),
          ...(list('datasets').length ? { datasets: list('datasets') } : {}),
          ...(list('conversation_ids').length ? { conversation_ids: list('conversation_ids') } : {}),
          ...(field(body, 'from') ? { from: field(body, 'from') } : {}),
          ...(field(body, 'to') ? { to: field(body, 'to') } : {}),
          reason: field(body, 'reason'),
          matter: field(body, 'matter'),
        },
        who(request),
      );
      return `The hold for ${hold.matter} is active.`;
    });
  });

  app.post<{ Params: { id: string } }>('/app/retention/holds/:id/release', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'holds:manage');
    return attempt(request, reply, async () => {
      const hold = await releaseHold(
        deps.database,
        auth.tenantId,
        request.params.id,
        field(request.body, 'reason'),
        who(request),
      );
      return `The hold for ${hold.matter} is released.`;
    });
  });

  app.post('/app/retention/close', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'account:close');
    return attempt(request, reply, async () => {
      if (field(request.body, 'confirm') !== signedIn.tenant.slug)
        throw new FerryError(
          'invalid_parameter',
          `confirm: type ${signedIn.tenant.slug} to close the account`,
        );
      const state = await closeAccount(deps.database, auth.tenantId, who(request), { now: deps.now() });
      return `The account is closed; it is purged ${state.purge_after?.slice(0, 10)} unless you reopen it.`;
    });
  });

  app.post('/app/retention/reopen', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'account:close');
    return attempt(request, reply, async () => {
      await reopenAccount(deps.database, auth.tenantId, who(request));
      return 'The account is open again.';
    });
  });
};
