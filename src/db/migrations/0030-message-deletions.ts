/**
 * Selective deletion of single messages (docs/deletion.md): `deletions.target` accepts
 * `message`. The conversation stays; the counts that sum up its messages are recomputed.
 */
export const up = /* sql */ `
ALTER TABLE deletions DROP CONSTRAINT deletions_target_check;
ALTER TABLE deletions ADD CONSTRAINT deletions_target_check
  CHECK (target IN ('conversation', 'conversations', 'message', 'customer', 'document'));
`;
