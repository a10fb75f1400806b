// Ferry offline package viewer. Inlined into index.html by src/packaging/index-html.ts.
// It runs from file:// with no network: conversation data arrives through <script src> files that
// call the FerryViewer functions below. Every piece of data enters the page as text (textContent,
// text nodes), never as HTML.
(() => {
  const PAGE_SIZE = 50;
  // Two viewer files' worth: a file holds a page of up to 200 conversations.
  const KEEP_TRANSCRIPTS = 400;
  const SAFE_ID = /^[A-Za-z0-9_-]{1,128}$/;
  const config = JSON.parse(document.getElementById('ferry-data').textContent);
  const state = {
    rows: [],
    filtered: [],
    page: 0,
    query: '',
    loaded: false,
    transcripts: new Map(),
    /** Conversation id → the viewer file that holds it, from the index. */
    files: new Map(),
  };

  const byId = (id) => document.getElementById(id);

  /** Creates an element; children that are strings become text nodes. */
  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes ?? {})) {
      if (value === null || value === undefined) continue;
      if (name === 'class') element.className = value;
      else element.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      element.append(child instanceof Node ? child : String(child));
    }
    return element;
  }

  function formatTime(iso) {
    if (!iso) return '';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  }

  function rating(value) {
    return typeof value === 'number'
      ? `${'★'.repeat(value)}${'☆'.repeat(Math.max(0, 5 - value))} ${value}/5`
      : '—';
  }

  function senderLabel(message, conversation) {
    if (message.senderName) return message.senderName;
    if (message.sender === 'customer') return conversation.customer || 'Customer';
    if (message.sender === 'ai') return 'AI assistant';
    if (message.sender === 'human') return conversation.agent || 'Agent';
    return message.sender || 'Unknown';
  }

  // Row tuple written by ConversationIndexWriter: [id, startedAt, customer, status, rating, preview, messages].
  function rowText(row) {
    row.search ??= [row[0], row[2] || 'anonymous', row[3], row[5]].filter(Boolean).join('\n').toLowerCase();
    return row.search;
  }

  function applyFilter() {
    const query = state.query;
    state.filtered = query ? state.rows.filter((row) => rowText(row).includes(query)) : state.rows;
    const pages = Math.max(1, Math.ceil(state.filtered.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
  }

  function renderList() {
    const body = byId('conversation-rows');
    const start = state.page * PAGE_SIZE;
    const page = state.filtered.slice(start, start + PAGE_SIZE);
    body.replaceChildren(
      ...page.map((row) => {
        const [id, startedAt, customer, status, stars, preview, count] = row;
        const link = h('a', { href: `#conversation=${id}`, class: 'open' }, formatTime(startedAt));
        const tr = h(
          'tr',
          { class: 'conversation-row', 'data-id': id },
          h('td', null, link),
          h('td', null, customer || h('span', { class: 'muted' }, 'anonymous')),
          h('td', null, status || '—'),
          h('td', { class: 'rating' }, rating(stars)),
          h('td', { class: 'num' }, count),
          h('td', { class: 'preview' }, preview || ''),
        );
        tr.addEventListener('click', (event) => {
          if (event.target !== link) location.hash = `conversation=${id}`;
        });
        return tr;
      }),
    );
    const total = state.filtered.length;
    const shown = total === 0 ? 'No conversations match' : `${start + 1}–${start + page.length} of ${total}`;
    const of = state.query ? ` (filtered from ${state.rows.length})` : '';
    byId('conversation-count').textContent = state.loaded ? `${shown}${of}` : 'Loading conversations…';
    byId('prev-page').disabled = state.page === 0;
    byId('next-page').disabled = start + PAGE_SIZE >= total;
  }

  function showList() {
    byId('transcript').hidden = true;
    byId('overview').hidden = false;
    renderList();
  }

  function showTranscript(id) {
    byId('overview').hidden = true;
    const view = byId('transcript');
    view.hidden = false;
    const cached = state.transcripts.get(id);
    if (cached) {
      renderTranscript(cached);
      return;
    }
    byId('transcript-body').replaceChildren(h('p', { class: 'muted' }, 'Loading conversation…'));
    // The index names the file that holds the conversation (a page of them); without a name
    // the file is the conversation's own. Until the index is in, indexDone() routes again.
    const file = state.files.get(id) ?? (state.loaded ? id : null);
    if (file === null) return;
    if (!SAFE_ID.test(file)) {
      byId('transcript-body').replaceChildren(
        h('p', { class: 'error' }, 'The index names no usable file for this conversation.'),
      );
      return;
    }
    const script = document.createElement('script');
    script.src = `viewer/conversations/${file}.js`;
    script.onerror = () => {
      byId('transcript-body').replaceChildren(
        h('p', { class: 'error' }, `The file viewer/conversations/${file}.js could not be loaded.`),
      );
    };
    script.onload = () => script.remove();
    document.head.append(script);
  }

  function renderTranscript({ conversation, messages }) {
    byId('transcript-title').textContent =
      `Conversation with ${conversation.customer || 'an anonymous visitor'}`;
    const facts = [
      ['Started', formatTime(conversation.startedAt)],
      ['Ended', formatTime(conversation.endedAt)],
      ['Status', conversation.status],
      ['Rating', conversation.rating === null ? null : rating(conversation.rating)],
      ['Feedback', conversation.feedback],
      ['Site', conversation.site],
      ['Page', conversation.pageUrl],
      ['Language', conversation.language],
      ['Conversation id', conversation.id],
    ].filter(([, value]) => value);
    const list = h('dl', { class: 'facts' });
    for (const [term, value] of facts) list.append(h('dt', null, term), h('dd', null, value));
    const thread = h(
      'ol',
      { class: 'messages' },
      ...messages.map((message) =>
        h(
          'li',
          { class: `message sender-${String(message.sender).replace(/[^a-z]/g, '')}` },
          h(
            'div',
            { class: 'message-head' },
            h('span', { class: 'sender' }, senderLabel(message, conversation)),
            h('time', { datetime: message.sentAt }, formatTime(message.sentAt)),
          ),
          h('div', { class: 'text' }, message.text),
        ),
      ),
    );
    const empty = messages.length === 0 ? h('p', { class: 'muted' }, 'No messages.') : null;
    byId('transcript-body').replaceChildren(list, empty ?? thread);
  }

  function route() {
    const match = /^#conversation=(.+)$/.exec(location.hash);
    const id = match ? decodeURIComponent(match[1]) : null;
    if (id && SAFE_ID.test(id)) showTranscript(id);
    else showList();
  }

  window.FerryViewer = {
    addIndex(rows) {
      for (const row of rows) {
        state.rows.push(row);
        if (typeof row[7] === 'string') state.files.set(row[0], row[7]);
      }
    },
    indexDone() {
      state.loaded = true;
      applyFilter();
      route();
    },
    addConversation(id, conversation, messages) {
      state.transcripts.set(id, { conversation, messages });
      if (state.transcripts.size > KEEP_TRANSCRIPTS) {
        state.transcripts.delete(state.transcripts.keys().next().value);
      }
      const current = /^#conversation=(.+)$/.exec(location.hash);
      if (current && decodeURIComponent(current[1]) === id) renderTranscript({ conversation, messages });
    },
  };

  if (!config.conversations) return;
  byId('search').addEventListener('input', (event) => {
    state.query = event.target.value.trim().toLowerCase();
    state.page = 0;
    applyFilter();
    renderList();
  });
  byId('prev-page').addEventListener('click', () => {
    state.page = Math.max(0, state.page - 1);
    renderList();
  });
  byId('next-page').addEventListener('click', () => {
    state.page += 1;
    renderList();
  });
  window.addEventListener('hashchange', route);

  const index = document.createElement('script');
  index.src = config.conversations.index;
  index.onerror = () => {
    byId('conversation-count').textContent =
      `The conversation index (${config.conversations.index}) could not be loaded. ` +
      'Extract the whole package and open index.html from the extracted folder.';
  };
  document.head.append(index);
  route();
})();
