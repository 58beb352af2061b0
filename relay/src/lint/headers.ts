/**
 * What the bulk-sender lint reads from a message's header section (ADR 014): the From domain, Message-ID,
 * Date, the one-click unsubscribe fields (RFC 8058) and the d= of DKIM signatures already present. Pure:
 * the fields come from the header section the relay already holds at DATA (dkim/sign.ts parses it).
 */
import { fromDomain, type HeaderField } from '../dkim/sign.js';

/** How a field that must occur once does not: absent, more than once, or not in its syntax. */
export type FieldProblem = 'missing' | 'several' | 'malformed';

export interface LintHeaders {
  /** The one From domain (lower case); undefined when From is missing, repeated or names several domains. */
  fromDomain?: string;
  /** Why there is no From domain. */
  fromProblem?: 'missing' | 'several' | 'no-single-domain';
  /** The Message-ID's value (trimmed, at most MAX_SAMPLE characters) when there is exactly one. */
  messageId?: string;
  messageIdProblem?: FieldProblem;
  dateProblem?: FieldProblem;
  /** URIs of every List-Unsubscribe field, in order (at most MAX_URIS). */
  unsubscribeUris: string[];
  /** A List-Unsubscribe-Post field reads exactly `List-Unsubscribe=One-Click`. */
  oneClickPost: boolean;
  /** d= of the DKIM-Signature fields already in the message (lower case, at most MAX_URIS). */
  signedDomains: string[];
}

/** Longest Message-ID kept as a sample (the admin API and the SmtpRelay status show it). */
export const MAX_SAMPLE = 200;
/** At most this many URIs or signatures are read from a message (the header limits bound the rest). */
export const MAX_URIS = 16;

/** A field's value: after its colon, unfolded (RFC 5322 2.2.3), trimmed. */
export function fieldValue(f: HeaderField): string {
  return f.raw
    .slice(f.raw.indexOf(':') + 1)
    .replace(/\r?\n(?=[ \t])/g, '')
    .trim();
}

/** msg-id (RFC 5322 3.6.4), without the obsolete forms: `<left@right>`, no white space. */
const MSG_ID = /^<[^<>\s@]+@[^<>\s@]+>$/;

/** The URIs of a List-Unsubscribe value: each in angle brackets, separated by commas (RFC 2369). */
export function unsubscribeUris(value: string): string[] {
  const out: string[] = [];
  for (const m of value.matchAll(/<([^<>]*)>/g)) {
    if (out.length >= MAX_URIS) break;
    // RFC 2369: white space inside the brackets is to be ignored (long URIs may be folded)
    out.push(m[1].replace(/\s+/g, ''));
  }
  return out;
}

/** The d= tag of a DKIM-Signature value, lower case without a trailing dot. */
export function signatureDomain(value: string): string | undefined {
  const m = /(?:^|;)\s*d\s*=\s*([^;\s]+)/i.exec(value);
  return m ? m[1].toLowerCase().replace(/\.$/, '') : undefined;
}

function once(fields: HeaderField[], name: string): { field?: HeaderField; problem?: 'missing' | 'several' } {
  const all = fields.filter((f) => f.name === name);
  if (all.length === 0) return { problem: 'missing' };
  if (all.length > 1) return { problem: 'several' };
  return { field: all[0] };
}

/** Reads what the lint needs from the fields of a header section (names in lower case, as parsed). */
export function lintHeaders(fields: HeaderField[]): LintHeaders {
  const out: LintHeaders = { unsubscribeUris: [], oneClickPost: false, signedDomains: [] };
  const from = once(fields, 'from');
  if (from.problem) out.fromProblem = from.problem;
  else {
    const d = fromDomain(fields);
    if (d) out.fromDomain = d;
    else out.fromProblem = 'no-single-domain';
  }
  const mid = once(fields, 'message-id');
  if (mid.problem) out.messageIdProblem = mid.problem;
  else {
    const v = fieldValue(mid.field!);
    if (MSG_ID.test(v)) out.messageId = v.slice(0, MAX_SAMPLE);
    else out.messageIdProblem = 'malformed';
  }
  const date = once(fields, 'date');
  if (date.problem) out.dateProblem = date.problem;
  else if (Number.isNaN(Date.parse(fieldValue(date.field!).replace(/\([^()]*\)/g, ' '))))
    out.dateProblem = 'malformed';
  for (const f of fields) {
    if (f.name === 'list-unsubscribe' && out.unsubscribeUris.length < MAX_URIS)
      out.unsubscribeUris.push(
        ...unsubscribeUris(fieldValue(f)).slice(0, MAX_URIS - out.unsubscribeUris.length),
      );
    else if (f.name === 'list-unsubscribe-post' && /^List-Unsubscribe=One-Click$/.test(fieldValue(f)))
      out.oneClickPost = true;
    else if (f.name === 'dkim-signature' && out.signedDomains.length < MAX_URIS) {
      const d = signatureDomain(fieldValue(f));
      if (d) out.signedDomains.push(d);
    }
  }
  return out;
}
