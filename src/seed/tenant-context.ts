import type { Language, Plan, TenantProfile } from './pools.ts';

// The shapes and constants every seed builder shares: the tenant built by tenant.ts and
// the rows drawn from it (documents, conversations, revenue).

/** Stream kinds: each kind of row draws from its own PRNG stream. */
export const S = {
  tenant: 1,
  customer: 2,
  plan: 3,
  text: 4,
  document: 5,
  chunk: 6,
  activity: 7,
  revenue: 8,
  consent: 9,
  billing: 10,
  team: 11,
  converts: 12,
  extras: 13,
} as const;

export const DAY = 86_400_000;
export const HOUR = 3_600_000;
export const MINUTE = 60_000;

/**
 * Partition `part` of `parts` of the indexes 0..count-1, as a contiguous range:
 * each COPY stream then appends to its own region of the time indexes.
 */
export function slice(count: number, part: number, parts: number): [from: number, to: number] {
  return [Math.floor((count * part) / parts), Math.floor((count * (part + 1)) / parts)];
}

export interface SeedWindow {
  since: number;
  until: number;
}

export interface Member {
  id: string;
  name: string;
  first: string;
  email: string;
  role: 'admin' | 'manager' | 'analyst' | 'agent';
  createdAt: number;
  password: string;
  /** Hex salt for the password hash, drawn from the seed so the hash is reproducible. */
  salt: string;
  logins: number[];
}

export interface Site {
  id: string;
  url: string;
  name: string;
  createdAt: number;
}

export interface DocumentInfo {
  id: string;
  category: string;
  language: Language;
  title: string;
  contentType: 'article' | 'faq' | 'policy' | 'guide' | 'product';
  content: string;
  url: string;
  tags: string[];
  createdAt: number;
  updatedAt: number;
}

export interface Customer {
  id: string;
  email: string | null;
  name: string | null;
  phone: string | null;
  country: string;
  segment: 'consumer' | 'smb' | 'mid_market' | 'enterprise';
  createdAt: number;
  updatedAt: number;
}

/** Everything about one tenant that its conversations draw on; small and kept in memory. */
export interface TenantContext {
  /** Position among all tenants ever seeded with this seed (part of the slug). */
  ordinal: number;
  seed: number;
  id: string;
  name: string;
  slug: string;
  plan: Plan;
  profile: TenantProfile;
  createdAt: number;
  domain: string;
  sites: Site[];
  team: Member[];
  /** Members who answer escalated conversations. */
  agents: Member[];
  documents: DocumentInfo[];
  /** Document ids per knowledge-base category and language. */
  sources: Map<string, Map<Language, string[]>>;
  customerCount: number;
  conversations: number;
  products: string[];
  aiModel: string;
  customFields: readonly string[];
  window: SeedWindow;
}
