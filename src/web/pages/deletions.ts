import { authorize } from '../../auth/policy.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { loadOrCreateSecretKey } from '../../lib/secret-box.ts';
import {
  createDeletion,
  DELETION_TARGETS,
  type DeletionInput,
  type DeletionPlan,
  listDeletions,
  planDeletion,
  runDeletion,
} from '../../privacy/deletion.ts';
import { DELETION_RUN_JOB } from '../../privacy/deletion-jobs.ts';
import { field, seeOther, sendPage, signedInOf, type WebPages } from '../context.ts';
import { html } from '../html.ts';
import { csrfField, when } from '../layout.ts';

/** The conversation filters the form offers (any other the API and CLI accept). */
const FORM_FILTERS = ['from', 'to', 'site_url', 'status', 'tags'] as const;

/** The form's fields as a deletion's input: an empty field is left out. */
function inputOf(body: unknown): DeletionInput {
  const target = field(body, 'target');
  const id = field(body, 'id').trim();
  const filters: Record<string, string> = {};
  for (const name of FORM_FILTERS) {
    const value = field(body, name).trim();
    if (value) filters[name] = value;
  }
  return target === 'conversations' ? { target, filters } : { target, ...(id ? { id } : {}) };
}

/** `3 messages`, `1 message`, `2 stored export files`: a count of a table's rows in words. */
function rows(n: number, store: string, dataset: string): string {
  const plural = store === 'object_store' ? 'stored export files' : dataset.replaceAll('_', ' ');
  return `${n} ${n === 1 ? plural.replace(/s$/, '') : plural}`;
}

/** What the confirmation button says: the counts of the rows deleted, per table. */
export function deletionSummary(plan: Pick<DeletionPlan, 'stores'>): string {
  const parts = plan.stores.filter((s) => s.deleted > 0).map((s) => rows(s.deleted, s.store, s.dataset));
  return parts.length ? parts.join(', ') : 'nothing';
}

/**
 * Deleting chosen data (admins and managers, `data:delete`): a form for the target, the
 * plan (a dry run) shown as a confirmation that states the counts, and the deletion itself,
 * through the same service as `POST /api/v1/deletions` and `ferry delete`. Works without
 * JavaScript: the confirmation is its own page.
 */
export const deletionPages: WebPages = (app, deps) => {
  const render = async (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    error: string | null = null,
    input: DeletionInput | null = null,
  ) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'data:delete');
    const zone = signedIn.tenant.timezone;
    const recent = await listDeletions(deps.database, auth.tenantId, 10);
    const csrf = reply.generateCsrf();
    const value = (name: string) => (name === 'id' ? (input?.id ?? '') : (input?.filters?.[name] ?? ''));
    return sendPage(
      request,
      reply,
      { title: 'Delete data', current: '/app/deletions', error },
      html`<section aria-labelledby="delete"><h2 id="delete">Delete data</h2>
<p>Delete one conversation, the conversations an export with the same filters would hold, one message, a customer, or a knowledge-base document, with everything that goes with it. You see the counts before anything is deleted; legal holds win. <a href="/docs">API</a>: <code>POST /api/v1/deletions</code>.</p>
<form method="post" action="/app/deletions/plan">${csrfField(csrf)}
<label>What <select name="target">${DELETION_TARGETS.map(
        (t) =>
          html`<option value="${t}"${input?.target === t ? html` selected` : null}>${t === 'conversations' ? 'conversations chosen by filters' : t === 'document' ? 'knowledge-base document' : t}</option>`,
      )}</select></label>
<label>Id (a conversation, message, customer or document) <input name="id" value="${value('id')}" autocomplete="off"></label>
<fieldset><legend>Filters (conversations chosen by filters)</legend>
<div class="grid">
<label>From <input name="from" type="date" value="${value('from')}"></label>
<label>To <input name="to" type="date" value="${value('to')}"></label>
</div>
<div class="grid">
<label>Site URL <input name="site_url" value="${value('site_url')}"></label>
<label>Status <select name="status"><option value="">any</option>${[
        'resolved',
        'unresolved',
        'in_progress',
      ].map(
        (s) =>
          html`<option value="${s}"${value('status') === s ? html` selected` : null}>${s.replace('_', ' ')}</option>`,
      )}</select></label>
<label>Tags (any of, comma-separated) <input name="tags" value="${value('tags')}"></label>
</div></fieldset>
<button type="submit">Review what would be deleted</button>
</form></section>
<section aria-labelledby="recent"><h2 id="recent">Latest deletions</h2>
${
  recent.length
    ? html`<table><thead><tr><th scope="col">Asked</th><th scope="col">Target</th><th scope="col">Status</th><th scope="col">Rows done</th><th scope="col">Receipt</th></tr></thead><tbody>${recent.map(
        (d) =>
          html`<tr><td>${when(d.created_at, zone)}</td><td>${d.target}${d.target_id ? html` <code>${d.target_id}</code>` : null}</td><td>${d.status}${d.progress.held ? html` (${d.progress.held} held)` : null}</td><td>${d.done} of ${d.selected ?? '…'}</td><td>${d.receipt_id ? html`<code>${d.receipt_id}</code>` : '—'}</td></tr>`,
      )}</tbody></table>`
    : html`<p>No deletions yet.</p>`
}</section>`,
    );
  };

  app.get('/app/deletions', async (request, reply) => render(request, reply));

  const shown = ['invalid_parameter', 'not_found'] as const;
  const attempt = async (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    input: DeletionInput,
    fn: () => Promise<unknown>,
  ) => {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof FerryError && (shown as readonly string[]).includes(err.code)) {
        reply.code(err.code === 'not_found' ? 404 : 400);
        return render(request, reply, err.message, input);
      }
      throw err;
    }
  };

  app.post('/app/deletions/plan', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'data:delete');
    const input = inputOf(request.body);
    return attempt(request, reply, input, async () => {
      const plan = await planDeletion(deps.database, auth.tenantId, input);
      const csrf = reply.generateCsrf();
      const kept = plan.stores.filter((s) => s.retained > 0);
      const cleared = plan.stores.filter((s) => s.scrubbed > 0);
      const summary = deletionSummary(plan);
      return sendPage(
        request,
        reply,
        { title: 'Confirm the deletion', current: '/app/deletions' },
        html`<section aria-labelledby="confirm"><h2 id="confirm">Confirm the deletion</h2>
<p id="deletion-counts">This deletes <strong>${summary}</strong>. It cannot be undone; a restore of an older backup deletes these rows again.</p>
${cleared.length ? html`<p>Kept, with the reference to the deleted rows removed: ${cleared.map((s) => rows(s.scrubbed, s.store, s.dataset)).join(', ')}.</p>` : null}
${kept.length ? html`<p>Kept under a legal hold: ${kept.map((s) => rows(s.retained, s.store, s.dataset)).join(', ')}${plan.holds.length ? html` (${plan.holds.map((h) => h.reason).join('; ')})` : null}.</p>` : null}
${plan.derived.length ? html`<ul>${plan.derived.map((d) => html`<li>${d.dataset.replaceAll('_', ' ')}: ${d.note}</li>`)}</ul>` : null}
<form method="post" action="/app/deletions">${csrfField(csrf)}
<input type="hidden" name="target" value="${input.target}">
${input.id ? html`<input type="hidden" name="id" value="${input.id}">` : null}
${Object.entries(input.filters ?? {}).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`)}
<button type="submit" class="contrast">Delete ${summary}</button> <a href="/app/deletions" role="button" class="secondary outline">Cancel</a>
</form></section>`,
      );
    });
  });

  app.post('/app/deletions', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'data:delete');
    const input = inputOf(request.body);
    return attempt(request, reply, input, async () => {
      const deletion = await createDeletion(deps.database, auth.tenantId, input, auth.actor, {
        now: deps.now,
      });
      if (input.target === 'conversations' && deps.queue) {
        await deps.queue.send(DELETION_RUN_JOB, { id: deletion.id });
        return seeOther(
          reply,
          '/app/deletions',
          `Deletion ${deletion.id} is queued; its progress shows here.`,
        );
      }
      if (!deps.store) throw new FerryError('service_unavailable', 'no object store is configured');
      const done = await runDeletion(
        {
          database: deps.database,
          store: deps.store,
          secretKey: loadOrCreateSecretKey(deps.config),
          secrets: deps.secrets,
          now: deps.now,
        },
        auth.tenantId,
        deletion.id,
      );
      return seeOther(
        reply,
        '/app/deletions',
        `Deleted ${deletionSummary(done.progress)}${done.progress.held ? `; ${done.progress.held} kept under a legal hold` : ''}. Receipt ${done.receipt_id}.`,
      );
    });
  });
};
