import { writeFileSync } from 'node:fs';
import { CountDistribution, planConversation } from '../src/seed/conversation-plan.ts';
import { conversationRow, messageRows } from '../src/seed/conversation-rows.ts';
import { buildTenant } from '../src/seed/tenant.ts';
import { TENANT_TABLE, SITE_TABLE, teamTable } from '../src/seed/tenant-rows.ts';
const w = { since: Date.UTC(2025, 0, 1), until: Date.UTC(2025, 3, 1) };
const counts = new CountDistribution(8);
const t = buildTenant(42, 1, 12500, w);
let conv = '',
  msg = '';
let t0 = performance.now();
for (let i = 0; i < 12500; i++) {
  const p = planConversation(t, i, counts);
  conv += conversationRow(t, p);
}
for (let i = 0; i < 12500; i++) {
  const p = planConversation(t, i, counts);
  msg += messageRows(t, p);
}
console.log('gen ms', performance.now() - t0);
writeFileSync('/tmp/ferry-seed/conv.csv', conv);
writeFileSync('/tmp/ferry-seed/msg.csv', msg);
import { CUSTOMER_TABLE } from '../src/seed/tenant-rows.ts';
writeFileSync('/tmp/ferry-seed/cust.csv', [...CUSTOMER_TABLE.rows(t)].join(''));
writeFileSync('/tmp/ferry-seed/tenant.csv', [...TENANT_TABLE.rows(t)].join(''));
writeFileSync('/tmp/ferry-seed/sites.csv', [...SITE_TABLE.rows(t)].join(''));
const h = new Map(t.team.map((m) => [m.id, 'x']));
writeFileSync('/tmp/ferry-seed/team.csv', [...teamTable(h).rows(t)].join(''));
