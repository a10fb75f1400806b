import { ROLES, type Role } from '../../auth/context.ts';
import { splitAllowList } from '../../auth/ip-allowlist.ts';
import {
  DEFAULT_OVERLAP_HOURS,
  EXPIRY_WARNING_DAYS,
  daysLeft,
  rotateKeyFor,
} from '../../auth/key-rotation.ts';
import { apiKeyStatus, createKeyFor, listApiKeys, revokeKeyFor } from '../../auth/keys.ts';
import { authorize } from '../../auth/policy.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { field, seeOther, sendPage, signedInOf, type WebPages } from '../context.ts';
import { html } from '../html.ts';
import { csrfField, when } from '../layout.ts';

/** How long the old key may keep working after a rotation, as the rotate form offers it. */
const OVERLAPS: readonly [hours: number, label: string][] = [
  [0, 'stops now'],
  [1, '1 hour'],
  [24, '24 hours'],
  [72, '3 days'],
  [168, '7 days'],
  [720, '30 days'],
];

/** API keys: create and rotate (the new key is shown once), list, revoke. Admins only, as in the API. */
export const keyPages: WebPages = (app, deps) => {
  const render = async (
    request: Parameters<typeof signedInOf>[0],
    reply: Parameters<typeof sendPage>[1],
    extra: {
      created?: { key: string; name: string | null; replaces?: { prefix: string; until: Date } };
      error?: string;
    } = {},
  ) => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'keys:manage');
    const zone = signedIn.tenant.timezone;
    const now = deps.now();
    const keys = await listApiKeys(deps.database, auth.tenantId);
    // The key that replaced each rotated key (at most one unrevoked successor per key).
    const successors = new Map(
      keys.filter((k) => k.rotatedFrom && !k.revokedAt).map((k) => [k.rotatedFrom!, k] as const),
    );
    const members = await deps.database.db
      .selectFrom('team_members')
      .select(['id', 'name', 'role'])
      .where('tenant_id', '=', auth.tenantId)
      .orderBy('name')
      .limit(500)
      .execute();
    const csrf = reply.generateCsrf();
    return sendPage(
      request,
      reply,
      { title: 'API keys', current: '/app/keys', error: extra.error ?? null },
      html`${
        extra.created
          ? html`<article class="secret" aria-labelledby="new-key"><h2 id="new-key">Your new key${extra.created.name ? html`: ${extra.created.name}` : null}</h2>
<p>Copy it now: it is shown only this once.</p>${
              extra.created.replaces
                ? html`<p>It replaces <code>${extra.created.replaces.prefix}…</code>, which ${
                    extra.created.replaces.until.getTime() <= now.getTime()
                      ? 'stopped working now'
                      : html`keeps working until ${when(extra.created.replaces.until, zone)}`
                  }.</p>`
                : null
            }
<input id="new-key-value" class="key" readonly value="${extra.created.key}" aria-label="The new API key">
<button type="button" class="secondary" data-copy="new-key-value">Copy</button></article>`
          : null
      }
<details><summary role="button" class="secondary">Create a key</summary>
<form method="post" action="/app/keys">${csrfField(csrf)}
<div class="grid"><label>Name <input name="name" maxlength="100" placeholder="Nightly BI sync"></label>
<label>Role <select name="role">${ROLES.map((r) => html`<option value="${r}"${r === 'analyst' ? html` selected` : null}>${r}</option>`)}</select></label>
<label>Team member (agents) <select name="team_member_id"><option value="">None</option>${members.map(
        (m) => html`<option value="${m.id}">${m.name} (${m.role})</option>`,
      )}</select></label>
<label>Expires after <select name="expires_in_days"><option value="">Never</option><option value="30">30 days</option><option value="90" selected>90 days</option><option value="365">1 year</option></select></label></div>
<label>Allowed addresses <input name="allowed_ips" maxlength="4000" placeholder="203.0.113.0/24, 2001:db8::/32" aria-describedby="ips-help"></label>
<small id="ips-help">Optional: addresses or CIDR ranges the key may be used from, besides the workspace's own allow-list.</small>
<button type="submit">Create key</button>
</form></details>
<table><thead><tr><th scope="col">Name</th><th scope="col">Prefix</th><th scope="col">Role</th><th scope="col">Status</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">Expires</th><th scope="col">From</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>${keys.map((k) => {
        const status = apiKeyStatus(k, now);
        const label = k.name ?? k.prefix;
        const successor = successors.get(k.id);
        const left = k.expiresAt && status === 'active' ? daysLeft(k.expiresAt, now) : null;
        return html`<tr id="key-${k.id}"><td>${k.name ?? '—'}</td><td><code>${k.prefix}…</code></td><td>${k.role}</td><td><mark class="status status-${status}">${status}</mark>${
          successor ? html` <small>replaced by <code>${successor.prefix}…</code></small>` : null
        }</td><td>${when(k.createdAt, zone)}</td><td>${when(k.lastUsedAt, zone)}</td><td>${when(k.expiresAt, zone)}${
          left !== null && left <= EXPIRY_WARNING_DAYS
            ? html` <mark class="status status-expiring">in ${left} ${left === 1 ? 'day' : 'days'}</mark>`
            : null
        }</td><td><small>${k.allowedIps.length ? k.allowedIps.join(', ') : 'anywhere'}</small></td><td>${
          status === 'revoked' || successor
            ? null
            : html`<details class="rotate"><summary role="button" class="secondary outline" aria-label="Rotate ${label}">Rotate</summary>
<form method="post" action="/app/keys/${k.id}/rotate">${csrfField(csrf)}
<label>The old key works for <select name="overlap_hours" aria-label="How long ${label} keeps working">${OVERLAPS.map(
                ([hours, text]) =>
                  html`<option value="${String(hours)}"${hours === DEFAULT_OVERLAP_HOURS ? html` selected` : null}>${text}</option>`,
              )}</select></label>
<button type="submit" aria-label="Rotate ${label} now">Rotate key</button></form></details>`
        }${
          status === 'revoked'
            ? null
            : html`<form method="post" action="/app/keys/${k.id}/revoke" class="inline">${csrfField(csrf)}<button type="submit" class="secondary outline" aria-label="Revoke ${label}">Revoke</button></form>`
        }</td></tr>`;
      })}</tbody></table>`,
    );
  };

  app.get('/app/keys', async (request, reply) => render(request, reply));

  app.post('/app/keys', async (request, reply) => {
    const { auth } = signedInOf(request);
    const body = request.body;
    const role = field(body, 'role') as Role;
    const days = Number(field(body, 'expires_in_days'));
    const now = deps.now();
    try {
      const created = await createKeyFor(
        deps.database,
        auth,
        {
          role,
          name: field(body, 'name') || undefined,
          teamMemberId: field(body, 'team_member_id') || undefined,
          expiresAt: days > 0 ? new Date(now.getTime() + days * 86_400_000) : undefined,
          allowedIps: splitAllowList(field(body, 'allowed_ips')),
        },
        now,
      );
      reply.code(201);
      return render(request, reply, { created: { key: created.key, name: created.name } });
    } catch (err) {
      if (err instanceof FerryError && err.code === 'invalid_parameter') {
        reply.code(400);
        return render(request, reply, { error: err.message });
      }
      throw err;
    }
  });

  app.post<{ Params: { id: string } }>('/app/keys/:id/rotate', async (request, reply) => {
    const { auth } = signedInOf(request);
    const raw = field(request.body, 'overlap_hours');
    const now = deps.now();
    try {
      const rotated = await rotateKeyFor(
        deps.database,
        auth,
        request.params.id,
        { overlapHours: raw === '' ? undefined : Number(raw) },
        now,
      );
      reply.code(201);
      return render(request, reply, {
        created: {
          key: rotated.key.key,
          name: rotated.key.name,
          replaces: { prefix: rotated.previous.prefix, until: rotated.previous.expiresAt ?? now },
        },
      });
    } catch (err) {
      if (err instanceof FerryError && (err.code === 'invalid_parameter' || err.code === 'conflict')) {
        reply.code(err.code === 'conflict' ? 409 : 400);
        return render(request, reply, { error: err.message });
      }
      throw err;
    }
  });

  app.post<{ Params: { id: string } }>('/app/keys/:id/revoke', async (request, reply) => {
    const { auth } = signedInOf(request);
    const revoked = await revokeKeyFor(deps.database, auth, request.params.id, deps.now());
    return seeOther(reply, '/app/keys', `The key ${revoked.name ?? revoked.prefix} is revoked.`);
  });
};
