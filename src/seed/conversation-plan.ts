import { INTENT_TOPICS, INTENTS, type Intent, PHRASES } from './phrases.ts';
import { COUNTRIES, ipAddress, type Language, PAGE_PATHS, REFERRERS, USER_AGENTS } from './pools.ts';
import { Rng, Weighted } from './random.ts';
import { customerAt, ESCALATION_REASONS, visitorLanguage } from './tenant.ts';
import { type Customer, HOUR, MINUTE, S, type TenantContext } from './tenant-context.ts';

/**
 * The shape of one conversation: who spoke when, with what confidence, and how
 * it ended. It is a pure function of (tenant, index), drawn from the conversation's
 * own stream, so the conversations pass and the messages pass agree on every
 * counter without keeping anything in memory.
 */

export const CUSTOMER = 0;
export const AI = 1;
export const HUMAN = 2;

export interface ConversationPlan {
  index: number;
  id: string;
  siteIndex: number;
  customer: Customer | null;
  agentIndex: number;
  start: number;
  end: number | null;
  language: Language;
  intent: Intent;
  status: 'resolved' | 'unresolved' | 'in_progress';
  escalated: boolean;
  escalationReason: string | null;
  handoff: number;
  senders: Uint8Array;
  times: Float64Array;
  /** Confidence of each AI message (NaN for others), three decimals. */
  confidence: Float64Array;
  customerCount: number;
  aiCount: number;
  humanCount: number;
  satisfaction: number | null;
  feedback: string | null;
  sessionId: string;
  country: string;
  ip: string;
  userAgent: string;
  referrer: string | null;
  pagePath: string;
  anonymousName: string | null;
}

/**
 * Message counts per conversation: a discretised gamma (shape 2) between a
 * minimum of 2 and 2.5 × the mean (truncated), its scale solved so that the mean
 * is exactly the requested one. Mean 8 gives 2 to 20 messages, most 3 to 9.
 */
export class CountDistribution {
  readonly min: number;
  readonly max: number;
  private readonly cumulative: Float64Array;

  constructor(mean: number) {
    this.min = mean < 2 ? 1 : 2;
    this.max = Math.max(this.min, Math.ceil(2.5 * mean));
    const buckets = this.max - this.min + 1;
    const pmf = (theta: number) => {
      const cdf = (x: number) => 1 - Math.exp(-x / theta) * (1 + x / theta);
      const p = new Float64Array(buckets);
      for (let k = 0; k < buckets; k++) p[k] = cdf(k + 1) - cdf(k);
      // Truncated at max and renormalised: no pile-up of long conversations at the cap.
      const total = p.reduce((sum, v) => sum + v, 0);
      return total > 0 ? p.map((v) => v / total) : p.map((_, k) => (k === 0 ? 1 : 0));
    };
    const meanOf = (p: Float64Array) => p.reduce((s, v, k) => s + v * (this.min + k), 0);
    let lo = 1e-9;
    let hi = 10 * mean + 10;
    for (let i = 0; i < 200; i++) {
      const mid = (lo + hi) / 2;
      if (meanOf(pmf(mid)) < mean) lo = mid;
      else hi = mid;
    }
    const p = pmf((lo + hi) / 2);
    this.cumulative = new Float64Array(buckets);
    let acc = 0;
    for (let k = 0; k < buckets; k++) {
      acc += p[k]!;
      this.cumulative[k] = acc;
    }
    this.cumulative[buckets - 1] = 1;
  }

  draw(rng: Rng): number {
    const u = rng.next();
    let k = 0;
    while (u >= this.cumulative[k]!) k++;
    return this.min + k;
  }

  /** The exact expected count. */
  get mean(): number {
    let prev = 0;
    let sum = 0;
    this.cumulative.forEach((c, k) => {
      sum += (c - prev) * (this.min + k);
      prev = c;
    });
    return sum;
  }
}

/** Traffic by local hour of day (business hours peak, quiet nights). */
const HOUR_WEIGHT = [
  0.08, 0.05, 0.04, 0.04, 0.05, 0.1, 0.2, 0.45, 0.75, 0.95, 1, 1, 0.9, 0.95, 1, 0.95, 0.9, 0.8, 0.65, 0.6,
  0.55, 0.45, 0.3, 0.15,
];

const INTENT_WEIGHTS = new Weighted<Intent>([
  ['order_status', 24],
  ['shipping', 14],
  ['returns', 12],
  ['billing', 10],
  ['account_access', 9],
  ['product_info', 16],
  ['technical_issue', 8],
  ['cancellation', 7],
]);

const ESCALATION_RATE: Record<Intent, number> = {
  order_status: 0.08,
  shipping: 0.06,
  returns: 0.15,
  billing: 0.26,
  account_access: 0.2,
  product_info: 0.05,
  technical_issue: 0.3,
  cancellation: 0.22,
};

const RESOLVED_SCORES = new Weighted<number>([
  [5, 55],
  [4, 28],
  [3, 10],
  [2, 4],
  [1, 3],
]);
const UNRESOLVED_SCORES = new Weighted<number>([
  [5, 5],
  [4, 10],
  [3, 25],
  [2, 30],
  [1, 30],
]);

const traffic = new WeakMap<TenantContext, Float64Array>();

/** Cumulative traffic weight per hour of the window, in the tenant's local time. */
function trafficOf(ctx: TenantContext): Float64Array {
  const cached = traffic.get(ctx);
  if (cached) return cached;
  const { since, until } = ctx.window;
  const offset = ctx.profile.utcOffset * HOUR;
  const cumulative = new Float64Array(Math.ceil((until - since) / HOUR));
  let total = 0;
  for (let b = 0; b < cumulative.length; b++) {
    const from = since + b * HOUR;
    const local = from + offset;
    const hour = ((Math.floor(local / HOUR) % 24) + 24) % 24;
    const weekday = (((Math.floor(local / 86_400_000) + 4) % 7) + 7) % 7;
    const weight = HOUR_WEIGHT[hour]! * (weekday === 0 || weekday === 6 ? 0.6 : 1);
    total += (weight * Math.min(HOUR, until - from)) / HOUR;
    cumulative[b] = total;
  }
  traffic.set(ctx, cumulative);
  return cumulative;
}

/**
 * Start of conversation `index`: its quantile of the tenant's traffic curve, so
 * starts grow with the index (conversations and messages are generated, and
 * loaded, roughly in time order, which keeps the time indexes append-only).
 */
function startTime(rng: Rng, ctx: TenantContext, index: number): number {
  const cumulative = trafficOf(ctx);
  const q = ((index + rng.next()) / Math.max(1, ctx.conversations)) * cumulative[cumulative.length - 1]!;
  let lo = 0;
  let hi = cumulative.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cumulative[mid]! <= q) lo = mid + 1;
    else hi = mid;
  }
  const before = lo > 0 ? cumulative[lo - 1]! : 0;
  const from = ctx.window.since + lo * HOUR;
  const length = Math.min(HOUR, ctx.window.until - from);
  return Math.floor(from + Math.min(0.999999, (q - before) / (cumulative[lo]! - before)) * length);
}

export function planConversation(
  ctx: TenantContext,
  index: number,
  counts: CountDistribution,
): ConversationPlan {
  const rng = Rng.of(ctx.seed, index, S.plan);
  const { since, until } = ctx.window;
  const id = rng.uuid();
  const siteIndex = rng.int(ctx.sites.length);
  let start = startTime(rng, ctx, index);

  // A known customer created before this conversation, or an anonymous visitor.
  let customer: Customer | null = null;
  if (rng.chance(0.7)) {
    const eligible = Math.min(
      ctx.customerCount,
      Math.floor(((start - since) / (until - since)) * ctx.customerCount),
    );
    if (eligible > 0) customer = customerAt(ctx, rng.chance(0.3) ? eligible - 1 : rng.int(eligible));
  }
  const country = customer?.country ?? ctx.profile.visitors.draw(rng);
  const language = visitorLanguage(rng, COUNTRIES[country]!);
  const intent = INTENT_WEIGHTS.draw(rng);

  const n = counts.draw(rng);
  const escalated = n >= 3 && rng.chance(ESCALATION_RATE[intent] * 0.9);
  const escalationReason = escalated
    ? intent === 'billing' && rng.chance(0.5)
      ? 'billing_dispute'
      : ESCALATION_REASONS.draw(rng)
    : null;
  const agentIndex = escalated ? rng.int(ctx.agents.length) : -1;
  const handoff = escalated ? 1 + 2 * rng.int(Math.floor((n - 3) / 2) + 1) : -1;

  const senders = new Uint8Array(n);
  const times = new Float64Array(n);
  const confidence = new Float64Array(n).fill(Number.NaN);
  const base = rng.normal(escalationReason === 'low_confidence' ? 0.48 : 0.82, 0.1, 0.2, 0.99);
  let customerCount = 0;
  let aiCount = 0;
  let humanCount = 0;
  let t = 0;
  for (let i = 0; i < n; i++) {
    let who: number;
    if (i === 0) who = CUSTOMER;
    else if (escalated && i > handoff) who = (i - handoff) % 2 === 1 ? HUMAN : CUSTOMER;
    else if (senders[i - 1] === CUSTOMER)
      who = i >= 2 && i < n - 1 && !escalated && rng.chance(0.08) ? CUSTOMER : AI;
    else who = CUSTOMER;
    senders[i] = who;
    if (i > 0) {
      const prev = senders[i - 1];
      if (who === AI) t += rng.range(900, 7000);
      else if (who === HUMAN) t += i === handoff + 1 ? rng.range(1, 20) * MINUTE : rng.range(30_000, 360_000);
      else t += prev === CUSTOMER ? rng.range(5_000, 60_000) : rng.range(12_000, 240_000);
    }
    times[i] = t;
    if (who === AI) {
      confidence[i] = Math.round(rng.normal(base, 0.05, 0.05, 0.99) * 1000) / 1000;
      aiCount++;
    } else if (who === HUMAN) humanCount++;
    else customerCount++;
  }

  let status: ConversationPlan['status'];
  if (until - start < 24 * HOUR && rng.chance(0.5)) status = 'in_progress';
  else if (aiCount === 0 && humanCount === 0) status = 'unresolved';
  else status = rng.chance(escalated ? 0.72 : 0.78) ? 'resolved' : 'unresolved';
  const endDelay =
    status === 'in_progress'
      ? 0
      : status === 'resolved'
        ? rng.range(1, 10) * MINUTE
        : rng.range(10, 30) * MINUTE;
  const duration = times[n - 1]! + endDelay;
  if (start + duration >= until) {
    start = Math.max(since, until - duration - rng.range(1, 30) * MINUTE);
    // Moved earlier than the customer's first visit: treat the visitor as anonymous.
    if (customer && customer.createdAt > start) customer = null;
  }
  for (let i = 0; i < n; i++) times[i] = times[i]! + start;
  const end = status === 'in_progress' ? null : start + duration;

  let satisfaction: number | null = null;
  let feedback: string | null = null;
  if (status !== 'in_progress' && rng.chance(0.35)) {
    satisfaction = (status === 'resolved' ? RESOLVED_SCORES : UNRESOLVED_SCORES).draw(rng);
    if (rng.chance(0.5)) {
      const p = PHRASES[language];
      feedback = rng.chance(0.01)
        ? '=1+1 "great", thanks\n👍'
        : rng.pick(satisfaction >= 3 ? p.feedbackGood : p.feedbackBad);
    }
  }

  return {
    index,
    id,
    siteIndex,
    customer,
    agentIndex,
    start,
    end,
    language,
    intent,
    status,
    escalated,
    escalationReason,
    handoff,
    senders,
    times,
    confidence,
    customerCount,
    aiCount,
    humanCount,
    satisfaction,
    feedback,
    sessionId: `sess_${rng.hex(12)}`,
    country,
    ip: ipAddress(rng),
    userAgent: rng.pick(USER_AGENTS),
    referrer: rng.pick(REFERRERS),
    pagePath: rng.pick(PAGE_PATHS),
    anonymousName: customer === null && rng.chance(0.08) ? rng.pick(COUNTRIES[country]!.names.first) : null,
  };
}

/** Topics for a conversation: its intent's topics plus sometimes one more. */
export function topicsOf(rng: Rng, intent: Intent): string[] {
  const topics = rng.sample(INTENT_TOPICS[intent], rng.range(1, 2));
  if (rng.chance(0.15)) {
    const other = INTENT_TOPICS[rng.pick(INTENTS)][0]!;
    if (!topics.includes(other)) topics.push(other);
  }
  return topics;
}

/** When the conversation last changed: its end, or its last message while in progress. */
export function lastActivity(plan: ConversationPlan): number {
  return plan.end ?? plan.times[plan.times.length - 1]!;
}
