import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { invalid } from '../domain/ferry-error.ts';
import { escapeHtml } from '../lib/escape-html.ts';
import { scriptLiteral, VIEWER_INDEX_PATH } from './viewer-scripts.ts';

/**
 * `index.html`: a self-contained page that lets a person read the package offline by opening it
 * from the extracted folder. Company, export date, the datasets with row counts, the files with
 * sizes, and (when the package has conversations) a searchable, paged conversation list with a
 * transcript view. Conversation data is loaded from the viewer scripts (see viewer-scripts.ts), so
 * the page itself stays small whatever the export size. No external assets, no network: a Content
 * Security Policy forbids both.
 */
export interface IndexPageInput {
  readonly company: string;
  readonly exportedAt: Date;
  /** Page title; defaults to "<company> — data export". */
  readonly title?: string;
  readonly datasets: readonly IndexPageDataset[];
  /**
   * Files of the package, in any order (or already summarised as they were written); folders
   * with many files are summarised.
   */
  readonly files: Iterable<IndexPageFile> | FileListSummary;
  /** Present when the package carries the conversation viewer files. */
  readonly conversations?: { readonly count: number };
  /** Shown in the footer, e.g. "Ferry 0.1.0". */
  readonly generator?: string;
}

export interface IndexPageDataset {
  readonly name: string;
  readonly description?: string;
  /** Rows exported; null when not counted (e.g. a settings document). */
  readonly rows: number | null;
  readonly files: readonly string[];
}

export interface IndexPageFile {
  readonly path: string;
  readonly bytes: number | null;
}

/** Folders with at most this many files are listed file by file. */
const LIST_FOLDER_FILES = 25;

const asset = (name: string) => readFileSync(new URL(`./viewer/${name}`, import.meta.url), 'utf8');
let assets: { script: string; style: string; csp: string } | undefined;

function viewerAssets(): NonNullable<typeof assets> {
  if (assets) return assets;
  const script = asset('app.js');
  const style = asset('style.css');
  if (/<\/(script|style)/i.test(script + style))
    throw new Error('viewer assets must not close their own tags');
  const hash = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;
  // Only this page's own script and style run; viewer data scripts load from the package folder
  // ('self' over http, file: when opened from disk); nothing can be fetched or sent anywhere.
  const csp = [
    "default-src 'none'",
    `script-src ${hash(script)} 'self' file:`,
    `style-src ${hash(style)}`,
    "img-src 'none'",
    "connect-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
  assets = { script, style, csp };
  return assets;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function buildIndexHtml(input: IndexPageInput): string {
  if (Number.isNaN(input.exportedAt.getTime())) throw invalid('exportedAt', 'must be a valid date');
  const { script, style, csp } = viewerAssets();
  const title = input.title ?? `${input.company} — data export`;
  const exported = `${input.exportedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  const config = { conversations: input.conversations ? { index: VIEWER_INDEX_PATH } : null };
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${escapeHtml(csp)}">
<meta name="referrer" content="no-referrer">
<meta name="generator" content="${escapeHtml(input.generator ?? 'Ferry')}">
<title>${escapeHtml(title)}</title>
<style>${style}</style>
</head>
<body>
<header class="page">
<h1 id="company">${escapeHtml(input.company)}</h1>
<div class="muted">Data export of <time id="exported-at" datetime="${escapeHtml(input.exportedAt.toISOString())}">${escapeHtml(exported)}</time></div>
</header>
<main>
<section id="overview">
${input.conversations ? conversationSection(input.conversations.count) : ''}
${datasetSection(input.datasets)}
${fileSection(input.files)}
<h2>Checking the files</h2>
<p>Every file is listed with its SHA-256 in <code>checksums.sha256</code>. From this folder, run
<code>sha256sum -c checksums.sha256</code> (Linux), <code>shasum -a 256 -c checksums.sha256</code> (macOS)
or compare <code>Get-FileHash -Algorithm SHA256</code> (Windows) to confirm nothing was changed or lost.</p>
</section>
<section id="transcript" hidden>
<p><a href="#" id="back">← All conversations</a></p>
<h2 id="transcript-title">Conversation</h2>
<div id="transcript-body"></div>
</section>
</main>
<footer>Generated by ${escapeHtml(input.generator ?? 'Ferry')}. This page works offline; it loads nothing from the internet.</footer>
<script type="application/json" id="ferry-data">${scriptLiteral(config)}</script>
<script>${script}</script>
</body>
</html>
`;
}

function conversationSection(count: number): string {
  return `<h2>Conversations <span class="muted">(${count.toLocaleString('en-US')})</span></h2>
<div class="toolbar">
<input type="search" id="search" placeholder="Search customer, status, first message or id" aria-label="Search conversations">
<button type="button" id="prev-page">← Previous</button>
<button type="button" id="next-page">Next →</button>
<span id="conversation-count" class="muted" aria-live="polite">Loading conversations…</span>
</div>
<table id="conversations">
<thead><tr><th>Started</th><th>Customer</th><th>Status</th><th>Rating</th><th class="num">Messages</th><th>First message</th></tr></thead>
<tbody id="conversation-rows"></tbody>
</table>`;
}

function datasetSection(datasets: readonly IndexPageDataset[]): string {
  const rows = datasets.map(
    (d) => `<tr data-dataset="${escapeHtml(d.name)}"><td>${escapeHtml(d.name)}</td>
<td class="num">${d.rows === null ? '—' : escapeHtml(d.rows.toLocaleString('en-US'))}</td>
<td>${d.files.map((f) => `<code>${escapeHtml(f)}</code>`).join(', ')}</td>
<td>${escapeHtml(d.description ?? '')}</td></tr>`,
  );
  return `<h2>Datasets</h2>
<table id="datasets">
<thead><tr><th>Dataset</th><th class="num">Rows</th><th>Files</th><th>Description</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>`;
}

interface FolderSummary {
  files: IndexPageFile[];
  count: number;
  bytes: number;
}

/**
 * The file list of index.html as files are added: top-level files one by one, folders as a
 * count, a size and their first few files, so memory is bounded by the folder count.
 */
export class FileListSummary {
  readonly top: IndexPageFile[] = [];
  readonly folders = new Map<string, FolderSummary>();

  static of(files: Iterable<IndexPageFile>): FileListSummary {
    const summary = new FileListSummary();
    for (const file of files) summary.add(file);
    return summary;
  }

  add(file: IndexPageFile): void {
    const slash = file.path.indexOf('/');
    if (slash === -1) {
      this.top.push(file);
      return;
    }
    const name = file.path.slice(0, slash);
    let folder = this.folders.get(name);
    if (!folder) {
      folder = { files: [], count: 0, bytes: 0 };
      this.folders.set(name, folder);
    }
    folder.count++;
    folder.bytes += file.bytes ?? 0;
    if (folder.files.length < LIST_FOLDER_FILES) folder.files.push({ path: file.path, bytes: file.bytes });
  }
}

/** Lists top-level files one by one and folders as a summary. */
function fileSection(files: Iterable<IndexPageFile> | FileListSummary): string {
  const { top, folders } = files instanceof FileListSummary ? files : FileListSummary.of(files);
  const size = (bytes: number | null) =>
    bytes === null
      ? ''
      : `<span title="${escapeHtml(bytes.toLocaleString('en-US'))} bytes">${formatBytes(bytes)}</span>`;
  const rows: string[] = [];
  for (const file of [...top].sort((a, b) => a.path.localeCompare(b.path))) {
    rows.push(
      `<tr><td><code>${escapeHtml(file.path)}</code></td><td class="num">${size(file.bytes)}</td></tr>`,
    );
  }
  for (const [name, folder] of [...folders].sort(([a], [b]) => a.localeCompare(b))) {
    const label = `${folder.count.toLocaleString('en-US')} file${folder.count === 1 ? '' : 's'}`;
    rows.push(
      `<tr class="folder"><td><code>${escapeHtml(name)}/</code> <span class="muted">${label}</span></td><td class="num">${size(folder.bytes)}</td></tr>`,
    );
    if (folder.count > LIST_FOLDER_FILES) continue;
    for (const file of [...folder.files].sort((a, b) => a.path.localeCompare(b.path))) {
      rows.push(
        `<tr><td>&nbsp;&nbsp;<code>${escapeHtml(file.path)}</code></td><td class="num">${size(file.bytes)}</td></tr>`,
      );
    }
  }
  return `<h2>Files</h2>
<table id="files">
<thead><tr><th>File</th><th class="num">Size</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>`;
}
