import { authorize, isAllowed } from '../../auth/policy.ts';
import { FEED_SETS, serviceRoot } from '../../odata/feed.ts';
import { filterComparisons } from '../../odata/query-options.ts';
import { sendPage, signedInOf, type WebPages } from '../context.ts';
import { html } from '../html.ts';

/**
 * BI tools: the OData feed's address, its entity sets with their keys and filters, and how
 * Excel, Power BI and Tableau connect (docs/odata.md). For everyone who may export.
 */
export const biPages: WebPages = (app, deps) => {
  app.get('/app/bi', async (request, reply) => {
    const { auth } = signedInOf(request);
    authorize(auth, 'exports:create');
    const feed = `${serviceRoot(request, deps.config.publicUrl)}/`;
    const keys = isAllowed(auth, 'keys:manage')
      ? html`<a href="/app/keys">create a key</a> (the analyst role reads every dataset, anonymized)`
      : html`ask an admin for a key of the analyst role`;
    return sendPage(
      request,
      reply,
      { title: 'BI tools', current: '/app/bi' },
      html`<p>Excel, Power BI, Tableau and every OData client read your datasets from one address, and
refresh them on their own schedule. Rows are anonymized unless a query says otherwise and your role allows it.</p>
<article aria-labelledby="feed-url"><h2 id="feed-url">OData feed</h2>
<label for="feed-address">Feed address</label>
<input id="feed-address" class="key" readonly value="${feed}">
<button type="button" class="secondary" data-copy="feed-address">Copy</button>
<p>Sign in with <strong>Basic</strong> authentication: any user name, and an API key as the password; ${keys}.</p>
<ul>
<li><strong>Excel</strong>: Data → Get Data → From Other Sources → From OData Feed.</li>
<li><strong>Power BI</strong>: Get data → OData feed; in the service, set the same credentials and schedule the refresh.</li>
<li><strong>Tableau</strong>: Connect → OData, with a set's address (for example <code>${feed}conversations</code>).</li>
</ul>
<p>The <a href="/docs#/odata">API reference</a> lists the feed's routes; <code>docs/odata.md</code> in Ferry's documentation lists every query option.</p></article>
<h2>Entity sets</h2>
<table><thead><tr><th scope="col">Set</th><th scope="col">Key</th><th scope="col">Filters ($filter)</th><th scope="col">Properties</th></tr></thead>
<tbody>${[...FEED_SETS.values()].map(
        (set) =>
          html`<tr><td><code>${set.name}</code><br><small>${set.dataset.description}</small></td><td><code>${set.key.join(', ')}</code></td><td>${
            filterComparisons(set)
              .map((c) => `${c.property} ${c.operator}`)
              .join(', ') || '—'
          }</td><td>${set.properties.length}</td></tr>`,
      )}</tbody></table>`,
    );
  });
};
