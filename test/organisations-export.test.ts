/**
 * An organisation's export across its tenants, run by the real workers and downloaded as a
 * client would: one archive whose `tenants/<slug>/` folders hold exactly each tenant's own export
 * of the same request (byte for byte when made with the same id and time; the same rows as the
 * tenant's own export through the API), `organisation/analytics_totals.csv` equal to the
 * tenants' analytics summed here independently, and checksums that `sha256sum -c` verifies.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeCompanyPackage } from '../src/pipeline/company-package.ts';
import type { Organisation } from '../src/organisations/model.ts';
import { seed } from '../src/seed/seed.ts';
import { bearer, createTenant, keysByRole, type TestTenant, withMembers } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, SECRET } from './support/fixtures/export-jobs.ts';
import { organisationKey, organisationOf } from './support/fixtures/organisations.ts';
import { DIALECTS } from './support/databases.ts';

const run = promisify(execFile);

/** Every file under `dir`, by its path relative to `dir`. */
async function tree(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = path.join(entry.parentPath, entry.name);
    out.set(path.relative(dir, full).split(path.sep).join('/'), await readFile(full));
  }
  return out;
}

type Row = Record<string, string>;
const csvRows = (bytes: Buffer): Row[] => parse(bytes, { columns: true }) as Row[];

/**
 * The analytics rows of several tenants summed per date, computed here on their own from the
 * rules in docs/organisations.md: counts added, means and rates weighted by what they are taken
 * over, topics ranked by the rows that list them.
 */
function sumAnalytics(rows: readonly Row[]): Map<string, Row> {
  const n = (v: string | undefined) => (v === undefined || v === '' ? null : Number(v));
  const byDate = new Map<string, Row[]>();
  for (const row of rows) byDate.set(row.date!, [...(byDate.get(row.date!) ?? []), row]);
  const out = new Map<string, Row>();
  for (const [date, group] of byDate) {
    const sum = (c: string) => String(group.reduce((a, r) => a + (n(r[c]) ?? 0), 0));
    const mean = (c: string, decimals: number, weight: (r: Row) => number) => {
      let total = 0;
      let weights = 0;
      for (const r of group) {
        const v = n(r[c]);
        const w = weight(r);
        if (v === null || w <= 0) continue;
        total += v * w;
        weights += w;
      }
      return weights > 0 ? (total / weights).toFixed(decimals) : '';
    };
    const conv = (r: Row) => n(r.total_conversations) ?? 0;
    const ai = (r: Row) => n(r.ai_messages) ?? 0;
    const customer = (r: Row) =>
      (n(r.total_messages) ?? 0) - (n(r.ai_messages) ?? 0) - (n(r.human_messages) ?? 0);
    const resolved = (r: Row) => Math.round((n(r.resolution_rate) ?? 0) * conv(r));
    const topics = (c: string) => {
      const counts = new Map<string, number>();
      for (const r of group)
        for (const t of JSON.parse(r[c] || '[]') as string[]) counts.set(t, (counts.get(t) ?? 0) + 1);
      return JSON.stringify(
        [...counts]
          .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
          .slice(0, 5)
          .map(([t]) => t),
      );
    };
    const kpis = group.map(
      (r) => JSON.parse(r.custom_kpis!) as { tokens_used: number; avg_processing_time_ms: number | null },
    );
    let processing = 0;
    let processingWeight = 0;
    for (const [i, k] of kpis.entries())
      if (k.avg_processing_time_ms !== null && ai(group[i]!) > 0) {
        processing += k.avg_processing_time_ms * ai(group[i]!);
        processingWeight += ai(group[i]!);
      }
    out.set(date, {
      date,
      tenant_id: '',
      site_url: '',
      total_conversations: sum('total_conversations'),
      total_messages: sum('total_messages'),
      ai_messages: sum('ai_messages'),
      human_messages: sum('human_messages'),
      avg_response_time_seconds: mean('avg_response_time_seconds', 2, customer),
      avg_resolution_time_minutes: mean('avg_resolution_time_minutes', 2, resolved),
      escalation_rate: mean('escalation_rate', 4, conv),
      resolution_rate: mean('resolution_rate', 4, conv),
      satisfaction_avg: mean('satisfaction_avg', 2, (r) => n(r.satisfaction_responses) ?? 0),
      satisfaction_responses: sum('satisfaction_responses'),
      ai_confidence_avg: mean('ai_confidence_avg', 4, ai),
      high_confidence_rate: mean('high_confidence_rate', 4, ai),
      low_confidence_rate: mean('low_confidence_rate', 4, ai),
      unique_visitors: sum('unique_visitors'),
      returning_visitors: sum('returning_visitors'),
      conversion_rate: mean('conversion_rate', 4, conv),
      bounce_rate: mean('bounce_rate', 4, conv),
      avg_session_duration: mean('avg_session_duration', 2, conv),
      mobile_percentage: mean('mobile_percentage', 2, conv),
      international_percentage: mean('international_percentage', 2, conv),
      after_hours_percentage: mean('after_hours_percentage', 2, conv),
      top_topics: topics('top_topics'),
      content_gap_topics: topics('content_gap_topics'),
      custom_kpis: JSON.stringify({
        tokens_used: kpis.reduce((a, k) => a + k.tokens_used, 0),
        avg_processing_time_ms:
          processingWeight > 0 ? Number((processing / processingWeight).toFixed(2)) : null,
      }),
    });
  }
  return out;
}

for (const dialect of DIALECTS) {
  describe(`an organisation's export across its tenants on ${dialect}`, () => {
    let h: ExportHarness;
    let organisation: Organisation;
    let home: TestTenant;
    let clientA: TestTenant;
    let clientB: TestTenant;
    /** A client tenant where the organisation key has no role. */
    let clientC: TestTenant;
    let keysA: Record<string, string>;
    let keysB: Record<string, string>;
    let orgKey: { id: string; key: string };
    let work: string;

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true, conversations: 12 });
      home = h.other;
      clientA = h.tenant;
      const seeded = await seed(h.database, {
        tenants: 1,
        conversations: 9,
        messagesPerConversation: 4,
        seed: 9,
        since: new Date('2026-08-01T00:00:00Z'),
        until: new Date('2026-10-01T00:00:00Z'),
        secretKey: SECRET,
      });
      clientB = await withMembers(h.database, seeded.tenants[0]!);
      clientC = await createTenant(h.database, 'pro');
      organisation = await organisationOf(h.database, home, [clientA, clientB, clientC]);
      orgKey = await organisationKey(h.database, organisation, 'admin', { [clientC.id]: 'none' });
      keysA = h.keys;
      keysB = await keysByRole(h.database, clientB);
      work = await mkdtemp(path.join(tmpdir(), 'ferry-org-export-'));
    }, 240_000);
    afterAll(async () => {
      await h?.close();
      if (work) await rm(work, { recursive: true, force: true });
    });

    /** Requests an export with `key` (through the organisation route, or a tenant's own), waits and downloads it. */
    async function exported(key: string, url: string, body: object) {
      const res = await h.app.inject({ method: 'POST', url, headers: bearer(key), payload: body });
      expect(res.statusCode, res.body).toBe(202);
      const done = await h.waitForExport(res.json().id, ['completed', 'failed'], { key });
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      const link = await h.app.inject({ url: `/api/v1/exports/${done.id}/download`, headers: bearer(key) });
      const signed = link.json().url as string;
      const file = await h.app.inject({ url: signed.slice(signed.indexOf('/api/')) });
      expect(file.statusCode).toBe(200);
      return { view: done, bytes: file.rawPayload };
    }

    async function unzipped(name: string, bytes: Buffer): Promise<{ dir: string; root: string }> {
      const dir = path.join(work, name);
      await writeFile(`${dir}.zip`, bytes);
      await run('unzip', ['-q', `${dir}.zip`, '-d', dir]);
      const [root] = await readdir(dir);
      return { dir: path.join(dir, root!), root: root! };
    }

    const packageBody = {
      datasets: ['conversations', 'messages', 'analytics', 'team_members', 'knowledge_base', 'account'],
      package: 'zip',
      format: 'csv',
      pii: 'full',
      from: '2026-08-01',
      to: '2026-09-30',
    };

    it('holds one folder per tenant with that tenant’s own export, the summed analytics and verified checksums', async () => {
      const org = await exported(orgKey.key, '/api/v1/organisation/exports', packageBody);
      const listed = (
        org.view.request as { organisation: { tenants: { id: string; slug: string; folder: string }[] } }
      ).organisation.tenants;
      // The key has no role in C: home, A and B only.
      expect(listed.map((t) => t.id).sort()).toEqual([home.id, clientA.id, clientB.id].sort());
      expect(org.view.files[0]!.name).toMatch(/^organisation-export-\d{8}T\d{6}Z\.zip$/);
      const { dir } = await unzipped('org-package', org.bytes);

      // sha256sum verifies the archive's manifest (every file, the tenants' included) and each folder's own.
      await run('sha256sum', ['--quiet', '-c', 'checksums.sha256'], { cwd: dir });
      const manifest = (await readFile(path.join(dir, 'checksums.sha256'), 'utf8')).trim().split('\n');
      const files = await tree(dir);
      expect(manifest.length).toBe(files.size - 1);
      for (const t of listed)
        await run('sha256sum', ['--quiet', '-c', 'checksums.sha256'], { cwd: path.join(dir, t.folder) });
      const metadata = JSON.parse(files.get('metadata.json')!.toString());
      expect(metadata).toMatchObject({
        export_id: org.view.id,
        organisation: { id: organisation.id, name: organisation.name },
        analytics_totals: { file: 'organisation/analytics_totals.csv' },
      });
      expect(metadata.tenants.map((t: { folder: string }) => t.folder).sort()).toEqual(
        listed.map((t) => t.folder).sort(),
      );
      expect(JSON.stringify(metadata)).not.toContain(clientC.id);

      const allAnalytics: Row[] = [];
      for (const t of listed) {
        const folder = await tree(path.join(dir, t.folder));
        const own = JSON.parse(folder.get('metadata.json')!.toString());
        expect(own).toMatchObject({ export_id: org.view.id, tenant: { id: t.id } });
        // (1) Byte for byte the package the tenant's own export writes with the same id and time.
        const same = path.join(work, `same-${t.slug}`);
        await writeCompanyPackage(
          h.database,
          {
            tenantId: t.id,
            kind: 'directory',
            datasets: packageBody.datasets,
            format: 'csv',
            pii: 'full',
            from: packageBody.from,
            to: packageBody.to,
            scope: { kind: 'tenant' },
            csvGuard: true,
          },
          { dir: same },
          { exportId: own.export_id, now: new Date(own.export_date) },
        );
        const [sameRoot] = await readdir(same);
        const expected = await tree(path.join(same, sameRoot!));
        expect([...folder.keys()].sort(), t.slug).toEqual([...expected.keys()].sort());
        for (const [file, bytes] of expected)
          expect(folder.get(file)!.equals(bytes), `${t.slug}/${file}`).toBe(true);
        allAnalytics.push(...csvRows(folder.get('analytics/daily.csv')!));
      }

      // (2) The totals equal the tenants' daily analytics summed here, date by date.
      const totals = csvRows(files.get('organisation/analytics_totals.csv')!);
      const header = parse(files.get('organisation/analytics_totals.csv')!, { to_line: 1 })[0] as string[];
      const tenantHeader = parse(
        (await tree(path.join(dir, listed.find((t) => t.id === clientA.id)!.folder))).get(
          'analytics/daily.csv',
        )!,
        { to_line: 1 },
      )[0] as string[];
      expect(header).toEqual(tenantHeader);
      const expectedTotals = sumAnalytics(allAnalytics);
      expect(totals.map((r) => r.date)).toEqual([...expectedTotals.keys()].sort());
      expect(totals.length).toBeGreaterThan(10);
      for (const row of totals) {
        const want = expectedTotals.get(row.date!)!;
        for (const column of header) {
          if (column === 'custom_kpis')
            expect(JSON.parse(row[column]!), `${row.date} ${column}`).toEqual(JSON.parse(want[column]!));
          else expect(row[column], `${row.date} ${column}`).toBe(want[column]);
        }
      }
      const conversationsOf = (rows: Row[]) => rows.reduce((a, r) => a + Number(r.total_conversations), 0);
      expect(conversationsOf(totals)).toBe(conversationsOf(allAnalytics));
    });

    it("equals the union of the tenants' own exports through the API", async () => {
      const org = await exported(orgKey.key, '/api/v1/organisation/exports', {
        ...packageBody,
        tenants: [clientA.slug, clientB.id],
      });
      const { dir } = await unzipped('org-union', org.bytes);
      const unionOfFolders = new Set<string>();
      const unionOfOwn = new Set<string>();
      for (const [t, keys] of [
        [clientA, keysA],
        [clientB, keysB],
      ] as const) {
        const own = await exported(keys.admin!, '/api/v1/exports', packageBody);
        const { dir: ownDir } = await unzipped(`own-${t.slug}`, own.bytes);
        const folder = await tree(path.join(dir, 'tenants', t.slug));
        const theirs = await tree(ownDir);
        expect([...folder.keys()].sort(), t.slug).toEqual([...theirs.keys()].sort());
        // Files that record the export's own id and time differ in those only (and, in
        // datapackage.json and the checksums, in the hashes of those files).
        const recordsExport = new Set(['metadata.json', 'index.html', 'team_members.json']);
        const instants = (meta: Buffer) => {
          const m = JSON.parse(meta.toString()) as { export_id: string; export_date: string };
          const at = new Date(m.export_date);
          return [m.export_id, m.export_date, `${at.toISOString().slice(0, 16).replace('T', ' ')} UTC`];
        };
        const mask = (text: string, values: string[]) =>
          values.reduce((s, v) => s.replaceAll(v, '<export>'), text);
        const orgValues = instants(folder.get('metadata.json')!);
        const ownValues = instants(theirs.get('metadata.json')!);
        const described = (bytes: Buffer, values: string[]) => {
          const descriptor = JSON.parse(mask(bytes.toString(), values)) as {
            resources: { path: string; hash?: string }[];
          };
          for (const r of descriptor.resources) if (recordsExport.has(r.path)) delete r.hash;
          return descriptor;
        };
        for (const [file, bytes] of theirs) {
          if (folder.get(file)!.equals(bytes)) continue;
          if (file === 'checksums.sha256') {
            const lines = (b: Buffer) =>
              b
                .toString()
                .split('\n')
                .filter(
                  (l) => !recordsExport.has(l.slice(66)) && l !== '' && !l.endsWith('datapackage.json'),
                );
            expect(lines(folder.get(file)!), `${t.slug}/${file}`).toEqual(lines(bytes));
          } else if (file === 'datapackage.json')
            expect(described(folder.get(file)!, orgValues), `${t.slug}/${file}`).toEqual(
              described(bytes, ownValues),
            );
          else {
            expect(recordsExport.has(file), `${t.slug}/${file} differs`).toBe(true);
            expect(mask(folder.get(file)!.toString(), orgValues), `${t.slug}/${file}`).toBe(
              mask(bytes.toString(), ownValues),
            );
          }
        }
        for (const row of csvRows(folder.get('messages.csv')!)) unionOfFolders.add(row.message_id!);
        for (const row of csvRows(theirs.get('messages.csv')!)) unionOfOwn.add(row.message_id!);
      }
      // Only the tenants asked for; the union of the folders' rows is the union of the tenants' own exports.
      expect((await readdir(path.join(dir, 'tenants'))).sort()).toEqual([clientA.slug, clientB.slug].sort());
      expect(unionOfFolders.size).toBeGreaterThan(50);
      expect([...unionOfFolders].sort()).toEqual([...unionOfOwn].sort());
      const owners = await h.database.db
        .selectFrom('messages')
        .select('tenant_id')
        .distinct()
        .where('id', 'in', [...unionOfFolders])
        .execute();
      expect(owners.map((o) => o.tenant_id).sort()).toEqual([clientA.id, clientB.id].sort());
    });

    it('writes a one-dataset request as that tenant’s own file in each folder', async () => {
      const body = { datasets: ['conversations'], format: 'csv', compression: 'gzip', pii: 'full' };
      const org = await exported(orgKey.key, '/api/v1/organisation/exports', {
        ...body,
        tenants: [clientA.id, clientB.id],
      });
      const { dir } = await unzipped('org-single', org.bytes);
      const files = await tree(dir);
      const ids: string[] = [];
      for (const [t, keys] of [
        [clientA, keysA],
        [clientB, keysB],
      ] as const) {
        const inFolder = [...files.keys()].filter((f) => f.startsWith(`tenants/${t.slug}/`));
        expect(inFolder, t.slug).toEqual([
          expect.stringMatching(new RegExp(`^tenants/${t.slug}/conversations-\\d{8}T\\d{6}Z\\.csv\\.gz$`)),
        ]);
        const own = await exported(keys.admin!, '/api/v1/exports', body);
        const csv = gunzipSync(files.get(inFolder[0]!)!);
        expect(csv.equals(gunzipSync(own.bytes)), t.slug).toBe(true);
        ids.push(...csvRows(csv).map((r) => r.conversation_id!));
      }
      const inDatabase = await h.database.db
        .selectFrom('conversations')
        .select('id')
        .where('tenant_id', 'in', [clientA.id, clientB.id])
        .execute();
      expect(ids.sort()).toEqual(inDatabase.map((r) => r.id).sort());
    });

    it('refuses tenants outside the organisation or without a role, and keeps the export to whoever asked', async () => {
      const outside = await createTenant(h.database, 'pro');
      const refused = await h.app.inject({
        method: 'POST',
        url: '/api/v1/organisation/exports',
        headers: bearer(orgKey.key),
        payload: { datasets: ['conversations'], tenants: [clientA.id, outside.id] },
      });
      expect(refused.statusCode).toBe(403);
      expect(refused.json().code).toBe('tenant_not_in_organisation');
      const noRole = await h.app.inject({
        method: 'POST',
        url: '/api/v1/organisation/exports',
        headers: bearer(orgKey.key),
        payload: { datasets: ['conversations'], tenants: [clientC.slug] },
      });
      expect(noRole.statusCode).toBe(403);
      expect(noRole.json()).toMatchObject({ code: 'forbidden' });
      expect(noRole.json().detail).toContain(clientC.slug);
      const split = await h.app.inject({
        method: 'POST',
        url: '/api/v1/organisation/exports',
        headers: bearer(orgKey.key),
        payload: { datasets: ['conversations', 'messages'], split_size: '10MB' },
      });
      expect(split.statusCode).toBe(400);

      const created = await requestExportAs(orgKey.key, { datasets: ['team_members'] });
      // The home tenant's own admin does not see it (it holds other tenants' data), nor can repeat it.
      const homeAdmin = h.otherKeys.admin;
      expect(
        (await h.app.inject({ url: `/api/v1/exports/${created}`, headers: bearer(homeAdmin) })).statusCode,
      ).toBe(404);
      const list = await h.app.inject({ url: '/api/v1/exports', headers: bearer(homeAdmin) });
      expect(list.json().data.map((e: { id: string }) => e.id)).not.toContain(created);
      const repeat = await h.app.inject({
        method: 'POST',
        url: `/api/v1/exports/${created}/repeat`,
        headers: bearer(orgKey.key),
      });
      expect(repeat.statusCode).toBe(400);
      expect(repeat.json().detail).toMatch(/organisation/);
      // The request is in each client tenant's trail, naming the organisation key, and the home tenant's.
      const trailA = await h.app.inject({
        url: '/api/v1/audit?action=export.requested',
        headers: bearer(keysA.admin!),
      });
      expect(trailA.json().data).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ target_id: created, actor: `org_key:${orgKey.id}` }),
        ]),
      );
      const trailHome = await h.app.inject({
        url: '/api/v1/audit?action=export.requested',
        headers: bearer(homeAdmin),
      });
      expect(trailHome.json().data).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ target_id: created, actor: `api_key:${orgKey.id}` }),
        ]),
      );
      await h.waitForExport(created, ['completed'], { key: orgKey.key });
      const completedA = await h.app.inject({
        url: '/api/v1/audit?action=export.completed',
        headers: bearer(keysA.admin!),
      });
      expect(completedA.json().data.map((e: { target_id: string }) => e.target_id)).toContain(created);
    });

    async function requestExportAs(key: string, body: object): Promise<string> {
      const res = await h.app.inject({
        method: 'POST',
        url: '/api/v1/organisation/exports',
        headers: bearer(key),
        payload: body,
      });
      expect(res.statusCode, res.body).toBe(202);
      return res.json().id;
    }

    it('counts against each tenant’s monthly exports', async () => {
      const usage = async (key: string) =>
        (await h.app.inject({ url: '/api/v1/usage', headers: bearer(key) }))
          .json()
          .quotas.find((q: { quota: string }) => q.quota === 'exports_per_month').used as number;
      const [a, b] = [await usage(keysA.admin!), await usage(keysB.admin!)];
      const id = await requestExportAs(orgKey.key, {
        datasets: ['team_members'],
        tenants: [clientA.id, clientB.id],
      });
      expect([await usage(keysA.admin!), await usage(keysB.admin!)]).toEqual([a + 1, b + 1]);
      await h.waitForExport(id, ['completed'], { key: orgKey.key });
    });
  });
}
