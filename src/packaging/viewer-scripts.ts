import { Readable } from 'node:stream';
import { invalid } from '../domain/ferry-error.ts';
import { checkEntryPath } from './entry-path.ts';

/**
 * Data files of the offline viewer (index.html). A page opened from file:// cannot fetch() the JSON
 * files next to it, but it may load classic scripts with <script src>. So the viewer's data is
 * written as small JavaScript files that hand JSON to global functions the page defines (JSONP):
 *
 *   viewer/index.js                   FerryViewer.addIndex([...rows]); ... FerryViewer.indexDone(n);
 *   viewer/conversations/<file>.js    FerryViewer.addConversation("<id>", {...}, [...messages]); ...
 *
 * The page loads the index once (one compact row per conversation, naming the file that holds the
 * conversation) and a conversation's file only when it is opened. The company package writes one
 * file per page of conversations (`page-000001.js`); a row without a file name means `<id>.js`,
 * one conversation per file.
 */
export const VIEWER_INDEX_PATH = 'viewer/index.js';

/** Rows per `FerryViewer.addIndex` call, so no single statement grows with the export. */
const INDEX_CHUNK = 1000;
/** Characters of the first message kept for the list. */
const PREVIEW_CHARS = 160;

/** A conversation as the viewer lists it. */
export interface ViewerConversationSummary {
  readonly id: string;
  /** ISO 8601 start time. */
  readonly startedAt: string;
  /** Customer name or email; null for anonymous visitors. */
  readonly customer: string | null;
  readonly status: string | null;
  /** Satisfaction rating 1-5, or null. */
  readonly rating: number | null;
  /** First message text (cut to a preview here). */
  readonly preview: string | null;
  readonly messages: number;
  /** The viewer file that holds the conversation (`page-000001`), when it is not `<id>`. */
  readonly file?: string;
}

/** A conversation as the transcript view shows it. */
export interface ViewerConversation {
  readonly id: string;
  readonly startedAt: string;
  readonly endedAt?: string | null;
  readonly customer: string | null;
  readonly status: string | null;
  readonly rating: number | null;
  readonly feedback?: string | null;
  readonly site?: string | null;
  readonly pageUrl?: string | null;
  readonly language?: string | null;
  readonly agent?: string | null;
}

export interface ViewerMessage {
  /** `customer`, `ai` or `human`. */
  readonly sender: string;
  /** A display name (agent or customer), when known. */
  readonly senderName?: string | null;
  /** ISO 8601 time the message was sent. */
  readonly sentAt: string;
  readonly text: string;
}

/** The viewer file of one conversation: `viewer/conversations/<id>.js`. */
export function viewerConversationPath(id: string): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(id)) {
    throw invalid(
      'conversation id',
      `"${id.slice(0, 40)}" cannot name a viewer file (letters, digits, _ and - only)`,
    );
  }
  return checkEntryPath(`viewer/conversations/${id}.js`);
}

/** The viewer file of page `n` (from 1) of conversations, as the company package writes them. */
export function viewerPageFile(n: number): { name: string; path: string } {
  if (!Number.isSafeInteger(n) || n < 1) throw invalid('page', `must be a whole number from 1, got ${n}`);
  const name = `page-${String(n).padStart(6, '0')}`;
  return { name, path: checkEntryPath(`viewer/conversations/${name}.js`) };
}

/**
 * JSON as a JavaScript literal that is safe anywhere: `<`, `>` and `&` are escaped so no `</script>`
 * or comment opener can appear, and U+2028/U+2029 so older parsers do not see line breaks.
 */
export function scriptLiteral(value: unknown): string {
  return JSON.stringify(value ?? null).replace(/[<>&\u2028\u2029]/g, (c) => {
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

/** Cuts a first message to a one-line preview. */
export function previewText(text: string | null | undefined): string | null {
  if (!text) return null;
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > PREVIEW_CHARS ? `${line.slice(0, PREVIEW_CHARS - 1)}…` : line;
}

/**
 * Builds `viewer/index.js` as a stream while conversations are added one by one. `add()` waits
 * while the consumer is behind, so memory stays flat. Entries of a package are written one at a
 * time, so the engine writes this stream somewhere else (a temp file) while the per-conversation
 * files go into the package, then adds it.
 */
export class ConversationIndexWriter {
  readonly stream: Readable;
  #count = 0;
  #inChunk = 0;
  #ended = false;
  #resume: (() => void) | undefined;

  constructor() {
    this.stream = new Readable({
      read: () => this.#wake(),
      destroy: (err, callback) => {
        this.#wake();
        callback(err);
      },
    });
    this.stream.push('/* Ferry offline viewer: conversation index. Loaded by ../index.html. */\n');
  }

  get count(): number {
    return this.#count;
  }

  async add(summary: ViewerConversationSummary): Promise<void> {
    if (this.#ended) throw invalid('conversation', 'the index is already ended');
    viewerConversationPath(summary.id);
    if (summary.file !== undefined) viewerConversationPath(summary.file);
    const row = [
      summary.id,
      summary.startedAt,
      summary.customer,
      summary.status,
      summary.rating,
      previewText(summary.preview),
      summary.messages,
      ...(summary.file !== undefined ? [summary.file] : []),
    ];
    let text = '';
    if (this.#inChunk === INDEX_CHUNK) {
      text += '\n]);\n';
      this.#inChunk = 0;
    }
    text += this.#inChunk === 0 ? 'FerryViewer.addIndex([\n' : ',\n';
    text += scriptLiteral(row);
    this.#inChunk++;
    this.#count++;
    if (!this.stream.push(text) && !this.stream.destroyed) {
      await new Promise<void>((resolve) => {
        this.#resume = resolve;
      });
    }
    if (this.stream.destroyed)
      throw this.stream.errored ?? new Error('conversation index stream was destroyed');
  }

  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    const close = this.#inChunk > 0 ? '\n]);\n' : '';
    this.stream.push(`${close}FerryViewer.indexDone(${this.#count});\n`);
    this.stream.push(null);
  }

  #wake(): void {
    const resume = this.#resume;
    this.#resume = undefined;
    resume?.();
  }
}

const SCRIPT_CLOSING = '\n]);\n';

function scriptOpening(conversation: ViewerConversation): string {
  return `FerryViewer.addConversation(${scriptLiteral(conversation.id)}, ${scriptLiteral(conversation)}, [`;
}

function scriptMessage(m: ViewerMessage, first: boolean): string {
  const message = { sender: m.sender, senderName: m.senderName ?? null, sentAt: m.sentAt, text: m.text };
  return `${first ? '\n' : ',\n'}${scriptLiteral(message)}`;
}

/**
 * Streams `viewer/conversations/<id>.js` for one conversation, reading messages one at a time.
 * Message times and order are as given; the caller sorts.
 */
export function conversationScript(
  conversation: ViewerConversation,
  messages: Iterable<ViewerMessage> | AsyncIterable<ViewerMessage>,
): Readable {
  viewerConversationPath(conversation.id);
  async function* generate(): AsyncGenerator<string> {
    yield scriptOpening(conversation);
    let first = true;
    for await (const m of messages) {
      yield scriptMessage(m, first);
      first = false;
    }
    yield SCRIPT_CLOSING;
  }
  return Readable.from(generate(), { objectMode: false });
}

/**
 * The same file as one string, for messages already in memory (the company package reads a page
 * of conversations with their messages): a package entry given whole is written without a stream.
 */
export function conversationScriptText(
  conversation: ViewerConversation,
  messages: Iterable<ViewerMessage>,
): string {
  viewerConversationPath(conversation.id);
  let text = scriptOpening(conversation);
  let first = true;
  for (const m of messages) {
    text += scriptMessage(m, first);
    first = false;
  }
  return text + SCRIPT_CLOSING;
}
