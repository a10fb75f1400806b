import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { finished, pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import vm from 'node:vm';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPackageWriter, type PackageEntryResult } from '../src/packaging/archive.ts';
import { escapeHtml } from '../src/lib/escape-html.ts';
import { buildIndexHtml, formatBytes } from '../src/packaging/index-html.ts';
import {
  ConversationIndexWriter,
  conversationScript,
  conversationScriptText,
  previewText,
  scriptLiteral,
  VIEWER_INDEX_PATH,
  type ViewerConversation,
  type ViewerMessage,
  viewerConversationPath,
  viewerPageFile,
} from '../src/packaging/viewer-scripts.ts';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const ROOT = 'company-export-2026-11-22';
const HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">';
const HOSTILE_NAME = '<b>Eve</b><script>window.pwned=3</script>';

/** Runs viewer scripts the way the page does: against a FerryViewer global. */
function runViewerScript(source: string) {
  const calls: { index: unknown[][]; done: number[]; conversations: unknown[][] } = {
    index: [],
    done: [],
    conversations: [],
  };
  const FerryViewer = {
    addIndex: (rows: unknown[]) => calls.index.push(rows),
    indexDone: (n: number) => calls.done.push(n),
    addConversation: (...args: unknown[]) => calls.conversations.push(args),
  };
  vm.runInNewContext(source, { FerryViewer });
  return calls;
}

function sampleConversation(i: number): { conversation: ViewerConversation; messages: ViewerMessage[] } {
  const id = `c${String(i).padStart(4, '0')}`;
  const startedAt = new Date(Date.UTC(2026, 10, 1, 8, i)).toISOString();
  const customer = i === 7 ? HOSTILE_NAME : i % 3 === 0 ? null : `Customer ${i}`;
  return {
    conversation: {
      id,
      startedAt,
      endedAt: new Date(Date.UTC(2026, 10, 1, 9, i)).toISOString(),
      customer,
      status: i % 2 ? 'resolved' : 'unresolved',
      rating: i % 6 === 0 ? null : i % 6,
      feedback: i === 7 ? HOSTILE : null,
      site: 'https://shop.example.com',
    },
    messages: [
      { sender: 'customer', sentAt: startedAt, text: i === 7 ? HOSTILE : `Where is my order? needle${i}` },
      { sender: 'ai', sentAt: startedAt, text: 'Let me check.\nOne moment please.' },
      { sender: 'human', senderName: 'Sam (agent)', sentAt: startedAt, text: `Order ${i} ships today.` },
    ],
  };
}

describe('viewer data scripts', () => {
  it('scriptLiteral keeps JSON intact but never closes a script tag', () => {
    const value = { text: '</script><!-- & \u2028 \u2029 "quoted"' };
    const literal = scriptLiteral(value);
    expect(literal).not.toMatch(/[<>&\u2028\u2029]/);
    expect(JSON.parse(literal)).toEqual(value);
  });

  it('only names viewer files after safe ids', () => {
    expect(viewerConversationPath('0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b')).toBe(
      'viewer/conversations/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.js',
    );
    for (const id of ['../x', 'a/b', 'a.b', '', 'x'.repeat(200), '<script>']) {
      expect(() => viewerConversationPath(id), id).toThrow(/conversation id/);
    }
  });

  it('previews a first message on one line, cut to a bounded length', () => {
    expect(previewText('  Hello\n\n  there\t!  ')).toBe('Hello there !');
    expect(previewText(null)).toBeNull();
    const long = previewText('word '.repeat(100))!;
    expect(long.length).toBe(160);
    expect(long.endsWith('…')).toBe(true);
  });

  it('ConversationIndexWriter streams rows in bounded statements', async () => {
    const index = new ConversationIndexWriter();
    const output = text(index.stream);
    for (let i = 0; i < 2500; i++) {
      await index.add({ ...sampleConversation(i).conversation, preview: `first ${i}`, messages: 3 });
    }
    index.end();
    const calls = runViewerScript(await output);
    expect(calls.index.map((rows) => rows.length)).toEqual([1000, 1000, 500]);
    expect(calls.done).toEqual([2500]);
    expect(calls.index[0]![7]).toEqual([
      'c0007',
      '2026-11-01T08:07:00.000Z',
      HOSTILE_NAME,
      'resolved',
      1,
      'first 7',
      3,
    ]);
  });

  it('ConversationIndexWriter waits while its reader is behind (flat memory)', async () => {
    const index = new ConversationIndexWriter();
    const row = { ...sampleConversation(1).conversation, preview: 'x'.repeat(150), messages: 1 };
    let added = 0;
    const adding = (async () => {
      for (let i = 0; i < 10_000; i++) {
        await index.add({ ...row, id: `c${i}` });
        added++;
      }
      index.end();
    })();
    await new Promise((resolve) => setTimeout(resolve, 50));
    // Nothing reads the stream yet: the writer stops once the stream's buffer is full, and stays stopped.
    const stalled = added;
    expect(stalled).toBeLessThan(1000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(added).toBe(stalled);
    const output = await text(index.stream);
    await adding;
    expect(added).toBe(10_000);
    expect(runViewerScript(output).done).toEqual([10_000]);
  });

  it('an empty index still tells the page it is done', async () => {
    const index = new ConversationIndexWriter();
    index.end();
    expect(runViewerScript(await text(index.stream))).toEqual({ index: [], done: [0], conversations: [] });
  });

  it('conversationScript streams one conversation with its messages', async () => {
    const { conversation, messages } = sampleConversation(7);
    async function* slowly() {
      for (const message of messages) yield message;
    }
    const calls = runViewerScript(await text(conversationScript(conversation, slowly())));
    expect(calls.conversations).toHaveLength(1);
    const [id, header, list] = calls.conversations[0]! as [string, ViewerConversation, ViewerMessage[]];
    expect(id).toBe('c0007');
    expect(header).toEqual(conversation);
    expect(list.map((m) => m.text)).toEqual(messages.map((m) => m.text));
    expect(list[2]!.senderName).toBe('Sam (agent)');
    // The whole-string form writes the same bytes.
    expect(conversationScriptText(conversation, messages)).toBe(
      await text(conversationScript(conversation, slowly())),
    );
  });
});

describe('index.html', () => {
  it('escapes every text it embeds', () => {
    const html = buildIndexHtml({
      company: HOSTILE_NAME,
      exportedAt: new Date('2026-11-22T09:30:00Z'),
      datasets: [{ name: 'messages', description: HOSTILE, rows: 3, files: ['messages<x>.csv'] }],
      files: [{ path: 'a"b<c>.csv', bytes: 10 }],
    });
    expect(html).not.toContain('<b>Eve</b>');
    expect(html).not.toContain('<img');
    expect(html).toContain(escapeHtml(HOSTILE_NAME));
    expect(html).toContain('messages&#60;x&#62;.csv');
    expect(html.match(/<\/script>/g)).toHaveLength(2); // the JSON config block and the viewer itself
    expect(html).toMatch(/<meta http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;/);
    // Without conversations there is no conversation list.
    expect(html).not.toContain('id="conversations"');
  });

  it('summarises folders with many files and lists small folders file by file', () => {
    const files = [
      { path: 'metadata.json', bytes: 512 },
      ...Array.from({ length: 30_000 }, (_, i) => ({ path: `conversations/c${i}.json`, bytes: 1000 })),
      { path: 'knowledge/faq.md', bytes: 2048 },
    ];
    const html = buildIndexHtml({ company: 'Acme', exportedAt: new Date(), datasets: [], files });
    expect(html).toContain('<code>conversations/</code> <span class="muted">30,000 files</span>');
    expect(html).toContain('29 MB');
    expect(html).not.toContain('conversations/c1.json');
    expect(html).toContain('<code>knowledge/faq.md</code>');
    expect(html.length).toBeLessThan(20_000);
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1536)).toBe('1.5 KB');
  });
});

describe('index.html in Chromium, opened from file://', () => {
  const CONVERSATIONS = 120;
  let work: string;
  let browser: Browser;
  let page: Page;
  const requests: string[] = [];
  const problems: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `${CHROMIUM} is missing: install it with "apt-get install -y chromium" to run the viewer tests`,
      );
    }
    work = await mkdtemp(join(tmpdir(), 'ferry-viewer-test-'));
    const zipFile = join(work, `${ROOT}.zip`);
    const out = createWriteStream(zipFile);
    const writer = createPackageWriter('zip', out, { root: ROOT, mtime: new Date('2026-11-22T09:30:00Z') });

    // The engine's flow: per-conversation files go into the package one by one while the viewer
    // index is spooled aside, then the index, then index.html. The first 60 conversations have a
    // viewer file each; the others are in files of 25 (as the company package writes pages of
    // them), named by the index.
    const index = new ConversationIndexWriter();
    const spoolFile = join(work, 'viewer-index.js');
    const spooled = pipeline(index.stream, createWriteStream(spoolFile));
    const entries: PackageEntryResult[] = [];
    entries.push(await writer.add('messages.csv', 'id,content\r\n1,hello\r\n'));
    let pageText = '';
    for (let i = 0; i < CONVERSATIONS; i++) {
      const { conversation, messages } = sampleConversation(i);
      entries.push(
        await writer.add(`conversations/${conversation.id}.json`, JSON.stringify({ conversation, messages })),
      );
      const paged = i >= 60;
      const file = paged ? viewerPageFile(Math.floor((i - 60) / 25) + 1) : undefined;
      if (paged) pageText += conversationScriptText(conversation, messages);
      else
        entries.push(
          await writer.add(
            viewerConversationPath(conversation.id),
            conversationScript(conversation, messages),
          ),
        );
      await index.add({
        ...conversation,
        preview: messages[0]!.text,
        messages: messages.length,
        ...(file ? { file: file.name } : {}),
      });
      if (file && ((i - 60) % 25 === 24 || i === CONVERSATIONS - 1)) {
        entries.push(await writer.add(file.path, pageText));
        pageText = '';
      }
    }
    index.end();
    await spooled;
    entries.push(await writer.add(VIEWER_INDEX_PATH, createReadStream(spoolFile)));
    const html = buildIndexHtml({
      company: `Acme ${HOSTILE_NAME}`,
      exportedAt: new Date('2026-11-22T09:30:00Z'),
      datasets: [
        { name: 'conversations', rows: CONVERSATIONS, files: ['conversations/'], description: 'Chats.' },
        { name: 'messages', rows: 1, files: ['messages.csv'] },
      ],
      files: [...entries, { path: 'index.html', bytes: null }, { path: 'checksums.sha256', bytes: null }],
      conversations: { count: CONVERSATIONS },
      generator: 'Ferry test',
    });
    await writer.add('index.html', html);
    await writer.finish();
    await finished(out);
    await promisify(execFile)('unzip', ['-q', zipFile, '-d', join(work, 'extracted')]);

    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    page = await browser.newPage();
    page.on('request', (request) => requests.push(request.url()));
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') problems.push(message.text());
    });
    await page.goto(pathToFileURL(join(work, 'extracted', ROOT, 'index.html')).href);
    await page.waitForFunction(() => document.querySelectorAll('tr.conversation-row').length > 0);
  });

  afterAll(async () => {
    await browser?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const rows = () => page.locator('tr.conversation-row');
  const count = () => page.locator('#conversation-count').textContent();

  it('shows the company, the export date, dataset counts and files', async () => {
    expect(await page.locator('#company').textContent()).toBe(`Acme ${HOSTILE_NAME}`);
    expect(await page.locator('#exported-at').textContent()).toBe('2026-11-22 09:30 UTC');
    expect(await page.locator('tr[data-dataset="conversations"] td.num').textContent()).toBe('120');
    expect(await page.locator('#files').textContent()).toContain('messages.csv');
    expect(await page.locator('#files').textContent()).toContain('120 files');
  });

  it('lists the conversations in pages of 50', async () => {
    expect(await rows().count()).toBe(50);
    expect(await count()).toBe('1–50 of 120');
    const first = rows().first().locator('td');
    expect(await first.nth(0).textContent()).toBe('2026-11-01 08:00 UTC');
    expect(await first.nth(1).textContent()).toBe('anonymous');
    expect(await first.nth(5).textContent()).toBe('Where is my order? needle0');
    await page.click('#next-page');
    expect(await count()).toBe('51–100 of 120');
    await page.click('#next-page');
    expect(await rows().count()).toBe(20);
    expect(await page.locator('#next-page').isDisabled()).toBe(true);
    await page.click('#prev-page');
    await page.click('#prev-page');
    expect(await count()).toBe('1–50 of 120');
  });

  it('search filters the list', async () => {
    await page.fill('#search', 'needle11');
    // needle11 and needle110 … needle119
    expect(await rows().count()).toBe(11);
    expect(await count()).toBe('1–11 of 11 (filtered from 120)');
    await page.fill('#search', 'ANONYMOUS');
    expect(await rows().count()).toBe(40);
    await page.fill('#search', 'no such thing');
    expect(await rows().count()).toBe(0);
    expect(await count()).toBe('No conversations match (filtered from 120)');
    await page.fill('#search', '');
    expect(await rows().count()).toBe(50);
  });

  it('clicking a conversation shows its transcript with sender, time and text', async () => {
    await page.fill('#search', 'c0042');
    await rows().first().locator('td').nth(3).click();
    await page.waitForSelector('ol.messages li');
    expect(await page.locator('#transcript-title').textContent()).toBe(
      'Conversation with an anonymous visitor',
    );
    const messages = page.locator('ol.messages li');
    expect(await messages.count()).toBe(3);
    expect(await messages.nth(0).locator('.sender').textContent()).toBe('Customer');
    expect(await messages.nth(0).locator('time').textContent()).toBe('2026-11-01 08:42 UTC');
    expect(await messages.nth(0).locator('.text').textContent()).toBe('Where is my order? needle42');
    expect(await messages.nth(1).locator('.sender').textContent()).toBe('AI assistant');
    expect(await messages.nth(1).locator('.text').textContent()).toBe('Let me check.\nOne moment please.');
    expect(await messages.nth(2).locator('.sender').textContent()).toBe('Sam (agent)');
    await page.click('#back');
    await page.waitForSelector('#overview:not([hidden])');
    expect(await page.locator('#transcript').isHidden()).toBe(true);
  });

  it('opens a conversation from the file of its page, named by the index, and from a link', async () => {
    await page.fill('#search', 'c0101');
    await rows().first().locator('td').nth(3).click();
    await page.waitForSelector('ol.messages li');
    expect(await page.locator('ol.messages li .text').first().textContent()).toBe(
      'Where is my order? needle101',
    );
    expect(requests.some((url) => url.endsWith('/viewer/conversations/page-000002.js'))).toBe(true);
    expect(requests.some((url) => url.endsWith('/viewer/conversations/c0101.js'))).toBe(false);
    await page.click('#back');
    await page.waitForSelector('#overview:not([hidden])');
    await page.fill('#search', '');
    // A link straight to a conversation in a page file: the index comes first, then its file.
    const linked = await browser.newPage();
    await linked.goto(
      `${pathToFileURL(join(work, 'extracted', ROOT, 'index.html')).href}#conversation=c0119`,
    );
    await linked.waitForSelector('ol.messages li');
    expect(await linked.locator('ol.messages li .text').first().textContent()).toBe(
      'Where is my order? needle119',
    );
    await linked.close();
  });

  it('shows planted markup as text and never runs it', async () => {
    await page.fill('#search', 'c0007');
    const row = rows().first();
    expect(await row.locator('td').nth(1).textContent()).toBe(HOSTILE_NAME);
    expect(await row.locator('td.preview').textContent()).toBe(HOSTILE);
    await row.locator('a.open').click();
    await page.waitForSelector('ol.messages li');
    expect(await page.locator('#transcript-title').textContent()).toBe(`Conversation with ${HOSTILE_NAME}`);
    expect(await page.locator('ol.messages li .text').first().textContent()).toBe(HOSTILE);
    expect(await page.locator('dl.facts').textContent()).toContain(HOSTILE);
    const state = await page.evaluate(() => ({
      pwned: (window as unknown as { pwned?: number }).pwned,
      images: document.querySelectorAll('img').length,
      bold: document.querySelectorAll('main b').length,
      scripts: document.querySelectorAll('body script').length,
    }));
    expect(state).toEqual({ pwned: undefined, images: 0, bold: 0, scripts: 2 });
  });

  it('loads nothing but files of the package, without errors', () => {
    expect(requests.length).toBeGreaterThan(2);
    for (const url of requests) {
      expect(url.startsWith(pathToFileURL(join(work, 'extracted', ROOT)).href), url).toBe(true);
    }
    expect(problems).toEqual([]);
  });

  it('says what to do when the viewer files are not next to the page', async () => {
    const lonely = await browser.newPage();
    const file = join(work, 'lonely.html');
    await rm(file, { force: true });
    const html = buildIndexHtml({
      company: 'Acme',
      exportedAt: new Date('2026-11-22T09:30:00Z'),
      datasets: [],
      files: [],
      conversations: { count: 3 },
    });
    await pipeline(async function* () {
      yield html;
    }, createWriteStream(file));
    await lonely.goto(pathToFileURL(file).href);
    await lonely.waitForFunction(() =>
      document.getElementById('conversation-count')?.textContent?.includes('could not'),
    );
    expect(await lonely.locator('#conversation-count').textContent()).toContain('Extract the whole package');
    await lonely.close();
  });
});
