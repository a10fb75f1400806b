import { recordAudit } from '../auth/audit.ts';
import { masterKeyHex } from '../crypto/keyring.ts';
import { reencryptFiles, resealBackupKeys, resealSecrets, type RotationDeps } from './phases.ts';
import { auditedTenants, type Rotation, RotationLease, unfinishedRotation } from './record.ts';

/*
 * Key rotation (docs/key-rotation.md). Both kinds are runs over a persisted record
 * (record.ts): phases in order, a checkpoint saved as they go, a lease so one process runs at
 * a time; a run that stops (a crash, a failure) leaves everything readable with the keys that
 * were configured, and running the command again continues and finishes.
 *
 * - Master key: the keyring's data keys are re-wrapped under the current master key (no data
 *   is re-encrypted), and what the old master key still opens directly moves: stored files of
 *   format 1 become format 2, secrets sealed before the keyring (`v1:`) are sealed under the
 *   keyring, backup keys are sealed again by the new master key and their key files rewritten.
 * - Data keys: a new data key becomes active when the active one is older than
 *   FERRY_DATA_KEY_ROTATION_DAYS (or when asked); files and secrets under other keys are moved
 *   to it; a retired key is destroyed once a whole scan that began after its grace period
 *   found nothing left under it.
 */

export const AUDIT_MASTER_ROTATED = 'keys.master_rotated';
export const AUDIT_DATA_ROTATED = 'keys.data_rotated';

/** How long a retired data key stays after it was retired: writers that still hold it finish meanwhile. */
export const DATA_KEY_DESTROY_GRACE_MS = 24 * 3_600_000;
const DAY_MS = 86_400_000;

const MASTER_PHASES = ['keyring', 'files', 'secrets', 'backup_keys'] as const;
const DATA_PHASES = ['rotate', 'files', 'secrets', 'destroy'] as const;

export interface RotationOutcome {
  readonly rotation: Rotation;
  /** The run continued a rotation an earlier run left unfinished. */
  readonly resumed: boolean;
}

/** Runs the phases from the one the record is at, saving the next one after each. */
async function runPhases(
  lease: RotationLease,
  phases: readonly string[],
  run: (phase: string) => Promise<void>,
): Promise<void> {
  const start = Math.max(0, phases.indexOf(lease.rotation.phase));
  for (let i = start; i < phases.length; i++) {
    await run(phases[i]!);
    await lease.save({ phase: phases[i + 1] ?? 'audit' });
  }
}

/** One audit event per tenant: the rotation, and how many of the tenant's items moved. */
async function audit(deps: RotationDeps, rotation: Rotation, action: string): Promise<void> {
  const now = deps.now();
  for (const tenantId of await auditedTenants(deps.database))
    try {
      await recordAudit(deps.database, {
        tenantId,
        actor: rotation.actor,
        action,
        targetId: rotation.id,
        dataType: 'keys',
        recordCount: rotation.counts.tenants[tenantId] ?? 0,
        success: true,
        occurredAt: now,
      });
    } catch (err) {
      // Allowed to fail: the keys are rotated; one tenant's audit row must not undo that.
      // The rotation's own record keeps the counts.
      deps.logger?.error({ err, tenantId, rotation: rotation.id }, 'key rotation: audit event not written');
    }
}

async function finish(deps: RotationDeps, lease: RotationLease, action: string): Promise<void> {
  await audit(deps, lease.rotation, action);
  await lease.complete();
  const { counts, kind, id } = lease.rotation;
  const { tenants: _tenants, ...totals } = counts;
  deps.logger?.info({ rotation: id, kind, ...totals }, `key rotation (${kind}) completed`);
}

/**
 * `ferry keys rotate-master`: the operator configured the new master key first and the old one
 * after it. Afterwards nothing is under the old master key, which can then be removed.
 */
export async function rotateMasterKey(
  deps: RotationDeps,
  options: { actor: string },
): Promise<RotationOutcome> {
  const current = masterKeyHex(deps.keyring.master.current);
  const { lease, resumed } = await RotationLease.acquire(deps.database, 'master', {
    actor: options.actor,
    now: deps.now,
    phase: MASTER_PHASES[0],
    masterKeyId: current,
  });
  try {
    await lease.save({ masterKeyId: current });
    await deps.keyring.ready();
    await runPhases(lease, MASTER_PHASES, async (phase) => {
      const { counts } = lease.rotation;
      if (phase === 'keyring') counts.keyring += (await deps.keyring.rewrap()).rewrapped;
      else if (phase === 'files') await reencryptFiles(deps, lease, (ref) => ref.version === 1);
      else if (phase === 'secrets') await resealSecrets(deps, lease, (ref) => ref.format === 'v1', 'v1:');
      else await resealBackupKeys(deps, lease);
    });
    await finish(deps, lease, AUDIT_MASTER_ROTATED);
    return { rotation: lease.rotation, resumed };
  } catch (err) {
    await lease.release(err);
    throw err;
  }
}

/** Whether the data-key job has anything to do, and whether a new key is due. */
async function dataKeysDue(
  deps: RotationDeps,
  options: { force?: boolean; rotationDays: number },
): Promise<{ rotate: boolean; sweep: boolean }> {
  const keys = await deps.keyring.list();
  const active = keys.find((k) => k.state === 'active');
  const now = deps.now().getTime();
  const rotate =
    options.force === true ||
    (options.rotationDays > 0 &&
      !!active &&
      now - active.createdAt.getTime() >= options.rotationDays * DAY_MS);
  const sweep = keys.some(
    (k) => k.state === 'retired' && k.retiredAt && k.retiredAt.getTime() + DATA_KEY_DESTROY_GRACE_MS <= now,
  );
  return { rotate, sweep };
}

/**
 * The data-key rotation: a new active key when due (or `force`), then files and secrets under
 * other keys moved to it, then retired keys destroyed once nothing is left under them. Null when
 * there was nothing to do (no key due, none retired long enough, none unfinished).
 */
export async function rotateDataKeys(
  deps: RotationDeps,
  options: { actor: string; rotationDays: number; force?: boolean },
): Promise<RotationOutcome | null> {
  let unfinished = false;
  let due = { rotate: false, sweep: false };
  const pending = await unfinishedRotation(deps.database);
  if (pending?.kind === 'data') unfinished = true;
  else {
    due = await dataKeysDue(deps, options);
    if (!due.rotate && !due.sweep && !pending) return null;
  }
  const { lease, resumed } = await RotationLease.acquire(deps.database, 'data', {
    actor: options.actor,
    now: deps.now,
    phase: due.rotate ? 'rotate' : 'files',
  });
  try {
    await deps.keyring.ready();
    await runPhases(lease, DATA_PHASES, async (phase) => {
      const { counts, checkpoint } = lease.rotation;
      const active = await deps.keyring.activeId();
      if (phase === 'rotate') {
        // Rotated already by this rotation's earlier run (it stopped before saving the phase)?
        const keys = await deps.keyring.list();
        const current = keys.find((k) => k.id === active);
        if (!unfinished || !current || current.createdAt < lease.rotation.startedAt) {
          const rotated = await deps.keyring.rotate();
          await lease.save({ dataKeyId: rotated.active });
        }
      } else if (phase === 'files') {
        checkpoint.scan_started_at ??= deps.now().toISOString();
        await reencryptFiles(deps, lease, (ref) => ref.version === 1 || ref.dataKeyId !== active);
      } else if (phase === 'secrets') {
        await resealSecrets(
          deps,
          lease,
          (ref) => ref.format === 'v1' || (ref.format === 'v2' && ref.dataKeyId !== active),
          `v1:|v2:(?!${active})`,
        );
      } else {
        const scanned = new Date(checkpoint.scan_started_at ?? deps.now().toISOString()).getTime();
        for (const key of await deps.keyring.list()) {
          if (key.state !== 'retired' || !key.retiredAt) continue;
          if (key.retiredAt.getTime() + DATA_KEY_DESTROY_GRACE_MS > scanned) continue;
          if (checkpoint.failed_keys?.[key.id]) continue;
          if (await deps.keyring.destroy(key.id)) counts.destroyed += 1;
        }
      }
    });
    await finish(deps, lease, AUDIT_DATA_ROTATED);
    return { rotation: lease.rotation, resumed };
  } catch (err) {
    await lease.release(err);
    throw err;
  }
}
