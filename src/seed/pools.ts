import { de, en, en_AU, es, fr, ja, type LocaleDefinition, pt_BR } from '@faker-js/faker';
import type { Rng } from './random.ts';
import { Weighted } from './random.ts';

/**
 * Pre-built value pools for the generator. Names come from faker's locale data
 * (static arrays), drawn with the seed's own PRNG: fast and deterministic.
 */

export const LANGUAGES = ['en', 'de', 'fr', 'es', 'ja', 'pt'] as const;
export type Language = (typeof LANGUAGES)[number];

export interface NamePool {
  first: readonly string[];
  last: readonly string[];
  /** Family name first (Japanese). */
  familyFirst: boolean;
  /** ASCII pools for email addresses when names are not Latin script. */
  asciiFirst?: readonly string[];
  asciiLast?: readonly string[];
}

function names(locale: LocaleDefinition, familyFirst = false): NamePool {
  const person = locale.person as
    | { first_name?: Record<string, string[]>; last_name?: Record<string, string[]> }
    | undefined;
  const first = Object.values(person?.first_name ?? {}).flat();
  const last = Object.values(person?.last_name ?? {}).flat();
  return { first, last, familyFirst };
}

const NAMES = {
  de: names(de),
  en: names(en),
  au: names(en_AU),
  fr: names(fr),
  es: names(es),
  br: names(pt_BR),
  ja: {
    ...names(ja, true),
    asciiFirst: [
      'haruto',
      'yui',
      'sota',
      'hina',
      'ren',
      'aoi',
      'yuto',
      'mei',
      'riku',
      'sakura',
      'kaito',
      'yuna',
    ],
    asciiLast: [
      'sato',
      'suzuki',
      'takahashi',
      'tanaka',
      'watanabe',
      'ito',
      'yamamoto',
      'nakamura',
      'kobayashi',
    ],
  },
} satisfies Record<string, NamePool>;

/** Where visitors of a tenant come from: country, its languages, phone format and names. */
export interface CountryProfile {
  country: string;
  language: Language;
  names: NamePool;
  /** E.164 prefix and the number of digits after it. */
  phone: readonly [prefix: string, digits: number];
}

export const COUNTRIES: Record<string, CountryProfile> = {
  DE: { country: 'DE', language: 'de', names: NAMES.de, phone: ['+4915', 9] },
  AT: { country: 'AT', language: 'de', names: NAMES.de, phone: ['+43664', 7] },
  CH: { country: 'CH', language: 'de', names: NAMES.de, phone: ['+4179', 7] },
  US: { country: 'US', language: 'en', names: NAMES.en, phone: ['+1415555', 4] },
  CA: { country: 'CA', language: 'en', names: NAMES.en, phone: ['+1604555', 4] },
  GB: { country: 'GB', language: 'en', names: NAMES.en, phone: ['+447700', 6] },
  IE: { country: 'IE', language: 'en', names: NAMES.en, phone: ['+35385', 7] },
  AU: { country: 'AU', language: 'en', names: NAMES.au, phone: ['+614', 8] },
  NZ: { country: 'NZ', language: 'en', names: NAMES.au, phone: ['+6421', 7] },
  JP: { country: 'JP', language: 'ja', names: NAMES.ja, phone: ['+8190', 8] },
  BR: { country: 'BR', language: 'pt', names: NAMES.br, phone: ['+55119', 8] },
  PT: { country: 'PT', language: 'pt', names: NAMES.br, phone: ['+3519', 8] },
  FR: { country: 'FR', language: 'fr', names: NAMES.fr, phone: ['+336', 8] },
  BE: { country: 'BE', language: 'fr', names: NAMES.fr, phone: ['+324', 8] },
  ES: { country: 'ES', language: 'es', names: NAMES.es, phone: ['+346', 8] },
  MX: { country: 'MX', language: 'es', names: NAMES.es, phone: ['+5255', 8] },
};

/** A tenant's home: time zone, country, currency and where its visitors come from. */
export interface TenantProfile {
  timezone: string;
  country: string;
  /** Standard UTC offset in hours, used to shape traffic by local hour. */
  utcOffset: number;
  currency: string;
  /** Faker locale for the company name. */
  fakerLocale: 'de' | 'en' | 'en_AU' | 'fr' | 'es' | 'ja' | 'pt_BR';
  /** Visitor countries with weights. */
  visitors: Weighted<string>;
  tld: string;
}

function profile(
  timezone: string,
  country: string,
  utcOffset: number,
  currency: string,
  fakerLocale: TenantProfile['fakerLocale'],
  tld: string,
  visitors: [string, number][],
): TenantProfile {
  return { timezone, country, utcOffset, currency, fakerLocale, tld, visitors: new Weighted(visitors) };
}

/** Tenant homes in the order tenants cycle through them. */
export const TENANT_PROFILES: readonly TenantProfile[] = [
  profile('Europe/Berlin', 'DE', 1, 'EUR', 'de', 'de', [
    ['DE', 60],
    ['AT', 10],
    ['CH', 8],
    ['GB', 6],
    ['FR', 6],
    ['US', 5],
    ['ES', 3],
    ['JP', 2],
  ]),
  profile('America/New_York', 'US', -5, 'USD', 'en', 'com', [
    ['US', 70],
    ['CA', 10],
    ['MX', 8],
    ['GB', 5],
    ['BR', 4],
    ['DE', 3],
  ]),
  profile('Asia/Tokyo', 'JP', 9, 'JPY', 'ja', 'jp', [
    ['JP', 72],
    ['US', 12],
    ['AU', 6],
    ['GB', 5],
    ['FR', 5],
  ]),
  profile('Australia/Sydney', 'AU', 10, 'AUD', 'en_AU', 'com.au', [
    ['AU', 70],
    ['NZ', 12],
    ['GB', 8],
    ['US', 6],
    ['JP', 4],
  ]),
  profile('America/Sao_Paulo', 'BR', -3, 'BRL', 'pt_BR', 'com.br', [
    ['BR', 72],
    ['PT', 10],
    ['US', 8],
    ['ES', 6],
    ['MX', 4],
  ]),
  profile('Europe/London', 'GB', 0, 'GBP', 'en', 'co.uk', [
    ['GB', 62],
    ['IE', 10],
    ['US', 8],
    ['FR', 7],
    ['DE', 7],
    ['ES', 6],
  ]),
  profile('Europe/Paris', 'FR', 1, 'EUR', 'fr', 'fr', [
    ['FR', 64],
    ['BE', 12],
    ['CH', 6],
    ['GB', 6],
    ['ES', 6],
    ['DE', 6],
  ]),
  profile('Europe/Madrid', 'ES', 1, 'EUR', 'es', 'es', [
    ['ES', 66],
    ['MX', 10],
    ['PT', 8],
    ['FR', 6],
    ['GB', 6],
    ['US', 4],
  ]),
];

export const PLANS = ['pro', 'starter', 'enterprise', 'agency'] as const;
export type Plan = (typeof PLANS)[number];

export const PLAN_PRICE: Record<Plan, number> = { starter: 49, pro: 199, agency: 499, enterprise: 1499 };
export const PLAN_SEATS: Record<Plan, number> = { starter: 3, pro: 10, agency: 25, enterprise: 60 };

export const SEGMENTS = new Weighted<'consumer' | 'smb' | 'mid_market' | 'enterprise'>([
  ['consumer', 55],
  ['smb', 28],
  ['mid_market', 12],
  ['enterprise', 5],
]);

export const USER_AGENTS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Safari/605.1.15',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (Linux; Android 15; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Mobile Safari/537.36',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0',
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36 Edg/138.0.0.0',
  'Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36',
];

export const REFERRERS: readonly (string | null)[] = [
  null,
  null,
  'https://www.google.com/',
  'https://www.google.com/',
  'https://www.bing.com/',
  'https://duckduckgo.com/',
  'https://www.facebook.com/',
  'https://www.instagram.com/',
  'https://www.linkedin.com/',
  'https://news.example.org/review-of-the-year',
  'https://newsletter.example.net/issue-42?utm_source=newsletter',
];

export const PAGE_PATHS = [
  '/',
  '/pricing',
  '/checkout',
  '/cart',
  '/account/orders',
  '/help',
  '/products/featured',
  '/shipping',
  '/returns',
  '/contact',
  '/blog/getting-started',
  '/account/billing',
];

export const SITE_KINDS = [
  ['shop', 'Shop'],
  ['help', 'Help Center'],
  ['www', 'Website'],
  ['app', 'Web App'],
] as const;

/** Documentation address ranges (RFC 5737, RFC 3849): realistic, never routable. */
export function ipAddress(rng: Rng): string {
  const r = rng.u32();
  if ((r & 15) === 0)
    return `2001:db8:${((r >>> 4) & 0xfff).toString(16)}::${((r >>> 16) & 0xffff).toString(16)}`;
  const net = ['192.0.2', '198.51.100', '203.0.113'][(r >>> 4) % 3]!;
  return `${net}.${1 + ((r >>> 8) % 254)}`;
}

export const EMAIL_DOMAINS = ['example.com', 'example.org', 'example.net', 'mail.example.com'];

/** Lower-case ASCII for email local parts ("Zoë Müller" → "zoemuller"). */
export function asciiFold(value: string): string {
  return value
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/ß/g, 'ss')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '');
}

export interface PersonName {
  display: string;
  first: string;
  /** ASCII parts for an email address. */
  emailFirst: string;
  emailLast: string;
}

export function personName(rng: Rng, pool: NamePool): PersonName {
  const first = rng.pick(pool.first);
  const last = rng.pick(pool.last);
  const display = pool.familyFirst ? `${last} ${first}` : `${first} ${last}`;
  let emailFirst = asciiFold(first);
  let emailLast = asciiFold(last);
  if (pool.asciiFirst && pool.asciiLast) {
    emailFirst = rng.pick(pool.asciiFirst);
    emailLast = rng.pick(pool.asciiLast);
  }
  return { display, first, emailFirst: emailFirst || 'user', emailLast: emailLast || 'x' };
}

export function phoneNumber(rng: Rng, profile: CountryProfile): string {
  return profile.phone[0] + rng.digits(profile.phone[1]);
}

export const PRODUCT_CATEGORIES = [
  'apparel',
  'electronics',
  'home',
  'beauty',
  'software',
  'subscriptions',
  'accessories',
  'sports',
];

export const CAMPAIGNS = ['spring_sale', 'black_friday', 'newsletter_q3', 'retargeting', 'launch_week', null];
export const REFERRAL_SOURCES = ['organic', 'paid_search', 'social', 'email', 'direct', 'affiliate', null];
