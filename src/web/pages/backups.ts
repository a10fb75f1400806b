import { authorize } from '../../auth/policy.ts';
import { backupById, listBackups } from '../../backup/catalog.ts';
import { backupContext } from '../../backup/context.ts';
import { registerBackup } from '../../backup/create.ts';
import { BACKUP_RESTORE_JOB, BACKUP_RUN_JOB } from '../../backup/jobs.ts';
import {
  type BackupContext,
  listRestores,
  refuseReplaceUnderHold,
  registerRestore,
  verifyBackup,
} from '../../backup/service.ts';
import { FREQUENCIES, getBackupSettings, putBackupSettings } from '../../backup/settings.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { changeThenRedirect, field, sendPage, signedInOf, type WebPages } from '../context.ts';
import { html } from '../html.ts';
import { bytes, count, csrfField, when } from '../layout.ts';

/**
 * Backups (admins, as in the API): the schedule and keep policy, the backups with their
 * verification, "back up now", verify, restore into a sandbox or over the live tenant (typed
 * confirmation), and the restore drills with their measured RTO and RPO against the
 * documented targets. Every action calls the same service as the API and the CLI.
 */
export const backupPages: WebPages = (app, deps) => {
  let context: BackupContext | undefined;
  const ctx = (): BackupContext => {
    if (!deps.store) throw new FerryError('service_unavailable', 'no object store is configured');
    context ??= backupContext({
      database: deps.database,
      config: deps.config,
      store: deps.store,
      secrets: deps.secrets,
      now: deps.now,
    });
    return context;
  };
  const clock = deps.now ?? (() => new Date());
  const queue = () => {
    if (!deps.queue) throw new FerryError('service_unavailable', 'no job queue is configured');
    return deps.queue;
  };

  const render = async (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    error: string | null = null,
  ) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'backups:manage');
    const zone = signedIn.tenant.timezone;
    const tenantId = auth.tenantId;
    const settings = await getBackupSettings(deps.database.db, tenantId);
    const backups = await listBackups(deps.database.db, tenantId, { all: true, limit: 30 });
    const restores = await listRestores(deps.database.db, tenantId, { limit: 10 });
    const drills = await listRestores(deps.database.db, tenantId, { drills: true, limit: 10 });
    const completed = backups.filter((b) => b.status === 'completed');
    const csrf = reply.generateCsrf();
    const keep = Object.entries(settings.keep)
      .map(([k, v]) => `${k.replace('keep_', '')} ${v}`)
      .join(', ');
    return sendPage(
      request,
      reply,
      { title: 'Backups', current: '/app/backups', error },
      html`<section aria-labelledby="schedule"><h2 id="schedule">Schedule</h2>
<p>${settings.enabled ? html`<mark class="status status-completed">on</mark> ${settings.frequency} at ${settings.time_of_day} (${zone})` : html`<mark class="status">off</mark> no scheduled backups`}; kept: ${keep}; to ${settings.destinations.map((d) => d.name).join(' and ')}. Each backup is encrypted with this account's key${settings.recipients.length ? html` and to ${count(settings.recipients.length)} age recipient(s) of yours` : null}, and reuses what the previous one stored. <a href="/docs">API</a>: <code>GET /api/v1/backups</code>.</p>
<form method="post" action="/app/backups/settings">${csrfField(csrf)}
<div class="grid"><label><input type="checkbox" name="enabled" value="true" role="switch"${settings.enabled ? html` checked` : null}> Scheduled backups</label>
<label>Frequency <select name="frequency">${FREQUENCIES.map((f) => html`<option value="${f}"${f === settings.frequency ? html` selected` : null}>${f}</option>`)}</select></label>
<label>Time (${zone}) <input name="time_of_day" type="time" required value="${settings.time_of_day}"></label></div>
<button type="submit" class="secondary">Save schedule</button></form>
<form method="post" action="/app/backups/run">${csrfField(csrf)}<button type="submit">Back up now</button></form></section>
<section aria-labelledby="list"><h2 id="list">Backups</h2>
${
  backups.length
    ? html`<table><thead><tr><th scope="col">Taken</th><th scope="col">Kind</th><th scope="col">Status</th><th scope="col">Rows</th><th scope="col">Size</th><th scope="col">Written</th><th scope="col">Verified</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>${backups.map(
        (
          b,
        ) => html`<tr><td>${when(b.snapshot_at ?? b.started_at, zone)}</td><td>${b.kind}</td><td><mark class="status status-${b.status}">${b.status}</mark>${b.error ? html` <small>${b.error}</small>` : null}</td><td>${count(b.rows)}</td><td>${bytes(b.plain_bytes)}</td><td>${bytes(b.written_bytes)}</td><td>${b.verify_status ? html`${b.verify_status} ${when(b.verified_at, zone)}${b.verify_error ? html` <small>${b.verify_error}</small>` : null}` : '—'}</td>
<td>${
          b.status === 'completed'
            ? html`<form method="post" action="/app/backups/${b.id}/verify" class="inline">${csrfField(csrf)}<button type="submit" class="secondary outline" aria-label="Verify the backup of ${when(b.snapshot_at, zone)} fully">Verify</button></form>
<form method="post" action="/app/backups/${b.id}/restore" class="inline">${csrfField(csrf)}<input type="hidden" name="mode" value="sandbox"><button type="submit" class="secondary outline" aria-label="Restore the backup of ${when(b.snapshot_at, zone)} into a sandbox">Restore to sandbox</button></form>`
            : null
        }</td></tr>`,
      )}</tbody></table>`
    : html`<p>No backup yet.</p>`
}
${
  completed.length
    ? html`<details><summary role="button" class="secondary">Restore over the live account</summary>
<p>The account's data is replaced by the backup's (the audit trail stays as it is). A backup of the current state is taken first, and people erased since the backup are erased again.</p>
<form method="post" action="/app/backups/restore-live">${csrfField(csrf)}
<div class="grid"><label>Backup <select name="backup_id">${completed.map((b) => html`<option value="${b.id}">${when(b.snapshot_at, zone)} (${count(b.rows)} rows)</option>`)}</select></label>
<label>Type <strong>${signedIn.tenant.slug}</strong> to confirm <input name="confirm" required autocomplete="off"></label></div>
<button type="submit" class="secondary">Restore over the live account</button></form></details>`
    : null
}</section>
<section aria-labelledby="restores"><h2 id="restores">Restores</h2>
${
  restores.length
    ? html`<table><thead><tr><th scope="col">Started</th><th scope="col">Mode</th><th scope="col">Status</th><th scope="col">Into</th><th scope="col">Erased again</th></tr></thead>
<tbody>${restores.map((r) => {
        const report = (r.report ?? {}) as { target_slug?: string; re_erased?: unknown[] };
        return html`<tr><td>${when(r.started_at, zone)}</td><td>${r.mode}</td><td><mark class="status status-${r.status}">${r.status}</mark>${r.error ? html` <small>${r.error}</small>` : null}</td><td>${report.target_slug ?? '—'}</td><td>${count(report.re_erased?.length ?? 0)}</td></tr>`;
      })}</tbody></table>`
    : html`<p>No restore yet.</p>`
}</section>
<section aria-labelledby="drills"><h2 id="drills">Restore drills</h2>
<p>A drill restores the latest backup into a throwaway sandbox, checks every table against the backup, measures how long it took (RTO) and how old the backup was (RPO), and deletes the sandbox. Scheduled monthly on day ${settings.drill_day}.</p>
${
  drills.length
    ? html`<table><thead><tr><th scope="col">Run</th><th scope="col">Status</th><th scope="col">RTO</th><th scope="col">RPO</th><th scope="col">Targets met</th></tr></thead>
<tbody>${drills.map((d) => {
        const report = (d.report ?? {}) as {
          rto_seconds?: number;
          rpo_seconds?: number;
          targets?: { scenario: string; rto_hours: number; met: boolean }[];
        };
        return html`<tr><td>${when(d.started_at, zone)}</td><td><mark class="status status-${d.status}">${d.status}</mark>${d.error ? html` <small>${d.error}</small>` : null}</td><td>${report.rto_seconds !== undefined ? `${report.rto_seconds.toFixed(1)} s` : '—'}</td><td>${report.rpo_seconds !== undefined ? `${(report.rpo_seconds / 3600).toFixed(1)} h` : '—'}</td><td>${(report.targets ?? []).map((t) => `${t.scenario.replaceAll('_', ' ')} (${t.rto_hours} h): ${t.met ? 'met' : 'missed'}`).join('; ') || '—'}</td></tr>`;
      })}</tbody></table>`
    : html`<p>No drill yet.</p>`
}
<form method="post" action="/app/backups/drill">${csrfField(csrf)}<button type="submit" class="secondary"${completed.length ? null : html` disabled`}>Run a drill now</button></form></section>`,
    );
  };

  const attempt = (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    change: () => Promise<string>,
  ) =>
    changeThenRedirect(reply, '/app/backups', change, (message) => render(request, reply, message), [
      'invalid_parameter',
      'conflict',
      'not_found',
      'backup_corrupt',
      'backup_key_unavailable',
    ]);

  app.get('/app/backups', async (request, reply) => render(request, reply));

  app.post('/app/backups/settings', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'backups:manage');
    return attempt(request, reply, async () => {
      await putBackupSettings(
        deps.database.db,
        auth.tenantId,
        {
          enabled: field(request.body, 'enabled') === 'true',
          frequency: field(request.body, 'frequency'),
          time_of_day: field(request.body, 'time_of_day'),
        },
        { secrets: deps.secrets, actor: auth.actor },
      );
      return 'Backup schedule saved.';
    });
  });

  app.post('/app/backups/run', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'backups:manage');
    return attempt(request, reply, async () => {
      const q = queue();
      const id = await registerBackup(
        deps.database.db,
        { tenantId: auth.tenantId, trigger: 'api', actor: auth.actor },
        clock(),
      );
      await q.send(BACKUP_RUN_JOB, { id });
      return 'Backup started: it appears in the list as completed when it is done.';
    });
  });

  app.post('/app/backups/:id/verify', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'backups:manage');
    const { id } = request.params as { id: string };
    return attempt(request, reply, async () => {
      const result = await verifyBackup(ctx(), {
        tenantId: auth.tenantId,
        backupId: id,
        level: 'full',
        actor: auth.actor,
      });
      if (!result.ok) throw new FerryError('backup_corrupt', result.destinations.find((d) => !d.ok)!.error!);
      return `Backup verified: every chunk read and checked (${result.destinations.map((d) => d.destination).join(', ')}).`;
    });
  });

  const queueRestore = async (
    request: Parameters<typeof signedInOf>[0],
    backupId: string,
    mode: 'sandbox' | 'replace' | 'drill',
  ) => {
    const { auth } = signedInOf(request);
    const backup = await backupById(deps.database.db, auth.tenantId, backupId);
    if (backup?.status !== 'completed') throw new FerryError('not_found', 'no such completed backup');
    const q = queue();
    const id = await registerRestore(deps.database.db, {
      tenantId: auth.tenantId,
      backupId,
      mode,
      actor: auth.actor,
      at: clock(),
    });
    await q.send(BACKUP_RESTORE_JOB, { id });
  };

  app.post('/app/backups/:id/restore', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'backups:manage');
    const { id } = request.params as { id: string };
    return attempt(request, reply, async () => {
      await queueRestore(request, id, 'sandbox');
      return 'Restore into a sandbox started: it is listed under Restores.';
    });
  });

  app.post('/app/backups/restore-live', async (request, reply) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'backups:manage');
    return attempt(request, reply, async () => {
      if (field(request.body, 'confirm').trim() !== signedIn.tenant.slug)
        throw new FerryError('invalid_parameter', `type ${signedIn.tenant.slug} to confirm the restore`);
      await refuseReplaceUnderHold(deps.database, signedIn.tenant.id);
      await queueRestore(request, field(request.body, 'backup_id'), 'replace');
      return 'Restore started: a backup of the current state is taken first.';
    });
  });

  app.post('/app/backups/drill', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'backups:manage');
    return attempt(request, reply, async () => {
      const latest = (await listBackups(deps.database.db, auth.tenantId, { limit: 1 }))[0];
      if (!latest) throw new FerryError('not_found', 'there is no backup to drill yet');
      await queueRestore(request, latest.id, 'drill');
      return 'Drill started: its result appears under Restore drills.';
    });
  });
};
