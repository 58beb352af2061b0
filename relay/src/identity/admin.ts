/**
 * POST /dns/checks: the operator (or an admin) asks the relay to check, through its own resolvers,
 * the forward-confirmed reverse DNS of sending addresses and whether DKIM key records are served.
 *
 *   POST /dns/checks {fcrdns?: [{ip, ehlo}] (≤ 512), dkim?: [{domain, selector, record}] (≤ 256)}
 *     -> 200 DnsChecksResponse (results in request order)
 *
 * The body is at most DNS_CHECKS_MAX_BODY (413 beyond); any malformed part of it is a 400 naming it.
 */
import net from 'node:net';
import {
  DNS_CHECKS_MAX_BODY,
  DNS_CHECKS_MAX_DKIM,
  DNS_CHECKS_MAX_FCRDNS,
  type DnsChecksRequest,
  type DnsChecksResponse,
} from '../contract/admin-api.js';
import { HttpError, type AdminServer } from '../admin.js';
import { checkDkimTxt, checkFcrdns } from './check.js';
import type { IdentityResolver } from './resolver.js';

/** A host name: LDH labels (underscore allowed, as in selectors), at most 253 octets. */
const HOSTNAME =
  /^(?=.{1,253}\.?$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$/;
/** A selector: one or more labels (RFC 6376 §3.1), at most 63 octets here. */
const SELECTOR = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9_])?$/;
/** Longest DKIM record accepted (an RSA-4096 key record is about 800 characters). */
const MAX_RECORD = 4096;

const bad = (msg: string) => new HttpError(400, msg);

function onlyKeys(o: Record<string, unknown>, keys: string[], where: string): void {
  const extra = Object.keys(o).find((k) => !keys.includes(k));
  if (extra !== undefined)
    throw bad(`${where}: unknown field ${JSON.stringify(extra)} (allowed: ${keys.join(', ')})`);
}

function str(
  o: Record<string, unknown>,
  key: string,
  where: string,
  ok: (s: string) => boolean,
  what: string,
): string {
  const v = o[key];
  if (typeof v !== 'string' || !ok(v)) throw bad(`${where}.${key} must be ${what}`);
  return v;
}

function list(body: Record<string, unknown>, key: string, max: number): Record<string, unknown>[] {
  const v = body[key];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw bad(`${key} must be a list`);
  if (v.length > max) throw bad(`${key}: at most ${max} entries per request (got ${v.length})`);
  return v.map((x, i) => {
    if (x === null || typeof x !== 'object' || Array.isArray(x)) throw bad(`${key}[${i}] must be an object`);
    return x as Record<string, unknown>;
  });
}

/** The checks a POST /dns/checks body asks for; a 400 naming the first bad part. */
export function parseDnsChecks(body: Record<string, unknown>): Required<DnsChecksRequest> {
  onlyKeys(body, ['fcrdns', 'dkim'], 'body');
  const fcrdns = list(body, 'fcrdns', DNS_CHECKS_MAX_FCRDNS).map((x, i) => {
    const w = `fcrdns[${i}]`;
    onlyKeys(x, ['ip', 'ehlo'], w);
    return {
      ip: str(x, 'ip', w, (s) => net.isIP(s) !== 0, 'an IPv4 or IPv6 address'),
      ehlo: str(x, 'ehlo', w, (s) => HOSTNAME.test(s), 'a host name'),
    };
  });
  const dkim = list(body, 'dkim', DNS_CHECKS_MAX_DKIM).map((x, i) => {
    const w = `dkim[${i}]`;
    onlyKeys(x, ['domain', 'selector', 'record'], w);
    return {
      domain: str(x, 'domain', w, (s) => HOSTNAME.test(s), 'a domain name'),
      selector: str(x, 'selector', w, (s) => SELECTOR.test(s), 'a DKIM selector'),
      record: str(
        x,
        'record',
        w,
        (s) => s.length > 0 && s.length <= MAX_RECORD && /p=/.test(s),
        `the DKIM key record (v=DKIM1; k=...; p=..., at most ${MAX_RECORD} characters)`,
      ),
    };
  });
  return { fcrdns, dkim };
}

export function registerDnsChecks(admin: AdminServer, resolver: () => IdentityResolver): void {
  admin.route('POST', '/dns/checks', async (r) => {
    const req = parseDnsChecks(await r.body(DNS_CHECKS_MAX_BODY));
    const res = resolver();
    const out: DnsChecksResponse = {
      fcrdns: await Promise.all(req.fcrdns.map((c) => checkFcrdns(res, c.ip, c.ehlo))),
      dkim: await Promise.all(req.dkim.map((c) => checkDkimTxt(res, c.domain, c.selector, c.record))),
    };
    return [200, out];
  });
}
