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
 * Zendesk Support (docs/migration/zendesk.md): the API's JSON pages as exported —
 * `tickets*.json` (incremental ticket export), `users*.json`, optionally `ticket_fields*.json`,
 * and the comments either per ticket (`comments/<ticket id>.json`, the ticket comments
 * endpoint) or from the incremental ticket event export with comment events
 * (`ticket_events*.json`).
 *
 * Zendesk has no documented AI flag on comments: a comment is the AI's when its author is an
 * agent or admin marked as a bot (the user's tags hold `bot` or `ai`, or its name has the
 * word `bot` or `AI`), or when it came through an Answer Bot channel.
 */

const SYSTEM = 'zendesk';

interface Person {
  readonly role: 'end-user' | 'agent' | 'admin';
  readonly bot: boolean;
  readonly email: string | null;
  readonly name: string | null;
  readonly locale: string | null;
}

interface Rating {
  readonly ms?: number;
  readonly score: unknown;
  readonly comment: string | null;
}

interface FirstContact {
  readonly ms: number;
  readonly ip: string | null;
  readonly userAgent: string | null;
}

interface Facts {
  readonly handoffs: Handoffs;
  readonly firstContact: Map<string, FirstContact>;
}

/** A comment with the ticket it belongs to, from either comment layout. */
interface Comment {
  readonly ticketId: string | null;
  readonly comment: Json;
  /** The time, author, channel and metadata of the audit or event that holds the comment. */
  readonly eventCreatedAt: unknown;
  readonly eventAuthor: unknown;
  readonly eventVia: unknown;
  readonly eventMetadata: unknown;
  readonly location: string;
}

const COMMENT_TYPES = new Set(['Comment', 'VoiceComment']);

const STATUS: Record<string, 'resolved' | 'in_progress'> = {
  new: 'in_progress',
  open: 'in_progress',
  pending: 'in_progress',
  hold: 'in_progress',
  solved: 'resolved',
  closed: 'resolved',
};

/** Legacy CSAT is good/bad; the newer survey may carry a 1–5 score. */
function satisfaction(value: unknown): number | null {
  if (value === 'good') return 5;
  if (value === 'bad') return 1;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 5) return value;
  return null;
}

export function zendeskSource(input: ImportInput, options: SourceOptions): ImportSource {
  const { limits } = options;
  const warnings: string[] = [];
  const skipped = new Skipped();
  const files = {
    tickets: resourceFiles(input, 'tickets'),
    users: resourceFiles(input, 'users'),
    fields: resourceFiles(input, 'ticket_fields'),
    events: resourceFiles(input, 'ticket_events'),
    ratings: resourceFiles(input, 'satisfaction_ratings'),
    organizations: resourceFiles(input, 'organizations'),
    comments: folderFiles(input, 'comments'),
    audits: folderFiles(input, 'audits'),
  };
  const used = new Set([
    ...files.tickets,
    ...files.users,
    ...files.fields,
    ...files.events,
    ...files.ratings,
    ...files.organizations,
    ...files.comments.map((c) => c.file),
    ...files.audits.map((c) => c.file),
  ]);
  const unused = unusedFilesWarning(input, used, 'Zendesk');
  if (unused) warnings.push(unused);
  if (files.tickets.length === 0) warnings.push('no tickets.json: no tickets are imported');
  if (files.users.length === 0)
    warnings.push(
      "no users.json: agents and end users are not imported, and a comment's author is taken as the customer (public comment) or an agent (internal note)",
    );
  if (files.comments.length === 0 && files.audits.length === 0 && files.events.length === 0)
    warnings.push(
      'no comments/<ticket id>.json, audits/<ticket id>.json or ticket_events.json: tickets are imported without their comments',
    );
  /**
   * Tickets whose comments come from their own files: comments/ first, then audits/; the other
   * layouts' copies of these tickets' comments are skipped.
   */
  const commentTickets = new Set(files.comments.map((c) => stemId(c.stem)));
  const auditTickets = new Set(files.audits.map((c) => stemId(c.stem)).filter((t) => !commentTickets.has(t)));

  let sitePromise: Promise<SiteInfo> | null = null;
  let peoplePromise: Promise<Map<string, Person>> | null = null;
  let fieldsPromise: Promise<Map<string, string>> | null = null;
  let factsPromise: Promise<Facts> | null = null;
  let ratingsPromise: Promise<Map<string, Rating>> | null = null;
  let organizationsPromise: Promise<Map<string, string>> | null = null;

  const site = () => {
    sitePromise ??= (async () => {
      const groups = [
        [files.tickets, '$.tickets.*'],
        [files.users, '$.users.*'],
      ] as const;
      for (const [group, envelope] of groups) {
        const first = group[0];
        if (!first) continue;
        for await (const rec of readRecords(input, first, envelope, limits)) {
          const url = text(obj(rec.value).url);
          if (url) return siteFromUrl(url);
          break;
        }
      }
      return siteFromUrl(null);
    })();
    return sitePromise;
  };

  const people = () => {
    peoplePromise ??= (async () => {
      const map = new Map<string, Person>();
      for (const file of files.users) {
        for await (const rec of readRecords(input, file, '$.users.*', limits)) {
          const u = obj(rec.value);
          const id = idText(u.id);
          const role = u.role;
          if (!id || (role !== 'end-user' && role !== 'agent' && role !== 'admin')) continue;
          map.set(id, {
            role,
            bot: role !== 'end-user' && isBotUser(u),
            email: text(u.email),
            name: text(u.name),
            locale: text(u.locale),
          });
        }
      }
      return map;
    })();
    return peoplePromise;
  };

  const fieldTitles = () => {
    fieldsPromise ??= (async () => {
      const titles = new Map<string, string>();
      const count = new Map<string, number>();
      for (const file of files.fields) {
        for await (const rec of readRecords(input, file, '$.ticket_fields.*', limits)) {
          const f = obj(rec.value);
          const id = idText(f.id);
          const title = text(f.title);
          if (!id || !title) continue;
          titles.set(id, title);
          count.set(title, (count.get(title) ?? 0) + 1);
        }
      }
      // Two fields with one title keep apart by their ids.
      for (const [id, title] of titles) if ((count.get(title) ?? 0) > 1) titles.set(id, `${title} (${id})`);
      return titles;
    })();
    return fieldsPromise;
  };

  /** Organization names by id: Ferry has no organizations, so a ticket keeps its organization's name. */
  const organizations = () => {
    organizationsPromise ??= (async () => {
      const names = new Map<string, string>();
      for (const file of files.organizations)
        for await (const rec of readRecords(input, file, '$.organizations.*', limits)) {
          const o = obj(rec.value);
          const id = idText(o.id);
          const name = text(o.name);
          if (id && name) names.set(id, name);
        }
      return names;
    })();
    return organizationsPromise;
  };

  /** The latest rating of each ticket from the satisfaction ratings endpoint. */
  const ratings = () => {
    ratingsPromise ??= (async () => {
      const map = new Map<string, Rating>();
      for (const file of files.ratings) {
        for await (const rec of readRecords(input, file, '$.satisfaction_ratings.*', limits)) {
          const r = obj(rec.value);
          const ticketId = idText(r.ticket_id);
          if (!ticketId) continue;
          const ms = timeMs(isoTime(r.updated_at) ?? isoTime(r.created_at)) ?? 0;
          const seen = map.get(ticketId);
          if (seen && (seen.ms ?? 0) > ms) continue;
          map.set(ticketId, { ms, score: r.score, comment: text(r.comment) });
        }
      }
      return map;
    })();
    return ratingsPromise;
  };

  async function* comments(): AsyncGenerator<Comment> {
    for (const { file, stem } of files.comments) {
      const ticketId = stemId(stem);
      for await (const rec of readRecords(input, file, '$.comments.*', limits))
        yield {
          ticketId,
          comment: obj(rec.value),
          eventCreatedAt: null,
          eventAuthor: null,
          eventVia: null,
          eventMetadata: null,
          location: rec.location,
        };
    }
    for (const { file, stem } of files.audits) {
      const fileTicket = stemId(stem);
      if (!auditTickets.has(fileTicket)) continue;
      for await (const rec of readRecords(input, file, '$.audits.*', limits)) {
        const audit = obj(rec.value);
        for (const e of list(audit.events)) {
          const c = obj(e);
          if (!COMMENT_TYPES.has(text(c.type) ?? '')) continue;
          yield {
            ticketId: idText(audit.ticket_id) ?? fileTicket,
            comment: c,
            eventCreatedAt: audit.created_at,
            eventAuthor: audit.author_id,
            eventVia: audit.via,
            eventMetadata: audit.metadata,
            location: `${rec.location} (comment ${idText(c.id) ?? '?'})`,
          };
        }
      }
    }
    // A time-based export may repeat events at a page boundary: the comments of the previous
    // page and of this one are remembered, no more.
    let previous = new Set<string>();
    let current = new Set<string>();
    for (const file of files.events) {
      previous = current;
      current = new Set();
      for await (const rec of readRecords(input, file, '$.ticket_events.*', limits)) {
        const event = obj(rec.value);
        const ticketId = idText(event.ticket_id);
        if (ticketId && (commentTickets.has(ticketId) || auditTickets.has(ticketId))) continue;
        for (const child of list(event.child_events)) {
          const c = obj(child);
          if (!COMMENT_TYPES.has(text(c.event_type) ?? '')) continue;
          const commentId = idText(c.id);
          if (commentId) {
            if (previous.has(commentId) || current.has(commentId)) continue;
            current.add(commentId);
          }
          yield {
            ticketId,
            comment: c,
            eventCreatedAt: event.created_at ?? event.timestamp,
            eventAuthor: event.updater_id,
            eventVia: event.via,
            eventMetadata: event.system ? { system: event.system } : null,
            location: `${rec.location} (comment ${idText(c.id) ?? '?'})`,
          };
        }
      }
    }
  }

  function senderOf(
    c: Comment,
    persons: Map<string, Person>,
  ): { type: SenderType; author: string | null; known: boolean } {
    const author = idText(c.comment.author_id) ?? idText(c.eventAuthor);
    const isPublic = c.comment.public !== false;
    const channel = channelOf(c);
    if (channel && /answer[ _]?bot/i.test(channel)) return { type: 'ai', author, known: true };
    const person = author ? persons.get(author) : undefined;
    if (!person) return { type: isPublic ? 'customer' : 'human', author, known: false };
    if (person.role === 'end-user') return { type: 'customer', author, known: true };
    return { type: person.bot ? 'ai' : 'human', author, known: true };
  }

  const facts = () => {
    factsPromise ??= (async () => {
      const persons = await people();
      const handoffs = new Handoffs();
      const firstContact = new Map<string, FirstContact>();
      for await (const c of comments()) {
        if (!c.ticketId) continue;
        const sender = senderOf(c, persons);
        const createdAt = isoTime(c.comment.created_at) ?? isoTime(c.eventCreatedAt);
        handoffs.see(c.ticketId, sender.type, createdAt, c.comment.public === false);
        const ms = timeMs(createdAt);
        if (sender.type !== 'customer' || ms === null) continue;
        const seen = firstContact.get(c.ticketId);
        if (seen && seen.ms <= ms) continue;
        const system = obj(obj(c.comment.metadata ?? c.eventMetadata).system);
        firstContact.set(c.ticketId, { ms, ip: text(system.ip_address), userAgent: text(system.client) });
      }
      return { handoffs, firstContact };
    })();
    return factsPromise;
  };

  async function* sites(): AsyncGenerator<ImportItem> {
    yield siteItem(SYSTEM, await site(), files.tickets[0] ?? files.users[0] ?? 'zendesk export');
  }

  async function* users(entity: 'team_members' | 'customers'): AsyncGenerator<ImportItem> {
    let bots = 0;
    for (const file of files.users) {
      for await (const rec of readRecords(input, file, '$.users.*', limits)) {
        const u = obj(rec.value);
        const id = idText(u.id);
        const role = u.role;
        const staff = role === 'agent' || role === 'admin';
        const known = staff || role === 'end-user';
        const errors: string[] = [];
        if (!id) errors.push('the user has no id');
        if (entity === 'team_members') {
          if (!staff) continue;
          if (isBotUser(u)) {
            bots += 1;
            continue;
          }
          const email = text(u.email);
          if (!email) errors.push('the agent has no email');
          yield makeItem({
            entity,
            sourceType: 'user',
            sourceId: id,
            values: {
              name: text(u.name) ?? email,
              email,
              role: role === 'admin' ? 'admin' : 'agent',
              created_at: isoTime(u.created_at),
              last_login_at: isoTime(u.last_login_at),
            },
            updatedAt: isoTime(u.updated_at),
            location: rec.location,
            raw: u,
            errors,
          });
        } else {
          if (staff) continue;
          if (!known) errors.push(`the user has no known role (${JSON.stringify(role ?? null)})`);
          yield makeItem({
            entity,
            sourceType: 'user',
            sourceId: id,
            values: {
              email: text(u.email),
              name: text(u.name),
              phone: text(u.phone),
              country: null,
              segment: 'consumer',
              created_at: isoTime(u.created_at),
              updated_at: isoTime(u.updated_at),
            },
            updatedAt: isoTime(u.updated_at),
            location: rec.location,
            raw: u,
            errors,
          });
        }
      }
    }
    if (entity === 'team_members' && bots > 0) {
      const w = `${bots} bot user(s) are not imported as team members; their comments are imported as AI messages`;
      if (!warnings.includes(w)) warnings.push(w);
    }
  }

  async function* conversations(): AsyncGenerator<ImportItem> {
    const [siteInfo, persons, titles, known, rated, orgs] = await Promise.all([
      site(),
      people(),
      fieldTitles(),
      facts(),
      ratings(),
      organizations(),
    ]);
    for (const file of files.tickets) {
      for await (const rec of readRecords(input, file, '$.tickets.*', limits)) {
        const t = obj(rec.value);
        const id = idText(t.id);
        const errors: string[] = [];
        if (!id) errors.push('the ticket has no id');
        const start = isoTime(t.created_at);
        if (!start) errors.push('the ticket has no created_at');
        const rawStatus = text(t.status);
        const status = rawStatus ? STATUS[rawStatus] : undefined;
        if (rawStatus === 'deleted') errors.push('the ticket is deleted in Zendesk');
        else if (!status) errors.push(`unknown ticket status ${JSON.stringify(t.status ?? null)}`);
        const updated = isoTime(t.updated_at);
        const requesterId = idText(t.requester_id);
        const requester = requesterId ? persons.get(requesterId) : undefined;
        const contact = id ? known.firstContact.get(id) : undefined;
        const embedded = obj(t.satisfaction_rating);
        const rating = (id ? rated.get(id) : undefined) ?? {
          score: embedded.score,
          comment: text(embedded.comment),
        };
        const score = satisfaction(rating.score);
        const via = obj(t.via);
        const customFields: Json = {};
        for (const f of list(t.custom_fields)) {
          const field = obj(f);
          const fieldId = idText(field.id);
          const value = field.value;
          if (!fieldId || value === null || value === undefined || value === '') continue;
          customFields[titles.get(fieldId) ?? fieldId] = value;
        }
        customFields._zendesk = {
          subject: text(t.subject) ?? text(t.raw_subject),
          priority: text(t.priority),
          type: text(t.type),
          channel: text(via.channel),
          external_id: text(t.external_id),
        };
        const organizationId = idText(t.organization_id);
        if (organizationId)
          (customFields._zendesk as Json).organization = orgs.get(organizationId) ?? organizationId;
        yield makeItem({
          entity: 'conversations',
          sourceType: 'ticket',
          sourceId: id,
          values: conversationValues({
            sessionId: `zendesk:ticket:${id ?? ''}`,
            start,
            // Zendesk keeps no solved time on the ticket: a solved ticket ended at its last update.
            end: status === 'resolved' ? updated : null,
            customerEmail: requester?.email ?? null,
            customerName: requester?.name ?? null,
            ipAddress: contact?.ip ?? null,
            userAgent: contact?.userAgent ?? null,
            language: languageTag(requester?.locale),
            status: status ?? 'in_progress',
            escalated: id ? known.handoffs.escalated(id) : false,
            satisfactionScore: score,
            satisfactionFeedback: rating.comment,
            tags: texts(t.tags),
            customFields,
            createdAt: start,
            lastUpdated: updated,
          }),
          refs: {
            site_id: siteRef(siteInfo),
            customer_id: ref('customers', 'user', requesterId),
            assigned_agent_id: ref('team_members', 'user', idText(t.assignee_id)),
          },
          updatedAt: updated,
          location: rec.location,
          raw: t,
          errors,
        });
      }
    }
  }

  async function* messages(): AsyncGenerator<ImportItem> {
    const persons = await people();
    for await (const c of comments()) {
      const m = c.comment;
      const id = idText(m.id);
      const errors: string[] = [];
      if (!id) errors.push('the comment has no id');
      if (!c.ticketId) errors.push('the comment has no ticket');
      const createdAt = isoTime(m.created_at) ?? isoTime(c.eventCreatedAt);
      if (!createdAt) errors.push('the comment has no created_at');
      const sender = senderOf(c, persons);
      if (!sender.known)
        skipped.add(
          'comment(s) by authors not in users.json were taken as the customer (public) or an agent (internal note)',
        );
      const internal = m.public === false;
      const content = text(m.body) ?? text(m.plain_body) ?? htmlToText(text(m.html_body) ?? '');
      yield makeItem({
        entity: 'messages',
        sourceType: 'ticket_comment',
        sourceId: id,
        values: messageValues({
          createdAt,
          senderType: sender.type,
          senderId: sender.author,
          content,
          metadata: {
            internal_note: internal,
            source_part_type: text(m.type) ?? text(m.event_type) ?? 'Comment',
            channel: channelOf(c),
            attachments: attachmentNames(m.attachments, 'file_name'),
          },
          updatedAt: createdAt,
        }),
        refs: { conversation_id: ref('conversations', 'ticket', c.ticketId) },
        soft: {
          sender_id:
            sender.type === 'customer'
              ? ref('customers', 'user', sender.author)
              : sender.type === 'human'
                ? ref('team_members', 'user', sender.author)
                : null,
        },
        updatedAt: createdAt,
        location: c.location,
        raw: m,
        errors,
      });
    }
    skipped.flush(warnings);
  }

  return competitorSource(SYSTEM, warnings, {
    sites,
    team_members: () => users('team_members'),
    customers: () => users('customers'),
    conversations,
    messages,
  });
}

/** The channel a comment came through: its own `via`, else its audit's or event's. */
function channelOf(c: Comment): string | null {
  const via = c.comment.via ?? c.eventVia;
  return typeof via === 'string' ? via : text(obj(via).channel);
}

/** A Zendesk user marked as a bot: its tags hold `bot` or `ai`, or its name has the word bot or AI. */
function isBotUser(u: Json): boolean {
  const tags = texts(u.tags).map((t) => t.toLowerCase());
  return tags.includes('bot') || tags.includes('ai') || isBotName(text(u.name));
}

/** The account from an API URL (`https://acme.zendesk.com/api/v2/tickets/1.json` → `acme`). */
function siteFromUrl(url: string | null): SiteInfo {
  let host: string | null = null;
  try {
    host = url ? new URL(url).hostname.toLowerCase() : null;
  } catch {
    host = null;
  }
  if (!host) return { id: SYSTEM, url: `import://${SYSTEM}`, name: 'Zendesk' };
  const account = host.endsWith('.zendesk.com') ? host.slice(0, -'.zendesk.com'.length) : host;
  return { id: account, url: `https://${host}`, name: host };
}
