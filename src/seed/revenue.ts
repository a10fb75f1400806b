import { type CountDistribution, lastActivity, planConversation } from './conversation-plan.ts';
import { num, plainArray, textOrNull, ts } from './csv.ts';
import { CAMPAIGNS, PRODUCT_CATEGORIES, REFERRAL_SOURCES } from './pools.ts';
import { mix, Rng, Weighted } from './random.ts';
import { type Customer, MINUTE, S, type TenantContext } from './tenant-context.ts';

export const REVENUE_COLUMNS = [
  'id',
  'tenant_id',
  'customer_id',
  'conversation_ids',
  'amount',
  'currency',
  'transaction_type',
  'product_category',
  'customer_segment',
  'referral_source',
  'campaign',
  'lead_score',
  'occurred_at',
  'created_at',
] as const;

/** Share of customers with at least one conversation who later buy something. */
const CONVERSION_RATE = 0.2;

const TYPES = new Weighted<'purchase' | 'subscription' | 'upgrade' | 'renewal'>([
  ['purchase', 60],
  ['subscription', 15],
  ['upgrade', 13],
  ['renewal', 12],
]);
const AMOUNT: Record<string, readonly [number, number]> = {
  purchase: [15, 450],
  subscription: [9, 99],
  upgrade: [20, 240],
  renewal: [49, 590],
};

interface Visit {
  id: string;
  start: number;
  last: number;
}

/**
 * Revenue events of one tenant: converting customers buy after one of their
 * conversations; `conversation_ids` lists their conversations that ended before
 * the purchase, oldest first. Only converting customers' visits are held in memory.
 */
export function* revenueRows(ctx: TenantContext, counts: CountDistribution): Generator<string> {
  const visits = new Map<string, { customer: Customer; list: Visit[] }>();
  for (let i = 0; i < ctx.conversations; i++) {
    const plan = planConversation(ctx, i, counts);
    const c = plan.customer;
    if (
      !c ||
      mix(ctx.seed, Number.parseInt(c.id.slice(0, 8), 16), S.converts) / 4294967296 >= CONVERSION_RATE
    )
      continue;
    let entry = visits.get(c.id);
    if (!entry) {
      entry = { customer: c, list: [] };
      visits.set(c.id, entry);
    }
    entry.list.push({ id: plan.id, start: plan.start, last: lastActivity(plan) });
  }
  const jpy = ctx.profile.currency === 'JPY';
  for (const { customer, list } of visits.values()) {
    list.sort((a, b) => a.start - b.start || (a.id < b.id ? -1 : 1));
    const rng = Rng.of(
      ctx.seed,
      Number.parseInt(customer.id.slice(0, 8), 16),
      Number.parseInt(customer.id.slice(9, 13), 16),
      S.revenue,
    );
    const events = 1 + (rng.chance(0.3) ? 1 : 0) + (rng.chance(0.1) ? 1 : 0);
    for (let e = 0; e < events; e++) {
      const anchor = rng.pick(list);
      const room = ctx.window.until - anchor.last - MINUTE;
      if (room <= MINUTE) continue;
      const occurred = anchor.last + Math.min(room, rng.range(5, 72 * 60) * MINUTE);
      const ids = list.filter((v) => v.last < occurred).map((v) => v.id);
      const type = TYPES.draw(rng);
      const [lo, hi] = AMOUNT[type]!;
      const amount = jpy ? (rng.range(lo, hi) * 150).toFixed(2) : rng.float(lo, hi).toFixed(2);
      yield `${rng.uuid()},${ctx.id},${customer.id},${plainArray(ids.slice(-10))},${amount},${ctx.profile.currency},` +
        `${type},${rng.pick(PRODUCT_CATEGORIES)},${customer.segment},${textOrNull(rng.pick(REFERRAL_SOURCES))},` +
        `${textOrNull(rng.pick(CAMPAIGNS))},${num(rng.chance(0.9) ? rng.range(0, 100) : null)},${ts(occurred)},` +
        `${ts(occurred + rng.range(1, 30) * 1000)}\n`;
    }
  }
}
