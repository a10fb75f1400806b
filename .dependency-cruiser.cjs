/**
 * The dependency rules of src/, checked in CI by `npm run depcheck`. Dependencies point
 * down the layers described in docs/architecture.md: no folder imports one that imports
 * it back, the composition root (src/compose.ts) is the only place that wires adapters,
 * and migrations are frozen history that runtime code never loads.
 * @type {import('dependency-cruiser').IConfiguration}
 */
module.exports = {
  forbidden: [
    {
      name: 'no-file-cycles',
      comment: 'A file never imports one that imports it back, directly or through others.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-folder-cycles',
      comment:
        'A folder never imports one that imports it back. Shared types go to the lower folder; ' +
        'what wires folders together (the job list, the delivery clients) lives in src/compose.ts.',
      severity: 'error',
      scope: 'folder',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-runtime-migration-imports',
      comment:
        'Migrations are frozen history: only the migrator (src/db/migrate.ts) loads them. Runtime ' +
        'code keeps its own copy of anything a migration also spells out.',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/db/migrations/', '^src/db/migrate\\.ts$'] },
      to: { path: '^src/db/migrations/' },
    },
    {
      name: 'migrations-stand-alone',
      comment:
        'A migration imports nothing from src/ outside src/db/, so a later change to runtime code ' +
        'can never change what an old migration does.',
      severity: 'error',
      from: { path: '^src/db/migrations/' },
      to: { path: '^src/', pathNot: '^src/db/' },
    },
    {
      name: 'domain-stands-alone',
      comment: 'src/domain/ holds framework-free types; it imports only src/domain/ and src/lib/.',
      severity: 'error',
      from: { path: '^src/domain/' },
      to: { path: '^src/', pathNot: '^src/(domain|lib)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Type-only imports count: a cycle through types is still a cycle between modules.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
