import { INTENT_CATEGORY, INTENTS, type Intent, PHRASES } from './phrases.ts';
import { COUNTRIES, type Language, LANGUAGES, type Plan } from './pools.ts';
import { Rng } from './random.ts';
import { DAY, type DocumentInfo, S, type TenantContext } from './tenant-context.ts';

/**
 * The knowledge base of a tenant: Markdown articles, FAQs, guides, policies and
 * product pages per support topic, written from the same phrase pools as the
 * conversations, mostly in the tenant's language.
 */

const DOCUMENTS_PER_PLAN: Record<Plan, number> = { starter: 12, pro: 24, agency: 36, enterprise: 48 };

const CATEGORY_TITLES: Record<string, Record<Language, string>> = {
  orders: { en: 'Orders', de: 'Bestellungen', fr: 'Commandes', es: 'Pedidos', ja: 'ご注文', pt: 'Pedidos' },
  shipping: { en: 'Shipping', de: 'Versand', fr: 'Livraison', es: 'Envíos', ja: '配送', pt: 'Entrega' },
  returns: {
    en: 'Returns',
    de: 'Rücksendungen',
    fr: 'Retours',
    es: 'Devoluciones',
    ja: '返品',
    pt: 'Devoluções',
  },
  billing: {
    en: 'Billing',
    de: 'Abrechnung',
    fr: 'Facturation',
    es: 'Facturación',
    ja: '請求',
    pt: 'Cobrança',
  },
  account: { en: 'Account', de: 'Konto', fr: 'Compte', es: 'Cuenta', ja: 'アカウント', pt: 'Conta' },
  products: { en: 'Products', de: 'Produkte', fr: 'Produits', es: 'Productos', ja: '製品', pt: 'Produtos' },
  troubleshooting: {
    en: 'Troubleshooting',
    de: 'Fehlerbehebung',
    fr: 'Dépannage',
    es: 'Solución de problemas',
    ja: 'トラブルシューティング',
    pt: 'Solução de problemas',
  },
};

function fillPlain(template: string, ctx: TenantContext, rng: Rng): string {
  return template
    .replaceAll('{order}', `ORD-${rng.digits(7)}`)
    .replaceAll('{product}', rng.pick(ctx.products))
    .replaceAll('{days2}', String(rng.range(6, 10)))
    .replaceAll('{days}', String(rng.range(2, 5)))
    .replaceAll('{amount}', `${rng.range(5, 40)}.00 ${ctx.profile.currency}`)
    .replaceAll('{agent}', ctx.team[0]!.first);
}

export function buildDocuments(ctx: TenantContext): void {
  const count = DOCUMENTS_PER_PLAN[ctx.plan];
  const home = COUNTRIES[ctx.profile.country]!.language;
  for (let i = 0; i < count; i++) {
    const rng = Rng.of(ctx.seed, i, S.document);
    const intent: Intent = INTENTS[i % INTENTS.length]!;
    const category = INTENT_CATEGORY[intent];
    const language: Language =
      home !== 'en' && rng.chance(0.3) ? 'en' : i % 11 === 10 ? rng.pick(LANGUAGES) : home;
    const p = PHRASES[language];
    const question = fillPlain(rng.pick(p.questions[intent]), ctx, rng);
    const title = `${CATEGORY_TITLES[category]![language]}: ${question}`;
    const answers = p.answers[intent].map((a) => fillPlain(a, ctx, rng));
    const faq = INTENTS.filter((x) => INTENT_CATEGORY[x] === category && x !== intent).flatMap((x) =>
      p.questions[x].map(
        (q, k) => `- **${fillPlain(q, ctx, rng)}** ${fillPlain(p.answers[x][k] ?? '', ctx, rng)}`,
      ),
    );
    const sections = [
      `# ${title}`,
      answers[0]!,
      `## ${CATEGORY_TITLES[category]![language]}`,
      answers.slice(1).join('\n\n'),
      `## ${p.followUps[0]}`,
      fillPlain(rng.pick(p.aiFollowUps), ctx, rng),
      ...(faq.length ? ['## FAQ', faq.join('\n')] : []),
      `> ${ctx.name} · ${fillPlain(rng.pick(p.aiClosing), ctx, rng)}`,
    ];
    const contentType =
      category === 'products' ? 'product' : rng.pick(['article', 'faq', 'guide', 'faq', 'policy'] as const);
    const createdAt = ctx.createdAt + rng.int(Math.max(1, ctx.window.until - ctx.createdAt - DAY));
    const doc: DocumentInfo = {
      id: rng.uuid(),
      category,
      language,
      title,
      contentType,
      content: sections.join('\n\n'),
      url: `https://${ctx.sites[0]!.url.slice(8)}/help/${category}/${i + 1}`,
      tags: rng.sample(
        [category, intent.replace('_', '-'), language, 'kb', 'public', contentType],
        rng.range(1, 3),
      ),
      createdAt,
      updatedAt: createdAt + rng.int(Math.max(1, ctx.window.until - createdAt)),
    };
    ctx.documents.push(doc);
    let byLanguage = ctx.sources.get(category);
    if (!byLanguage) {
      byLanguage = new Map();
      ctx.sources.set(category, byLanguage);
    }
    const ids = byLanguage.get(language) ?? [];
    ids.push(doc.id);
    byLanguage.set(language, ids);
  }
}
