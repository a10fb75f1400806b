import type { ImportInput, ImportItem, ImportSource, SourceOptions } from '../types.ts';
import {
  attachmentNames,
  conversationValues,
  countryCode,
  folderFiles,
  Handoffs,
  htmlToText,
  idText,
  isoTime,
  type Json,
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
  timeMs,
  unusedFilesWarning,
  competitorSource,
} from './competitor.ts';

/**
 * Help Scout (Mailbox API 2.0, docs/migration/helpscout.md): `users*.json`,
 * `customers*.json` and `conversations*.json` pages as the API returns them (HAL, records
 * under `_embedded`), with each conversation's threads either embedded (`embed=threads`) or
 * in `threads/<conversation id>.json` (`GET /v3/conversations/{id}/threads`). A thread whose
 * `createdBy.type` is `system_user` (Help Scout's AI, as the v3 endpoint reports it) is the
 * AI's.
 */

const SYSTEM = 'helpscout';
const SITE: SiteInfo = { id: SYSTEM, url: `import://${SYSTEM}`, name: 'Help Scout' };

const STATUS: Record<string, 'resolved' | 'unresolved' | 'in_progress'> = {
  active: 'in_progress',
  open: 'in_progress',
  pending: 'in_progress',
  closed: 'resolved',
  spam: 'unresolved',
};

/** Threads that are not messages: line items record events (status changes, assignments, workflows). */
const NOT_MESSAGES = new Set(['lineitem']);

/** Great / Okay / Not Good. */
const RATING: Record<string, number> = { great: 5, okay: 3, not_good: 1, notgood: 1, bad: 1 };

function senderOf(thread: Json): SenderType {
  const by = text(obj(thread.createdBy).type);
  if (by === 'customer') return 'customer';
  if (by === 'system_user') return 'ai';
  if (by === 'user' || by === 'team') return 'human';
  return thread.type === 'customer' ? 'customer' : 'human';
}

function personName(p: Json): string | null {
  const name = [text(p.first) ?? text(p.firstName), text(p.last) ?? text(p.lastName)]
    .filter((s) => s !== null)
    .join(' ');
  return name === '' ? null : name;
}

interface Facts {
  readonly handoffs: Handoffs;
  readonly ratings: Map<string, { ms: number; score: number | null; feedback: string | null }>;
}

interface Thread {
  readonly conversationId: string | null;
  readonly thread: Json;
  readonly location: string;
}

export function helpscoutSource(input: ImportInput, options: SourceOptions): ImportSource {
  const { limits } = options;
  const warnings: string[] = [];
  const skipped = new Skipped();
  const threadFiles = folderFiles(input, 'threads');
  const files = {
    users: resourceFiles(input, 'users'),
    customers: resourceFiles(input, 'customers'),
    conversations: resourceFiles(input, 'conversations'),
  };
  /** Conversations whose threads have their own files: their embedded threads are not read. */
  const ownThreads = new Set(threadFiles.map((t) => stemId(t.stem)));
  const used = new Set([
    ...files.users,
    ...files.customers,
    ...files.conversations,
    ...threadFiles.map((t) => t.file),
  ]);
  const unused = unusedFilesWarning(input, used, 'Help Scout');
  if (unused) warnings.push(unused);
  if (files.conversations.length === 0) warnings.push('no conversations.json: no conversations are imported');

  let factsPromise: Promise<Facts> | null = null;

  async function* conversationRecords(): AsyncGenerator<{ c: Json; location: string }> {
    for (const file of files.conversations)
      for await (const rec of readRecords(input, file, '$._embedded.conversations.*', limits))
        yield { c: obj(rec.value), location: rec.location };
  }

  async function* threads(): AsyncGenerator<Thread> {
    for (const { file, stem } of threadFiles) {
      const conversationId = stemId(stem);
      for await (const rec of readRecords(input, file, '$._embedded.threads.*', limits))
        yield { conversationId, thread: obj(rec.value), location: rec.location };
    }
    for await (const { c, location } of conversationRecords()) {
      const conversationId = idText(c.id);
      if (conversationId && ownThreads.has(conversationId)) continue;
      for (const t of list(obj(c._embedded).threads)) {
        const thread = obj(t);
        yield { conversationId, thread, location: `${location} (thread ${idText(thread.id) ?? '?'})` };
      }
    }
  }

  function isMessage(thread: Json): boolean {
    const state = text(thread.state);
    return !NOT_MESSAGES.has(text(thread.type) ?? '') && (state === null || state === 'published');
  }

  const facts = () => {
    factsPromise ??= (async () => {
      const handoffs = new Handoffs();
      const ratings: Facts['ratings'] = new Map();
      for await (const { conversationId, thread } of threads()) {
        if (!conversationId) continue;
        const createdAt = isoTime(thread.createdAt);
        if (isMessage(thread))
          handoffs.see(conversationId, senderOf(thread), createdAt, thread.type === 'note');
        const r = thread.rating;
        if (r === undefined || r === null) continue;
        const rating = typeof r === 'string' ? { rating: r } : obj(r);
        const ms = timeMs(isoTime(rating.createdAt) ?? createdAt) ?? 0;
        const seen = ratings.get(conversationId);
        if (seen && seen.ms > ms) continue;
        const key = (text(rating.rating) ?? '').toLowerCase().replace(/\s+/g, '_');
        ratings.set(conversationId, { ms, score: RATING[key] ?? null, feedback: text(rating.comments) });
      }
      return { handoffs, ratings };
    })();
    return factsPromise;
  };

  async function* sites(): AsyncGenerator<ImportItem> {
    yield siteItem(SYSTEM, SITE, files.conversations[0] ?? 'help scout export');
  }

  async function* users(): AsyncGenerator<ImportItem> {
    let teams = 0;
    for (const file of files.users) {
      for await (const rec of readRecords(input, file, '$._embedded.users.*', limits)) {
        const u = obj(rec.value);
        if (u.type === 'team') {
          teams += 1;
          continue;
        }
        const id = idText(u.id);
        const email = text(u.email);
        const errors: string[] = [];
        if (!id) errors.push('the user has no id');
        if (!email) errors.push('the user has no email');
        yield makeItem({
          entity: 'team_members',
          sourceType: 'user',
          sourceId: id,
          values: {
            name: personName(u) ?? email,
            email,
            role: u.role === 'owner' || u.role === 'admin' ? 'admin' : 'agent',
            created_at: isoTime(u.createdAt),
            last_login_at: null,
          },
          updatedAt: isoTime(u.updatedAt),
          location: rec.location,
          raw: u,
          errors,
        });
      }
    }
    if (teams > 0) {
      const w = `${teams} team(s) are not people and were not imported as team members`;
      if (!warnings.includes(w)) warnings.push(w);
    }
  }

  async function* customers(): AsyncGenerator<ImportItem> {
    for (const file of files.customers) {
      for await (const rec of readRecords(input, file, '$._embedded.customers.*', limits)) {
        const c = obj(rec.value);
        const id = idText(c.id);
        const embedded = obj(c._embedded);
        const updated = isoTime(c.updatedAt);
        yield makeItem({
          entity: 'customers',
          sourceType: 'customer',
          sourceId: id,
          values: {
            email: text(obj(list(embedded.emails)[0]).value) ?? text(c.email),
            name: personName(c),
            phone: text(obj(list(embedded.phones)[0]).value),
            country: countryCode(obj(embedded.address).country),
            segment: 'consumer',
            created_at: isoTime(c.createdAt),
            updated_at: updated,
          },
          updatedAt: updated,
          location: rec.location,
          raw: c,
          errors: id ? [] : ['the customer has no id'],
        });
      }
    }
  }

  async function* conversations(): AsyncGenerator<ImportItem> {
    const known = await facts();
    for await (const { c, location } of conversationRecords()) {
      const id = idText(c.id);
      const errors: string[] = [];
      if (!id) errors.push('the conversation has no id');
      const start = isoTime(c.createdAt);
      if (!start) errors.push('the conversation has no createdAt');
      const status = STATUS[text(c.status) ?? ''];
      if (!status) errors.push(`unknown conversation status ${JSON.stringify(c.status ?? null)}`);
      if (c.state === 'deleted') errors.push('the conversation is deleted in Help Scout');
      if (c.state === 'draft') errors.push('the conversation is a draft that was never sent');
      const closedAt = isoTime(c.closedAt);
      const updated = latest(
        isoTime(c.userUpdatedAt),
        closedAt,
        isoTime(obj(c.customerWaitingSince).time),
        start,
      );
      const customer = obj(c.primaryCustomer);
      const rating = id ? known.ratings.get(id) : undefined;
      const source = obj(c.source);
      const customFields: Json = {};
      for (const f of list(c.customFields)) {
        const field = obj(f);
        const name = text(field.name) ?? idText(field.id);
        if (name) customFields[name] = field.text ?? field.value ?? null;
      }
      customFields._helpscout = {
        number: typeof c.number === 'number' ? c.number : null,
        subject: text(c.subject),
        mailbox_id: idText(c.mailboxId),
        type: text(c.type),
        source_type: text(source.type),
        source_via: text(source.via),
      };
      yield makeItem({
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: id,
        values: conversationValues({
          sessionId: `helpscout:conversation:${id ?? ''}`,
          start,
          end: status === 'resolved' ? (closedAt ?? updated) : null,
          customerEmail: text(customer.email),
          customerName: personName(customer),
          language: 'und',
          status: status ?? 'in_progress',
          escalated: id ? known.handoffs.escalated(id) : false,
          satisfactionScore: rating?.score ?? null,
          satisfactionFeedback: rating?.feedback ?? null,
          tags: list(c.tags).flatMap((t) => {
            const tag = text(obj(t).tag) ?? text(obj(t).name);
            return tag ? [tag] : [];
          }),
          customFields,
          createdAt: start,
          lastUpdated: updated,
        }),
        refs: {
          site_id: siteRef(SITE),
          customer_id: ref('customers', 'customer', idText(customer.id)),
          assigned_agent_id: ref('team_members', 'user', idText(obj(c.assignee).id)),
        },
        updatedAt: updated,
        location,
        raw: { ...c, _embedded: undefined },
        errors,
      });
    }
  }

  async function* messages(): AsyncGenerator<ImportItem> {
    for await (const { conversationId, thread: t, location } of threads()) {
      if (!isMessage(t)) {
        skipped.add('thread(s) that are not messages (line items, drafts) were not imported');
        continue;
      }
      const id = idText(t.id);
      const createdAt = isoTime(t.createdAt);
      const errors: string[] = [];
      if (!id) errors.push('the thread has no id');
      if (!conversationId) errors.push('the thread has no conversation');
      if (!createdAt) errors.push('the thread has no createdAt');
      const sender = senderOf(t);
      const by = obj(t.createdBy);
      const byId = idText(by.id);
      const internal = t.type === 'note';
      yield makeItem({
        entity: 'messages',
        sourceType: 'thread',
        sourceId: id,
        values: messageValues({
          createdAt,
          senderType: sender,
          senderId: byId,
          content: htmlToText(text(t.body) ?? ''),
          metadata: {
            internal_note: internal,
            source_part_type: text(t.type),
            source_type: text(obj(t.source).type),
            attachments: attachmentNames(obj(t._embedded).attachments, 'filename', 'fileName'),
          },
          updatedAt: createdAt,
        }),
        refs: { conversation_id: ref('conversations', 'conversation', conversationId) },
        soft: {
          sender_id:
            sender === 'customer'
              ? ref('customers', 'customer', byId)
              : sender === 'human' && by.type === 'user'
                ? ref('team_members', 'user', byId)
                : null,
        },
        updatedAt: createdAt,
        location,
        raw: t,
        errors,
      });
    }
    skipped.flush(warnings);
  }

  return competitorSource(SYSTEM, warnings, {
    sites,
    team_members: users,
    customers,
    conversations,
    messages,
  });
}
