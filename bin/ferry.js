#!/usr/bin/env node
// Ferry's CLI entry. Node 24 runs the TypeScript sources directly (type stripping),
// so there is no build step between a change and a run.
import '../src/main.ts';
