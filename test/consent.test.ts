import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';

const EMAIL = "Zoë.O'Hara+consent@Example.com";

for (const dialect of DIALECTS) {
  describe(`consent records (${dialect})`, () => {
    let h: ExportHarness;
    const customer = randomUUID();

    beforeAll(async () => {
      h = await exportHarness(dialect, { conversations: 5 });
      await h.database.db
        .insertInto('customers')
        .values({
          id: customer,
          tenant_id: h.tenant.id,
          email: EMAIL.toLowerCase(),
          name: 'Zoë "Zo" O\'Hara 😀',
          phone: '+4930123456789',
          country: 'DE',
          segment: 'consumer',
          created_at: new Date('2026-01-02T03:04:05.123456Z'),
          updated_at: new Date('2026-01-02T03:04:05.123456Z'),
        } as never)
        .execute();
    }, 240_000);
    afterAll(async () => h?.close());

    const post = (url: string, key: string, payload: object) =>
      h.app.inject({ method: 'POST', url, headers: bearer(key), payload });

    it('records consent given, withdrawn and given again, and shows the state and the full history', async () => {
      const given = await post('/api/v1/consent', h.keys.manager, {
        subject: { email: EMAIL.toUpperCase() },
        purpose: 'marketing',
        granted: true,
        source: 'widget_banner',
        policy_version: '2026-11 "v3"',
        ip_address: '2001:db8::7',
        recorded_at: '2026-11-01T10:00:00.123456Z',
      });
      expect(given.statusCode, given.body).toBe(201);
      expect(given.json()).toMatchObject({
        customer_id: customer,
        granted: true,
        legal_basis: 'consent',
        recorded_at: '2026-11-01T10:00:00.123456Z',
      });
      const withdrawn = await post('/api/v1/consent/withdraw', h.keys.admin, {
        subject: { customer_id: customer },
        purpose: 'marketing',
        source: 'email',
        recorded_at: '2026-11-15T08:00:00.000001Z',
      });
      expect(withdrawn.statusCode, withdrawn.body).toBe(201);
      expect(withdrawn.json().granted).toBe(false);
      await post('/api/v1/consent', h.keys.admin, {
        subject: { email: EMAIL },
        purpose: 'marketing',
        granted: true,
        legal_basis: 'consent',
        source: 'preference_center',
        policy_version: '2026-12',
      });
      await post('/api/v1/consent', h.keys.admin, {
        subject: { email: EMAIL },
        purpose: 'analytics',
        granted: false,
        legal_basis: 'legitimate_interests',
        source: 'api',
      });
      const view = await h.app.inject({
        method: 'GET',
        url: `/api/v1/consent?subject=${encodeURIComponent(EMAIL.toUpperCase())}`,
        headers: bearer(h.keys.manager),
      });
      expect(view.statusCode, view.body).toBe(200);
      const body = view.json();
      expect(body.subject).toEqual({ customer_id: customer });
      expect(body.history.map((r: { purpose: string; granted: boolean }) => [r.purpose, r.granted])).toEqual([
        ['marketing', true],
        ['marketing', false],
        ['marketing', true],
        ['analytics', false],
      ]);
      const marketing = body.current.find((c: { purpose: string }) => c.purpose === 'marketing');
      expect(marketing).toMatchObject({ status: 'given', policy_version: '2026-12', withdrawn_at: null });
      expect(body.current.find((c: { purpose: string }) => c.purpose === 'analytics')).toMatchObject({
        status: 'withdrawn',
        legal_basis: 'legitimate_interests',
        given_at: null,
      });
      // Each change is in the audit trail, without the email address.
      const audit = await sql<{ action: string; error: string | null; target_id: string }>`
        SELECT action, error, target_id FROM audit_events WHERE tenant_id = ${h.tenant.id} AND action LIKE 'consent.%'
        ORDER BY seq`.execute(h.database.db);
      expect(audit.rows.map((r) => r.action)).toEqual([
        'consent.given',
        'consent.withdrawn',
        'consent.given',
        'consent.withdrawn',
      ]);
      expect(JSON.stringify(audit.rows).toLowerCase()).not.toContain('example.com');
      // The compliance export of the trail names the customer and the consent state.
      const trail = await h.app.inject({
        method: 'GET',
        url: '/api/v1/export/audit_trail?format=json&action=consent.withdrawn',
        headers: bearer(h.keys.admin),
      });
      const rows = trail.json().data as Record<string, unknown>[];
      expect(rows[0]).toMatchObject({
        action_type: 'consent_change',
        customer_id: customer,
        consent_status: 'withdrawn',
      });
      // And the records are exported as the consent_records dataset, with basis and policy version.
      const exported = await h.app.inject({
        method: 'GET',
        url: '/api/v1/export/consent_records?format=json',
        headers: bearer(h.keys.admin),
      });
      const mine = (exported.json().data as Record<string, unknown>[]).filter(
        (r) => r.customer_id === customer,
      );
      expect(mine).toHaveLength(4);
      expect(mine.map((r) => r.policy_version)).toContain('2026-11 "v3"');
    });

    it('refuses an unknown subject, a bad purpose or basis, and roles without consent:manage', async () => {
      const unknown = await post('/api/v1/consent', h.keys.admin, {
        subject: { email: 'nobody@example.com' },
        purpose: 'marketing',
        granted: true,
        source: 'api',
      });
      expect(unknown.statusCode).toBe(404);
      expect(unknown.headers['content-type']).toContain('application/problem+json');
      for (const [body, field] of [
        [{ purpose: 'spam', granted: true, source: 'api' }, 'purpose'],
        [{ purpose: 'marketing', granted: true, source: 'api', legal_basis: 'because' }, 'legal_basis'],
        [{ purpose: 'marketing', granted: true, source: 'api', recorded_at: 'yesterday' }, 'recorded_at'],
      ] as const) {
        const res = await post('/api/v1/consent', h.keys.admin, {
          subject: { customer_id: customer },
          ...body,
        });
        expect(res.statusCode, JSON.stringify(body)).toBe(400);
        expect(res.json().errors[0].parameter).toBe(field);
      }
      for (const role of ['analyst', 'agent'] as const) {
        const res = await post('/api/v1/consent', h.keys[role], {
          subject: { customer_id: customer },
          purpose: 'marketing',
          granted: true,
          source: 'api',
        });
        expect(res.statusCode).toBe(403);
      }
      const other = await h.app.inject({
        method: 'GET',
        url: `/api/v1/consent?subject=${customer}`,
        headers: bearer(h.otherKeys.admin),
      });
      expect(other.statusCode).toBe(404);
    });
  });
}
