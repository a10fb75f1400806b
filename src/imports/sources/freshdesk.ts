import type { ImportInput, ImportItem, ImportSource, SourceOptions } from '../types.ts';
import {
  attachmentNames,
  conversationValues,
  folderFiles,
  Handoffs,
  htmlToText,
  idText,
  isBotName,
  isoTime,
  type Json,
  languageTag,
  list,
  makeItem,
  messageValues,
  obj,
  readRecords,
  ref,
  resourceFiles,
  type SenderType,
  type SiteInfo,
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
 * Freshdesk (API v2, docs/migration/freshdesk.md): `tickets*.json` (list pages with
 * `include=requester,stats,description`), the conversations of each ticket
 * (`conversations/<ticket id>.json` or `conversations*.json`), `contacts*.json`,
 * `agents*.json`, and optionally `roles*.json` and `satisfaction_ratings*.json`. A ticket's
 * description is its first message. Freshdesk marks no reply as the AI's: a reply is the AI's
 * when its agent's name has the word `bot` or `AI`.
 */

const SYSTEM = 'freshdesk';
const SITE: SiteInfo = { id: SYSTEM, url: `import://${SYSTEM}`, name: 'Freshdesk' };

/** 2 Open, 3 Pending, 4 Resolved, 5 Closed; custom statuses (6 and up) are work in progress. */
function statusOf(value: unknown): 'resolved' | 'in_progress' | null {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 2) return null;
  return value === 4 || value === 5 ? 'resolved' : 'in_progress';
}

const CHANNELS: Record<number, string> = {
  1: 'email',
  2: 'portal',
  3: 'phone',
  7: 'chat',
  9: 'feedback_widget',
  10: 'outbound_email',
};
const OUTBOUND_EMAIL = 10;

/**
 * Satisfaction survey answers on Freshdesk's scale (103 best … -103 worst; 3-, 5- and
 * 7-point surveys use subsets of it) as 1–5.
 */
const SURVEY_SCORE: Record<string, number> = {
  '103': 5,
  '102': 4,
  '101': 4,
  '100': 3,
  '-101': 2,
  '-102': 2,
  '-103': 1,
};

interface Person {
  readonly email: string | null;
  readonly name: string | null;
  readonly language: string | null;
}

interface Facts {
  readonly handoffs: Handoffs;
  readonly ratings: Map<string, { ms: number; score: number | null; feedback: string | null }>;
}

export function freshdeskSource(input: ImportInput, options: SourceOptions): ImportSource {
  const { limits } = options;
  const warnings: string[] = [];
  const perTicket = folderFiles(input, 'conversations');
  const perTicketFiles = new Set(perTicket.map((c) => c.file));
  const files = {
    tickets: resourceFiles(input, 'tickets'),
    contacts: resourceFiles(input, 'contacts'),
    agents: resourceFiles(input, 'agents'),
    roles: resourceFiles(input, 'roles'),
    ratings: resourceFiles(input, 'satisfaction_ratings'),
    conversations: [
      ...perTicket,
      ...resourceFiles(input, 'conversations')
        .filter((f) => !perTicketFiles.has(f))
        .map((file) => ({ file, stem: '' })),
    ],
  };
  const used = new Set([
    ...files.tickets,
    ...files.contacts,
    ...files.agents,
    ...files.roles,
    ...files.ratings,
    ...files.conversations.map((c) => c.file),
  ]);
  const unused = unusedFilesWarning(input, used, 'Freshdesk');
  if (unused) warnings.push(unused);
  if (files.tickets.length === 0) warnings.push('no tickets.json: no tickets are imported');
  if (files.agents.length === 0)
    warnings.push('no agents.json: agents are not imported and no reply is taken as the AI’s');
  if (files.agents.length > 0 && files.roles.length === 0)
    warnings.push('no roles.json: every agent is imported with the role agent');

  let agentsPromise: Promise<Map<string, { bot: boolean }>> | null = null;
  let contactsPromise: Promise<Map<string, Person>> | null = null;
  let factsPromise: Promise<Facts> | null = null;

  /** Agents by id (an agent's id is its user id, the `user_id` of its replies). */
  const agentIndex = () => {
    agentsPromise ??= (async () => {
      const map = new Map<string, { bot: boolean }>();
      for (const file of files.agents) {
        for await (const rec of readRecords(input, file, '$.results.*', limits)) {
          const a = obj(rec.value);
          const id = idText(a.id);
          if (id) map.set(id, { bot: isBotName(text(obj(a.contact).name)) });
        }
      }
      return map;
    })();
    return agentsPromise;
  };

  const contactIndex = () => {
    contactsPromise ??= (async () => {
      const map = new Map<string, Person>();
      for (const file of files.contacts) {
        for await (const rec of readRecords(input, file, '$.results.*', limits)) {
          const c = obj(rec.value);
          const id = idText(c.id);
          if (id) map.set(id, { email: text(c.email), name: text(c.name), language: text(c.language) });
        }
      }
      return map;
    })();
    return contactsPromise;
  };

  async function roleNames(): Promise<Map<string, string>> {
    const map = new Map<string, string>();
    for (const file of files.roles) {
      for await (const rec of readRecords(input, file, '$.results.*', limits)) {
        const r = obj(rec.value);
        const id = idText(r.id);
        const name = text(r.name);
        if (id && name) map.set(id, name);
      }
    }
    return map;
  }

  async function* ticketRecords(): AsyncGenerator<{ t: Json; location: string }> {
    for (const file of files.tickets)
      for await (const rec of readRecords(input, file, '$.results.*', limits))
        yield { t: obj(rec.value), location: rec.location };
  }

  async function* conversationRecords(): AsyncGenerator<{
    c: Json;
    ticketId: string | null;
    location: string;
  }> {
    for (const { file, stem } of files.conversations) {
      for await (const rec of readRecords(input, file, '$.results.*', limits)) {
        const c = obj(rec.value);
        yield { c, ticketId: idText(c.ticket_id) ?? (stem ? stemId(stem) : null), location: rec.location };
      }
    }
  }

  function replySender(c: Json, agents: Map<string, { bot: boolean }>): SenderType {
    if (c.incoming === true) return 'customer';
    const agent = agents.get(idText(c.user_id) ?? '');
    return agent?.bot ? 'ai' : 'human';
  }

  function descriptionSender(t: Json): SenderType {
    return t.source === OUTBOUND_EMAIL ? 'human' : 'customer';
  }

  const facts = () => {
    factsPromise ??= (async () => {
      const agents = await agentIndex();
      const handoffs = new Handoffs();
      for await (const { t } of ticketRecords()) {
        const id = idText(t.id);
        if (id) handoffs.see(id, descriptionSender(t), isoTime(t.created_at), false);
      }
      for await (const { c, ticketId } of conversationRecords())
        if (ticketId)
          handoffs.see(ticketId, replySender(c, agents), isoTime(c.created_at), c.private === true);
      const ratings: Facts['ratings'] = new Map();
      for (const file of files.ratings) {
        for await (const rec of readRecords(input, file, '$.results.*', limits)) {
          const r = obj(rec.value);
          const ticketId = idText(r.ticket_id);
          if (!ticketId) continue;
          const ms = timeMs(isoTime(r.updated_at) ?? isoTime(r.created_at)) ?? 0;
          const seen = ratings.get(ticketId);
          if (seen && seen.ms > ms) continue;
          const answer = obj(r.ratings).default_question;
          ratings.set(ticketId, {
            ms,
            score: SURVEY_SCORE[String(answer)] ?? null,
            feedback: text(r.feedback),
          });
        }
      }
      return { handoffs, ratings };
    })();
    return factsPromise;
  };

  async function* sites(): AsyncGenerator<ImportItem> {
    yield siteItem(SYSTEM, SITE, files.tickets[0] ?? 'freshdesk export');
  }

  async function* agents(): AsyncGenerator<ImportItem> {
    const roles = await roleNames();
    let bots = 0;
    for (const file of files.agents) {
      for await (const rec of readRecords(input, file, '$.results.*', limits)) {
        const a = obj(rec.value);
        const contact = obj(a.contact);
        const name = text(contact.name);
        if (isBotName(name)) {
          bots += 1;
          continue;
        }
        const id = idText(a.id);
        const email = text(contact.email);
        const errors: string[] = [];
        if (!id) errors.push('the agent has no id');
        if (!email) errors.push('the agent has no email');
        const admin = list(a.role_ids).some((r) => /administrator/i.test(roles.get(idText(r) ?? '') ?? ''));
        yield makeItem({
          entity: 'team_members',
          sourceType: 'agent',
          sourceId: id,
          values: {
            name: name ?? email,
            email,
            role: admin ? 'admin' : 'agent',
            created_at: isoTime(a.created_at),
            last_login_at: isoTime(contact.last_login_at),
          },
          updatedAt: isoTime(a.updated_at),
          location: rec.location,
          raw: a,
          errors,
        });
      }
    }
    if (bots > 0) {
      const w = `${bots} bot agent(s) are not imported as team members; their replies are imported as AI messages`;
      if (!warnings.includes(w)) warnings.push(w);
    }
  }

  async function* contacts(): AsyncGenerator<ImportItem> {
    for (const file of files.contacts) {
      for await (const rec of readRecords(input, file, '$.results.*', limits)) {
        const c = obj(rec.value);
        const id = idText(c.id);
        const updated = isoTime(c.updated_at);
        yield makeItem({
          entity: 'customers',
          sourceType: 'contact',
          sourceId: id,
          values: {
            email: text(c.email),
            name: text(c.name),
            phone: text(c.phone) ?? text(c.mobile),
            country: null,
            segment: 'consumer',
            created_at: isoTime(c.created_at),
            updated_at: updated,
          },
          updatedAt: updated,
          location: rec.location,
          raw: c,
          errors: id ? [] : ['the contact has no id'],
        });
      }
    }
  }

  async function* tickets(): AsyncGenerator<ImportItem> {
    const [people, known] = await Promise.all([contactIndex(), facts()]);
    for await (const { t, location } of ticketRecords()) {
      const id = idText(t.id);
      const errors: string[] = [];
      if (!id) errors.push('the ticket has no id');
      const start = isoTime(t.created_at);
      if (!start) errors.push('the ticket has no created_at');
      if (t.deleted === true) errors.push('the ticket is deleted in Freshdesk');
      const status = statusOf(t.status);
      if (!status) errors.push(`unknown ticket status ${JSON.stringify(t.status ?? null)}`);
      const updated = isoTime(t.updated_at);
      const stats = obj(t.stats);
      const requesterId = idText(t.requester_id);
      const requester = obj(t.requester);
      const person = requesterId ? people.get(requesterId) : undefined;
      const rating = id ? known.ratings.get(id) : undefined;
      const source = typeof t.source === 'number' ? t.source : null;
      yield makeItem({
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: id,
        values: conversationValues({
          sessionId: `freshdesk:ticket:${id ?? ''}`,
          start,
          end:
            status === 'resolved'
              ? (isoTime(stats.resolved_at) ?? isoTime(stats.closed_at) ?? updated)
              : null,
          customerEmail: text(requester.email) ?? person?.email ?? null,
          customerName: text(requester.name) ?? person?.name ?? null,
          language: languageTag(person?.language),
          // A ticket marked as spam was never worked on.
          status: t.spam === true ? 'unresolved' : (status ?? 'in_progress'),
          escalated: id ? known.handoffs.escalated(id) : false,
          satisfactionScore: rating?.score ?? null,
          satisfactionFeedback: rating?.feedback ?? null,
          tags: texts(t.tags),
          customFields: {
            ...obj(t.custom_fields),
            _freshdesk: {
              subject: text(t.subject),
              priority: typeof t.priority === 'number' ? t.priority : null,
              source,
              channel: source !== null ? (CHANNELS[source] ?? null) : null,
              type: text(t.type),
              group_id: idText(t.group_id),
              is_escalated: t.is_escalated === true,
              fr_escalated: t.fr_escalated === true,
              nr_escalated: t.nr_escalated === true,
            },
          },
          createdAt: start,
          lastUpdated: updated,
        }),
        refs: {
          site_id: siteRef(SITE),
          customer_id: ref('customers', 'contact', requesterId),
          assigned_agent_id: ref('team_members', 'agent', idText(t.responder_id)),
        },
        updatedAt: updated,
        location,
        raw: t,
        errors,
      });
    }
  }

  async function* messages(): AsyncGenerator<ImportItem> {
    const agents = await agentIndex();
    let withoutDescription = 0;
    for await (const { t, location } of ticketRecords()) {
      if (typeof t.description !== 'string' && typeof t.description_text !== 'string') {
        withoutDescription += 1;
        continue;
      }
      const id = idText(t.id);
      const createdAt = isoTime(t.created_at);
      const errors: string[] = [];
      if (!id) errors.push('the ticket has no id');
      if (!createdAt) errors.push('the ticket has no created_at');
      const sender = descriptionSender(t);
      const requesterId = idText(t.requester_id);
      yield makeItem({
        entity: 'messages',
        sourceType: 'ticket_description',
        sourceId: id,
        values: messageValues({
          createdAt,
          senderType: sender,
          senderId: sender === 'customer' ? requesterId : null,
          content: text(t.description_text) ?? htmlToText(text(t.description) ?? ''),
          metadata: {
            internal_note: false,
            source_part_type: 'description',
            attachments: attachmentNames(t.attachments, 'name'),
          },
          updatedAt: createdAt,
        }),
        refs: { conversation_id: ref('conversations', 'ticket', id) },
        soft: { sender_id: sender === 'customer' ? ref('customers', 'contact', requesterId) : null },
        updatedAt: createdAt,
        location: `${location} (description)`,
        raw: {
          id: t.id,
          requester_id: t.requester_id,
          created_at: t.created_at,
          description: t.description,
          description_text: t.description_text,
        },
        errors,
      });
    }
    if (withoutDescription > 0) {
      const w = `${withoutDescription} ticket(s) have no description (export them with include=description): their first message is not imported`;
      if (!warnings.includes(w)) warnings.push(w);
    }
    for await (const { c, ticketId, location } of conversationRecords()) {
      const id = idText(c.id);
      const createdAt = isoTime(c.created_at);
      const errors: string[] = [];
      if (!id) errors.push('the conversation has no id');
      if (!ticketId) errors.push('the conversation has no ticket_id');
      if (!createdAt) errors.push('the conversation has no created_at');
      const sender = replySender(c, agents);
      const userId = idText(c.user_id);
      const internal = c.private === true;
      const updated = isoTime(c.updated_at) ?? createdAt;
      yield makeItem({
        entity: 'messages',
        sourceType: 'conversation',
        sourceId: id,
        values: messageValues({
          createdAt,
          senderType: sender,
          senderId: userId,
          content: text(c.body_text) ?? htmlToText(text(c.body) ?? ''),
          metadata: {
            internal_note: internal,
            source_part_type: internal ? 'note' : 'reply',
            freshdesk_source: typeof c.source === 'number' ? c.source : null,
            attachments: attachmentNames(c.attachments, 'name'),
          },
          edited: isoTime(c.last_edited_at) !== null,
          updatedAt: updated,
        }),
        refs: { conversation_id: ref('conversations', 'ticket', ticketId) },
        soft: {
          sender_id:
            sender === 'customer'
              ? ref('customers', 'contact', userId)
              : sender === 'human'
                ? ref('team_members', 'agent', userId)
                : null,
        },
        updatedAt: updated,
        location,
        raw: c,
        errors,
      });
    }
  }

  return competitorSource(SYSTEM, warnings, {
    sites,
    team_members: agents,
    customers: contacts,
    conversations: tickets,
    messages,
  });
}
