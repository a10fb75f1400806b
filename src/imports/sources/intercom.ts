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
  unusedFilesWarning,
  competitorSource,
} from './competitor.ts';

/**
 * Intercom (REST API 2.x, docs/migration/intercom.md): `admins*.json` (`GET /admins`),
 * `contacts*.json` (`GET /contacts` pages), and the conversations with their parts, one
 * per file as `GET /conversations/{id}` returns it (`conversations/<id>.json`), or many in
 * `conversations*.ndjson` / `conversations*.json`. A conversation's first message is its
 * `source`, not a part. The AI's messages are those whose author is a `bot` or carries
 * `from_ai_agent` or `is_ai_answer`.
 */

const SYSTEM = 'intercom';

interface Contact {
  readonly email: string | null;
  readonly name: string | null;
  readonly language: string | null;
  readonly country: string | null;
}

const STATUS: Record<string, 'resolved' | 'in_progress'> = {
  open: 'in_progress',
  snoozed: 'in_progress',
  closed: 'resolved',
};

/** Parts that are messages whatever their body; others (assignments, state changes) only when they have text. */
const MESSAGE_PARTS = new Set(['comment', 'note']);

function senderOf(author: unknown): SenderType {
  const a = obj(author);
  if (a.type === 'bot' || a.from_ai_agent === true || a.is_ai_answer === true) return 'ai';
  if (a.type === 'admin' || a.type === 'team') return 'human';
  return 'customer';
}

function senderRef(author: unknown, sender: SenderType) {
  const a = obj(author);
  const id = idText(a.id);
  if (sender === 'customer') return ref('customers', 'contact', id);
  if (sender === 'human' && a.type === 'admin') return ref('team_members', 'admin', id);
  return null;
}

function rating(value: unknown): number | null {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 5 ? value : null;
}

export function intercomSource(input: ImportInput, options: SourceOptions): ImportSource {
  const { limits } = options;
  const warnings: string[] = [];
  const skipped = new Skipped();
  const single = folderFiles(input, 'conversations');
  const singleFiles = new Set(single.map((s) => s.file));
  const files = {
    admins: resourceFiles(input, 'admins'),
    contacts: resourceFiles(input, 'contacts'),
    lists: resourceFiles(input, 'conversations').filter((f) => !singleFiles.has(f)),
  };
  /** Conversations with their own file: a list page's copy of them (without parts) is skipped. */
  const ownFile = new Set(single.map((s) => stemId(s.stem)));
  const used = new Set([...files.admins, ...files.contacts, ...files.lists, ...singleFiles]);
  const unused = unusedFilesWarning(input, used, 'Intercom');
  if (unused) warnings.push(unused);
  if (single.length === 0 && files.lists.length === 0)
    warnings.push('no conversations: no conversation file was found');
  if (files.contacts.length === 0) warnings.push('no contacts.json: contacts are not imported');
  if (files.admins.length === 0) warnings.push('no admins.json: teammates are not imported');

  let sitePromise: Promise<SiteInfo> | null = null;
  let contactsPromise: Promise<Map<string, Contact>> | null = null;

  const site = () => {
    sitePromise ??= (async () => {
      for (const file of files.contacts) {
        for await (const rec of readRecords(input, file, '$.data.*', limits)) {
          const workspace = text(obj(rec.value).workspace_id);
          if (workspace)
            return {
              id: workspace,
              url: `https://app.intercom.com/a/apps/${workspace}`,
              name: `Intercom workspace ${workspace}`,
            };
          break;
        }
      }
      return { id: SYSTEM, url: `import://${SYSTEM}`, name: 'Intercom' };
    })();
    return sitePromise;
  };

  const contacts = () => {
    contactsPromise ??= (async () => {
      const map = new Map<string, Contact>();
      for (const file of files.contacts) {
        for await (const rec of readRecords(input, file, '$.data.*', limits)) {
          const c = obj(rec.value);
          const id = idText(c.id);
          if (!id) continue;
          map.set(id, {
            email: text(c.email),
            name: text(c.name),
            language: text(c.language_override) ?? text(c.browser_language),
            country: countryCode(obj(c.location).country),
          });
        }
      }
      return map;
    })();
    return contactsPromise;
  };

  /** Every conversation record: own files first, then list pages and NDJSON lines. */
  async function* conversationRecords(): AsyncGenerator<{ value: Json; location: string }> {
    for (const { file } of single) {
      for await (const rec of readRecords(input, file, '$', limits))
        yield { value: obj(rec.value), location: rec.location };
    }
    for (const file of files.lists) {
      for await (const rec of readRecords(input, file, '$.conversations.*', limits)) {
        const c = obj(rec.value);
        const id = idText(c.id);
        if (id && ownFile.has(id)) continue;
        yield { value: c, location: rec.location };
      }
    }
  }

  async function* sites(): AsyncGenerator<ImportItem> {
    yield siteItem(SYSTEM, await site(), files.contacts[0] ?? 'intercom export');
  }

  async function* admins(): AsyncGenerator<ImportItem> {
    for (const file of files.admins) {
      for await (const rec of readRecords(input, file, '$.admins.*', limits)) {
        const a = obj(rec.value);
        const id = idText(a.id);
        const email = text(a.email);
        const errors: string[] = [];
        if (!id) errors.push('the admin has no id');
        if (!email) errors.push('the admin has no email');
        yield makeItem({
          entity: 'team_members',
          sourceType: 'admin',
          sourceId: id,
          // The API gives teammates no role or sign-up time: every admin is an agent.
          values: {
            name: text(a.name) ?? email,
            email,
            role: 'agent',
            created_at: null,
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

  async function* customers(): AsyncGenerator<ImportItem> {
    for (const file of files.contacts) {
      for await (const rec of readRecords(input, file, '$.data.*', limits)) {
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
            phone: text(c.phone),
            country: countryCode(obj(c.location).country),
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

  /** The messages of one conversation: its source, then the parts that are messages. */
  function messagesOf(c: Json, location: string, skips: Skipped | null): ImportItem[] {
    const out: ImportItem[] = [];
    const conversationId = idText(c.id);
    const source = obj(c.source);
    const sourceBody = htmlToText(text(source.body) ?? '');
    const created = isoTime(c.created_at);
    if (sourceBody !== '' || list(source.attachments).length > 0) {
      const sender = senderOf(source.author);
      const errors: string[] = [];
      if (!conversationId) errors.push('the conversation has no id');
      if (!created) errors.push('the conversation has no created_at');
      out.push(
        makeItem({
          entity: 'messages',
          sourceType: 'conversation_source',
          sourceId: conversationId,
          values: messageValues({
            createdAt: created,
            senderType: sender,
            senderId: idText(obj(source.author).id),
            content: sourceBody,
            metadata: {
              internal_note: false,
              source_part_type: 'source',
              delivered_as: text(source.delivered_as),
              attachments: attachmentNames(source.attachments, 'name'),
            },
            updatedAt: created,
          }),
          refs: { conversation_id: ref('conversations', 'conversation', conversationId) },
          soft: { sender_id: senderRef(source.author, sender) },
          updatedAt: created,
          location: `${location} (source)`,
          raw: source,
          errors,
        }),
      );
    }
    for (const p of list(obj(c.conversation_parts).conversation_parts)) {
      const part = obj(p);
      const partType = text(part.part_type) ?? '';
      const body = htmlToText(text(part.body) ?? '');
      if (!MESSAGE_PARTS.has(partType) && !partType.startsWith('note') && body === '') {
        skips?.add(
          'conversation part(s) without text (assignments, state changes) are not messages and were not imported',
        );
        continue;
      }
      const id = idText(part.id);
      const createdAt = isoTime(part.created_at);
      const errors: string[] = [];
      if (!id) errors.push('the conversation part has no id');
      if (!conversationId) errors.push('the conversation has no id');
      if (!createdAt) errors.push('the conversation part has no created_at');
      const sender = senderOf(part.author);
      out.push(
        makeItem({
          entity: 'messages',
          sourceType: 'conversation_part',
          sourceId: id,
          values: messageValues({
            createdAt,
            senderType: sender,
            senderId: idText(obj(part.author).id),
            content: body,
            metadata: {
              internal_note: partType.startsWith('note'),
              source_part_type: partType,
              attachments: attachmentNames(part.attachments, 'name'),
            },
            updatedAt: isoTime(part.updated_at),
          }),
          refs: { conversation_id: ref('conversations', 'conversation', conversationId) },
          soft: { sender_id: senderRef(part.author, sender) },
          updatedAt: isoTime(part.updated_at) ?? createdAt,
          location: `${location} (part ${id ?? '?'})`,
          raw: part,
          errors,
        }),
      );
    }
    return out;
  }

  async function* conversations(): AsyncGenerator<ImportItem> {
    const [siteInfo, people] = await Promise.all([site(), contacts()]);
    let withoutParts = 0;
    for await (const { value: c, location } of conversationRecords()) {
      const id = idText(c.id);
      const errors: string[] = [];
      if (!id) errors.push('the conversation has no id');
      const start = isoTime(c.created_at);
      if (!start) errors.push('the conversation has no created_at');
      const state = text(c.state) ?? (c.open === true ? 'open' : c.open === false ? 'closed' : null);
      const status = state ? STATUS[state] : undefined;
      if (!status) errors.push(`unknown conversation state ${JSON.stringify(c.state ?? null)}`);
      if (!Array.isArray(obj(c.conversation_parts).conversation_parts)) withoutParts += 1;
      const updated = isoTime(c.updated_at);
      const stats = obj(c.statistics);
      const source = obj(c.source);
      const author = obj(source.author);
      const contactId =
        idText(obj(list(obj(c.contacts).contacts)[0]).id) ??
        (senderOf(author) === 'customer' ? idText(author.id) : null);
      const person = contactId ? people.get(contactId) : undefined;
      const fromAuthor = contactId !== null && contactId === idText(author.id);
      const aiAgent = obj(c.ai_agent);
      const conversationRating = obj(c.conversation_rating);
      const teammateScore = rating(conversationRating.rating);
      const aiScore = rating(aiAgent.rating);
      const routed = aiAgent.resolution_state === 'routed_to_team';
      const handoffs = new Handoffs();
      if (id) {
        for (const m of messagesOf(c, location, null)) {
          const v = m.values;
          handoffs.see(
            id,
            v.sender_type as SenderType,
            v.created_at as string | null,
            (v.custom_metadata as Json).internal_note === true,
          );
        }
      }
      const tags = list(obj(c.tags).tags).flatMap((t) => {
        const name = text(obj(t).name);
        return name ? [name] : [];
      });
      yield makeItem({
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: id,
        values: conversationValues({
          sessionId: `intercom:conversation:${id ?? ''}`,
          start,
          end: status === 'resolved' ? (isoTime(stats.last_close_at) ?? updated) : null,
          pageUrl: text(source.url),
          customerEmail: person?.email ?? (fromAuthor ? text(author.email) : null),
          customerName: person?.name ?? (fromAuthor ? text(author.name) : null),
          country: person?.country ?? null,
          language: languageTag(person?.language),
          status: status ?? 'in_progress',
          escalated: routed || (id ? handoffs.escalated(id) : false),
          escalationReason: routed ? 'routed_to_team' : null,
          satisfactionScore: teammateScore ?? aiScore,
          satisfactionFeedback:
            teammateScore !== null ? text(conversationRating.remark) : text(aiAgent.rating_remark),
          tags,
          customFields: {
            ...obj(c.custom_attributes),
            _intercom: {
              title: text(c.title),
              priority: text(c.priority),
              source_type: text(source.type),
              delivered_as: text(source.delivered_as),
              team_assignee_id: idText(c.team_assignee_id),
              ai_agent_participated: c.ai_agent_participated === true,
              ai_resolution_state: text(aiAgent.resolution_state),
            },
          },
          createdAt: start,
          lastUpdated: updated,
        }),
        refs: {
          site_id: siteRef(siteInfo),
          customer_id: ref('customers', 'contact', contactId),
          assigned_agent_id: ref('team_members', 'admin', idText(c.admin_assignee_id)),
        },
        updatedAt: updated,
        location,
        raw: { ...c, conversation_parts: undefined },
        errors,
      });
    }
    if (withoutParts > 0) {
      const w = `${withoutParts} conversation(s) have no conversation_parts (a list page): only their first message is imported; export each with GET /conversations/{id}`;
      if (!warnings.includes(w)) warnings.push(w);
    }
  }

  async function* messages(): AsyncGenerator<ImportItem> {
    for await (const { value, location } of conversationRecords())
      yield* messagesOf(value, location, skipped);
    skipped.flush(warnings);
  }

  return competitorSource(SYSTEM, warnings, {
    sites,
    team_members: admins,
    customers,
    conversations,
    messages,
  });
}
