/**
 * The keyring of encryption at rest, and the record of key rotations (docs/key-rotation.md).
 *
 * - `keyring`: the data keys (DEKs) that encrypt stored files and seal small secrets. Each is
 *   stored wrapped by the master key (`wrapped`: base64 of AES-256-GCM nonce, ciphertext and
 *   tag, the additional data binding the key's id) with the id of the master key that wrapped
 *   it. One key is `active` (encrypts new data), older ones are `retired` (decrypt only) until
 *   nothing refers to them, then `destroyed`: the wrapped bytes are removed.
 * - `key_rotations`: one row per master-key or data-key rotation, a checkpointed and
 *   resumable run with its counts. At most one is unfinished at a time; a lease tells a
 *   second process that one is running.
 */
export const up = /* sql */ `
CREATE TABLE keyring (
  id uuid PRIMARY KEY,
  state text NOT NULL CHECK (state IN ('active', 'retired', 'destroyed')),
  wrapped text,
  master_key_id text,
  created_at timestamptz NOT NULL,
  retired_at timestamptz,
  destroyed_at timestamptz,
  CHECK ((state = 'destroyed') = (wrapped IS NULL)),
  CHECK (wrapped IS NULL OR master_key_id IS NOT NULL)
);
CREATE UNIQUE INDEX keyring_one_active ON keyring ((true)) WHERE state = 'active';

CREATE TABLE key_rotations (
  id uuid PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('master', 'data')),
  status text NOT NULL CHECK (status IN ('running', 'completed')),
  actor text NOT NULL,
  phase text NOT NULL,
  checkpoint jsonb NOT NULL DEFAULT '{}',
  counts jsonb NOT NULL DEFAULT '{}',
  master_key_id text,
  data_key_id uuid,
  lease_owner text,
  lease_until timestamptz,
  started_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  finished_at timestamptz,
  error text
);
CREATE UNIQUE INDEX key_rotations_one_unfinished ON key_rotations ((true)) WHERE status = 'running';
CREATE INDEX key_rotations_started ON key_rotations (started_at DESC);
`;
