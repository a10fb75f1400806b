/**
 * Signed receipts of completed data subject requests (see docs/receipts.md):
 *
 * - `receipt_signing_keys`: the Ed25519 keys that sign receipts. The private key is
 *   sealed with the install's secret key; the public key is served as a JWKS. At most one
 *   key is active; rotation retires it (its public key stays published, so old receipts
 *   still verify).
 * - `receipt_chains`: one row per tenant, the head of its chain. Issuers lock it, so a
 *   tenant's receipts get gapless sequence numbers and each names the hash of the one before.
 * - `dsar_receipts`: every receipt, with the exact canonical (RFC 8785) bytes that were signed.
 */
export const up = /* sql */ `
CREATE TABLE receipt_signing_keys (
  -- The RFC 7638 thumbprint of the public key (base64url), also the JWK's kid.
  kid text PRIMARY KEY,
  -- The raw 32-byte Ed25519 public key, base64url (the JWK's x).
  public_key text NOT NULL,
  -- The PKCS#8 private key, sealed with the secret key (src/lib/secret-box.ts).
  private_key_sealed text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  retired_at timestamptz
);

CREATE UNIQUE INDEX receipt_signing_keys_one_active ON receipt_signing_keys ((true)) WHERE retired_at IS NULL;

CREATE TABLE receipt_chains (
  tenant_id uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
  -- The sequence number and SHA-256 (hex) of the tenant's last receipt; 0 and NULL before the first.
  last_sequence bigint NOT NULL DEFAULT 0,
  last_sha256 text
);

CREATE TABLE dsar_receipts (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  request_id text NOT NULL,
  sequence bigint NOT NULL,
  -- SHA-256 (hex) of body: what the next receipt names as previous_receipt_sha256.
  sha256 text NOT NULL,
  -- The signed receipt, canonicalized per RFC 8785: exactly the bytes the signature covers.
  body text NOT NULL,
  -- The Ed25519 signature of body, base64url.
  signature text NOT NULL,
  key_id text NOT NULL REFERENCES receipt_signing_keys(kid),
  issued_at timestamptz NOT NULL,
  UNIQUE (tenant_id, sequence),
  UNIQUE (tenant_id, request_id)
);
`;
