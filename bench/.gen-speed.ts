import { CountDistribution, planConversation } from '../src/seed/conversation-plan.ts';
import { conversationRow, messageRows } from '../src/seed/conversation-rows.ts';
import { buildTenant } from '../src/seed/tenant.ts';
const w = { since: Date.UTC(2025, 0, 1), until: Date.UTC(2025, 3, 1) };
const counts = new CountDistribution(8);
const N = Number(process.argv[2] ?? 62500);
const t = buildTenant(42, 1, N, w);
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
let c0 = cpu();
let bytes = 0;
let msgs = 0;
for (let i = 0; i < N; i++) {
  const p = planConversation(t, i, counts);
  msgs += p.senders.length;
}
console.log('plan only cpu ms', (cpu() - c0).toFixed(0), msgs);
c0 = cpu();
for (let i = 0; i < N; i++) {
  const p = planConversation(t, i, counts);
  bytes += conversationRow(t, p).length;
}
console.log('plan+conv rows cpu ms', (cpu() - c0).toFixed(0), bytes);
c0 = cpu();
bytes = 0;
for (let i = 0; i < N; i++) {
  const p = planConversation(t, i, counts);
  bytes += messageRows(t, p).length;
}
console.log(
  'plan+msg rows cpu ms',
  (cpu() - c0).toFixed(0),
  bytes,
  msgs,
  'msgs/cpu-s',
  Math.round(msgs / ((cpu() - c0) / 1000)),
);
