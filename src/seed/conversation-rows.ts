import { AI, type ConversationPlan, CUSTOMER, lastActivity, topicsOf } from './conversation-plan.ts';
import { bool, json, micros, num, text, textArray, textOrNull, ts, tsOrNull } from './csv.ts';
import {
  HOSTILE_TEXTS,
  INTENT_CATEGORY,
  INTENT_SENTIMENT,
  INTENTS,
  type Intent,
  PHRASES,
} from './phrases.ts';
import { EMAIL_DOMAINS, type Language, LANGUAGES } from './pools.ts';
import { luhnDigit, Rng, Weighted } from './random.ts';
import { MINUTE, S, type TenantContext } from './tenant-context.ts';

export const CONVERSATION_COLUMNS = [
  'id',
  'tenant_id',
  'site_id',
  'customer_id',
  'assigned_agent_id',
  'session_id',
  'start_timestamp',
  'end_timestamp',
  'page_url',
  'referrer',
  'customer_email',
  'customer_name',
  'ip_address',
  'country',
  'language',
  'user_agent',
  'status',
  'escalated',
  'escalation_reason',
  'resolution_time_minutes',
  'satisfaction_score',
  'satisfaction_feedback',
  'ai_confidence_avg',
  'message_count',
  'customer_message_count',
  'ai_message_count',
  'human_message_count',
  'topics_detected',
  'internal_notes',
  'tags',
  'custom_fields',
  'created_at',
  'last_updated',
] as const;

export const MESSAGE_COLUMNS = [
  'id',
  'tenant_id',
  'conversation_id',
  'created_at',
  'sender_type',
  'sender_id',
  'content',
  'confidence_score',
  'processing_time_ms',
  'tokens_used',
  'content_sources',
  'source_relevance_scores',
  'message_length',
  'language_detected',
  'sentiment_score',
  'intent_classification',
  'entities_extracted',
  'custom_metadata',
  'edited',
  'updated_at',
] as const;

const TAGS = [
  'follow-up',
  'new-customer',
  'bug',
  'refund',
  'feature-request',
  'shipping-delay',
  'upsell',
  'spam',
];
const NOTES = [
  'Customer called twice about this; refund approved by {agent}.',
  'Checked with the warehouse: parcel was scanned yesterday.',
  'Possible duplicate account, merged by {agent}.',
  'Escalated to tier 2, waiting for the payment provider.',
  'Offered a 10% voucher as an apology.',
];

export function conversationRow(ctx: TenantContext, plan: ConversationPlan): string {
  const rng = Rng.of(ctx.seed, plan.index, S.extras);
  const site = ctx.sites[plan.siteIndex]!;
  const agent = plan.agentIndex >= 0 ? ctx.agents[plan.agentIndex]! : null;
  const c = plan.customer;
  let confidenceSum = 0;
  for (let i = 0; i < plan.confidence.length; i++)
    if (plan.senders[i] === AI) confidenceSum += plan.confidence[i]!;
  const tags: string[] = [];
  if (plan.escalated) tags.push('escalated');
  if (plan.satisfaction !== null && plan.satisfaction <= 2) tags.push('unhappy');
  if (c?.segment === 'enterprise') tags.push('vip');
  if (rng.chance(0.3)) tags.push(rng.pick(TAGS));
  if (rng.chance(0.002)) tags.push('needs "review", asap');
  const fields: Record<string, unknown> = {};
  for (const field of ctx.customFields) {
    if (!rng.chance(0.5)) continue;
    if (field === 'order_value') fields[field] = Math.round(rng.float(9, 450) * 100) / 100;
    else if (field === 'plan_interest') fields[field] = rng.pick(['basic', 'plus', 'premium']);
    else if (field === 'newsletter') fields[field] = rng.chance(0.4);
    else if (field === 'cart_items') fields[field] = rng.range(0, 9);
    else if (field === 'store_location') fields[field] = rng.pick(['online', 'flagship', 'outlet']);
    else fields[field] = rng.pick(['bronze', 'silver', 'gold']);
  }
  const note =
    plan.escalated && rng.chance(0.4)
      ? rng.pick(NOTES).replaceAll('{agent}', agent?.first ?? 'the team')
      : null;
  // From the instants as written (with their microseconds), so it matches what SQL computes from them.
  const resolution =
    plan.status === 'resolved'
      ? Math.round((micros(plan.end!) - micros(plan.start)) / (MINUTE * 1000))
      : null;
  return (
    `${plan.id},${ctx.id},${site.id},${c?.id ?? ''},${agent?.id ?? ''},${plan.sessionId},` +
    `${ts(plan.start)},${tsOrNull(plan.end)},${text(site.url + plan.pagePath)},${textOrNull(plan.referrer)},` +
    `${textOrNull(c?.email)},${textOrNull(c?.name ?? plan.anonymousName)},${plan.ip},${plan.country},${plan.language},` +
    `${text(plan.userAgent)},${plan.status},${bool(plan.escalated)},${textOrNull(plan.escalationReason)},` +
    `${num(resolution)},${num(plan.satisfaction)},${textOrNull(plan.feedback)},` +
    `${plan.aiCount ? confidenceSum / plan.aiCount : ''},${plan.senders.length},${plan.customerCount},` +
    `${plan.aiCount},${plan.humanCount},${textArray(topicsOf(rng, plan.intent))},${textOrNull(note)},` +
    `${textArray(tags)},${json(fields)},${ts(plan.start)},${ts(lastActivity(plan))}\n`
  );
}

/** A template split into literal parts (even indices) and slot names (odd indices). */
type Template = string[];
interface Compiled {
  questions: Record<Intent, Template[]>;
  answers: Record<Intent, Template[]>;
  greetings: string[];
  followUps: Template[];
  aiFollowUps: Template[];
  thanks: string[];
  aiClosing: Template[];
  handoff: Template[];
  humanIntro: Template[];
  humanReplies: Template[];
  pii: Record<PiiKind, Template>;
}
type PiiKind = 'email' | 'phone' | 'card' | 'ip' | 'order';

const compile = (t: string): Template => t.split(/\{(\w+)\}/);
const byIntent = (r: Record<Intent, readonly string[]>) =>
  Object.fromEntries(INTENTS.map((i) => [i, r[i].map(compile)])) as Record<Intent, Template[]>;

const COMPILED = Object.fromEntries(
  LANGUAGES.map((lang) => {
    const p = PHRASES[lang];
    const c: Compiled = {
      questions: byIntent(p.questions),
      answers: byIntent(p.answers),
      greetings: [...p.greetings],
      followUps: p.followUps.map(compile),
      aiFollowUps: p.aiFollowUps.map(compile),
      thanks: [...p.thanks],
      aiClosing: p.aiClosing.map(compile),
      handoff: p.handoff.map(compile),
      humanIntro: p.humanIntro.map(compile),
      humanReplies: p.humanReplies.map(compile),
      pii: {
        email: compile(p.pii.email),
        phone: compile(p.pii.phone),
        card: compile(p.pii.card),
        ip: compile(p.pii.ip),
        order: compile(p.pii.order),
      },
    };
    return [lang, c];
  }),
) as Record<Language, Compiled>;

const PII_KINDS = new Weighted<PiiKind>([
  ['order', 45],
  ['email', 25],
  ['phone', 18],
  ['ip', 7],
  ['card', 5],
]);

const ENTITY_TYPE: Record<string, string> = {
  order: 'order_number',
  email: 'email',
  phone: 'phone',
  card: 'credit_card',
  ip: 'ip_address',
  product: 'product',
};

/** Fills a template; slot names used are appended to `used` (for entities). */
function fill(t: Template, slots: Record<string, string>, used: string[] | null): string {
  let out = t[0]!;
  for (let i = 1; i < t.length; i += 2) {
    const name = t[i]!;
    out += slots[name] ?? '';
    out += t[i + 1]!;
    if (used && ENTITY_TYPE[name] && !used.includes(name)) used.push(name);
  }
  return out;
}

function cardNumber(rng: Rng): string {
  const payload = `4${rng.digits(14)}`;
  const digits = payload + luhnDigit(payload);
  return rng.chance(0.5) ? digits : digits.replace(/(\d{4})(?=\d)/g, '$1 ');
}

/** Length in code points, as PostgreSQL counts characters. */
function charLength(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) n--;
  }
  return n;
}

function sources(ctx: TenantContext, rng: Rng, intent: Intent, language: Language): string[] {
  const byLanguage = ctx.sources.get(INTENT_CATEGORY[intent]);
  const pool = byLanguage?.get(language) ?? byLanguage?.values().next().value ?? [];
  return pool.length ? rng.sample(pool, rng.range(1, Math.min(3, pool.length))) : [];
}

/** All message rows of a conversation, as one CSV string. */
export function messageRows(ctx: TenantContext, plan: ConversationPlan): string {
  const rng = Rng.of(ctx.seed, plan.index, S.text);
  const lang = COMPILED[plan.language];
  const c = plan.customer;
  const agent = plan.agentIndex >= 0 ? ctx.agents[plan.agentIndex]! : null;
  const amount =
    ctx.profile.currency === 'JPY'
      ? `${rng.range(5, 400) * 100} JPY`
      : `${rng.range(5, 400)}.${rng.digits(2)} ${ctx.profile.currency}`;
  const slots: Record<string, string> = {
    order: rng.chance(0.7) ? `ORD-${rng.digits(7)}` : `#${rng.range(10000, 99999)}`,
    product: rng.pick(ctx.products),
    days: String(rng.range(2, 5)),
    days2: String(rng.range(6, 10)),
    amount,
    agent: agent?.first ?? '',
    email: c?.email ?? `visitor${rng.range(100, 99999)}@${rng.pick(EMAIL_DOMAINS)}`,
    phone: c?.phone ?? `+1415555${rng.digits(4)}`,
    card: '',
    ip: plan.ip,
  };
  const prefix = `${ctx.id},${plan.id},`;
  const customerSender = c ? c.id : '';
  const aiMetadata = text(`{"model":"${ctx.aiModel}"}`);
  const sentimentBase = INTENT_SENTIMENT[plan.intent];
  const n = plan.senders.length;
  let out = '';
  let answered = false;
  let humanSpoke = false;
  let followUp = -1;
  let reply = 0;
  let thanked = false;
  // The visitor thanks in their last message of a resolved thread (never instead of the question).
  const thanksAt = plan.status !== 'resolved' ? -1 : plan.senders[n - 1] === CUSTOMER ? n - 1 : n - 2;
  const thanksIndex = thanksAt > 0 ? thanksAt : -1;
  const used: string[] = [];
  for (let i = 0; i < n; i++) {
    const who = plan.senders[i]!;
    const at = plan.times[i]!;
    const id = rng.uuid();
    let content: string;
    let sentiment: number;
    let fields: string;
    if (who === CUSTOMER) {
      used.length = 0;
      // Hostile values (formula prefixes, control characters, RTL marks, ...) appear at random and,
      // so every dataset has some, in the last customer message of every 200th conversation.
      const hostile = rng.chance(0.004) || (plan.index % 200 === 17 && i === n - 1);
      if (hostile) content = rng.pick(HOSTILE_TEXTS);
      else if (i === 0) {
        content = fill(rng.pick(lang.questions[plan.intent]), slots, used);
        if (rng.chance(0.4)) content = `${rng.pick(lang.greetings)} ${content}`;
      } else if (i === thanksIndex) {
        content = rng.pick(lang.thanks);
        thanked = true;
      } else {
        followUp = rng.int(lang.followUps.length);
        content = fill(lang.followUps[followUp]!, slots, used);
      }
      if (rng.chance(0.12)) {
        const kind = PII_KINDS.draw(rng);
        if (kind === 'card') slots.card = cardNumber(rng);
        content += ` ${fill(lang.pii[kind], slots, used)}`;
      }
      sentiment = thanked ? rng.float(0.4, 0.9) : rng.normal(sentimentBase, 0.25, -1, 1);
      let entities = '[]';
      if (used.length) {
        entities = '[';
        for (let k = 0; k < used.length; k++) {
          const name = used[k]!;
          entities += `${k ? ',' : ''}{"type":"${ENTITY_TYPE[name]}","value":${JSON.stringify(slots[name])}}`;
        }
        entities = text(`${entities}]`);
      }
      const edited = rng.chance(0.01);
      fields =
        `customer,${customerSender},${text(content)},,,,[],[],${charLength(content)},${plan.language},` +
        `${Math.round(sentiment * 1000) / 1000},${i === 0 ? plan.intent : rng.chance(0.7) ? plan.intent : 'follow_up'},` +
        `${entities},{},${bool(edited)},${ts(edited ? at + rng.range(1, 10) * MINUTE : at)}`;
    } else if (who === AI) {
      let t: Template;
      if (i === plan.handoff) t = rng.pick(lang.handoff);
      else if (!answered) t = rng.pick(lang.answers[plan.intent]);
      else if (thanked) t = rng.pick(lang.aiClosing);
      else t = lang.aiFollowUps[followUp % lang.aiFollowUps.length] ?? rng.pick(lang.aiFollowUps);
      answered = true;
      content = fill(t, slots, null);
      const docs = i === plan.handoff ? [] : sources(ctx, rng, plan.intent, plan.language);
      let relevance = rng.float(0.78, 0.98);
      let scores = '';
      for (let k = 0; k < docs.length; k++) {
        scores += `${k ? ',' : ''}${Math.round(relevance * 1000) / 1000}`;
        relevance -= rng.float(0.03, 0.15);
      }
      const processing = rng.range(350, 4500);
      fields =
        `ai,ai-assistant,${text(content)},${plan.confidence[i]},${processing},${rng.range(120, 900) + (content.length >> 2)},` +
        `${docs.length ? text(`["${docs.join('","')}"]`) : '[]'},` +
        `${docs.length ? `"[${scores}]"` : '[]'},${charLength(content)},${plan.language},` +
        `${Math.round(rng.float(0.1, 0.6) * 1000) / 1000},,[],${aiMetadata},f,${ts(at)}`;
    } else {
      if (!humanSpoke) {
        const answers = lang.answers[plan.intent];
        content = `${fill(rng.pick(lang.humanIntro), slots, null)} ${fill(answers[answers.length - 1]!, slots, null)}`;
      } else if (thanked) content = fill(rng.pick(lang.aiClosing), slots, null);
      else {
        // Never the same line twice in a row.
        reply = (reply + 1 + rng.int(lang.humanReplies.length - 1)) % lang.humanReplies.length;
        content = fill(lang.humanReplies[reply]!, slots, null);
      }
      humanSpoke = true;
      const edited = rng.chance(0.03);
      fields =
        `human,${agent!.id},${text(content)},,,,[],[],${charLength(content)},${plan.language},` +
        `${Math.round(rng.float(0.05, 0.6) * 1000) / 1000},,[],{},${bool(edited)},` +
        `${ts(edited ? at + rng.range(1, 10) * MINUTE : at)}`;
    }
    out += `${id},${prefix}${ts(at)},${fields}\n`;
  }
  return out;
}
