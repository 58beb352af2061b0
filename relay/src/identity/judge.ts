/**
 * DNS identity judges, pure: forward-confirmed reverse DNS of a sending address (FCrDNS, RFC 8601 §3
 * "iprev") and whether DNS serves a DKIM key record (RFC 6376 §3.6). The lookups happen elsewhere
 * (identity/resolver.ts); these functions only read their results, so each case is a unit test.
 */
import ipaddr from 'ipaddr.js';
import type { DkimTxtResult, FcrdnsResult } from '../contract/admin-api.js';

export type { DkimTxtResult, FcrdnsResult };

/** What a DNS lookup gave: records, or why none (c-ares codes sorted as in dns.ts). */
import type { DnsLookup } from '../dns-lookup.js';
export type { DnsLookup };

export const FCRDNS_RESULTS: readonly FcrdnsResult[] = [
  'Verified',
  'PtrMissing',
  'ForwardMismatch',
  'EhloMismatch',
  'LookupFailed',
];

/** PTR names looked at (more are ignored, as verifiers do: RFC 8601 §3 leaves it open, most stop at 10). */
export const MAX_PTR_NAMES = 10;

export interface FcrdnsInput {
  ip: string;
  ehlo: string;
  ptr: DnsLookup<string>;
  /** A and AAAA addresses of each PTR name (lower-case, no trailing dot) that was looked up. */
  forward: Map<string, DnsLookup<string>>;
}

export interface FcrdnsVerdict {
  result: FcrdnsResult;
  /** The PTR names (lower-case, no trailing dot, at most MAX_PTR_NAMES). */
  ptr: string[];
  /** PTR names whose A/AAAA records include the address. */
  confirmed: string[];
  message: string;
}

/** Lower case, no trailing dot: how names are compared. */
export const normalizeName = (n: string) => n.trim().replace(/\.$/, '').toLowerCase();

/** The canonical text of an address (IPv6 compressed, IPv4-mapped IPv6 as IPv4), or undefined. */
export function canonicalIp(ip: string): string | undefined {
  try {
    const a = ipaddr.process(ip.trim());
    return a.toString();
  } catch {
    return undefined;
  }
}

/** The PTR names to look up forward (sorted, at most MAX_PTR_NAMES). */
export function ptrNames(ptr: DnsLookup<string>): string[] {
  if (!ptr.ok) return [];
  // sorted: DNS servers rotate the order of several records, and the result must not change with it
  return [...new Set(ptr.records.map(normalizeName).filter(Boolean))].sort().slice(0, MAX_PTR_NAMES);
}

/**
 * FCrDNS of `ip` for the EHLO name `ehlo`: some PTR name of the address must resolve back to it
 * (Verified needs, in addition, that the EHLO name is one of those confirmed names).
 * - PtrMissing: no PTR record (NXDOMAIN or no data);
 * - ForwardMismatch: PTR names exist, none resolves to the address;
 * - EhloMismatch: FCrDNS holds for some name, but not for the EHLO name;
 * - LookupFailed: a lookup failed temporarily (SERVFAIL, timeout) where its answer decides the result.
 */
export function judgeFcrdns(i: FcrdnsInput): FcrdnsVerdict {
  const ip = canonicalIp(i.ip);
  const ehlo = normalizeName(i.ehlo);
  const names = ptrNames(i.ptr);
  const verdict = (result: FcrdnsResult, message: string, confirmed: string[] = []): FcrdnsVerdict => ({
    result,
    ptr: names,
    confirmed,
    message,
  });
  if (!ip) return verdict('LookupFailed', `${i.ip} is not an IP address`);
  if (!i.ptr.ok) {
    if (i.ptr.failure === 'temporary')
      return verdict('LookupFailed', `the PTR lookup of ${ip} failed (${i.ptr.code}); checked again later`);
    return verdict('PtrMissing', `${ip} has no PTR record (${i.ptr.code}): publish one naming ${ehlo}`);
  }
  if (!names.length) return verdict('PtrMissing', `${ip} has no PTR record: publish one naming ${ehlo}`);
  const confirmed: string[] = [];
  const failed: string[] = [];
  for (const name of names) {
    const f = i.forward.get(name);
    if (!f) continue;
    if (!f.ok) {
      if (f.failure === 'temporary') failed.push(name);
      continue;
    }
    if (f.records.some((a) => canonicalIp(a) === ip)) confirmed.push(name);
  }
  if (confirmed.includes(ehlo)) return verdict('Verified', `${ip} → ${ehlo} → ${ip}`, confirmed);
  if (failed.includes(ehlo) || (!confirmed.length && failed.length))
    return verdict(
      'LookupFailed',
      `the address lookup of ${failed.join(', ')} failed; checked again later`,
      confirmed,
    );
  if (confirmed.length)
    return verdict(
      'EhloMismatch',
      `${ip} → ${confirmed.join(', ')} → ${ip}, but the EHLO name is ${ehlo}: ` +
        (names.includes(ehlo)
          ? `${ehlo} does not resolve to ${ip}`
          : `make the PTR record name ${ehlo}, or set ehlo to ${confirmed[0]}`),
      confirmed,
    );
  return verdict(
    'ForwardMismatch',
    `${ip} → ${names.join(', ')}, but no such name resolves to ${ip}: add an A/AAAA record ` +
      `${names.includes(ehlo) ? ehlo : names[0]} → ${ip}`,
  );
}

/**
 * A DKIM key record (RFC 6376 §3.6.1) as tags, or undefined when the text is not a tag=value list.
 * Tag names are case-sensitive and lower-case in practice; values keep their case, whitespace around
 * them is dropped (folding whitespace is allowed there).
 */
export function parseTagList(text: string): Map<string, string> | undefined {
  const tags = new Map<string, string>();
  for (const part of text.split(';')) {
    if (!part.trim()) continue;
    const eq = part.indexOf('=');
    if (eq < 0) return undefined;
    const name = part.slice(0, eq).trim();
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name)) return undefined;
    if (!tags.has(name)) tags.set(name, part.slice(eq + 1).trim());
  }
  return tags;
}

const squeeze = (s: string) => s.replace(/\s+/g, '');

export interface DkimTxtInput {
  /** The record the key needs (e.g. `v=DKIM1; k=rsa; p=MIIB...`): its `p=` and `k=` are compared. */
  expected: string;
  /** The TXT records at `<selector>._domainkey.<domain>`, each a list of strings (joined, RFC 6376 §3.6.2.2). */
  txt: DnsLookup<string[]>;
}

export interface DkimTxtVerdict {
  result: DkimTxtResult;
  message: string;
}

/**
 * Whether DNS serves the key record: Published when a key record there carries the same public key
 * (`p=`, whitespace removed) and key type (`k=`, default rsa) and no other key record competes with it;
 * Mismatch when key records are there but none (or not only it) carries this key, or it is revoked
 * (empty `p=`); Missing when there is no such name or no key record; LookupFailed on a temporary failure.
 */
export function judgeDkimTxt(i: DkimTxtInput): DkimTxtVerdict {
  const want = parseTagList(i.expected);
  const wantP = squeeze(want?.get('p') ?? '');
  const wantK = (want?.get('k') ?? 'rsa').toLowerCase();
  if (!wantP) return { result: 'Mismatch', message: 'the expected record has no public key (p=)' };
  if (!i.txt.ok) {
    if (i.txt.failure === 'temporary')
      return {
        result: 'LookupFailed',
        message: `the TXT lookup failed (${i.txt.code}); checked again later`,
      };
    return { result: 'Missing', message: `no TXT record (${i.txt.code}): publish the record` };
  }
  const keys = i.txt.records
    .map((strings) => parseTagList(strings.join('')))
    .filter((t): t is Map<string, string> => !!t && (t.has('p') || t.get('v') === 'DKIM1'));
  if (!keys.length) return { result: 'Missing', message: 'TXT records found, but no DKIM key record' };
  const matches = keys.filter(
    (t) => squeeze(t.get('p') ?? '') === wantP && (t.get('k') ?? 'rsa').toLowerCase() === wantK,
  );
  if (matches.length && matches.length === keys.length) return { result: 'Published', message: 'served' };
  if (matches.length)
    return {
      result: 'Mismatch',
      message: `${keys.length} key records at the name, ${keys.length - matches.length} with another key: remove them (verifiers may pick any)`,
    };
  if (keys.some((t) => t.has('p') && squeeze(t.get('p')!) === ''))
    return { result: 'Mismatch', message: 'the record served is revoked (empty p=)' };
  return { result: 'Mismatch', message: 'the record served carries another public key or key type' };
}
