import type { FastifyReply, FastifyRequest } from 'fastify';
import QRCode from 'qrcode';
import {
  SESSION_ABSOLUTE_MS,
  SESSION_ABSOLUTE_RANGE,
  SESSION_IDLE_MS,
  SESSION_IDLE_RANGE,
  setSessionTimeouts,
  setTenantAllowList,
  splitAllowList,
  tenantAccess,
} from '../../auth/ip-allowlist.ts';
import { PASSWORD_RULE } from '../../auth/passwords.ts';
import { ROLE_ACTIONS } from '../../auth/policy.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import {
  changePassword,
  confirmTotp,
  disableTotp,
  endOwnSession,
  listSessions,
  secondFactorEnabled,
  startTotp,
} from '../accounts.ts';
import { field, seeOther, sendPage, signedInOf, type WebPages } from '../context.ts';
import { type Fragment, html } from '../html.ts';
import { csrfField, when } from '../layout.ts';

/** The signed-in member's own account: password, two-factor sign-in, open sessions. */
export const accountPages: WebPages = (app, deps) => {
  const render = async (
    request: FastifyRequest,
    reply: FastifyReply,
    extra: { error?: string; enrol?: { secret: string; uri: string } } = {},
  ) => {
    const { signedIn } = signedInOf(request);
    const zone = signedIn.tenant.timezone;
    const csrf = reply.generateCsrf();
    const sessions = await listSessions(deps.database, signedIn, deps.now());
    const twoFactor = await secondFactorEnabled(deps.database, signedIn);
    const { auth } = signedInOf(request);
    const admin = ROLE_ACTIONS[auth.role].includes('keys:manage');
    const access = admin ? await tenantAccess(deps.database, auth.tenantId) : null;
    let totp: Fragment;
    if (extra.enrol) {
      const qr = await QRCode.toDataURL(extra.enrol.uri, { margin: 1, width: 200 });
      totp = html`<p>Scan this code with an authenticator app, or enter the key by hand, then type the 6 digits it shows.</p>
<img src="${qr}" alt="QR code of the two-factor key" width="200" height="200">
<p>Key: <code>${extra.enrol.secret}</code></p>
<form method="post" action="/app/account/two-factor/confirm">${csrfField(csrf)}
<label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required></label>
<button type="submit">Turn on</button></form>`;
    } else if (twoFactor) {
      totp = html`<p>Two-factor sign-in is <mark class="status status-enabled">on</mark>.</p>
<form method="post" action="/app/account/two-factor/disable">${csrfField(csrf)}
<label>Current code to turn it off <input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required></label>
<button type="submit" class="secondary outline">Turn off</button></form>`;
    } else {
      totp = html`<p>Two-factor sign-in is off. With it on, signing in also asks for a code from an authenticator app.</p>
<form method="post" action="/app/account/two-factor">${csrfField(csrf)}<button type="submit" class="secondary">Set up two-factor sign-in</button></form>`;
    }
    return sendPage(
      request,
      reply,
      { title: 'Your account', current: '/app/account', error: extra.error ?? null },
      html`<dl class="details"><dt>Name</dt><dd>${signedIn.member.name}</dd><dt>Email</dt><dd>${signedIn.member.email}</dd><dt>Role</dt><dd>${signedIn.member.role}</dd><dt>Workspace</dt><dd>${signedIn.tenant.name} (${signedIn.tenant.slug})</dd></dl>
<section aria-labelledby="pw"><h2 id="pw">Password</h2>
<form method="post" action="/app/account/password">${csrfField(csrf)}
<input type="email" name="email" value="${signedIn.member.email}" autocomplete="username" readonly aria-label="Email">
<label>Current password <input type="password" name="current" autocomplete="current-password" required></label>
<label>New password <input type="password" name="password" autocomplete="new-password" minlength="12" required aria-describedby="pw-rule"></label>
<small id="pw-rule">${PASSWORD_RULE}. Your other sessions end when it changes.</small>
<button type="submit">Change password</button></form></section>
<section aria-labelledby="tf"><h2 id="tf">Two-factor sign-in</h2>${totp}</section>
<section aria-labelledby="ss"><h2 id="ss">Where you are signed in</h2>
<table><thead><tr><th scope="col">Since</th><th scope="col">Last active</th><th scope="col">Address</th><th scope="col">Browser</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead><tbody>${sessions.map(
        (s) =>
          html`<tr><td>${when(s.createdAt, zone)}</td><td>${when(s.lastSeenAt, zone)}</td><td>${s.ip ?? '—'}</td><td><small>${s.userAgent ?? '—'}</small></td><td>${
            s.current
              ? html`<small>this session</small>`
              : html`<form method="post" action="/app/account/sessions/${s.id}/end" class="inline">${csrfField(csrf)}<button type="submit" class="secondary outline">Sign out</button></form>`
          }</td></tr>`,
      )}</tbody></table></section>${
        access
          ? html`
<section aria-labelledby="ipl"><h2 id="ipl">Workspace access</h2>
<form method="post" action="/app/account/ip-allowlist">${csrfField(csrf)}
<label>IP allow-list <textarea name="ip_allowlist" rows="4" aria-describedby="ipl-help">${access.ipAllowlist.join('\n')}</textarea></label>
<small id="ipl-help">Addresses or CIDR ranges (IPv4 and IPv6), one per line. API keys and the dashboard then work only from these; empty: from anywhere. The list must contain your current address (${auth.ip ?? 'unknown'}).</small>
<button type="submit">Save allow-list</button></form>
<form method="post" action="/app/account/session-timeouts">${csrfField(csrf)}
<label>Sign out after this many idle minutes <input type="number" name="session_idle_minutes" min="${SESSION_IDLE_RANGE.min}" max="${SESSION_IDLE_RANGE.max}" value="${access.idleMinutes ?? ''}" placeholder="${SESSION_IDLE_MS / 60_000}"></label>
<label>Sign out this many minutes after sign-in in any case <input type="number" name="session_absolute_minutes" min="${SESSION_ABSOLUTE_RANGE.min}" max="${SESSION_ABSOLUTE_RANGE.max}" value="${access.absoluteMinutes ?? ''}" placeholder="${SESSION_ABSOLUTE_MS / 60_000}"></label>
<small>Empty: the default shown. Applies to open sessions too.</small>
<button type="submit">Save session timeouts</button></form></section>`
          : ''
      }`,
    );
  };

  const showing = (request: FastifyRequest, reply: FastifyReply, err: unknown) => {
    if (err instanceof FerryError && ['invalid_parameter', 'conflict'].includes(err.code)) {
      reply.code(err.code === 'conflict' ? 409 : 400);
      return render(request, reply, { error: err.message });
    }
    throw err;
  };

  app.get('/app/account', async (request, reply) => render(request, reply));

  app.post('/app/account/password', async (request, reply) => {
    const { signedIn } = signedInOf(request);
    try {
      await changePassword(
        deps.database,
        signedIn,
        { current: field(request.body, 'current'), password: field(request.body, 'password') },
        deps.now(),
      );
    } catch (err) {
      return showing(request, reply, err);
    }
    return seeOther(reply, '/app/account', 'Your password is changed; your other sessions are signed out.');
  });

  app.post('/app/account/two-factor', async (request, reply) => {
    const { signedIn } = signedInOf(request);
    try {
      return await render(request, reply, { enrol: await startTotp(deps.database, signedIn, deps.secrets) });
    } catch (err) {
      return showing(request, reply, err);
    }
  });

  app.post('/app/account/two-factor/confirm', async (request, reply) => {
    const { signedIn } = signedInOf(request);
    try {
      await confirmTotp(deps.database, signedIn, field(request.body, 'code'), deps.secrets, deps.now());
    } catch (err) {
      return showing(request, reply, err);
    }
    return seeOther(reply, '/app/account', 'Two-factor sign-in is on.');
  });

  app.post('/app/account/two-factor/disable', async (request, reply) => {
    const { signedIn } = signedInOf(request);
    try {
      await disableTotp(deps.database, signedIn, field(request.body, 'code'), deps.secrets, deps.now());
    } catch (err) {
      return showing(request, reply, err);
    }
    return seeOther(reply, '/app/account', 'Two-factor sign-in is off.');
  });

  app.post('/app/account/ip-allowlist', async (request, reply) => {
    const { auth } = signedInOf(request);
    try {
      await setTenantAllowList(
        deps.database,
        auth,
        splitAllowList(field(request.body, 'ip_allowlist')),
        deps.now(),
      );
    } catch (err) {
      return showing(request, reply, err);
    }
    return seeOther(reply, '/app/account', 'The IP allow-list is saved.');
  });

  app.post('/app/account/session-timeouts', async (request, reply) => {
    const { auth } = signedInOf(request);
    try {
      await setSessionTimeouts(
        deps.database,
        auth,
        {
          idleMinutes: field(request.body, 'session_idle_minutes'),
          absoluteMinutes: field(request.body, 'session_absolute_minutes'),
        },
        deps.now(),
      );
    } catch (err) {
      return showing(request, reply, err);
    }
    return seeOther(reply, '/app/account', 'The session timeouts are saved.');
  });

  app.post<{ Params: { id: string } }>('/app/account/sessions/:id/end', async (request, reply) => {
    const { signedIn } = signedInOf(request);
    if (/^[0-9a-f-]{36}$/.test(request.params.id))
      await endOwnSession(deps.database, signedIn, request.params.id, deps.now());
    return seeOther(reply, '/app/account', 'That session is signed out.');
  });
};
