import type { FastifyReply, FastifyRequest } from 'fastify';
import { auditCaller, recordAudit } from '../../auth/audit.ts';
import type { AuthContext } from '../../auth/context.ts';
import { authorize } from '../../auth/policy.ts';
import { errorDefinition } from '../../domain/error-catalog.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { outboundPolicy } from '../../lib/ssrf.ts';
import {
  createEndpoint,
  type DeliveryLogEntry,
  deleteEndpoint,
  enableEndpoint,
  getEndpoint,
  listDeliveries,
  listEndpoints,
  rotateSecret,
  type WebhookEndpoint,
} from '../../webhooks/endpoints.ts';
import { ALL_EVENTS, WEBHOOK_EVENTS } from '../../webhooks/events.ts';
import { fields, field, seeOther, sendPage, signedInOf, type WebPages } from '../context.ts';
import { type Fragment, type Html, html } from '../html.ts';
import { csrfField, when } from '../layout.ts';

/**
 * Webhooks (admins, `webhooks:manage`): the tenant's endpoints, registering one (its
 * signing secret shown once), one endpoint's details and delivery log, rotating the
 * secret (the new one shown once), re-enabling and deleting. Every change goes through
 * src/webhooks/endpoints.ts, as `POST /api/v1/webhooks` and its siblings do, so the URL
 * checks (https, the SSRF guard), the event names and the endpoint limit are the API's
 * own, and the audit log gets the same entries.
 *
 * Routes:
 * - `GET /app/webhooks`: the list and the form; `POST /app/webhooks`: register
 * - `GET /app/webhooks/:id`: details and delivery log (`?status=`, `?limit=`)
 * - `POST /app/webhooks/:id/rotate|enable|delete`
 */

/** Messages the delivery log shows by default, and at most (the API's own bounds). */
const DELIVERIES_DEFAULT = 50;
const DELIVERIES_MAX = 200;
const DELIVERY_STATUSES = ['pending', 'delivered', 'failed'] as const;
type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/** Service errors the form shows next to the entered values (others become the error page). */
const FORM_ERRORS = new Set<string>(['invalid_parameter', 'conflict']);

interface FormValues {
  readonly url: string;
  readonly description: string;
  readonly events: readonly string[];
}

const BLANK: FormValues = { url: '', description: '', events: [ALL_EVENTS] };

function eventsText(events: readonly string[]): string {
  return events.includes(ALL_EVENTS) ? 'All events' : events.join(', ');
}

function statusCell(e: WebhookEndpoint, zone: string): Html {
  return e.status === 'active'
    ? html`<mark class="status status-active">Enabled</mark>`
    : html`<mark class="status status-disabled">Disabled</mark>${
        e.disabled_reason ? html` <small>${e.disabled_reason}</small>` : null
      }${e.disabled_at ? html` <small>(since ${when(e.disabled_at, zone)})</small>` : null}`;
}

/** The signing secret, shown once after registering or rotating. */
function secretPanel(secret: string, heading: string, note: Fragment): Html {
  return html`<article class="secret" aria-labelledby="new-secret"><h2 id="new-secret">${heading}</h2>
<p>Copy it now: it is shown only this once. ${note}</p>
<input id="new-secret-value" class="key" readonly value="${secret}" aria-label="The signing secret">
<button type="button" class="secondary" data-copy="new-secret-value">Copy</button></article>`;
}

function createForm(csrf: string, values: FormValues, open: boolean): Html {
  const all = values.events.includes(ALL_EVENTS);
  return html`<details${open ? html` open` : null}><summary role="button" class="secondary">Add an endpoint</summary>
<form method="post" action="/app/webhooks">${csrfField(csrf)}
<label>URL <input type="url" name="url" required maxlength="2000" placeholder="https://example.com/hooks/ferry" value="${values.url}" aria-describedby="url-hint"></label>
<small id="url-hint">An https URL on a public host. Private and loopback addresses are refused unless the operator allows them.</small>
<label>Description <input name="description" maxlength="500" placeholder="Data warehouse loader" value="${values.description}"></label>
<fieldset><legend>Events</legend>
<label><input type="checkbox" name="events" value="${ALL_EVENTS}"${all ? html` checked` : null}> All events, including events added later</label>
${WEBHOOK_EVENTS.map(
  (event) =>
    html`<label><input type="checkbox" name="events" value="${event}"${
      !all && values.events.includes(event) ? html` checked` : null
    }> <code>${event}</code></label>`,
)}
</fieldset>
<button type="submit">Add endpoint</button>
</form></details>`;
}

function endpointTable(endpoints: readonly WebhookEndpoint[], zone: string): Html {
  if (endpoints.length === 0) return html`<p>No webhook endpoints yet.</p>`;
  return html`<table class="webhooks"><thead><tr><th scope="col">URL</th><th scope="col">Description</th><th scope="col">Events</th><th scope="col">Status</th><th scope="col">Created</th></tr></thead>
<tbody>${endpoints.map(
    (e) =>
      html`<tr><td><a href="/app/webhooks/${e.id}">${e.url}</a></td><td>${e.description ?? '—'}</td><td>${eventsText(
        e.events,
      )}</td><td>${statusCell(e, zone)}</td><td>${when(e.created_at, zone)}</td></tr>`,
  )}</tbody></table>`;
}

const DELIVERY_LABEL: Record<DeliveryStatus, string> = {
  pending: 'Pending',
  delivered: 'Delivered',
  failed: 'Failed',
};

/** The delivery log: one row per attempt (a message not tried yet gets one row saying when it will be). */
function deliveryTable(entries: readonly DeliveryLogEntry[], zone: string): Html {
  if (entries.length === 0) return html`<p>No messages yet.</p>`;
  return html`<table class="deliveries"><thead><tr><th scope="col">Time</th><th scope="col">Event</th><th scope="col">Message</th><th scope="col">Attempt</th><th scope="col">Status code</th><th scope="col">Duration</th><th scope="col">Error</th></tr></thead>
<tbody>${entries.map((m) => {
    const message = html`<mark class="status status-${m.status}">${DELIVERY_LABEL[m.status]}</mark> <small><code>${m.message_id}</code></small>`;
    if (m.attempt_log.length === 0)
      return html`<tr><td>${when(m.created_at, zone)}</td><td><code>${m.event}</code></td><td>${message}</td><td>—</td><td>—</td><td>—</td><td>${
        m.last_error ??
        (m.next_attempt_at ? `Not tried yet; next attempt ${when(m.next_attempt_at, zone)}` : '—')
      }</td></tr>`;
    return m.attempt_log.map(
      (a) =>
        html`<tr><td>${when(a.started_at, zone)}</td><td><code>${m.event}</code></td><td>${message}</td><td>${a.attempt}</td><td>${
          a.status_code ?? html`<small>no answer</small>`
        }</td><td>${a.latency_ms} ms</td><td>${a.error ?? (a.outcome === 'success' ? '—' : 'failed')}</td></tr>`,
    );
  })}</tbody></table>`;
}

export const webhookPages: WebPages = (app, deps) => {
  const outbound = outboundPolicy(deps.config.outboundAllow);

  /** The signed-in member, refused unless the role manages webhooks (before anything is looked up). */
  const manager = (request: FastifyRequest): { auth: AuthContext; zone: string } => {
    const { auth, signedIn } = signedInOf(request);
    authorize(auth, 'webhooks:manage');
    return { auth, zone: signedIn.tenant.timezone };
  };

  const audit = (auth: AuthContext, action: string, targetId: string) =>
    recordAudit(deps.database, {
      ...auditCaller(auth),
      action,
      targetId,
      success: true,
      occurredAt: deps.now(),
    });

  const renderList = async (
    request: FastifyRequest,
    reply: FastifyReply,
    extra: {
      created?: { secret: string; endpoint: WebhookEndpoint };
      error?: string;
      values?: FormValues;
    } = {},
  ) => {
    const { auth, zone } = manager(request);
    const endpoints = await listEndpoints(deps.database, auth.tenantId, deps.secrets);
    const csrf = reply.generateCsrf();
    return sendPage(
      request,
      reply,
      { title: 'Webhooks', current: '/app/webhooks', error: extra.error ?? null },
      html`${
        extra.created
          ? secretPanel(
              extra.created.secret,
              'Signing secret of the new endpoint',
              html`Receivers check each message's <code>webhook-signature</code> header with it (Standard Webhooks). <a href="/app/webhooks/${extra.created.endpoint.id}">The endpoint's details</a>.`,
            )
          : null
      }
<p>Ferry sends each event to every enabled endpoint that listens to it, signed with the endpoint's secret, and retries failed deliveries.</p>
${createForm(csrf, extra.values ?? BLANK, Boolean(extra.error) || endpoints.length === 0)}
${endpointTable(endpoints, zone)}`,
    );
  };

  const renderEndpoint = async (
    request: FastifyRequest<{ Params: { id: string }; Querystring: { status?: string; limit?: string } }>,
    reply: FastifyReply,
    extra: { rotated?: { secret: string; endpoint: WebhookEndpoint } } = {},
  ) => {
    const { auth, zone } = manager(request);
    const endpoint =
      extra.rotated?.endpoint ??
      (await getEndpoint(deps.database, auth.tenantId, request.params.id, deps.secrets));
    const query = request.query ?? {};
    const status = DELIVERY_STATUSES.find((s) => s === query.status);
    const limit = Number(query.limit) === DELIVERIES_MAX ? DELIVERIES_MAX : DELIVERIES_DEFAULT;
    const deliveries = await listDeliveries(deps.database, auth.tenantId, endpoint.id, {
      limit,
      ...(status ? { status } : {}),
    });
    const csrf = reply.generateCsrf();
    const action = (path: string, label: string, confirm: string | null = null) =>
      html`<form method="post" action="/app/webhooks/${endpoint.id}/${path}" class="inline"${
        confirm ? html` hx-confirm="${confirm}"` : null
      }>${csrfField(csrf)}<button type="submit" class="secondary">${label}</button></form>`;
    const more = new URLSearchParams([
      ...(status ? [['status', status]] : []),
      ['limit', String(DELIVERIES_MAX)],
    ]);
    return sendPage(
      request,
      reply,
      { title: endpoint.description ?? endpoint.url, current: '/app/webhooks' },
      html`${
        extra.rotated
          ? secretPanel(
              extra.rotated.secret,
              'New signing secret',
              html`The previous secret keeps working for the overlap period: until ${when(
                extra.rotated.endpoint.previous_secret_expires_at,
                zone,
              )} (${zone}) every message carries a signature with each secret, so receivers can switch without losing messages.`,
            )
          : null
      }
<div class="actions">
${action('rotate', 'Rotate secret', 'Make a new signing secret? The current one keeps working for 24 hours.')}
${endpoint.status === 'disabled' ? action('enable', 'Enable') : null}
${action('delete', 'Delete', `Delete the endpoint ${endpoint.url}? Pending messages are dropped and its delivery log is deleted.`)}
</div>
<dl class="details">
<dt>URL</dt><dd><code>${endpoint.url}</code></dd>
<dt>Description</dt><dd>${endpoint.description ?? '—'}</dd>
<dt>Events</dt><dd>${eventsText(endpoint.events)}</dd>
<dt>Status</dt><dd>${statusCell(endpoint, zone)}</dd>
<dt>Signing secret</dt><dd><code>${endpoint.secret_hint}</code>${
        endpoint.previous_secret_expires_at
          ? html` <small>(the previous secret also signs until ${when(endpoint.previous_secret_expires_at, zone)})</small>`
          : null
      }</dd>
<dt>Created</dt><dd>${when(endpoint.created_at, zone)}</dd>
<dt>Changed</dt><dd>${when(endpoint.updated_at, zone)}</dd>
</dl>
<section aria-labelledby="deliveries"><h2 id="deliveries">Delivery log</h2>
<form method="get" action="/app/webhooks/${endpoint.id}" class="filters" role="search">
<label>Messages <select name="status"><option value="">All</option>${DELIVERY_STATUSES.map(
        (s) =>
          html`<option value="${s}"${status === s ? html` selected` : null}>${DELIVERY_LABEL[s]}</option>`,
      )}</select></label>
<button type="submit" class="secondary">Show</button>
</form>
<p><small>The ${limit} most recent messages, newest first, with every attempt (times in ${zone}).</small></p>
${deliveryTable(deliveries, zone)}
${
  deliveries.length >= limit && limit < DELIVERIES_MAX
    ? html`<nav aria-label="Delivery pages" class="pager"><a href="/app/webhooks/${endpoint.id}?${more.toString()}">Show the ${DELIVERIES_MAX} most recent</a></nav>`
    : null
}</section>
<p><a href="/app/webhooks">All webhook endpoints</a></p>`,
    );
  };

  app.get('/app/webhooks', async (request, reply) => renderList(request, reply));

  app.post('/app/webhooks', async (request, reply) => {
    const { auth } = manager(request);
    const chosen = fields(request.body, 'events');
    const values: FormValues = {
      url: field(request.body, 'url'),
      description: field(request.body, 'description'),
      events: chosen,
    };
    try {
      const created = await createEndpoint(
        deps.database,
        auth.tenantId,
        {
          url: values.url,
          // "All events" stands for itself; an empty choice is refused by the service.
          events: chosen.includes(ALL_EVENTS) ? [ALL_EVENTS] : chosen,
          description: values.description || null,
        },
        { secrets: deps.secrets, outbound, now: deps.now },
      );
      await audit(auth, 'webhook.created', created.endpoint.id);
      reply.code(201);
      return renderList(request, reply, { created });
    } catch (err) {
      if (!(err instanceof FerryError && FORM_ERRORS.has(err.code))) throw err;
      reply.code(errorDefinition(err.code).status);
      return renderList(request, reply, { error: err.message, values });
    }
  });

  app.get<{ Params: { id: string }; Querystring: { status?: string; limit?: string } }>(
    '/app/webhooks/:id',
    async (request, reply) => renderEndpoint(request, reply),
  );

  app.post<{ Params: { id: string }; Querystring: { status?: string; limit?: string } }>(
    '/app/webhooks/:id/rotate',
    async (request, reply) => {
      const { auth } = manager(request);
      const rotated = await rotateSecret(deps.database, auth.tenantId, request.params.id, {
        secrets: deps.secrets,
        now: deps.now,
      });
      await audit(auth, 'webhook.secret_rotated', rotated.endpoint.id);
      return renderEndpoint(request, reply, { rotated });
    },
  );

  app.post<{ Params: { id: string } }>('/app/webhooks/:id/enable', async (request, reply) => {
    const { auth } = manager(request);
    const endpoint = await enableEndpoint(deps.database, auth.tenantId, request.params.id, {
      secrets: deps.secrets,
      now: deps.now,
    });
    await audit(auth, 'webhook.enabled', endpoint.id);
    return seeOther(
      reply,
      `/app/webhooks/${endpoint.id}`,
      'The endpoint is enabled. Messages that failed while it was disabled are not sent again.',
    );
  });

  app.post<{ Params: { id: string } }>('/app/webhooks/:id/delete', async (request, reply) => {
    const { auth } = manager(request);
    const endpoint = await getEndpoint(deps.database, auth.tenantId, request.params.id, deps.secrets);
    await deleteEndpoint(deps.database, auth.tenantId, endpoint.id);
    await audit(auth, 'webhook.deleted', endpoint.id);
    return seeOther(reply, '/app/webhooks', `The endpoint ${endpoint.url} is deleted.`);
  });
};
