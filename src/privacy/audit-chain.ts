import { sign, verify } from 'node:crypto';
import { sql } from 'kysely';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { activeSigningKey, publicKeyFromJwk, receiptJwks } from './receipt-keys.ts';
import { canonicalBytes } from './receipts.ts';
import { receiptDb } from './receipt-tables.ts';

/**
 * The tamper-evident audit trail (docs/compliance.md#the-audit-trail). Migration 0016's
 * insert trigger links every event of a tenant to the one before it (`seq`, `prev_hash`,
 * `hash = SHA-256(seq, prev_hash, every field, text_digest)`); `verifyAuditChain` walks the
 * links and names the first one that does not hold. Daily anchors sign the chain head with
 * the receipt key, so cutting events off the end (and rewinding the head) shows too.
 */

export interface BrokenLink {
  readonly seq: number;
  readonly event_id: string | null;
  readonly reason: string;
}

export interface ChainVerification {
  readonly tenant_id: string;
  readonly valid: boolean;
  /** Events checked. */
  readonly events: number;
  /** Where the chain starts (after what retention cut) and ends. */
  readonly first_seq: number;
  readonly last_seq: number;
  /** Events whose error or user agent an erasure scrubbed (the chain still holds them). */
  readonly redacted: number;
  readonly anchors_checked: number;
  /** The first link that does not hold; null when the chain is whole. */
  readonly broken: BrokenLink | null;
}

interface ChainRow {
  id: string;
  seq: string | number;
  prev_hash: string | null;
  hash: string | null;
  expected: string;
  digest_ok: boolean;
  redacted_by: string | null;
}

const PAGE = 5000;

/** Walks the tenant's audit chain from where retention cut it to its head. */
export async function verifyAuditChain(database: Database, tenantId: string): Promise<ChainVerification> {
  const head = await sql<{
    last_seq: string | number;
    last_hash: string | null;
    pruned_seq: string | number;
    pruned_hash: string | null;
  }>`
    SELECT last_seq, last_hash, pruned_seq, pruned_hash FROM audit_chains WHERE tenant_id = ${tenantId}`.execute(
    database.db,
  );
  const chain = head.rows[0] ?? { last_seq: 0, last_hash: null, pruned_seq: 0, pruned_hash: null };
  const lastSeq = Number(chain.last_seq);
  const firstSeq = Number(chain.pruned_seq) + 1;
  const erasures = new Set(
    (
      await sql<{ target_id: string }>`
        SELECT target_id FROM audit_events WHERE tenant_id = ${tenantId} AND action = 'dsar.erased' AND target_id IS NOT NULL`.execute(
        database.db,
      )
    ).rows.map((r) => r.target_id),
  );
  let expectedSeq = firstSeq;
  let prev = chain.pruned_hash;
  let events = 0;
  let redacted = 0;
  let broken: BrokenLink | null = null;
  const result = (anchors: number, b: BrokenLink | null): ChainVerification => ({
    tenant_id: tenantId,
    valid: b === null,
    events,
    first_seq: firstSeq,
    last_seq: lastSeq,
    redacted,
    anchors_checked: anchors,
    broken: b,
  });
  // Events before the cut are a break too: retention records every cut it makes.
  const early = await sql<{ id: string; seq: string | number }>`
    SELECT id, seq FROM audit_events WHERE tenant_id = ${tenantId} AND (seq IS NULL OR seq < ${firstSeq})
    ORDER BY seq NULLS FIRST LIMIT 1`.execute(database.db);
  if (early.rows[0])
    return result(0, {
      seq: Number(early.rows[0].seq ?? 0),
      event_id: early.rows[0].id,
      reason:
        early.rows[0].seq == null
          ? 'the event is not in the chain'
          : 'the event is before the start of the chain',
    });
  let after = firstSeq - 1;
  walk: for (;;) {
    const page = await sql<ChainRow>`
      SELECT a.id, a.seq, a.prev_hash, a.hash, ferry_audit_hash(a) AS expected,
        a.text_digest IS NOT DISTINCT FROM ferry_audit_text_digest(a.error, a.user_agent) AS digest_ok, a.redacted_by
      FROM audit_events a WHERE a.tenant_id = ${tenantId} AND a.seq > ${after} AND a.seq <= ${lastSeq}
      ORDER BY a.seq LIMIT ${PAGE}`.execute(database.db);
    for (const row of page.rows) {
      const seq = Number(row.seq);
      if (seq !== expectedSeq) {
        broken = {
          seq: expectedSeq,
          event_id: null,
          reason:
            seq > expectedSeq
              ? `event ${expectedSeq}${seq - expectedSeq > 1 ? `–${seq - 1}` : ''} is missing (deleted)`
              : `event ${seq} appears twice`,
        };
        break walk;
      }
      if ((row.prev_hash ?? null) !== (prev ?? null)) {
        broken = {
          seq,
          event_id: row.id,
          reason: 'its link to the previous event does not match (an event before it was changed or removed)',
        };
        break walk;
      }
      if (row.hash !== row.expected) {
        broken = {
          seq,
          event_id: row.id,
          reason: 'the event was changed after it was written (its hash does not match its content)',
        };
        break walk;
      }
      if (!row.digest_ok) {
        if (!row.redacted_by || !erasures.has(row.redacted_by)) {
          broken = {
            seq,
            event_id: row.id,
            reason: 'its error or user agent was changed, and no erasure did it',
          };
          break walk;
        }
        redacted += 1;
      }
      prev = row.hash;
      expectedSeq += 1;
      events += 1;
      after = seq;
    }
    if (page.rows.length < PAGE) break;
  }
  if (!broken && expectedSeq <= lastSeq)
    broken = {
      seq: expectedSeq,
      event_id: null,
      reason: `events ${expectedSeq}–${lastSeq} are missing (the chain was cut at its end)`,
    };
  if (!broken && lastSeq > 0 && prev !== chain.last_hash)
    broken = { seq: lastSeq, event_id: null, reason: 'the chain head does not match the last event' };
  // The walk covers the chain as its head stood when read. Events past it are fine only when
  // the head has moved over them since (appended meanwhile, checked next time).
  if (!broken) {
    const beyond = await sql<{ last: string | number | null }>`
      SELECT max(seq) AS last FROM audit_events WHERE tenant_id = ${tenantId} AND seq > ${lastSeq}`.execute(
      database.db,
    );
    const last = beyond.rows[0]?.last;
    if (last != null) {
      const moved = await sql<{ last_seq: string | number }>`
        SELECT last_seq FROM audit_chains WHERE tenant_id = ${tenantId}`.execute(database.db);
      if (Number(moved.rows[0]?.last_seq ?? 0) < Number(last))
        broken = { seq: lastSeq, event_id: null, reason: 'the chain head does not match the last event' };
    }
  }
  if (broken) return result(0, broken);
  // Anchors: each names a signed (seq, hash) the chain must still contain.
  const anchors = await sql<{
    seq: string | number;
    hash: string;
    body: string;
    signature: string;
    key_id: string;
  }>`
    SELECT seq, hash, body, signature, key_id FROM audit_anchors WHERE tenant_id = ${tenantId} ORDER BY seq`.execute(
    database.db,
  );
  const jwks = await receiptJwks(database);
  let checked = 0;
  for (const a of anchors.rows) {
    const seq = Number(a.seq);
    const jwk = jwks.keys.find((k) => k.kid === a.key_id);
    const key = jwk ? publicKeyFromJwk(jwk) : 'unknown key';
    if (
      typeof key === 'string' ||
      !verify(null, Buffer.from(a.body), key, Buffer.from(a.signature, 'base64url'))
    )
      return result(checked, {
        seq,
        event_id: null,
        reason: `the anchor of event ${seq} is not validly signed`,
      });
    const body = JSON.parse(a.body) as { seq: number; hash: string; tenant_id: string };
    if (body.seq !== seq || body.hash !== a.hash || body.tenant_id !== tenantId)
      return result(checked, { seq, event_id: null, reason: `the anchor of event ${seq} was altered` });
    if (seq > lastSeq)
      return result(checked, {
        seq,
        event_id: null,
        reason: `an anchor signed event ${seq}, but the chain ends at ${lastSeq} (events were cut off its end)`,
      });
    if (seq >= firstSeq) {
      const at = await sql<{ hash: string }>`
        SELECT hash FROM audit_events WHERE tenant_id = ${tenantId} AND seq = ${seq}`.execute(database.db);
      if (at.rows[0]?.hash !== a.hash)
        return result(checked, {
          seq,
          event_id: null,
          reason: `event ${seq} differs from its signed anchor`,
        });
    }
    checked += 1;
  }
  return result(checked, null);
}

/** Every tenant that has an audit chain. */
export async function chainTenants(database: Database): Promise<string[]> {
  const r = await sql<{ tenant_id: string }>`SELECT tenant_id FROM audit_chains ORDER BY tenant_id`.execute(
    database.db,
  );
  return r.rows.map((x) => x.tenant_id);
}

/**
 * Signs each tenant's chain head that moved since its last anchor (run daily): the
 * canonical JSON `{anchored_at, hash, seq, tenant_id}`, signed with the receipt key.
 */
export async function anchorAuditChains(
  database: Database,
  secrets: SecretBox,
  now = new Date(),
): Promise<number> {
  await secrets.ready();
  const heads = await sql<{ tenant_id: string; last_seq: string | number; last_hash: string }>`
    SELECT c.tenant_id, c.last_seq, c.last_hash FROM audit_chains c
    WHERE c.last_seq > 0 AND c.last_hash IS NOT NULL
      AND c.last_seq > coalesce((SELECT max(a.seq) FROM audit_anchors a WHERE a.tenant_id = c.tenant_id), 0)`.execute(
    database.db,
  );
  let n = 0;
  for (const h of heads.rows) {
    const body = {
      anchored_at: now.toISOString(),
      hash: h.last_hash,
      seq: Number(h.last_seq),
      tenant_id: h.tenant_id,
    };
    const bytes = canonicalBytes(body);
    await receiptDb(database)
      .transaction()
      .execute(async (trx) => {
        const key = await activeSigningKey(trx, secrets);
        const signature = sign(null, bytes, key.privateKey).toString('base64url');
        await sql`INSERT INTO audit_anchors (tenant_id, seq, hash, anchored_at, body, signature, key_id)
          VALUES (${h.tenant_id}, ${body.seq}, ${body.hash}, ${now}, ${bytes.toString('utf8')}, ${signature}, ${key.kid})
          ON CONFLICT (tenant_id, seq) DO NOTHING`.execute(trx);
      });
    n += 1;
  }
  return n;
}
