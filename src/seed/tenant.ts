import { base, de, en, en_AU, es, Faker, fr, ja, pt_BR } from '@faker-js/faker';
import { scrypt } from 'node:crypto';
import { promisify } from 'node:util';
import { buildDocuments } from './documents.ts';
import {
  COUNTRIES,
  type CountryProfile,
  EMAIL_DOMAINS,
  type Language,
  LANGUAGES,
  PLAN_SEATS,
  PLANS,
  type Plan,
  personName,
  phoneNumber,
  SEGMENTS,
  SITE_KINDS,
  TENANT_PROFILES,
} from './pools.ts';
import { mix, Rng, Weighted } from './random.ts';
import {
  type Customer,
  DAY,
  HOUR,
  type Member,
  S,
  type SeedWindow,
  type Site,
  type TenantContext,
} from './tenant-context.ts';

const FAKER_LOCALES = { de, en, en_AU, es, fr, ja, pt_BR } as const;

const PRODUCTS = [
  'Aurora Lamp',
  'Trail Runner 2',
  'Nimbus Headphones',
  'Flux Kettle',
  'Orbit Backpack',
  'Pixel Frame',
  'Terra Mug',
  'Zephyr Fan',
  'Atlas Desk',
  'Nova Watch',
  'Echo Speaker',
  'Drift Sneakers',
];

const AI_MODELS = ['gpt-4o-mini', 'gpt-4.1', 'claude-sonnet-4', 'mistral-large', 'llama-3.1-70b'];
const CUSTOM_FIELDS = [
  'order_value',
  'plan_interest',
  'newsletter',
  'cart_items',
  'store_location',
  'loyalty_tier',
];

const TEAM_SHAPE: Record<Plan, readonly [admin: number, manager: number, analyst: number, agent: number]> = {
  starter: [1, 0, 1, 2],
  pro: [1, 1, 1, 5],
  agency: [1, 2, 2, 9],
  enterprise: [2, 3, 3, 14],
};

const ROMAJI = ['sakura', 'hoshino', 'midori', 'kaze', 'yamato', 'hikari', 'tsubasa', 'asahi'];

export function slugify(value: string, fallback = 'tenant'): string {
  const slug = value
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 24)
    .replace(/-+$/, '');
  return slug || fallback;
}

/** The language a visitor from `country` writes in. */
export function visitorLanguage(rng: Rng, country: CountryProfile): Language {
  const u = rng.next();
  if (u < 0.8) return country.language;
  if (u < 0.95) return 'en';
  return rng.pick(LANGUAGES);
}

/** Builds one tenant's context: tenant, sites, team, documents and sizes. */
export function buildTenant(
  seed: number,
  ordinal: number,
  conversations: number,
  window: SeedWindow,
): TenantContext {
  const tseed = mix(seed, ordinal, S.tenant);
  const rng = new Rng(tseed);
  const profile = TENANT_PROFILES[(ordinal - 1) % TENANT_PROFILES.length]!;
  const plan = PLANS[(ordinal - 1) % PLANS.length]!;
  const faker = new Faker({ locale: [FAKER_LOCALES[profile.fakerLocale], en, base], seed: tseed });
  const name = faker.company.name();
  // Company names in other scripts (Japanese) get a romanised short name.
  const short = slugify(name.split(/[ ,]/)[0] ?? name, ROMAJI[tseed % ROMAJI.length]!);
  const slug = `${short}-${seed}-${ordinal}`;
  const id = rng.uuid();
  const createdAt = window.since - rng.range(30, 540) * DAY - rng.int(DAY);
  const domain = `${short}.example`;

  const siteCount = rng.range(1, 3);
  const sites: Site[] = SITE_KINDS.slice(0, siteCount).map(([sub, label], i) => ({
    id: rng.uuid(),
    url: `https://${sub}.${domain}`,
    name: `${name} ${label}`,
    createdAt: createdAt + i * rng.range(1, 60) * DAY,
  }));

  const homeCountry = COUNTRIES[profile.country]!;
  const team: Member[] = [];
  const usedEmails = new Set<string>();
  const shape = TEAM_SHAPE[plan];
  (['admin', 'manager', 'analyst', 'agent'] as const).forEach((role, r) => {
    for (let k = 0; k < shape[r]!; k++) {
      const person = personName(rng, homeCountry.names);
      let email = `${person.emailFirst}.${person.emailLast}@${domain}`;
      for (let n = 2; usedEmails.has(email); n++)
        email = `${person.emailFirst}.${person.emailLast}${n}@${domain}`;
      usedEmails.add(email);
      // Analysts may join during the window; people who answer chats were there before it.
      const joinedLate = role === 'analyst' && rng.chance(0.4);
      const memberCreated = joinedLate
        ? window.since + rng.int(Math.max(1, window.until - window.since) / 2)
        : createdAt + rng.int(Math.max(1, window.since - createdAt));
      team.push({
        id: rng.uuid(),
        name: person.display,
        first: person.first,
        email,
        role,
        createdAt: memberCreated,
        password: rng.hex(12),
        salt: rng.hex(16),
        logins: [],
      });
    }
  });
  const agents = team.filter((m) => m.role === 'agent' || m.role === 'manager');

  const ctx: TenantContext = {
    ordinal,
    seed: tseed,
    id,
    name,
    slug,
    plan,
    profile,
    createdAt,
    domain,
    sites,
    team,
    agents: agents.length ? agents : team,
    documents: [],
    sources: new Map(),
    customerCount: Math.max(1, Math.round(conversations * 0.4)),
    conversations,
    products: rng.sample(PRODUCTS, 6),
    aiModel: rng.pick(AI_MODELS),
    customFields: rng.sample(CUSTOM_FIELDS, 3),
    window,
  };
  buildDocuments(ctx);
  team.forEach((member, i) => {
    member.logins = loginTimes(ctx, member, i);
  });
  return ctx;
}

/** Login times of a member inside the window, oldest first. */
function loginTimes(ctx: TenantContext, member: Member, index: number): number[] {
  const rng = Rng.of(ctx.seed, index, S.team);
  const perDay = member.role === 'agent' ? 0.7 : member.role === 'analyst' ? 0.25 : 0.4;
  const out: number[] = [];
  const first = Math.max(ctx.window.since, member.createdAt);
  for (let day = Math.floor(first / DAY) * DAY; day < ctx.window.until; day += DAY) {
    if (!rng.chance(perDay)) continue;
    const at = day + (8 - ctx.profile.utcOffset) * HOUR + rng.int(9 * HOUR);
    if (at >= first && at < ctx.window.until) out.push(at);
  }
  return out;
}

const scryptAsync = promisify(scrypt) as (
  password: string,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number },
) => Promise<Buffer>;

/** `scrypt$N$r$p$salt$hash` (base64), salt drawn from the seed so the hash is reproducible. */
export async function hashPassword(password: string, saltHex: string): Promise<string> {
  const salt = Buffer.from(saltHex, 'hex');
  const hash = await scryptAsync(password, salt, 32, { N: 16384, r: 8, p: 1 });
  return `scrypt$16384$8$1$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** Customer `index` of a tenant, a pure function of (tenant, index): conversations recompute it. */
export function customerAt(ctx: TenantContext, index: number): Customer {
  const rng = Rng.of(ctx.seed, index, S.customer);
  const country = COUNTRIES[ctx.profile.visitors.draw(rng)]!;
  const person = personName(rng, country.names);
  const span = ctx.window.until - ctx.window.since;
  // Customers are created in index order across the window, so a conversation at time t
  // can pick any customer below index (t - since) / span * count.
  const createdAt = ctx.window.since + Math.floor(((index + rng.next()) / ctx.customerCount) * span);
  const hasEmail = rng.chance(0.9);
  const format = rng.int(3);
  const local =
    format === 0
      ? `${person.emailFirst}.${person.emailLast}${index}`
      : format === 1
        ? `${person.emailFirst[0]}${person.emailLast}${index}`
        : `${person.emailFirst}${index}`;
  return {
    id: rng.uuid(),
    email: hasEmail ? `${local}@${rng.pick(EMAIL_DOMAINS)}` : null,
    name: rng.chance(0.85) ? person.display : null,
    phone: rng.chance(0.5) ? phoneNumber(rng, country) : null,
    country: country.country,
    segment: SEGMENTS.draw(rng),
    createdAt,
    updatedAt: createdAt + rng.int(Math.max(1, ctx.window.until - createdAt)),
  };
}

/** Tenant-level language mix, for settings. */
export function tenantLanguages(ctx: TenantContext): Language[] {
  const set = new Set<Language>();
  for (const code of ctx.profile.visitors.items) set.add(COUNTRIES[code]!.language);
  return [...set];
}

export const ESCALATION_REASONS = new Weighted<string>([
  ['customer_requested', 35],
  ['low_confidence', 25],
  ['billing_dispute', 12],
  ['technical_issue', 15],
  ['complaint', 13],
]);

export { PLAN_SEATS };
