import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { type ReceiptJwks, receiptJwks, rotateReceiptKey } from '../privacy/receipt-keys.ts';
import { type ReceiptDocument, verifyReceipt, verifyReceiptLink } from '../privacy/receipts.ts';
import { withCommand, withDatabase } from './context.ts';
import { printTable } from './tenants.ts';

/** How long `--keys URL` waits for the key set. */
const FETCH_TIMEOUT_MS = 10_000;

/** A failure the command reports as its one line (exit 1). */
class ReceiptCheckError extends Error {}

async function readJson(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ReceiptCheckError(
      `cannot read ${what} ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
    );
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ReceiptCheckError(`${what} ${file} is not JSON: ${(err as Error).message}`);
  }
}

/** The key set from `--keys` (a URL or a file), or this installation's own keys. */
async function loadKeys(keys: string | undefined): Promise<unknown> {
  if (keys === undefined) return withDatabase((database) => receiptJwks(database));
  if (!/^https?:\/\//i.test(keys)) return readJson(keys, 'key set');
  let response: Response;
  try {
    response = await fetch(keys, {
      headers: { accept: 'application/jwk-set+json, application/json' },
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
    throw new ReceiptCheckError(`cannot fetch the key set from ${keys}: ${cause}`);
  }
  if (!response.ok)
    throw new ReceiptCheckError(`cannot fetch the key set from ${keys}: HTTP ${response.status}`);
  try {
    return (await response.json()) as unknown;
  } catch {
    throw new ReceiptCheckError(`the key set at ${keys} is not JSON`);
  }
}

/** The verified receipt, or the one line that says why it is not valid. */
function check(document: unknown, jwks: unknown, file: string): ReceiptDocument {
  const verdict = verifyReceipt(document, jwks);
  if (!verdict.valid) throw new ReceiptCheckError(`invalid receipt ${file}: ${verdict.reason}`);
  return document as ReceiptDocument;
}

export function registerReceipts(program: Command): void {
  const receipts = program
    .command('receipts')
    .description('check signed receipts of data subject requests, rotate their signing key');

  receipts
    .command('verify')
    .description(
      'check a receipt: its Ed25519 signature over the RFC 8785 form, the key, and (with --previous) its chain link; exits 1 when it is not valid',
    )
    .argument('<file>', 'the receipt (JSON: {"receipt": …, "signature": …})')
    .option(
      '--keys <url-or-file>',
      'the key set (JWKS): a URL such as https://ferry.example.com/.well-known/ferry-receipt-keys.json, or a file (default: this installation’s keys)',
    )
    .option('--previous <file>', 'the receipt before it in the chain: checks that the receipt follows it')
    .action(async (file: string, options: { keys?: string; previous?: string }) => {
      const document = await readJson(file, 'receipt');
      const previous = options.previous ? await readJson(options.previous, 'receipt') : undefined;
      const jwks = await loadKeys(options.keys);
      const receipt = check(document, jwks, file);
      let follows = '';
      if (options.previous) {
        const before = check(previous, jwks, options.previous);
        const link = verifyReceiptLink(before, receipt);
        if (!link.valid) throw new ReceiptCheckError(`invalid chain: ${link.reason}`);
        follows = `, follows receipt ${before.receipt.receipt_id} (sequence ${before.receipt.sequence})`;
      }
      process.stdout.write(
        `valid: receipt ${receipt.receipt.receipt_id} signed by ${receipt.signature.kid}${follows}\n`,
      );
    });

  const keys = receipts.command('keys').description('the keys that sign receipts');

  keys
    .command('list')
    .description(
      'list the receipt signing keys (public halves: the JWKS served at /.well-known/ferry-receipt-keys.json)',
    )
    .option('--json', 'print the JWKS')
    .action(async (options: { json?: boolean }) => {
      const jwks: ReceiptJwks = await withDatabase((database) => receiptJwks(database));
      if (options.json) {
        process.stdout.write(`${JSON.stringify(jwks, null, 2)}\n`);
        return;
      }
      if (jwks.keys.length === 0) {
        process.stdout.write('no receipt signing key yet: one is created with the first receipt\n');
        return;
      }
      printTable(
        ['KID', 'STATUS', 'VALID FROM', 'VALID UNTIL'],
        jwks.keys.map((k) => [k.kid, k.status, k.valid_from, k.valid_until ?? '']),
      );
    });

  keys
    .command('rotate')
    .description(
      'retire the active receipt signing key and create a new one; receipts signed before still verify',
    )
    .option('--force', 'retire the active key even when it was sealed under a key that is lost')
    .action(async (options: { force?: boolean }) => {
      await withCommand(async ({ database, keys }) => {
        const rotated = await rotateReceiptKey(database, (await keys()).secrets, {
          force: options.force === true,
        });
        process.stdout.write(
          rotated.retired
            ? `receipt signing key ${rotated.kid} is active; ${rotated.retired} is retired and still verifies the receipts it signed\n`
            : `receipt signing key ${rotated.kid} created and active\n`,
        );
      });
    });
}
