import { parsePhoneNumberFromString } from 'libphonenumber-js';
import { invalid } from '../domain/ferry-error.ts';
import type { SubjectIdentifiers } from './tables.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** The identifiers of a request, normalized: email trimmed and lower-cased, phone E.164, ids as uuids. */
export function normalizeIdentifiers(input: {
  email?: string | undefined;
  phone?: string | undefined;
  customer_id?: string | undefined;
  team_member_id?: string | undefined;
}): SubjectIdentifiers {
  const out: { email?: string; phone?: string; customer_id?: string; team_member_id?: string } = {};
  if (input.email !== undefined) {
    const email = input.email.trim().toLowerCase();
    if (!EMAIL.test(email) || email.length > 254) throw invalid('subject.email', 'is not an email address');
    out.email = email;
  }
  if (input.phone !== undefined) {
    const phone = parsePhoneNumberFromString(input.phone.trim());
    if (!phone?.isValid()) throw invalid('subject.phone', 'is not a phone number in international form (+…)');
    out.phone = phone.number;
  }
  for (const key of ['customer_id', 'team_member_id'] as const) {
    const value = input[key];
    if (value === undefined) continue;
    if (!UUID.test(value)) throw invalid(`subject.${key}`, 'is not a uuid');
    out[key] = value.toLowerCase();
  }
  if (Object.keys(out).length === 0)
    throw invalid('subject', 'names no one: give an email, phone, customer_id or team_member_id');
  return out;
}
