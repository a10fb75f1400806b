import { randomUUID } from 'node:crypto';
import { authorize } from '../../auth/policy.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { importContext } from '../../imports/context.ts';
import { CONFLICT_POLICIES, type EntityReport } from '../../imports/engine.ts';
import { IMPORT_RUN_JOB } from '../../imports/jobs.ts';
import {
  cancelImport,
  checkSource,
  createImport,
  getImport,
  type ImportContext,
  type ImportInputRef,
  type ImportRow,
  listImports,
  parseConflict,
  rejectedFile,
  storeUpload,
} from '../../imports/service.ts';
import { IMPORT_ENTITIES, IMPORT_SOURCES } from '../../imports/types.ts';
import { changeThenRedirect, sendPage, signedInOf, type WebPages } from '../context.ts';
import { type Html, html } from '../html.ts';
import { bytes, count, csrfField, when } from '../layout.ts';

const SOURCE_LABELS: Record<(typeof IMPORT_SOURCES)[number], string> = {
  ferry: 'Ferry package (ZIP, tar.gz)',
  csv: 'CSV file (a Ferry dataset)',
  json: 'JSON file (a Ferry dataset)',
  ndjson: 'NDJSON file (a Ferry dataset)',
  zendesk: 'Zendesk',
  intercom: 'Intercom',
  chatwoot: 'Chatwoot',
  freshdesk: 'Freshdesk',
  helpscout: 'Help Scout',
};

/**
 * Imports (admins, as in the API): upload a Ferry package, a dataset file or a competitor's
 * export, see the plan (a dry run: what would be created, updated, left unchanged, what
 * conflicts and what is rejected), apply it, follow its progress, download the rejected items.
 * Every action calls the same service as the API and the CLI.
 */
export const importPages: WebPages = (app, deps) => {
  let context: ImportContext | undefined;
  const ctx = (): ImportContext => {
    if (!deps.store) throw new FerryError('service_unavailable', 'no object store is configured');
    context ??= importContext({
      database: deps.database,
      config: deps.config,
      store: deps.store,
      now: deps.now,
    });
    return context;
  };
  const queue = () => {
    if (!deps.queue) throw new FerryError('service_unavailable', 'no job queue is configured');
    return deps.queue;
  };

  const rows = (list: readonly ImportRow[], zone: string, csrf: string): Html => {
    const busy = list.some((r) => r.status === 'queued' || r.status === 'running');
    return html`<tbody id="import-rows"${busy ? html` hx-get="/app/imports/rows" hx-trigger="every 2s" hx-swap="outerHTML"` : null}>${list.map((r) => row(r, zone, csrf))}</tbody>`;
  };

  const row = (r: ImportRow, zone: string, csrf: string): Html => {
    const entities = IMPORT_ENTITIES.filter((e) => r.report.entities?.[e]);
    const sum = (
      k: keyof Pick<EntityReport, 'created' | 'updated' | 'unchanged' | 'conflicts' | 'rejected'>,
    ) => entities.reduce((n, e) => n + (r.report.entities[e] as EntityReport)[k], 0);
    const running = r.status === 'queued' || r.status === 'running';
    return html`<tr><td>${when(r.created_at, zone)}</td><td>${SOURCE_LABELS[r.source]}<br><small>${r.input_name}, ${bytes(r.input_bytes)}</small></td>
<td>${r.dry_run ? 'plan' : 'import'}</td>
<td><mark class="status status-${r.status}">${r.status}</mark>${running ? html` <small>${count(r.items_done)} items, ${bytes(r.bytes_done)} of ${bytes(r.input_bytes)}${r.phase ? html`, ${r.phase}` : null}</small>` : null}${r.error ? html` <small>${r.error}</small>` : null}</td>
<td>${entities.length ? html`${count(sum('created'))} new, ${count(sum('updated'))} updated, ${count(sum('unchanged'))} unchanged, ${count(sum('conflicts'))} conflicts, ${count(sum('rejected'))} rejected` : '—'}
${entities.length ? report(r) : null}</td>
<td>${r.rejected_count > 0 ? html`<a href="/app/imports/${r.id}/rejected" hx-boost="false" download>Rejected items</a> ` : null}${
      r.dry_run && r.status === 'completed' && r.input_kind === 'stored' && !r.input_deleted_at
        ? html`<form method="post" action="/app/imports/${r.id}/apply" class="inline">${csrfField(csrf)}<button type="submit" aria-label="Apply the plan of ${when(r.created_at, zone)}">Apply</button></form>`
        : null
    }${
      running
        ? html`<form method="post" action="/app/imports/${r.id}/cancel" class="inline">${csrfField(csrf)}<button type="submit" class="secondary outline" aria-label="Cancel the import of ${when(r.created_at, zone)}">Cancel</button></form>`
        : null
    }</td></tr>`;
  };

  const report = (r: ImportRow): Html => {
    const entities = IMPORT_ENTITIES.filter((e) => r.report.entities?.[e]);
    return html`<details><summary>Report</summary>
<table><thead><tr><th scope="col">Data</th><th scope="col">New</th><th scope="col">Updated</th><th scope="col">Unchanged</th><th scope="col">Conflicts</th><th scope="col">Rejected</th></tr></thead>
<tbody>${entities.map((e) => {
      const x = r.report.entities[e] as EntityReport;
      return html`<tr><th scope="row">${e.replaceAll('_', ' ')}</th><td>${count(x.created)}</td><td>${count(x.updated)}</td><td>${count(x.unchanged)}</td><td>${count(x.conflicts)}</td><td>${count(x.rejected)}</td></tr>`;
    })}</tbody></table>
${entities.flatMap((e) => (r.report.entities[e] as EntityReport).conflict_samples.map((c) => html`<p><small>Conflict: ${e.replaceAll('_', ' ')} ${c.source_id}: ${c.fields.join(', ')} (${c.resolution})</small></p>`))}
${entities.flatMap((e) => (r.report.entities[e] as EntityReport).rejected_samples.map((x) => html`<p><small>Rejected: ${x.location}: ${x.errors.join('; ')}</small></p>`))}
${(r.report.warnings ?? []).map((w) => html`<p><small>Note: ${w}</small></p>`)}</details>`;
  };

  const render = async (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    error: string | null = null,
  ) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'imports:manage');
    const zone = signedIn.tenant.timezone;
    const list = await listImports(deps.database.db, auth.tenantId, 30);
    const csrf = reply.generateCsrf();
    return sendPage(
      request,
      reply,
      { title: 'Imports', current: '/app/imports', error },
      html`<section aria-labelledby="new"><h2 id="new">Import data</h2>
<p>Bring in a Ferry package from another account, a dataset file, or an export from Zendesk, Intercom, Chatwoot, Freshdesk or Help Scout. Start with a plan: it shows what the import would create, update and leave alone, every conflict with the data you have and every rejected item, and writes nothing. Imported data fires no live events. Guides: <a href="/docs">API</a> <code>POST /api/v1/imports</code>.</p>
<form method="post" action="/app/imports?_csrf=${encodeURIComponent(csrf)}" enctype="multipart/form-data">
<div class="grid"><label>Source <select name="source" required>${IMPORT_SOURCES.map((s) => html`<option value="${s}">${SOURCE_LABELS[s]}</option>`)}</select></label>
<label>File <input type="file" name="file" required></label></div>
<div class="grid"><label>When an item differs from your data <select name="conflict">${CONFLICT_POLICIES.map((p) => html`<option value="${p}">${p.replace('_', ' ')}</option>`)}</select></label>
<fieldset><legend>Options</legend>
<label><input type="checkbox" name="dry_run" value="true" checked> Plan only (write nothing)</label>
<label><input type="checkbox" name="all_or_nothing" value="true"> All or nothing (any rejected item stops the import)</label>
<label><input type="checkbox" name="notify" value="true"> Send live events for imported data</label></fieldset></div>
<button type="submit">Upload and start</button></form></section>
<section aria-labelledby="list"><h2 id="list">Imports</h2>
${
  list.length
    ? html`<table><thead><tr><th scope="col">Started</th><th scope="col">Source</th><th scope="col">Kind</th><th scope="col">Status</th><th scope="col">Result</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
${rows(list, zone, csrf)}</table>`
    : html`<p>No import yet.</p>`
}</section>`,
    );
  };

  const attempt = (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    change: () => Promise<string>,
  ) =>
    changeThenRedirect(reply, '/app/imports', change, (message) => render(request, reply, message), [
      'invalid_parameter',
      'conflict',
      'not_found',
      'payload_too_large',
    ]);

  app.get('/app/imports', async (request, reply) => render(request, reply));

  app.get('/app/imports/rows', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'imports:manage');
    const list = await listImports(deps.database.db, auth.tenantId, 30);
    return reply
      .header('cache-control', 'no-store')
      .type('text/html; charset=utf-8')
      .send(rows(list, signedIn.tenant.timezone, reply.generateCsrf()).value);
  });

  app.post('/app/imports', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'imports:manage');
    return attempt(request, reply, async () => {
      if (!request.isMultipart()) throw new FerryError('invalid_parameter', 'file: choose a file to import');
      const id = randomUUID();
      const form: Record<string, string> = {};
      let input: ImportInputRef | undefined;
      let stored: string | null = null;
      let dryRun = false;
      try {
        for await (const part of request.parts()) {
          if (part.type === 'file') {
            if (!part.filename) {
              part.file.resume();
              continue;
            }
            input = await storeUpload(ctx(), auth.tenantId, id, part.filename, part.file);
            stored = input.kind === 'stored' ? input.key : null;
            if (part.file.truncated)
              throw new FerryError(
                'payload_too_large',
                `the file is larger than this server accepts (${bytes(deps.config.imports.limits.maxBytes)})`,
              );
          } else form[part.fieldname] = String(part.value ?? '');
        }
        if (!input) throw new FerryError('invalid_parameter', 'file: choose a file to import');
        dryRun = form.dry_run === 'true';
        await createImport(
          ctx(),
          {
            tenantId: auth.tenantId,
            source: checkSource(form.source ?? ''),
            input,
            dryRun,
            conflict: parseConflict(form.conflict || 'skip'),
            allOrNothing: form.all_or_nothing === 'true',
            notify: form.notify === 'true',
            actor: auth.actor,
          },
          id,
        );
      } catch (err) {
        // An upload whose form failed is not kept.
        if (stored)
          await ctx()
            .store.delete(stored)
            .catch(() => {});
        if (err instanceof FerryError) throw err;
        throw new FerryError(
          'invalid_parameter',
          `file: the upload could not be read (${(err as Error).message.slice(0, 120)})`,
        );
      }
      await queue().send(IMPORT_RUN_JOB, { id });
      return dryRun
        ? 'Plan started: its report appears below when it is done.'
        : 'Import started: its progress appears below.';
    });
  });

  app.post('/app/imports/:id/apply', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'imports:manage');
    const { id } = request.params as { id: string };
    return attempt(request, reply, async () => {
      const plan = await getImport(deps.database.db, auth.tenantId, id);
      if (
        !plan?.dry_run ||
        plan.status !== 'completed' ||
        plan.input_kind !== 'stored' ||
        plan.input_deleted_at
      )
        throw new FerryError('not_found', 'no such completed plan with its upload');
      const next = await createImport(ctx(), {
        tenantId: auth.tenantId,
        source: plan.source,
        dataset: plan.dataset ?? undefined,
        input: { kind: 'stored', key: plan.input_ref, name: plan.input_name, bytes: plan.input_bytes },
        dryRun: false,
        conflict: plan.conflict,
        allOrNothing: plan.all_or_nothing,
        notify: plan.notify,
        actor: auth.actor,
      });
      await queue().send(IMPORT_RUN_JOB, { id: next.id });
      return 'Import started from the plan: its progress appears below.';
    });
  });

  app.post('/app/imports/:id/cancel', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'imports:manage');
    const { id } = request.params as { id: string };
    return attempt(request, reply, async () => {
      await cancelImport(ctx(), auth.tenantId, id, auth.actor);
      return 'Import cancelled.';
    });
  });

  app.get('/app/imports/:id/rejected', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'imports:manage');
    const { id } = request.params as { id: string };
    const row = await getImport(deps.database.db, auth.tenantId, id);
    if (!row) throw new FerryError('not_found', `import ${id} not found`);
    const file = await rejectedFile(deps.database.db, row);
    return reply
      .header('content-type', file.contentType)
      .header('content-disposition', `attachment; filename="${file.filename}"`)
      .send(file.body);
  });
};
