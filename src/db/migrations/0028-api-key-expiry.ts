/**
 * API key rotation and expiry warnings (docs/auth.md#rotating-keys).
 *
 * - `pepper_id`: which pepper the key's hash was made under (the first bytes of an HMAC of a
 *   fixed label under that pepper), so `ferry keys rehash-status` can count the keys that
 *   still depend on a previous FERRY_SECRET_KEY. NULL for keys made before this migration
 *   and not used since: their pepper is learnt on their next use.
 * - `rotated_from`: the key this one replaced (no foreign key: the old row may be deleted
 *   with its tenant's restore, and a backup restores rows in any order). At most one
 *   unrevoked key replaces a given key.
 * - `expiry_warned_at`: when `api_key.expiring` was sent for the current `expires_at`;
 *   cleared whenever `expires_at` changes, so a new expiry is warned about again.
 */
export const up = /* sql */ `
ALTER TABLE api_keys ADD COLUMN pepper_id text;
ALTER TABLE api_keys ADD COLUMN rotated_from uuid;
ALTER TABLE api_keys ADD COLUMN expiry_warned_at timestamptz;

CREATE UNIQUE INDEX api_keys_successor ON api_keys (rotated_from)
  WHERE rotated_from IS NOT NULL AND revoked_at IS NULL;
CREATE INDEX api_keys_expiring ON api_keys (expires_at)
  WHERE expires_at IS NOT NULL AND revoked_at IS NULL AND expiry_warned_at IS NULL;
`;
