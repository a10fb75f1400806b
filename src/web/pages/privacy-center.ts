import type { FastifyReply, FastifyRequest } from 'fastify';
import { CLIENT_POLICY, recordFailure } from '../../auth/failure-throttle.ts';
import { loadTenant, type TenantInfo } from '../../collect/tenant.ts';
import { effectiveRetention } from '../../privacy/retention-policies.ts';
import { REFERENCE_DATAMAP } from '../../datamap/datamap.ts';
import { errorDefinition } from '../../domain/error-catalog.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { isClosedDsar } from '../../domain/dsar-state.ts';
import { downloadPath } from '../../export-requests/links.ts';
import { getReceipt } from '../../privacy/receipts.ts';
import {
  createDsar,
  type DsarCaller,
  type DsarDeps,
  loadDsar,
  presentDsar,
  resendCode,
  verifyDsar,
} from '../../privacy/dsar-service.ts';
import { checkStatusToken, statusPath, statusToken } from '../../privacy/status-link.ts';
import { clientOf, field, type WebDeps, type WebPages } from '../context.ts';
import { type Fragment, html } from '../html.ts';
import { csrfField, plainPage } from '../layout.ts';

/**
 * The privacy center at `/privacy/<tenant-slug>`: a data subject (no account) asks for a
 * copy of their data, deletion, correction or a consent change. Every request goes
 * through the same service as the API (`createDsar` with the subject as caller), is
 * confirmed with the one-time code emailed to the address, and is followed on a status
 * page whose link carries an HMAC of the request id. The answer to a request is the same
 * whether the address is known or not, the pages work without JavaScript, and each client
 * address may send 20 forms in 15 minutes.
 */

const BRANDING_SETTING = 'ferry.privacy_center';

export interface Branding {
  readonly name: string | null;
  readonly logo_url: string | null;
  readonly primary_color: string | null;
  readonly website_url: string | null;
}

const COLOR = /^#[0-9a-fA-F]{6}$/;
const HTTPS_URL = /^https:\/\/[^\s"'<>]{1,2000}$/;

async function loadBranding(deps: Pick<WebDeps, 'database'>, tenantId: string): Promise<Branding> {
  const row = await deps.database.db
    .selectFrom('settings')
    .select('value')
    .where('tenant_id', '=', tenantId)
    .where('key', '=', BRANDING_SETTING)
    .executeTakeFirst();
  const v = (
    typeof row?.value === 'string' ? JSON.parse(row.value) : (row?.value ?? {})
  ) as Partial<Branding>;
  return {
    name: typeof v.name === 'string' ? v.name : null,
    logo_url: typeof v.logo_url === 'string' && HTTPS_URL.test(v.logo_url) ? v.logo_url : null,
    primary_color:
      typeof v.primary_color === 'string' && COLOR.test(v.primary_color) ? v.primary_color : null,
    website_url: typeof v.website_url === 'string' && HTTPS_URL.test(v.website_url) ? v.website_url : null,
  };
}

/** The branding form of the dashboard's privacy section. */
export async function brandingForm(
  deps: Pick<WebDeps, 'database' | 'baseUrl'>,
  tenant: { id: string; slug: string; name: string },
  csrf: string,
): Promise<Fragment> {
  const b = await loadBranding(deps, tenant.id);
  const url = `${deps.baseUrl}/privacy/${tenant.slug}`;
  return html`<p>Your privacy center: <a href="/privacy/${tenant.slug}">${url}</a>. Link to it from your site's footer or privacy policy, e.g. <code>&lt;a href="${url}"&gt;Your privacy choices&lt;/a&gt;</code>.</p>
<form method="post" action="/app/privacy/center">${csrfField(csrf)}
<label>Name shown <input name="name" maxlength="100" value="${b.name ?? ''}" placeholder="${tenant.name}"></label>
<label>Logo (https URL of an image) <input type="url" name="logo_url" maxlength="2000" value="${b.logo_url ?? ''}" placeholder="https://example.com/logo.svg"></label>
<div class="grid"><label>Main colour <input type="color" name="primary_color" value="${b.primary_color ?? '#0b57d0'}"></label>
<label>Your website (https) <input type="url" name="website_url" maxlength="2000" value="${b.website_url ?? ''}"></label></div>
<button type="submit">Save</button>
</form>`;
}

export async function saveBranding(
  deps: Pick<WebDeps, 'database'>,
  tenantId: string,
  body: unknown,
): Promise<void> {
  const name = field(body, 'name').slice(0, 100) || null;
  const logo = field(body, 'logo_url') || null;
  const color = field(body, 'primary_color') || null;
  const website = field(body, 'website_url') || null;
  if (logo && !HTTPS_URL.test(logo))
    throw new FerryError('invalid_parameter', 'the logo must be an https:// URL');
  if (website && !HTTPS_URL.test(website))
    throw new FerryError('invalid_parameter', 'the website must be an https:// URL');
  if (color && !COLOR.test(color))
    throw new FerryError('invalid_parameter', 'the colour must look like #0b57d0');
  const value = JSON.stringify({ name, logo_url: logo, primary_color: color, website_url: website });
  await deps.database.db
    .insertInto('settings')
    .values({ tenant_id: tenantId, key: BRANDING_SETTING, value } as never)
    .onConflict((oc) => oc.columns(['tenant_id', 'key']).doUpdateSet({ value } as never))
    .execute();
}

const TYPE_WORDS: Record<string, string> = {
  access: 'a copy of your data',
  portability: 'a copy of your data',
  erasure: 'deletion of your data',
  rectification: 'a correction of your data',
  restriction: 'restricting the use of your data',
  opt_out: 'an opt-out',
};

const STATUS_WORDS: Record<string, string> = {
  received: 'Received: enter the code we emailed you to confirm it is you.',
  identity_pending: 'Waiting for the code we emailed you.',
  verified: 'Confirmed. It is being prepared.',
  awaiting_approval: 'Confirmed. Our team reviews it before anything is changed.',
  in_progress: 'In progress.',
  completed: 'Done.',
  extended: 'We need more time; the email we sent says why and by when.',
  denied: 'Declined; the email we sent says why.',
  cancelled: 'Cancelled.',
  failed: 'Delayed: our team has been told and will finish it.',
};

export const privacyCenterPages: WebPages = (app, deps) => {
  const service: DsarDeps = {
    database: deps.database,
    config: deps.config,
    queue: deps.queue,
    now: deps.now,
    logger: app.log as DsarDeps['logger'],
  };
  const subject = (request: FastifyRequest, tenant: TenantInfo): DsarCaller => {
    const client = clientOf(request);
    return { kind: 'subject', tenantId: tenant.id, ip: client.ip, userAgent: client.userAgent };
  };

  const page = async (
    reply: FastifyReply,
    tenant: TenantInfo,
    title: string,
    body: Fragment,
    options: { error?: string | null; status?: number } = {},
  ) => {
    const b = await loadBranding(deps, tenant.id);
    const name = b.name ?? tenant.name;
    const heading = html`<header class="privacy-header">${
      b.logo_url ? html`<img class="brand-logo" src="${b.logo_url}" alt="${name}">` : null
    }<p><a href="/privacy/${tenant.slug}">${name} privacy center</a></p><h1>${title}</h1></header>`;
    return reply
      .code(options.status ?? 200)
      .header('cache-control', 'no-store')
      .type('text/html; charset=utf-8')
      .send(
        plainPage(
          {
            title: `${title} · ${name}`,
            csrf: '',
            error: options.error ?? null,
            heading,
            bodyClass: 'privacy',
            head: b.primary_color
              ? html`<link rel="stylesheet" href="/privacy/${tenant.slug}/theme.css">`
              : null,
          },
          html`${body}${
            b.website_url
              ? html`<footer><p><a href="${b.website_url}">Back to ${name}</a></p></footer>`
              : null
          }`,
        ).value,
      );
  };

  /** Each client address may send 20 privacy-center forms in 15 minutes. */
  const throttle = async (request: FastifyRequest) => {
    const seconds = await recordFailure(deps.database, `privacy:${request.ip}`, deps.now(), {
      ...CLIENT_POLICY,
      limit: 20,
    });
    if (seconds > 0)
      throw new FerryError(
        'rate_limited',
        `too many requests from this address; try again in ${Math.ceil(seconds / 60)} minutes`,
      );
  };

  const tenantOf = (slug: string) => loadTenant(deps.database, slug);

  app.get<{ Params: { slug: string } }>('/privacy/:slug/theme.css', async (request, reply) => {
    const tenant = await tenantOf(request.params.slug);
    const b = await loadBranding(deps, tenant.id);
    const color = b.primary_color ?? '#0b57d0';
    return reply
      .type('text/css; charset=utf-8')
      .header('cache-control', 'public, max-age=300')
      .send(
        `:root{--pico-primary:${color};--pico-primary-background:${color};--pico-primary-border:${color};--pico-primary-hover-background:${color};--pico-primary-underline:${color}}\n`,
      );
  });

  app.get<{ Params: { slug: string } }>('/privacy/:slug', async (request, reply) => {
    const tenant = await tenantOf(request.params.slug);
    // The retention policies of data about people, as published: the same statements the API serves.
    const personal = new Set(
      Object.entries(REFERENCE_DATAMAP.tables)
        .filter(([, t]) => t.subjectLinks.length)
        .map(([name]) => name),
    );
    const retention = (await effectiveRetention(deps.database, tenant.id)).filter((p) =>
      personal.has(p.dataset),
    );
    return page(
      reply,
      tenant,
      'Your data, your choice',
      html`<p>Here you can see, take with you, correct or delete the personal data ${tenant.name} holds about you. Every request is confirmed with a code sent to your email address.</p>
<nav aria-label="Privacy requests"><ul class="choices">
<li><a role="button" href="/privacy/${tenant.slug}/export">Export my data</a></li>
<li><a role="button" class="secondary" href="/privacy/${tenant.slug}/delete">Delete my account</a></li>
<li><a role="button" class="secondary outline" href="/privacy/${tenant.slug}/correct">Correct my data</a></li>
<li><a role="button" class="secondary outline" href="/privacy/${tenant.slug}/consents">Manage my consents</a></li>
</ul></nav>
<section aria-labelledby="retention"><h2 id="retention">How long we keep your data</h2>
<ul>${retention.map((p) => html`<li>${p.statement}</li>`)}</ul></section>`,
    );
  });

  const regulationField = (tenant: TenantInfo) =>
    html`<label>Where do you live? <select name="regulation"><option value="gdpr"${
      tenant.home_country === 'US' ? null : html` selected`
    }>European Union, EEA, UK or elsewhere (GDPR)</option><option value="ccpa"${
      tenant.home_country === 'US' ? html` selected` : null
    }>California (CCPA)</option></select></label>`;

  const emailField = html`<label>Your email address <input type="email" name="email" autocomplete="email" required maxlength="320"></label>`;

  const form = (tenant: TenantInfo, kind: string, csrf: string, inner: Fragment, submit: string) =>
    html`<form method="post" action="/privacy/${tenant.slug}/${kind}">${csrfField(csrf)}${emailField}${inner}${regulationField(tenant)}<button type="submit">${submit}</button></form>`;

  const erasureExplanation = () => {
    const groups: Record<string, { table: string; description: string; basis: string }[]> = {
      delete: [],
      anonymize: [],
      retain: [],
    };
    for (const [name, t] of Object.entries(REFERENCE_DATAMAP.tables)) {
      if (!t.subjectLinks.length) continue;
      groups[t.erasure.action]?.push({
        table: name.replace(/_/g, ' '),
        description: t.description,
        basis: t.erasure.basis ?? '',
      });
    }
    const list = (items: { table: string; description: string; basis: string }[]) =>
      html`<ul>${items.map((i) => html`<li><strong>${i.table}</strong>: ${i.description} <small>${i.basis}</small></li>`)}</ul>`;
    return html`<h2>What is deleted</h2>${list(groups.delete!)}
<h2>What is anonymized</h2><p>These records stay without anything that identifies you:</p>${list(groups.anonymize!)}
${groups.retain!.length ? html`<h2>What is kept, and why</h2>${list(groups.retain!)}` : null}
<p>Data that a law requires ${'us'} to keep (invoices, for example) or that is under a legal hold stays until that obligation ends; your receipt lists it.</p>`;
  };

  const PAGES = {
    export: {
      title: 'Export my data',
      type: 'access',
      intro: html`<p>You receive a link to a ZIP file with your conversations, messages and account details, readable in any browser (open <code>index.html</code>) and in spreadsheet programs.</p>`,
      inner: null as Fragment,
      submit: 'Send me the code',
    },
    delete: {
      title: 'Delete my account',
      type: 'erasure',
      intro: erasureExplanation(),
      inner: html`<label><input type="checkbox" name="confirm" value="yes" required> I understand that this cannot be undone.</label>`,
      submit: 'Delete my account',
    },
    correct: {
      title: 'Correct my data',
      type: 'rectification',
      intro: html`<p>Fill in only what should change; leave the rest empty.</p>`,
      inner: html`<fieldset><legend>Correct values</legend>
<label>Name <input name="name" autocomplete="name" maxlength="200"></label>
<label>Phone <input type="tel" name="phone" autocomplete="tel" maxlength="40"></label>
<label>Country (two letters, e.g. DE) <input name="country" maxlength="2" pattern="[A-Za-z]{2}" autocomplete="country"></label>
<label>Language (e.g. en, de-AT) <input name="language" maxlength="35"></label></fieldset>`,
      submit: 'Ask for the correction',
    },
    consents: {
      title: 'Manage my consents',
      type: 'opt_out',
      intro: html`<p>Choose what ${'may'} no longer be done with your data. Support conversations you start stay possible.</p>`,
      inner: html`<fieldset><legend>Your choice</legend>
<label><input type="radio" name="choice" value="opt_out" checked> Stop marketing and the use of my conversations to train AI (and, in California, any sale or sharing)</label>
<label><input type="radio" name="choice" value="restriction"> Also stop analytics: restrict every use of my data but keeping it</label></fieldset>`,
      submit: 'Save my choice',
    },
  } as const;

  for (const [kind, spec] of Object.entries(PAGES)) {
    const show = async (
      request: FastifyRequest<{ Params: { slug: string } }>,
      reply: FastifyReply,
      error?: string,
      status?: number,
    ) => {
      const tenant = await tenantOf(request.params.slug);
      return page(
        reply,
        tenant,
        spec.title,
        html`${spec.intro}${form(tenant, kind, reply.generateCsrf(), spec.inner, spec.submit)}`,
        {
          error: error ?? null,
          ...(status ? { status } : {}),
        },
      );
    };
    app.get<{ Params: { slug: string } }>(`/privacy/:slug/${kind}`, async (request, reply) =>
      show(request, reply),
    );
    app.post<{ Params: { slug: string } }>(`/privacy/:slug/${kind}`, async (request, reply) => {
      const tenant = await tenantOf(request.params.slug);
      await throttle(request);
      const body = request.body;
      const type =
        kind === 'consents'
          ? field(body, 'choice') === 'restriction'
            ? 'restriction'
            : 'opt_out'
          : spec.type;
      const changes: Record<string, string> = {};
      if (kind === 'correct')
        for (const name of ['name', 'phone', 'country', 'language'])
          if (field(body, name))
            changes[name] = name === 'country' ? field(body, name).toUpperCase() : field(body, name);
      try {
        if (kind === 'correct' && Object.keys(changes).length === 0)
          throw new FerryError('invalid_parameter', 'fill in at least one value to correct');
        if (kind === 'delete' && field(body, 'confirm') !== 'yes')
          throw new FerryError(
            'invalid_parameter',
            'tick the box to confirm that you want your account deleted',
          );
        const view = await createDsar(service, subject(request, tenant), {
          type,
          regulation: field(body, 'regulation') || 'gdpr',
          source: 'privacy_center',
          subject: { email: field(body, 'email') },
          ...(kind === 'correct' ? { changes } : {}),
        });
        return reply.redirect(statusPath(tenant.slug, view.id, statusToken(deps.config, view.id)), 303);
      } catch (err) {
        const status = err instanceof FerryError ? errorDefinition(err.code).status : 500;
        if (status >= 500) throw err;
        return show(request, reply, (err as Error).message, status);
      }
    });
  }

  type StatusParams = { slug: string; id: string; token: string };
  const requestOf = async (params: StatusParams) => {
    const tenant = await tenantOf(params.slug);
    if (!/^[0-9a-f-]{36}$/.test(params.id) || !checkStatusToken(deps.config, params.id, params.token))
      throw new FerryError('not_found', 'this link is not valid: open the one in our email');
    const row = await loadDsar(deps.database, tenant.id, params.id);
    return { tenant, row };
  };

  const statusPage = async (
    request: FastifyRequest<{ Params: StatusParams }>,
    reply: FastifyReply,
    error?: string,
    status?: number,
  ) => {
    const { tenant, row } = await requestOf(request.params);
    const view = presentDsar(row, deps.now(), tenant.timezone);
    const here = statusPath(tenant.slug, row.id, request.params.token);
    const csrf = reply.generateCsrf();
    const steps = (view.result?.steps ?? {}) as Record<string, { file_id?: string | null } | undefined>;
    const ready = view.status === 'completed' && steps.package?.file_id;
    const waitingForCode = row.stage === 'received' || row.stage === 'identity_pending';
    return page(
      reply,
      tenant,
      `Your request for ${TYPE_WORDS[view.type] ?? view.type}`,
      html`<p class="status-line"><strong>${STATUS_WORDS[view.status] ?? view.status}</strong></p>
<dl class="details"><dt>Received</dt><dd>${view.received_at.slice(0, 10)}</dd><dt>Answer due by</dt><dd>${view.due_at.slice(0, 10)}</dd>${
        view.completed_at ? html`<dt>Completed</dt><dd>${view.completed_at.slice(0, 10)}</dd>` : null
      }</dl>
${
  waitingForCode
    ? html`<form method="post" action="${here}/verify">${csrfField(csrf)}
<label>The 6-digit code from our email <input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required autofocus></label>
<button type="submit">Confirm</button></form>
<form method="post" action="${here}/resend" class="inline">${csrfField(csrf)}<button type="submit" class="secondary outline">Send a new code</button></form>`
    : null
}
${ready ? html`<p><a role="button" href="${here}/download" hx-boost="false">Download your data</a></p><p><small>A ZIP file; open index.html inside to read it. We also emailed you the link.</small></p>` : null}
${view.status === 'completed' && row.receipt_id ? html`<p><a href="${here}/receipt" hx-boost="false" download>Download the signed receipt</a> <small>(proof of what was done, verifiable without us)</small></p>` : null}
${isClosedDsar(view.status) ? null : html`<p><a href="${here}">Refresh</a></p>`}`,
      { error: error ?? null, ...(status ? { status } : {}) },
    );
  };

  app.get<{ Params: StatusParams }>('/privacy/:slug/requests/:id/:token', async (request, reply) =>
    statusPage(request, reply),
  );

  app.post<{ Params: StatusParams }>('/privacy/:slug/requests/:id/:token/verify', async (request, reply) => {
    const { tenant, row } = await requestOf(request.params);
    await throttle(request);
    try {
      await verifyDsar(service, subject(request, tenant), row.id, { code: field(request.body, 'code') });
    } catch (err) {
      if (err instanceof FerryError && err.code === 'verification_failed') {
        const left = err.details?.attempts_left;
        return statusPage(
          request,
          reply,
          `That code is not right${typeof left === 'number' && left > 0 ? ` (${left} ${left === 1 ? 'try' : 'tries'} left)` : ''}: ${err.message}`,
          400,
        );
      }
      throw err;
    }
    return reply.redirect(statusPath(tenant.slug, row.id, request.params.token), 303);
  });

  app.post<{ Params: StatusParams }>('/privacy/:slug/requests/:id/:token/resend', async (request, reply) => {
    const { tenant, row } = await requestOf(request.params);
    await throttle(request);
    await resendCode(service, subject(request, tenant), row.id);
    return reply.redirect(statusPath(tenant.slug, row.id, request.params.token), 303);
  });

  app.get<{ Params: StatusParams }>('/privacy/:slug/requests/:id/:token/download', async (request, reply) => {
    const { row } = await requestOf(request.params);
    const steps = (row.result?.steps ?? {}) as Record<
      string,
      { export_id?: string; file_id?: string | null } | undefined
    >;
    const pkg = steps.package;
    if (row.status !== 'completed' || !pkg?.export_id || !pkg.file_id)
      throw new FerryError('not_found', 'your data is not ready yet');
    if (!deps.signer) throw new FerryError('service_unavailable', 'downloads are not served here');
    const target = {
      tenantId: row.tenant_id,
      exportId: pkg.export_id,
      fileId: pkg.file_id,
      expires: Math.floor(deps.now().getTime() / 1000) + 3600,
    };
    return reply
      .header('cache-control', 'no-store')
      .redirect(downloadPath(target, deps.signer.sign(target)), 302);
  });

  app.get<{ Params: StatusParams }>('/privacy/:slug/requests/:id/:token/receipt', async (request, reply) => {
    const { row } = await requestOf(request.params);
    if (!row.receipt_id) throw new FerryError('not_found', 'this request has no receipt yet');
    const { document } = await getReceipt(deps.database, row.tenant_id, { receiptId: row.receipt_id });
    return reply
      .header('content-disposition', `attachment; filename="receipt-${row.id}.json"`)
      .type('application/json')
      .send(JSON.stringify(document, null, 2));
  });
};
