import type { Command } from 'commander';
import type { FerryCommand } from '../compose.ts';
import { masterKeyHex } from '../crypto/keyring.ts';
import { rotationDeps } from '../key-rotation/jobs.ts';
import { listRotations, type Rotation } from '../key-rotation/record.ts';
import { rotateDataKeys, rotateMasterKey, type RotationOutcome } from '../key-rotation/rotate.ts';
import { withCommand } from './context.ts';

/** The actor recorded in the audit trail for rotations run on the command line. */
const CLI_ACTOR = 'cli';

async function deps(command: FerryCommand) {
  const { keyring, secrets } = await command.keys();
  return rotationDeps({
    database: command.database,
    config: command.config,
    store: await command.store(),
    keyring,
    secrets,
  });
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** The one-line summary of a rotation (counts only, never a key). */
export function describeRotation(outcome: RotationOutcome): string {
  const { rotation, resumed } = outcome;
  const c = rotation.counts;
  const moved =
    `${plural(c.files, 'file')} re-encrypted (${c.files_scanned} looked at), ` +
    `${plural(c.secrets, 'secret')} sealed again`;
  const lead = resumed
    ? `resumed rotation ${rotation.id} and finished it`
    : `rotation ${rotation.id} finished`;
  const failed = c.failed
    ? `; ${plural(c.failed, 'item')} could not be read and ${c.failed === 1 ? 'was' : 'were'} left as ${c.failed === 1 ? 'it is' : 'they are'}`
    : '';
  if (rotation.kind === 'master')
    return (
      `master key rotated (${lead}): ${plural(c.keyring, 'data key')} re-wrapped under master key ${rotation.masterKeyId}, ` +
      `${moved}, ${plural(c.backup_keys, 'backup key')} sealed again (${plural(c.key_files, 'key file')} rewritten)${failed}`
    );
  return (
    `data keys rotated (${lead}): active data key ${rotation.dataKeyId ?? '(unchanged)'}, ${moved}, ` +
    `${plural(c.destroyed, 'retired data key')} destroyed${failed}`
  );
}

function present(rotation: Rotation) {
  const { tenants: _tenants, ...counts } = rotation.counts;
  return {
    id: rotation.id,
    kind: rotation.kind,
    status: rotation.status,
    actor: rotation.actor,
    phase: rotation.phase,
    master_key_id: rotation.masterKeyId,
    data_key_id: rotation.dataKeyId,
    counts,
    failures: rotation.checkpoint.failures ?? [],
    started_at: rotation.startedAt.toISOString(),
    finished_at: rotation.finishedAt?.toISOString() ?? null,
    error: rotation.error,
  };
}

function print(json: boolean | undefined, value: unknown, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text}\n`);
}

/**
 * `ferry keys rotate-master`, `ferry keys rotate-data` and `ferry keys keyring`: the keys of
 * encryption at rest, beside the API key commands of `ferry keys` (src/cli/keys.ts).
 */
export function registerKeyRotation(program: Command): void {
  const keys = program.commands.find((c) => c.name() === 'keys') ?? program.command('keys');

  keys
    .command('rotate-master')
    .description(
      'move everything to the current master key: configure the new key first and the old one after it ' +
        '(FERRY_ENCRYPTION_KEY="new,old", or its file or command), run this, then remove the old key',
    )
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean }) => {
      await withCommand(async (command) => {
        const outcome = await rotateMasterKey(await deps(command), { actor: CLI_ACTOR });
        print(options.json, present(outcome.rotation), describeRotation(outcome));
      });
    });

  keys
    .command('rotate-data')
    .description(
      'make a new data key active now and move files and secrets to it; retired data keys are destroyed ' +
        'by the daily job once their grace period is over and nothing is left under them',
    )
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean }) => {
      await withCommand(async (command) => {
        const outcome = await rotateDataKeys(await deps(command), {
          actor: CLI_ACTOR,
          rotationDays: command.config.storage.dataKeyRotationDays,
          force: true,
        });
        // With `force` a rotation always runs; null only if there was nothing at all to do.
        if (outcome) print(options.json, present(outcome.rotation), describeRotation(outcome));
      });
    });

  keys
    .command('keyring')
    .description(
      'the master key in use (its source and id, never the key), the data keys and recent rotations',
    )
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean }) => {
      await withCommand(async (command) => {
        const { keyring } = await command.keys();
        const dataKeys = await keyring.list();
        const rotations = await listRotations(command.database, 10);
        const value = {
          master_key: {
            source: keyring.master.source,
            id: masterKeyHex(keyring.master.current),
            others: keyring.master.all.slice(1).map(masterKeyHex),
          },
          data_keys: dataKeys.map((k) => ({
            id: k.id,
            state: k.state,
            master_key_id: k.masterKeyId,
            created_at: k.createdAt.toISOString(),
            retired_at: k.retiredAt?.toISOString() ?? null,
            destroyed_at: k.destroyedAt?.toISOString() ?? null,
          })),
          rotations: rotations.map(present),
        };
        const text = [
          `master key ${value.master_key.id} from ${value.master_key.source}` +
            (value.master_key.others.length
              ? ` (also configured: ${value.master_key.others.join(', ')})`
              : ''),
          'data keys:',
          ...(value.data_keys.length
            ? value.data_keys.map(
                (k) =>
                  `  ${k.id}  ${k.state.padEnd(9)}  created ${k.created_at.slice(0, 19)}` +
                  (k.master_key_id ? `  wrapped by ${k.master_key_id}` : ''),
              )
            : ['  (none yet)']),
          'rotations:',
          ...(value.rotations.length
            ? value.rotations.map(
                (r) =>
                  `  ${r.started_at.slice(0, 19)}  ${r.kind.padEnd(6)}  ${r.status.padEnd(9)}  ${r.id}` +
                  (r.status === 'running' ? `  at ${r.phase}${r.error ? `: ${r.error}` : ''}` : ''),
              )
            : ['  (none)']),
        ].join('\n');
        print(options.json, value, text);
      });
    });
}
