#!/usr/bin/env node
// Ferry's CLI entry. Node 24 runs the TypeScript sources directly (type stripping),
// so there is no build step between a change and a run. This file stays plain
// JavaScript that any Node.js can parse, so an older Node (a machine's own Node 20,
// say) gets one line saying what to do instead of a stack trace about ".ts" files.
import module from 'node:module';

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
// Node keeps the compiled (and type-stripped) modules on disk between runs, which halves the
// start-up time of every command (the CLI loads a few hundred modules); it is a no-op where the
// cache cannot be written. NODE_COMPILE_CACHE overrides the folder, NODE_DISABLE_COMPILE_CACHE=1
// turns it off.
module.enableCompileCache?.();
await import('../src/main.ts');
