import { buildProgram, runCli } from './cli/program.ts';

// A closed pipe (`ferry datamap | head`) ends the command quietly, as Unix tools do.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

await runCli(buildProgram(), process.argv);
