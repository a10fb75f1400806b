import { maskSecret } from '../lib/secret-box.ts';
import { bool, json, num, plainArray, text, textArray, textOrNull, ts, tsOrNull } from './csv.ts';
import { PHRASES } from './phrases.ts';
import { COUNTRIES, ipAddress, PLAN_PRICE, PLAN_SEATS, USER_AGENTS } from './pools.ts';
import { Rng } from './random.ts';
import { customerAt, tenantLanguages } from './tenant.ts';
import { DAY, HOUR, MINUTE, S, slice, type TenantContext } from './tenant-context.ts';

/**
 * One table's columns and a row producer per tenant. Large tables split their
 * rows into `parts` disjoint partitions so several COPY streams can load them.
 */
export interface TableRows {
  table: string;
  columns: readonly string[];
  rows(ctx: TenantContext, part?: number, parts?: number): Iterable<string>;
}

export const TENANT_TABLE: TableRows = {
  table: 'tenants',
  columns: ['id', 'name', 'slug', 'plan', 'timezone', 'home_country', 'created_at', 'updated_at'],
  *rows(ctx) {
    const updated = ctx.createdAt + ((ctx.seed % 90) + 1) * DAY;
    yield `${ctx.id},${text(ctx.name)},${ctx.slug},${ctx.plan},${ctx.profile.timezone},${ctx.profile.country},` +
      `${ts(ctx.createdAt)},${ts(Math.min(updated, ctx.window.until))}\n`;
  },
};

export const SITE_TABLE: TableRows = {
  table: 'sites',
  columns: ['id', 'tenant_id', 'url', 'name', 'created_at'],
  *rows(ctx) {
    for (const s of ctx.sites) yield `${s.id},${ctx.id},${text(s.url)},${text(s.name)},${ts(s.createdAt)}\n`;
  },
};

/** Team members need their password hashes first (scrypt is slow, so they are computed up front). */
export function teamTable(hashes: Map<string, string>): TableRows {
  return {
    table: 'team_members',
    columns: ['id', 'tenant_id', 'name', 'email', 'role', 'password_hash', 'created_at', 'last_login_at'],
    *rows(ctx) {
      for (const m of ctx.team) {
        yield `${m.id},${ctx.id},${text(m.name)},${text(m.email)},${m.role},${text(hashes.get(m.id)!)},` +
          `${ts(m.createdAt)},${tsOrNull(m.logins.at(-1))}\n`;
      }
    },
  };
}

export const CUSTOMER_TABLE: TableRows = {
  table: 'customers',
  columns: ['id', 'tenant_id', 'email', 'name', 'phone', 'country', 'segment', 'created_at', 'updated_at'],
  *rows(ctx, part = 0, parts = 1) {
    const [from, to] = slice(ctx.customerCount, part, parts);
    for (let i = from; i < to; i++) {
      const c = customerAt(ctx, i);
      yield `${c.id},${ctx.id},${textOrNull(c.email)},${textOrNull(c.name)},${textOrNull(c.phone)},${c.country},` +
        `${c.segment},${ts(c.createdAt)},${ts(c.updatedAt)}\n`;
    }
  },
};

const CONSENT_SOURCES = ['widget_banner', 'signup_form', 'checkout', 'api'];
const PURPOSES = [
  ['chat_transcripts', 1, 1],
  ['analytics', 0.85, 0.75],
  ['marketing', 0.5, 0.4],
  ['ai_training', 0.35, 0.3],
] as const;

export const CONSENT_TABLE: TableRows = {
  table: 'consent_records',
  columns: ['id', 'tenant_id', 'customer_id', 'purpose', 'granted', 'source', 'ip_address', 'recorded_at'],
  *rows(ctx, part = 0, parts = 1) {
    const [from, to] = slice(ctx.customerCount, part, parts);
    for (let i = from; i < to; i++) {
      const c = customerAt(ctx, i);
      const rng = Rng.of(ctx.seed, i, S.consent);
      const source = rng.pick(CONSENT_SOURCES);
      const ip = ipAddress(rng);
      for (const [purpose, asked, granted] of PURPOSES) {
        if (!rng.chance(asked)) continue;
        const yes = rng.chance(granted);
        yield `${rng.uuid()},${ctx.id},${c.id},${purpose},${bool(yes)},${source},${ip},${ts(c.createdAt)}\n`;
        // Some visitors withdraw consent later.
        if (yes && purpose !== 'chat_transcripts' && rng.chance(0.05)) {
          const later = c.createdAt + rng.int(Math.max(1, ctx.window.until - c.createdAt));
          yield `${rng.uuid()},${ctx.id},${c.id},${purpose},f,privacy_center,${ipAddress(rng)},${ts(later)}\n`;
        }
      }
    }
  },
};

export const DOCUMENT_TABLE: TableRows = {
  table: 'documents',
  columns: [
    'id',
    'tenant_id',
    'title',
    'url',
    'content',
    'content_type',
    'category',
    'tags',
    'language',
    'created_at',
    'updated_at',
  ],
  *rows(ctx) {
    for (const d of ctx.documents) {
      yield `${d.id},${ctx.id},${text(d.title)},${text(d.url)},${text(d.content)},${d.contentType},${d.category},` +
        `${textArray(d.tags)},${d.language},${ts(d.createdAt)},${ts(d.updatedAt)}\n`;
    }
  },
};

/** Splits Markdown into chunks of whole paragraphs of at least ~240 characters. */
export function chunkContent(content: string): string[] {
  const chunks: string[] = [];
  let current = '';
  for (const paragraph of content.split('\n\n')) {
    current = current ? `${current}\n\n${paragraph}` : paragraph;
    if (current.length >= 240) {
      chunks.push(current);
      current = '';
    }
  }
  if (current) chunks.push(current);
  return chunks;
}

export const CHUNK_TABLE: TableRows = {
  table: 'document_chunks',
  columns: [
    'id',
    'tenant_id',
    'document_id',
    'chunk_index',
    'content',
    'embedding',
    'retrieval_count',
    'relevance_avg',
    'relevance_max',
    'relevance_min',
  ],
  *rows(ctx) {
    for (let di = 0; di < ctx.documents.length; di++) {
      const d = ctx.documents[di]!;
      const chunks = chunkContent(d.content);
      for (let k = 0; k < chunks.length; k++) {
        const rng = Rng.of(ctx.seed, di, k, S.chunk);
        const v = Array.from({ length: 16 }, () => rng.next() * 2 - 1);
        const norm = Math.hypot(...v);
        const embedding = v.map((x) => (x / norm).toFixed(6));
        const count = rng.chance(0.15) ? 0 : rng.range(1, 800);
        const min = count ? rng.float(0.3, 0.7) : null;
        const max = min !== null ? rng.float(Math.max(min, 0.75), 0.99) : null;
        const avg = min !== null && max !== null ? min + (max - min) * rng.float(0.4, 0.8) : null;
        const r3 = (x: number | null) => (x === null ? null : Math.round(x * 1000) / 1000);
        yield `${rng.uuid()},${ctx.id},${d.id},${k},${text(chunks[k]!)},${plainArray(embedding)},${count},` +
          `${num(r3(avg))},${num(r3(max))},${num(r3(min))}\n`;
      }
    }
  },
};

export const SETTING_TABLE: TableRows = {
  table: 'settings',
  columns: ['tenant_id', 'key', 'value', 'updated_at'],
  *rows(ctx) {
    const rng = Rng.of(ctx.seed, 0, S.billing);
    const home = COUNTRIES[ctx.profile.country]!.language;
    const settings: [string, unknown][] = [
      ['widget.greeting', PHRASES[home].widgetGreeting],
      ['widget.color', `#${rng.hex(3)}`],
      ['widget.position', rng.pick(['bottom-right', 'bottom-left'])],
      ['widget.languages', tenantLanguages(ctx)],
      ['ai.model', ctx.aiModel],
      ['ai.temperature', rng.pick([0.2, 0.3, 0.5])],
      ['ai.handoff_threshold', rng.pick([0.45, 0.5, 0.6])],
      ['ai.answer_sources', true],
      ['privacy.retention_days', rng.pick([365, 730, 1095])],
      ['privacy.ip_anonymization', rng.chance(0.5)],
      ['notifications.email_digest', rng.pick(['daily', 'weekly', 'off'])],
      ['business_hours', { timezone: ctx.profile.timezone, days: 'mon-fri', from: '09:00', to: '18:00' }],
    ];
    for (const [key, value] of settings) {
      const at = ctx.window.since + rng.int(ctx.window.until - ctx.window.since);
      yield `${ctx.id},${key},${json(value)},${ts(at)}\n`;
    }
  },
};

const INTEGRATIONS = [
  ['zendesk', 'Zendesk', 'api_token', 'zd_'],
  ['hubspot', 'HubSpot CRM', 'access_token', 'pat-eu1-'],
  ['shopify', 'Shopify store', 'admin_api_token', 'shpat_'],
  ['slack', 'Slack alerts', 'bot_token', 'xoxb-'],
  ['salesforce', 'Salesforce', 'refresh_token', '5Aep861'],
  ['stripe', 'Stripe', 'secret_key', 'sk_live_'],
] as const;

/** Integrations with credentials sealed by `seal`; the hint shows only the last characters. */
export function integrationTable(seal: (plaintext: string) => string): TableRows {
  return {
    table: 'integrations',
    columns: [
      'id',
      'tenant_id',
      'type',
      'name',
      'config',
      'credentials_encrypted',
      'credentials_hint',
      'enabled',
      'created_at',
      'updated_at',
    ],
    *rows(ctx) {
      const rng = Rng.of(ctx.seed, 1, S.billing);
      for (const [type, name, field, prefix] of rng.sample(INTEGRATIONS, rng.range(2, 4))) {
        const token = `${prefix}${rng.hex(16)}`;
        const config = {
          account: ctx.slug,
          region: rng.pick(['eu', 'us']),
          sync: rng.pick(['hourly', 'realtime']),
        };
        const created = ctx.createdAt + rng.int(Math.max(1, ctx.window.until - ctx.createdAt));
        const sealed = seal(JSON.stringify({ [field]: token }));
        yield `${rng.uuid()},${ctx.id},${type},${text(name)},${json(config)},${sealed},${text(maskSecret(token))},` +
          `${bool(rng.chance(0.85))},${ts(created)},${ts(created + rng.int(Math.max(1, ctx.window.until - created)))}\n`;
      }
    },
  };
}

function subscriptionOf(ctx: TenantContext) {
  const rng = Rng.of(ctx.seed, 2, S.billing);
  const price = ctx.profile.currency === 'JPY' ? PLAN_PRICE[ctx.plan] * 150 : PLAN_PRICE[ctx.plan];
  return {
    id: rng.uuid(),
    seats: Math.max(PLAN_SEATS[ctx.plan], ctx.team.length),
    price,
    status: rng.chance(0.9) ? 'active' : 'past_due',
  };
}

export const SUBSCRIPTION_TABLE: TableRows = {
  table: 'subscriptions',
  columns: [
    'id',
    'tenant_id',
    'plan',
    'status',
    'seats',
    'amount',
    'currency',
    'billing_interval',
    'current_period_start',
    'current_period_end',
    'created_at',
  ],
  *rows(ctx) {
    const sub = subscriptionOf(ctx);
    const periods = monthStarts(ctx.createdAt, ctx.window.until);
    const current = periods.at(-1)!;
    yield `${sub.id},${ctx.id},${ctx.plan},${sub.status},${sub.seats},${sub.price.toFixed(2)},${ctx.profile.currency},month,` +
      `${ts(current)},${ts(addMonth(current))},${ts(ctx.createdAt)}\n`;
  },
};

function addMonth(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(
    d.getUTCFullYear(),
    d.getUTCMonth() + 1,
    d.getUTCDate(),
    d.getUTCHours(),
    d.getUTCMinutes(),
  );
}

/** Billing period starts, monthly from `from` while before `until`. */
function monthStarts(from: number, until: number): number[] {
  const out: number[] = [];
  for (let t = from; t < until; t = addMonth(t)) out.push(t);
  return out.length ? out : [from];
}

const TAX_RATE: Record<string, number> = {
  DE: 0.19,
  FR: 0.2,
  ES: 0.21,
  GB: 0.2,
  JP: 0.1,
  AU: 0.1,
  BR: 0.0,
  US: 0,
};

export const INVOICE_TABLE: TableRows = {
  table: 'invoices',
  columns: [
    'id',
    'tenant_id',
    'subscription_id',
    'number',
    'amount',
    'tax',
    'currency',
    'status',
    'period_start',
    'period_end',
    'issued_at',
    'due_at',
    'paid_at',
  ],
  *rows(ctx) {
    const sub = subscriptionOf(ctx);
    const rng = Rng.of(ctx.seed, 3, S.billing);
    const periods = monthStarts(ctx.createdAt, ctx.window.until);
    const rate = TAX_RATE[ctx.profile.country] ?? 0;
    for (let k = 0; k < periods.length; k++) {
      const start = periods[k]!;
      const end = addMonth(start);
      const latest = k === periods.length - 1;
      const status = latest ? 'open' : rng.chance(0.02) ? 'void' : 'paid';
      const paid = status === 'paid' ? start + rng.range(1, 9) * DAY + rng.int(DAY) : null;
      const number = `INV-${ctx.slug.toUpperCase().slice(0, 6)}-${new Date(start).getUTCFullYear()}-${String(k + 1).padStart(4, '0')}`;
      yield `${rng.uuid()},${ctx.id},${sub.id},${number},${sub.price.toFixed(2)},${(sub.price * rate).toFixed(2)},` +
        `${ctx.profile.currency},${status},${ts(start)},${ts(end)},${ts(start)},${ts(start + 14 * DAY)},${tsOrNull(paid)}\n`;
    }
  },
};

const ACTIONS = [
  ['conversation.exported', 'export', 8],
  ['data.exported', 'export', 4],
  ['setting.updated', 'setting', 6],
  ['integration.updated', 'integration', 2],
  ['member.invited', 'team_member', 1],
  ['api_key.created', 'api_key', 1],
  ['document.updated', 'document', 5],
] as const;

export const ACTIVITY_TABLE: TableRows = {
  table: 'activity_logs',
  columns: [
    'id',
    'tenant_id',
    'actor_type',
    'actor_id',
    'action',
    'target_type',
    'target_id',
    'ip_address',
    'user_agent',
    'metadata',
    'occurred_at',
  ],
  *rows(ctx) {
    const rng = Rng.of(ctx.seed, 0, S.activity);
    for (const m of ctx.team) {
      const ip = ipAddress(rng);
      const ua = text(rng.pick(USER_AGENTS));
      for (const at of m.logins) {
        yield `${rng.uuid()},${ctx.id},team_member,${m.id},auth.login,team_member,${m.id},${ip},${ua},` +
          `${json({ method: rng.chance(0.2) ? 'sso' : 'password' })},${ts(at)}\n`;
        if (m.role === 'agent' || !rng.chance(0.35)) continue;
        const [action, target, weight] = rng.pick(ACTIONS);
        if (!rng.chance(weight / 8)) continue;
        const when = at + rng.range(1, 120) * MINUTE;
        if (when >= ctx.window.until) continue;
        const metadata =
          target === 'export'
            ? { format: rng.pick(['csv', 'json', 'parquet']), rows: rng.range(100, 50_000) }
            : target === 'setting'
              ? { key: rng.pick(['widget.greeting', 'ai.model', 'privacy.retention_days']), changed: true }
              : target === 'document'
                ? { title: rng.pick(ctx.documents).title }
                : {};
        const targetId = target === 'document' ? rng.pick(ctx.documents).id : rng.uuid();
        yield `${rng.uuid()},${ctx.id},team_member,${m.id},${action},${target},${targetId},${ip},${ua},` +
          `${json(metadata)},${ts(when)}\n`;
      }
    }
    for (let day = ctx.window.since + 2 * HOUR; day < ctx.window.until; day += 7 * DAY) {
      yield `${rng.uuid()},${ctx.id},system,,retention.sweep,,,,,${json({ deleted: rng.range(0, 40) })},${ts(day)}\n`;
    }
  },
};
