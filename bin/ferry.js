#!/usr/bin/env node
// Ferry's CLI entry. Node 24 runs the TypeScript sources directly (type stripping),
// so there is no build step between a change and a run. This file stays plain
// JavaScript that any Node.js can parse, so an older Node (a machine's own Node 20,
// say) gets one line saying what to do instead of a stack trace about ".ts" files.
const REQUIRED_MAJOR = 24;
const running = process.versions.node;
if (Number(running.split('.')[0]) < REQUIRED_MAJOR) {
  process.stderr.write(
    `ferry: needs Node.js ${REQUIRED_MAJOR} or later, but this is Node.js ${running}; ` +
      'inside the Ferry folder run `npm run ferry -- <command>`, `npm start` or `npx ferry <command>`, ' +
      `which use the Node.js ${REQUIRED_MAJOR} installed with Ferry\n`,
  );
  process.exit(1);
}
await import('../src/main.ts');
