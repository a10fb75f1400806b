import { isAllowed, type Action } from '../auth/policy.ts';
import type { AuthContext } from '../auth/context.ts';
import { type Fragment, type Html, html } from './html.ts';

/** The page shell: head, navigation (only what the role may do), the signed-in member, notices. */

export interface NavItem {
  readonly href: string;
  readonly label: string;
  /** The action the page needs; a role without it does not see the item. */
  readonly action: Action | null;
}

export const NAV: readonly NavItem[] = [
  { href: '/app/export', label: 'Export', action: 'exports:create' },
  { href: '/app/exports', label: 'Exports', action: 'exports:read' },
  { href: '/app/schedules', label: 'Schedules', action: 'schedules:read' },
  { href: '/app/webhooks', label: 'Webhooks', action: 'webhooks:manage' },
  { href: '/app/usage', label: 'Usage', action: 'usage:read' },
  { href: '/app/keys', label: 'API keys', action: 'keys:manage' },
  { href: '/app/bi', label: 'BI tools', action: 'exports:create' },
  { href: '/app/audit', label: 'Audit log', action: 'audit:read' },
  { href: '/app/privacy', label: 'Privacy', action: 'dsar:manage' },
  { href: '/app/retention', label: 'Retention', action: 'retention:manage' },
  { href: '/app/deletions', label: 'Delete data', action: 'data:delete' },
  { href: '/app/backups', label: 'Backups', action: 'backups:manage' },
  { href: '/app/imports', label: 'Imports', action: 'imports:manage' },
  { href: '/app/compliance', label: 'Compliance', action: 'compliance:read' },
];

/**
 * htmx settings: no injected style element (the CSP allows no inline styles), no eval, and
 * error answers are swapped in too (they are pages that say what went wrong).
 */
const HTMX_CONFIG = JSON.stringify({
  includeIndicatorStyles: false,
  allowEval: false,
  allowScriptTags: false,
  historyCacheSize: 0,
  responseHandling: [
    { code: '204', swap: false },
    { code: '[23]..', swap: true },
    { code: '[45]..', swap: true, error: true },
  ],
});

export interface Shell {
  readonly title: string;
  readonly csrf: string;
  readonly notice?: string | null | undefined;
  readonly error?: string | null | undefined;
}

function head(title: string, extra: Fragment = null): Html {
  return html`<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content="${HTMX_CONFIG}">
<title>${title} · Ferry</title>
<link rel="stylesheet" href="/assets/pico/pico.min.css">
<link rel="stylesheet" href="/assets/ferry/ferry.css">
<link rel="icon" href="/assets/ferry/favicon.svg" type="image/svg+xml">
${extra}
<script src="/assets/htmx/htmx.min.js" defer></script>
<script src="/assets/htmx-sse/sse.min.js" defer></script>
<script src="/assets/ferry/ferry.js" defer></script>`;
}

function notices(shell: Pick<Shell, 'notice' | 'error'>): Html {
  return html`<div id="flash" aria-live="polite">${
    shell.notice ? html`<p class="notice" role="status">${shell.notice}</p>` : null
  }${shell.error ? html`<p class="error" role="alert">${shell.error}</p>` : null}</div>`;
}

/** An organisation member's tenants, for the header's switcher (docs/organisations.md). */
export interface SwitcherTenants {
  readonly tenants: readonly { readonly id: string; readonly name: string; readonly role: string | null }[];
}

/** The page of an organisation, in the navigation of its members. */
export const ORGANISATION_NAV: NavItem = { href: '/app/organisation', label: 'Organisation', action: null };

/**
 * The workspace in the header: its name, or for an organisation member a form that switches
 * the session to another tenant of the organisation (a plain form: it works without script).
 */
function workspace(
  tenant: { readonly id?: string; readonly name: string },
  organisation: SwitcherTenants | undefined,
  csrf: string,
): Html {
  const choices = organisation?.tenants.filter((t) => t.role !== null) ?? [];
  if (choices.length < 2) return html`<li><span class="tenant">${tenant.name}</span></li>`;
  return html`<li><form method="post" action="/app/organisation/switch" class="inline tenant-switch">${csrfField(csrf)}<label for="tenant-switch" class="visually-hidden">Workspace</label><select id="tenant-switch" name="tenant_id">${choices.map(
    (t) =>
      html`<option value="${t.id}"${t.id === tenant.id ? html` selected` : null}>${t.name} (${t.role})</option>`,
  )}</select><button type="submit" class="secondary outline">Switch</button></form></li>`;
}

/** A page of the signed-in dashboard. */
export function appPage(
  shell: Shell & {
    readonly auth: AuthContext;
    readonly member: { readonly name: string; readonly email: string };
    readonly tenant: { readonly id?: string; readonly name: string };
    readonly current: string;
    readonly head?: Fragment;
    /** The member's organisation, when they belong to one. */
    readonly organisation?: SwitcherTenants | undefined;
  },
  body: Fragment,
): Html {
  const items = [
    ...NAV.filter((item) => item.action === null || isAllowed(shell.auth, item.action)),
    ...(shell.organisation ? [ORGANISATION_NAV] : []),
  ];
  return html`<!doctype html>
<html lang="en">
<head>${head(shell.title, shell.head)}</head>
<body hx-boost="true" hx-headers="${JSON.stringify({ 'x-csrf-token': shell.csrf })}">
<a class="skip" href="#main">Skip to content</a>
<header class="container">
<nav aria-label="Main">
<ul><li><a href="/app" class="brand"><strong>Ferry</strong></a></li>${workspace(shell.tenant, shell.organisation, shell.csrf)}</ul>
<ul class="menu">${items.map(
    (item) =>
      html`<li><a href="${item.href}"${
        shell.current === item.href ? html` aria-current="page"` : null
      }>${item.label}</a></li>`,
  )}</ul>
<ul><li><a href="/app/account" title="Your account">${shell.member.name} <small>(${shell.auth.role})</small></a></li>
<li><form method="post" action="/signout" class="inline"><input type="hidden" name="_csrf" value="${shell.csrf}"><button type="submit" class="secondary outline">Sign out</button></form></li></ul>
</nav>
</header>
<main id="main" class="container">
<h1>${shell.title}</h1>
${notices(shell)}
${body}
</main>
</body>
</html>`;
}

/** A page without the signed-in navigation: sign-in, the privacy center, errors. */
export function plainPage(
  shell: Shell & { readonly heading?: Fragment; readonly head?: Fragment; readonly bodyClass?: string },
  body: Fragment,
): Html {
  return html`<!doctype html>
<html lang="en">
<head>${head(shell.title, shell.head)}</head>
<body class="${shell.bodyClass ?? 'plain'}" hx-boost="true">
<a class="skip" href="#main">Skip to content</a>
<main id="main" class="container narrow">
${shell.heading ?? html`<h1>${shell.title}</h1>`}
${notices(shell)}
${body}
</main>
</body>
</html>`;
}

/** The hidden CSRF field every form carries. */
export function csrfField(token: string): Html {
  return html`<input type="hidden" name="_csrf" value="${token}">`;
}

/** A date-time as text in a time zone, e.g. `2026-12-05 14:03 Europe/Berlin`. */
export function when(value: Date | string | null | undefined, timeZone: string): string {
  if (!value) return '—';
  const d = typeof value === 'string' ? new Date(value) : value;
  if (Number.isNaN(d.getTime())) return '—';
  const parts = new Intl.DateTimeFormat('en-CA', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(d);
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '';
  return `${get('year')}-${get('month')}-${get('day')} ${get('hour')}:${get('minute')}`;
}

/** Bytes as text: `1.4 MB`. */
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export const count = (n: number | null | undefined) =>
  n === null || n === undefined ? '—' : n.toLocaleString('en-US');
