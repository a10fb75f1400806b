import type { ImportInput, ImportItem, ImportSource, SourceOptions } from '../types.ts';
import {
  attachmentNames,
  conversationValues,
  countryCode,
  folderFiles,
  Handoffs,
  idText,
  isoTime,
  type Json,
  languageTag,
  latest,
  list,
  makeItem,
  messageValues,
  obj,
  readRecords,
  ref,
  resourceFiles,
  type SenderType,
  type SiteInfo,
  Skipped,
  siteItem,
  siteRef,
  stemId,
  text,
  texts,
  timeMs,
  unusedFilesWarning,
  competitorSource,
} from './competitor.ts';

/**
 * Chatwoot (application API v1, docs/migration/chatwoot.md): one account's `agents*.json`
 * (`GET /api/v1/accounts/{account_id}/agents`), `contacts*.json`, `conversations*.json`
 * (`?status=all` pages) and the messages of each conversation (`messages/<display id>.json`
 * or `messages*.json`). Conversations are keyed by their per-account `display_id`, as the API
 * gives them. A message sent by an `AgentBot` or a Captain assistant is the AI's.
 */

const SYSTEM = 'chatwoot';

const STATUS: Record<string, 'resolved' | 'in_progress'> = {
  open: 'in_progress',
  pending: 'in_progress',
  snoozed: 'in_progress',
  resolved: 'resolved',
};
/** The database's enum values, for rows exported from it. */
const STATUS_CODES = ['open', 'resolved', 'pending', 'snoozed'];
const MESSAGE_TYPES = ['incoming', 'outgoing', 'activity', 'template'];

function messageType(value: unknown): string | null {
  if (typeof value === 'number') return MESSAGE_TYPES[value] ?? null;
  return typeof value === 'string' ? value : null;
}

function senderOf(m: Json, type: string | null): { sender: SenderType; kind: string | null } {
  const kind = text(m.sender_type) ?? text(obj(m.sender).type);
  switch (kind) {
    case 'Contact':
    case 'contact':
      return { sender: 'customer', kind };
    case 'User':
    case 'user':
      return { sender: 'human', kind };
    case 'AgentBot':
    case 'agent_bot':
    case 'Captain::Assistant':
    case 'captain_assistant':
      return { sender: 'ai', kind };
    default:
      // No sender: an incoming message is the contact's; an outgoing one was sent for the team (API, automation).
      return { sender: type === 'incoming' ? 'customer' : 'human', kind };
  }
}

interface Facts {
  readonly handoffs: Handoffs;
  readonly csat: Map<string, { ms: number; rating: number | null; feedback: string | null }>;
}

export function chatwootSource(input: ImportInput, options: SourceOptions): ImportSource {
  const { limits } = options;
  const warnings: string[] = [];
  const skipped = new Skipped();
  const perConversation = folderFiles(input, 'messages');
  const perConversationFiles = new Set(perConversation.map((m) => m.file));
  const files = {
    agents: resourceFiles(input, 'agents'),
    contacts: resourceFiles(input, 'contacts'),
    conversations: resourceFiles(input, 'conversations'),
    messages: [
      ...perConversation,
      ...resourceFiles(input, 'messages')
        .filter((f) => !perConversationFiles.has(f))
        .map((file) => ({ file, stem: '' })),
    ],
  };
  const used = new Set([
    ...files.agents,
    ...files.contacts,
    ...files.conversations,
    ...files.messages.map((m) => m.file),
  ]);
  const unused = unusedFilesWarning(input, used, 'Chatwoot');
  if (unused) warnings.push(unused);
  if (files.conversations.length === 0) warnings.push('no conversations.json: no conversations are imported');
  if (files.messages.length === 0)
    warnings.push('no messages files: conversations are imported without their messages');

  let sitePromise: Promise<SiteInfo> | null = null;
  let factsPromise: Promise<Facts> | null = null;

  const site = () => {
    sitePromise ??= (async () => {
      for (const file of files.conversations) {
        for await (const rec of readRecords(input, file, '$.data.payload.*', limits)) {
          const account = idText(obj(rec.value).account_id);
          if (account)
            return {
              id: `account-${account}`,
              url: `import://chatwoot/accounts/${account}`,
              name: `Chatwoot account ${account}`,
            };
          break;
        }
      }
      return { id: SYSTEM, url: `import://${SYSTEM}`, name: 'Chatwoot' };
    })();
    return sitePromise;
  };

  async function* messageRecords(): AsyncGenerator<{
    m: Json;
    conversationId: string | null;
    location: string;
  }> {
    for (const { file, stem } of files.messages) {
      for await (const rec of readRecords(input, file, '$.payload.*', limits)) {
        const m = obj(rec.value);
        yield {
          m,
          conversationId: idText(m.conversation_id) ?? (stem ? stemId(stem) : null),
          location: rec.location,
        };
      }
    }
  }

  const facts = () => {
    factsPromise ??= (async () => {
      const handoffs = new Handoffs();
      const csat: Facts['csat'] = new Map();
      for await (const { m, conversationId } of messageRecords()) {
        if (!conversationId) continue;
        const type = messageType(m.message_type);
        const createdAt = isoTime(m.created_at);
        if (m.content_type === 'input_csat') {
          const response = obj(obj(obj(m.content_attributes).submitted_values).csat_survey_response);
          const score = response.rating;
          const ms = timeMs(createdAt) ?? 0;
          const seen = csat.get(conversationId);
          if ((score !== undefined || response.feedback_message !== undefined) && (!seen || seen.ms <= ms))
            csat.set(conversationId, {
              ms,
              rating:
                typeof score === 'number' && Number.isInteger(score) && score >= 1 && score <= 5
                  ? score
                  : null,
              feedback: text(response.feedback_message),
            });
        }
        if (type !== 'incoming' && type !== 'outgoing') continue;
        handoffs.see(conversationId, senderOf(m, type).sender, createdAt, m.private === true);
      }
      return { handoffs, csat };
    })();
    return factsPromise;
  };

  async function* sites(): AsyncGenerator<ImportItem> {
    yield siteItem(SYSTEM, await site(), files.conversations[0] ?? 'chatwoot export');
  }

  async function* agents(): AsyncGenerator<ImportItem> {
    for (const file of files.agents) {
      for await (const rec of readRecords(input, file, '$.payload.*', limits)) {
        const a = obj(rec.value);
        const id = idText(a.id);
        const email = text(a.email);
        const errors: string[] = [];
        if (!id) errors.push('the agent has no id');
        if (!email) errors.push('the agent has no email');
        yield makeItem({
          entity: 'team_members',
          sourceType: 'user',
          sourceId: id,
          values: {
            name: text(a.name) ?? text(a.available_name) ?? email,
            email,
            role: a.role === 'administrator' ? 'admin' : 'agent',
            created_at: isoTime(a.created_at),
            last_login_at: null,
          },
          updatedAt: null,
          location: rec.location,
          raw: a,
          errors,
        });
      }
    }
  }

  async function* contacts(): AsyncGenerator<ImportItem> {
    for (const file of files.contacts) {
      for await (const rec of readRecords(input, file, '$.payload.*', limits)) {
        const c = obj(rec.value);
        const id = idText(c.id);
        const extra = obj(c.additional_attributes);
        const updated = isoTime(c.updated_at);
        yield makeItem({
          entity: 'customers',
          sourceType: 'contact',
          sourceId: id,
          values: {
            email: text(c.email),
            name: text(c.name),
            phone: text(c.phone_number),
            country: countryCode(extra.country_code) ?? countryCode(extra.country),
            segment: 'consumer',
            created_at: isoTime(c.created_at),
            updated_at: updated,
          },
          updatedAt: updated ?? isoTime(c.last_activity_at),
          location: rec.location,
          raw: c,
          errors: id ? [] : ['the contact has no id'],
        });
      }
    }
  }

  async function* conversations(): AsyncGenerator<ImportItem> {
    const [siteInfo, known] = await Promise.all([site(), facts()]);
    for (const file of files.conversations) {
      for await (const rec of readRecords(input, file, '$.data.payload.*', limits)) {
        const c = obj(rec.value);
        const id = idText(c.id);
        const errors: string[] = [];
        if (!id) errors.push('the conversation has no id');
        const start = isoTime(c.created_at);
        if (!start) errors.push('the conversation has no created_at');
        const rawStatus = typeof c.status === 'number' ? STATUS_CODES[c.status] : text(c.status);
        const status = rawStatus ? STATUS[rawStatus] : undefined;
        if (!status) errors.push(`unknown conversation status ${JSON.stringify(c.status ?? null)}`);
        const meta = obj(c.meta);
        const contact = obj(meta.sender);
        const contactExtra = obj(contact.additional_attributes);
        const extra = obj(c.additional_attributes);
        const lastActivity = isoTime(c.last_activity_at) ?? isoTime(c.timestamp);
        const updated = latest(isoTime(c.updated_at), lastActivity) ?? start;
        const lastMessage = obj(c.last_non_activity_message ?? list(c.messages)[0]);
        const session = text(obj(obj(lastMessage.conversation).contact_inbox).source_id);
        const csat = id ? known.csat.get(id) : undefined;
        yield makeItem({
          entity: 'conversations',
          sourceType: 'conversation',
          sourceId: id,
          values: conversationValues({
            sessionId: session ?? `chatwoot:conversation:${text(c.uuid) ?? id ?? ''}`,
            start,
            // The API keeps no resolution time: a resolved conversation ended at its last activity.
            end: status === 'resolved' ? lastActivity : null,
            pageUrl: text(extra.referer),
            customerEmail: text(contact.email),
            customerName: text(contact.name),
            ipAddress: text(contactExtra.created_at_ip) ?? text(contactExtra.updated_at_ip),
            country: countryCode(contactExtra.country_code) ?? countryCode(contactExtra.country),
            language: languageTag(extra.browser_language),
            status: status ?? 'in_progress',
            escalated: id ? known.handoffs.escalated(id) : false,
            satisfactionScore: csat?.rating ?? null,
            satisfactionFeedback: csat?.feedback ?? null,
            tags: texts(c.labels),
            customFields: {
              ...obj(c.custom_attributes),
              _chatwoot: {
                uuid: text(c.uuid),
                inbox_id: idText(c.inbox_id),
                channel: text(meta.channel),
                priority: text(c.priority),
                team: text(obj(meta.team).name),
                browser: extra.browser ?? null,
              },
            },
            createdAt: start,
            lastUpdated: updated,
          }),
          refs: {
            site_id: siteRef(siteInfo),
            customer_id: ref('customers', 'contact', idText(contact.id)),
            assigned_agent_id: ref('team_members', 'user', idText(obj(meta.assignee).id)),
          },
          updatedAt: updated,
          location: rec.location,
          raw: c,
          errors,
        });
      }
    }
  }

  async function* messages(): AsyncGenerator<ImportItem> {
    for await (const { m, conversationId, location } of messageRecords()) {
      const type = messageType(m.message_type);
      if (type === 'activity' || type === 'template') {
        skipped.add(`${type} message(s) (written by Chatwoot, not by a person or a bot) were not imported`);
        continue;
      }
      const id = idText(m.id);
      const errors: string[] = [];
      if (!id) errors.push('the message has no id');
      if (!conversationId) errors.push('the message has no conversation_id');
      if (type !== 'incoming' && type !== 'outgoing')
        errors.push(`unknown message_type ${JSON.stringify(m.message_type ?? null)}`);
      const createdAt = isoTime(m.created_at);
      if (!createdAt) errors.push('the message has no created_at');
      const { sender, kind } = senderOf(m, type);
      const senderId = idText(m.sender_id) ?? idText(obj(m.sender).id);
      const updated = isoTime(m.updated_at) ?? createdAt;
      yield makeItem({
        entity: 'messages',
        sourceType: 'message',
        sourceId: id,
        values: messageValues({
          createdAt,
          senderType: sender,
          senderId,
          content: typeof m.content === 'string' ? m.content : '',
          metadata: {
            internal_note: m.private === true,
            source_part_type: type,
            content_type: text(m.content_type),
            sender_type: kind,
            attachments: attachmentNames(m.attachments, 'data_url'),
          },
          updatedAt: updated,
        }),
        refs: { conversation_id: ref('conversations', 'conversation', conversationId) },
        soft: {
          sender_id:
            sender === 'customer'
              ? ref('customers', 'contact', senderId)
              : sender === 'human'
                ? ref('team_members', 'user', senderId)
                : null,
        },
        updatedAt: updated,
        location,
        raw: m,
        errors,
      });
    }
    skipped.flush(warnings);
  }

  return competitorSource(SYSTEM, warnings, {
    sites,
    team_members: agents,
    customers: contacts,
    conversations,
    messages,
  });
}
