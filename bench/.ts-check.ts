import { ts } from '../src/seed/csv.ts';
for (let i = 0; i < 200000; i++) {
  const ms = Math.floor(Math.random() * 4e12) - 1e12 * (i % 2);
  if (ts(ms) !== new Date(ms).toISOString()) {
    console.log('MISMATCH', ms, ts(ms), new Date(ms).toISOString());
    process.exit(1);
  }
}
console.log('ok');
