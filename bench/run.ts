/**
 * `npm run bench`: every benchmark in one run. Results go to stdout as Markdown tables;
 * docs/benchmarks.md records them with the command that produced them.
 *   BENCH_ONLY=seed|export|paged|api|dashboard|retention|backup|import|download|partitions  runs one of them.
 */
import { spawnSync } from 'node:child_process';

const only = process.env.BENCH_ONLY;
for (const name of [
  'seed',
  'export',
  'paged',
  'api',
  'dashboard',
  'retention',
  'backup',
  'import',
  'download',
  'partitions',
  'computed',
]) {
  if (only && only !== name) continue;
  process.stdout.write(`\n## ${name}\n\n`);
  const result = spawnSync(process.execPath, [`bench/${name}.ts`], { stdio: 'inherit' });
  if (result.status !== 0) process.exitCode = 1;
}
