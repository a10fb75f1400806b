import type { ExportScope } from '../domain/export-scope.ts';
import type { PiiLevel } from '../domain/pii-level.ts';
import { scrubText } from '../transform/scrub.ts';
import type { StoredEvent } from './outbox.ts';

/** What one subscriber may see and asked to see. */
export interface SubscriptionRules {
  readonly tenantId: string;
  /** Only these sites; every site when null. */
  readonly siteIds: ReadonlySet<string> | null;
  readonly includeMessages: boolean;
  /** The caller's anonymization level: `full` sends message text as is, others scrub it. */
  readonly pii: PiiLevel;
  /** The caller's narrowing (agents: their own conversations). */
  readonly scope: ExportScope | undefined;
}

/** Conversation id → team member ids (and other sender ids) taking part. */
export type Participants = ReadonlyMap<string, ReadonlySet<string>>;

/** Whether the subscriber gets the event. `participants` is needed for team-member scopes. */
export function accepts(rules: SubscriptionRules, event: StoredEvent, participants?: Participants): boolean {
  if (event.tenantId !== rules.tenantId) return false;
  if (rules.siteIds && !rules.siteIds.has(event.siteId)) return false;
  if (event.event === 'message_created' && (!rules.includeMessages || !event.message)) return false;
  const scope = rules.scope;
  if (!scope || scope.kind === 'tenant' || scope.kind === 'site') return true; // sites are in siteIds
  if (scope.kind === 'customer') return event.conversation?.customerId === scope.customer_id;
  return participants?.get(event.conversationId)?.has(scope.team_member_id) ?? false;
}

export function needsParticipants(rules: SubscriptionRules): boolean {
  return rules.scope?.kind === 'team_member';
}

const iso = (value: unknown): string | null => {
  if (value === null || value === undefined) return null;
  const date = value instanceof Date ? value : new Date(String(value));
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString();
};

/** The event's `data` object at an anonymization level. */
export function eventData(event: StoredEvent, pii: PiiLevel): Record<string, unknown> {
  const d = event.data;
  if (event.event === 'message_created') {
    const message = event.message;
    const content = message?.content ?? null;
    const subject = { name: event.conversation?.customerName, email: event.conversation?.customerEmail };
    return {
      message_id: d.message_id ?? null,
      conversation_id: event.conversationId,
      site_url: event.siteUrl,
      sender_type: message?.senderType ?? null,
      timestamp: iso(message?.createdAt),
      message_content: content === null || pii === 'full' ? content : scrubText(content, pii, subject),
    };
  }
  return {
    conversation_id: event.conversationId,
    site_url: event.siteUrl,
    status: d.status ?? null,
    satisfaction_score: d.satisfaction_score ?? null,
    resolution_time_minutes: d.resolution_time_minutes ?? null,
    message_count: d.message_count ?? null,
    start_timestamp: iso(d.start_timestamp),
    end_timestamp: iso(d.end_timestamp),
  };
}

const rendered = new WeakMap<StoredEvent, Map<PiiLevel, string>>();

/**
 * The `conversation_update` message text. Subscribers at the same level share one
 * rendering of an event, so a busy tenant's fan-out serialises each event once per level.
 */
export function renderEvent(event: StoredEvent, pii: PiiLevel): string {
  const byLevel = rendered.get(event) ?? new Map<PiiLevel, string>();
  rendered.set(event, byLevel);
  let text = byLevel.get(pii);
  if (text === undefined) {
    text = JSON.stringify({
      type: 'conversation_update',
      id: String(event.seq),
      timestamp: event.createdAt.toISOString(),
      event: event.event,
      data: eventData(event, pii),
    });
    byLevel.set(pii, text);
  }
  return text;
}
