import type { FastifyReply, FastifyRequest } from 'fastify';
import { PASSWORD_RULE } from '../../auth/passwords.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import {
  completeSecondFactor,
  endSession,
  peekToken,
  requestPasswordReset,
  resolveSession,
  SESSION_ABSOLUTE_MS,
  setPasswordWithLink,
  signIn,
  signInWithLink,
} from '../accounts.ts';
import { clientOf, field, flash, SESSION_COOKIE, secureRequest, type WebPages } from '../context.ts';
import { html } from '../html.ts';
import { csrfField, plainPage } from '../layout.ts';
import { SEND_LINK_JOB } from '../jobs.ts';

/** Sign-in, sign-out, two-factor, one-time links, password reset and invitations. */

/** Only a path inside the dashboard is a place to come back to (no open redirect). */
function safeNext(next: string | undefined): string {
  return next && /^\/app(\/[A-Za-z0-9/_?=&%.:-]*)?$/.test(next) && !next.startsWith('//') ? next : '/app';
}

function setSession(request: FastifyRequest, reply: FastifyReply, token: string) {
  reply.setCookie(SESSION_COOKIE, token, {
    path: '/',
    httpOnly: true,
    sameSite: 'lax',
    secure: secureRequest(request),
    maxAge: Math.floor(SESSION_ABSOLUTE_MS / 1000),
  });
}

function send(reply: FastifyReply, page: { value: string }, status = 200) {
  return reply
    .code(status)
    .header('cache-control', 'no-store')
    .type('text/html; charset=utf-8')
    .send(page.value);
}

export const signInPages: WebPages = (app, deps) => {
  const { database } = deps;

  const signInForm = (
    reply: FastifyReply,
    input: { next: string; email?: string; error?: string; workspace?: boolean },
    status = 200,
  ) =>
    send(
      reply,
      plainPage(
        { title: 'Sign in to Ferry', csrf: '', error: input.error ?? null },
        html`<form method="post" action="/signin">
${csrfField(reply.generateCsrf())}
<input type="hidden" name="next" value="${input.next}">
<label>Email <input type="email" name="email" autocomplete="username" required value="${input.email ?? ''}" autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
${
  input.workspace
    ? html`<label>Workspace <input name="workspace" autocomplete="organization" required aria-describedby="workspace-help"></label>
<small id="workspace-help">This email belongs to several workspaces: enter the short name of the one to open.</small>`
    : null
}
<button type="submit">Sign in</button>
</form>
<p><a href="/signin/forgot">Forgot your password?</a></p>`,
      ),
      status,
    );

  app.get<{ Querystring: { next?: string } }>('/signin', async (request, reply) =>
    signInForm(reply, { next: safeNext(request.query.next) }),
  );

  app.post('/signin', async (request, reply) => {
    const body = request.body;
    const next = safeNext(field(body, 'next'));
    const email = field(body, 'email');
    const result = await signIn(
      database,
      { email, password: field(body, 'password'), workspace: field(body, 'workspace') || undefined },
      clientOf(request),
      deps.now(),
    );
    if (result.kind === 'locked')
      return signInForm(
        reply,
        {
          next,
          email,
          error: `Too many failed sign-ins. Try again in ${Math.ceil(result.seconds / 60)} minutes, or reset your password.`,
        },
        429,
      );
    if (result.kind === 'failed')
      return signInForm(reply, { next, email, error: 'The email or password is not right.' }, 401);
    if (result.kind === 'choose_workspace') return signInForm(reply, { next, email, workspace: true }, 409);
    setSession(request, reply, result.token);
    if (result.signedIn.secondFactorPending)
      return reply.redirect(`/signin/two-factor?next=${encodeURIComponent(next)}`, 303);
    return reply.redirect(next, 303);
  });

  const twoFactorForm = (reply: FastifyReply, next: string, error?: string, status = 200) =>
    send(
      reply,
      plainPage(
        { title: 'Two-factor sign-in', csrf: '', error: error ?? null },
        html`<form method="post" action="/signin/two-factor">
${csrfField(reply.generateCsrf())}
<input type="hidden" name="next" value="${next}">
<label>Code from your authenticator app <input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required autofocus></label>
<button type="submit">Continue</button>
</form>`,
      ),
      status,
    );

  const pendingSession = async (request: FastifyRequest) => {
    const token = request.cookies[SESSION_COOKIE];
    const signedIn = token ? await resolveSession(database, token, deps.now()) : null;
    return signedIn?.secondFactorPending ? signedIn : null;
  };

  app.get<{ Querystring: { next?: string } }>('/signin/two-factor', async (request, reply) => {
    if (!(await pendingSession(request))) return reply.redirect('/signin', 303);
    return twoFactorForm(reply, safeNext(request.query.next));
  });

  app.post('/signin/two-factor', async (request, reply) => {
    const signedIn = await pendingSession(request);
    if (!signedIn) return reply.redirect('/signin', 303);
    const next = safeNext(field(request.body, 'next'));
    const outcome = await completeSecondFactor(
      database,
      signedIn,
      field(request.body, 'code'),
      deps.secrets,
      clientOf(request),
      deps.now(),
    );
    if (outcome === 'ok') return reply.redirect(next, 303);
    if (outcome === 'failed') return twoFactorForm(reply, next, 'The code is not right.', 401);
    return signInForm(
      reply,
      { next, error: `Too many failed attempts. Try again in ${Math.ceil(outcome.locked / 60)} minutes.` },
      429,
    );
  });

  app.post('/signout', async (request, reply) => {
    const token = request.cookies[SESSION_COOKIE];
    const signedIn = token ? await resolveSession(database, token, deps.now()) : null;
    if (signedIn) await endSession(database, signedIn, clientOf(request), deps.now());
    reply.clearCookie(SESSION_COOKIE, { path: '/' });
    flash(reply, 'You are signed out.');
    return reply.redirect('/signin', 303);
  });

  // The first-run link and `ferry users reset --sign-in` links: printed to an operator's
  // terminal, never emailed, so opening it signs in at once (one click for a newcomer).
  app.get<{ Params: { token: string } }>('/signin/link/:token', async (request, reply) => {
    const result = await signInWithLink(database, request.params.token, clientOf(request), deps.now());
    if (!result)
      return signInForm(
        reply,
        {
          next: '/app',
          error: 'This sign-in link was used already or has expired. Sign in with your password.',
        },
        410,
      );
    setSession(request, reply, result.token);
    if (result.signedIn.secondFactorPending) return reply.redirect('/signin/two-factor', 303);
    return reply.redirect('/app', 303);
  });

  app.get('/signin/forgot', async (_request, reply) =>
    send(
      reply,
      plainPage(
        { title: 'Reset your password', csrf: '' },
        html`<form method="post" action="/signin/forgot">
${csrfField(reply.generateCsrf())}
<label>Email <input type="email" name="email" autocomplete="username" required autofocus></label>
<button type="submit">Email me a reset link</button>
</form>`,
      ),
    ),
  );

  app.post('/signin/forgot', async (request, reply) => {
    const email = field(request.body, 'email');
    if (email && deps.queue) {
      const queue = deps.queue;
      await requestPasswordReset(database, email, deps.now(), async (id) => {
        await queue.send(SEND_LINK_JOB, { id });
      });
    }
    // The same answer whether or not the address belongs to an account.
    return send(
      reply,
      plainPage(
        { title: 'Check your email', csrf: '' },
        html`<p>If ${email || 'that address'} belongs to a Ferry account, a link to set a new password is on its way. It works for one hour.</p>
<p><a href="/signin">Back to sign-in</a></p>`,
      ),
    );
  });

  for (const purpose of ['reset', 'invite'] as const) {
    const path = `/signin/${purpose}/:token`;
    const title = purpose === 'reset' ? 'Choose a new password' : 'Welcome to Ferry: choose your password';
    const form = (reply: FastifyReply, token: string, who: { email: string }, error?: string, status = 200) =>
      send(
        reply,
        plainPage(
          { title, csrf: '', error: error ?? null },
          html`<form method="post" action="/signin/${purpose}/${token}">
${csrfField(reply.generateCsrf())}
<input type="email" name="email" value="${who.email}" autocomplete="username" readonly aria-label="Email">
<label>New password <input type="password" name="password" autocomplete="new-password" minlength="12" required aria-describedby="rule" autofocus></label>
<label>Repeat it <input type="password" name="repeat" autocomplete="new-password" minlength="12" required></label>
<small id="rule">${PASSWORD_RULE}.</small>
<button type="submit">Save and sign in</button>
</form>`,
        ),
        status,
      );
    const expired = (reply: FastifyReply) =>
      send(
        reply,
        plainPage(
          { title: 'This link is no longer valid', csrf: '' },
          html`<p>It was used already or has expired. <a href="/signin/forgot">Ask for a new one</a>.</p>`,
        ),
        410,
      );
    app.get<{ Params: { token: string } }>(path, async (request, reply) => {
      const who = await peekToken(database, request.params.token, [purpose], deps.now());
      return who ? form(reply, request.params.token, who) : expired(reply);
    });
    app.post<{ Params: { token: string } }>(path, async (request, reply) => {
      const { token } = request.params;
      const who = await peekToken(database, token, [purpose], deps.now());
      if (!who) return expired(reply);
      const password = field(request.body, 'password');
      if (password !== field(request.body, 'repeat'))
        return form(reply, token, who, 'The two passwords are not the same.', 400);
      try {
        const result = await setPasswordWithLink(database, token, password, clientOf(request), deps.now());
        if (!result) return expired(reply);
        setSession(request, reply, result.token);
        flash(reply, 'Your password is saved.');
        return reply.redirect(result.signedIn.secondFactorPending ? '/signin/two-factor' : '/app', 303);
      } catch (err) {
        if (err instanceof FerryError && err.code === 'invalid_parameter')
          return form(reply, token, who, err.message, 400);
        throw err;
      }
    });
  }
};
