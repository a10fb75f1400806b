import { randomUUID } from 'node:crypto';
import type { AuthContext, Plan } from '../auth/context.ts';
import { limitsFor } from '../auth/quotas.ts';
import { loadTenant } from '../collect/tenant.ts';
import type { Database } from '../db/database.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { runExportJob } from '../export-requests/export-job.ts';
import { downloadPath, linkBase } from '../export-requests/links.ts';
import { tenantExports } from '../export-requests/repository.ts';
import { recordAccepted } from '../export-requests/service.ts';
import { registerSubjectPackages } from '../export-requests/subject-packages.ts';
import type { FerryJob } from '../jobs/types.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { outboundPolicy } from '../lib/ssrf.ts';
import { type DsarPlan, type DsarStep, registerDsarPlan, type StepContext } from './dsar-job.ts';
import { loadDsar } from './dsar-service.ts';
import { executeErasure, type ErasureOutcome } from './erasure.ts';
import { rectify } from './rectification.ts';
import { issueReceipt, type ReceiptBody } from './receipts.ts';
import { type ResolvedSubject, resolveSubject, subjectRowCondition } from './subject.ts';
import type { DsarRow } from './tables.ts';

/**
 * What each kind of data subject request does, step by step (docs/dsar.md). Steps record
 * counts and ids in the request's `result`, never the subject's identifiers.
 */

/** How long the link in the email to the subject works. */
const LINK_SECONDS = 7 * 86_400;
/** Consent purposes a restriction or an opt-out withdraws. */
type Purpose = 'analytics' | 'marketing' | 'ai_training';
const RESTRICTED_PURPOSES: readonly Purpose[] = ['analytics', 'marketing', 'ai_training'];
const OPT_OUT_PURPOSES: readonly Purpose[] = ['marketing', 'ai_training'];

async function subjectOf(ctx: StepContext): Promise<ResolvedSubject> {
  if (!ctx.row.subject) throw new FerryError('conflict', 'the request no longer holds its identifiers');
  return resolveSubject(ctx.deps.database, ctx.row.tenant_id, ctx.row.subject);
}

const resolve: DsarStep = {
  name: 'resolve',
  async run(ctx) {
    const subject = await subjectOf(ctx);
    return {
      tables: subject.matches.map((m) => ({ table: m.table, rows: m.rows, matched_by: m.matched_by })),
      customers: subject.customerIds.length,
      team_members: subject.teamMemberIds.length,
    };
  },
};

/** The actor of what a request does on its own: exports, receipts and audit entries name it. */
function requestAuth(row: DsarRow, plan: Plan): AuthContext {
  return {
    tenantId: row.tenant_id,
    plan,
    role: 'admin',
    apiKeyId: null,
    teamMemberId: null,
    scopes: [],
    actor: `dsar:${row.id}`,
    ip: null,
    userAgent: null,
  };
}

/** The access package: an export of the pipeline narrowed to the subject, run here and now. */
const packageStep: DsarStep = {
  name: 'package',
  async run(ctx) {
    const { database } = ctx.deps;
    const tenant = await loadTenant(database, ctx.row.tenant_id);
    const auth = requestAuth(ctx.row, tenant.plan as Plan);
    const id = randomUUID();
    const now = ctx.deps.now();
    const config: ExportConfig = {
      datasets: [],
      scope: { kind: 'tenant' },
      format: 'json',
      compression: null,
      package: 'zip',
      from: null,
      to: null,
      filters: {},
      columns: null,
      pii: 'full',
      timezone: null,
      options: {},
      bom: false,
      csv_guard: true,
      recipients: [],
      subject_request: ctx.row.id,
    };
    const limits = await limitsFor(database, auth);
    await recordAccepted(database, auth, { id, config, limits, repeatOf: null, now });
    const controller = new AbortController();
    const job = {
      id,
      name: 'dsar.package',
      data: { id },
      signal: controller.signal,
      retryCount: 0,
      retryLimit: 0,
    };
    await runExportJob(job as unknown as FerryJob, ctx.job);
    const row = await tenantExports(database, ctx.row.tenant_id).find(id);
    if (row?.status !== 'completed')
      throw new FerryError(
        'export_interrupted',
        `the package export ${id} ${row?.status ?? 'vanished'}: ${row?.error_message ?? ''}`,
      );
    const [file] = await tenantExports(database, ctx.row.tenant_id).files([id]);
    return {
      export_id: id,
      file_id: file?.id ?? null,
      records: row.records_done,
      bytes: file?.bytes ?? 0,
      sha256: file?.sha256 ?? null,
      expires_at: row.expires_at?.toISOString() ?? null,
    };
  },
};

/** Emails the subject a signed link to their package, when there is an address and a mail server. */
const notifyPackage: DsarStep = {
  name: 'notify',
  async run(ctx) {
    const email = ctx.row.subject?.email;
    const pkg = ctx.done.package as { export_id: string; file_id: string | null } | undefined;
    if (!email || !ctx.job.mailer || !pkg?.file_id) return { emailed: false };
    const expires = Math.floor(ctx.deps.now().getTime() / 1000) + LINK_SECONDS;
    const target = { tenantId: ctx.row.tenant_id, exportId: pkg.export_id, fileId: pkg.file_id, expires };
    const url = `${linkBase(ctx.deps.config)}${downloadPath(target, ctx.job.signer.sign(target))}`;
    const tenant = await loadTenant(ctx.deps.database, ctx.row.tenant_id);
    await ctx.job.mailer.send({
      to: [email],
      subject: `${tenant.name}: your personal data is ready`,
      text:
        `The copy of your personal data you asked ${tenant.name} for (request ${ctx.row.id}) is ready.\n\n` +
        `Download it here within 7 days:\n${url}\n\n` +
        'Open index.html in the ZIP file to read it in any browser. Downloads of this link are recorded.\n',
    });
    return { emailed: true, link_expires_at: new Date(expires * 1000).toISOString() };
  },
};

const erase: DsarStep = {
  name: 'erase',
  async run(ctx) {
    const subject = await subjectOf(ctx);
    const outcome = await executeErasure(
      {
        database: ctx.deps.database,
        store: ctx.job.store,
        secretKey: loadOrCreateSecretKey(ctx.deps.config),
        now: ctx.deps.now,
        mailer: ctx.job.mailer,
        outbound: outboundPolicy(ctx.deps.config.outboundAllow),
      },
      { tenantId: ctx.row.tenant_id, requestId: ctx.row.id, subject },
    );
    return outcome as unknown as Record<string, unknown>;
  },
};

const rectifyStep: DsarStep = {
  name: 'rectify',
  async run(ctx) {
    const subject = await subjectOf(ctx);
    const changes = ctx.row.changes ?? {};
    const outcome = await rectify(ctx.deps.database, ctx.row.tenant_id, subject, changes, {
      secretKey: loadOrCreateSecretKey(ctx.deps.config),
      requestId: ctx.row.id,
      now: ctx.deps.now(),
    });
    return outcome as unknown as Record<string, unknown>;
  },
};

/** Restriction and opt-out: consent withdrawn on every customer record of the subject. */
function withdrawConsent(purposes: readonly Purpose[]): DsarStep {
  return {
    name: 'consent',
    async run(ctx) {
      const subject = await subjectOf(ctx);
      const now = ctx.deps.now();
      const rows = subject.customerIds.flatMap((customer) =>
        purposes.map((purpose) => ({
          id: randomUUID(),
          tenant_id: ctx.row.tenant_id,
          customer_id: customer,
          purpose,
          granted: false,
          source: `dsar:${ctx.row.type}`,
          ip_address: null,
          recorded_at: now,
        })),
      );
      if (rows.length) await ctx.deps.database.db.insertInto('consent_records').values(rows).execute();
      return { customers: subject.customerIds.length, withdrawn: [...purposes], records: rows.length };
    },
  };
}

function counts(done: Readonly<Record<string, unknown>>): ReceiptBody['stores'] {
  const erased = done.erase as ErasureOutcome | undefined;
  if (erased) return erased.stores;
  const rectified = done.rectify as { tables?: { table: string; rows: number }[] } | undefined;
  if (rectified?.tables)
    return rectified.tables.map((t) => ({
      store: 'database',
      dataset: t.table,
      deleted: 0,
      anonymized: 0,
      scrubbed: 0,
      retained: 0,
      rectified: t.rows,
      retain_reason: null,
    }));
  return [];
}

const receipt: DsarStep = {
  name: 'receipt',
  async run(ctx) {
    const row = await loadDsar(ctx.deps.database, ctx.row.tenant_id, ctx.row.id);
    const erased = ctx.done.erase as ErasureOutcome | undefined;
    const body = {
      request_id: row.id,
      tenant_id: row.tenant_id,
      type: row.type,
      regulation: row.regulation,
      subject_key: row.subject_key,
      received_at: row.received_at.toISOString(),
      verified_at: row.verified_at?.toISOString() ?? null,
      completed_at: ctx.deps.now().toISOString(),
      stores: counts(ctx.done),
      files: erased?.files ?? { deleted: [], out_of_reach: [] },
      processors_notified: erased?.processors_notified ?? [],
      // Holds bear on what an erasure keeps; other requests delete nothing.
      holds: erased?.holds ?? [],
      backup_expiry: erased?.backup_expiry ?? null,
    } as unknown as ReceiptBody;
    const stored = await issueReceipt(ctx.deps.database, ctx.job.secrets, body);
    return { receipt_id: stored.id, sha256: stored.sha256 };
  },
};

const receiptId = (done: Readonly<Record<string, unknown>>) =>
  ((done.receipt as { receipt_id?: string } | undefined)?.receipt_id ?? null) as string | null;

const packagePlan: DsarPlan = {
  steps: [resolve, packageStep, notifyPackage, receipt],
  outcome: () => 'package_ready',
  receiptId,
};
registerDsarPlan('access', packagePlan);
registerDsarPlan('portability', packagePlan);
registerDsarPlan('erasure', { steps: [resolve, erase, receipt], outcome: () => 'erased', receiptId });
registerDsarPlan('rectification', {
  steps: [resolve, rectifyStep, receipt],
  outcome: () => 'rectified',
  receiptId,
});
registerDsarPlan('restriction', {
  steps: [resolve, withdrawConsent(RESTRICTED_PURPOSES), receipt],
  outcome: () => 'restricted',
  receiptId,
});
registerDsarPlan('opt_out', {
  steps: [resolve, withdrawConsent(OPT_OUT_PURPOSES), receipt],
  outcome: () => 'opted_out',
  receiptId,
});

/** The access package's rows: every table dataset whose source links the subject. */
registerSubjectPackages(async (database: Database, tenantId: string, requestId: string) => {
  const row = await loadDsar(database, tenantId, requestId);
  if (!row.subject) throw new FerryError('conflict', `request ${requestId} no longer holds its identifiers`);
  const subject = await resolveSubject(database, tenantId, row.subject);
  return {
    requestId,
    alsoFormats: ['csv'],
    rows(dataset) {
      const keep = { keepEmails: subject.emails, keepPhones: subject.phones };
      if (dataset.kind === 'table') {
        const condition = subjectRowCondition(dataset.source, subject, 't');
        return condition ? { condition, ...keep } : null;
      }
      // A report whose rows name their customer (revenue attribution): the subject's rows of it.
      if (dataset.kind === 'computed' && dataset.fields.some((f) => f.name === 'customer_id')) {
        if (!subject.customerIds.length) return null;
        const ids = subject.customerIds.map((id) => `'${id.replaceAll("'", "''")}'`).join(', ');
        return { condition: `t.customer_id::text IN (${ids})`, ...keep };
      }
      return null;
    },
  };
});
