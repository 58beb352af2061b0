/**
 * Inbound policy as pure functions: who may relay, and which addresses are acceptable at all.
 * Anti-open-relay by construction: without AUTH and outside the trusted networks nothing relays, ever.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import ipaddr from 'ipaddr.js';

export type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];

export function parseIp(ip: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  try {
    const a = ipaddr.parse(ip.replace(/^\[|\]$/g, ''));
    return a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()
      ? (a as ipaddr.IPv6).toIPv4Address()
      : a;
  } catch {
    return undefined;
  }
}

export function inNetworks(ip: string, nets: Cidr[]): boolean {
  const a = parseIp(ip);
  if (!a) return false;
  return nets.some(([net, bits]) => net.kind() === a.kind() && a.match(net as never, bits));
}

export interface RelayDecisionInput {
  authenticatedUser?: string;
  clientIp: string;
  trustedNetworks: Cidr[];
}

/** May this client relay mail at all? (Outbound relay: every recipient is remote.) */
export function mayRelay(i: RelayDecisionInput): boolean {
  if (i.authenticatedUser) return true;
  return inNetworks(i.clientIp, i.trustedNetworks);
}

// dot-atom local part (RFC 5322 §3.2.3) without the routing characters % and !, plus UTF-8 (RFC 6531)
const ATOM = "[A-Za-z0-9#$&'*+/=?^_`{|}~\\-\\u0080-\\uFFFF]+";
const LOCAL_RE = new RegExp(`^${ATOM}(?:\\.${ATOM})*$`);
const LABEL = '[A-Za-z0-9\\u0080-\\uFFFF](?:[A-Za-z0-9\\-\\u0080-\\uFFFF]{0,61}[A-Za-z0-9\\u0080-\\uFFFF])?';
const DOMAIN_RE = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);

/**
 * Returns why an address is refused, or undefined when it is a plain `local@domain`. Refused for everyone:
 * source routes, percent hack and bang paths (routing through us), quoted local parts, several `@`,
 * unqualified names and address literals. `allowNull` accepts `<>` (MAIL FROM only).
 */
export function addressProblem(
  addr: string,
  opts: { allowNull?: boolean; allowSingleLabel?: boolean } = {},
): string | undefined {
  if (addr === '') return opts.allowNull ? undefined : 'empty address';
  if (addr.length > 254) return 'address too long';
  if (addr.startsWith('@') || /^@[^:]*:/.test(addr)) return 'source routes are not accepted';
  if (addr.startsWith('"')) return 'quoted local parts are not accepted';
  const at = addr.lastIndexOf('@');
  if (at < 0) return 'unqualified address (no domain)';
  if (addr.indexOf('@') !== at) return 'more than one @';
  const local = addr.slice(0, at);
  const domain = addr.slice(at + 1);
  if (local.includes('%') || local.includes('!')) return 'routing characters (% or !) are not accepted';
  if (local.length > 64 || !LOCAL_RE.test(local)) return 'invalid local part';
  if (domain.startsWith('[')) return 'address literals are not accepted';
  if (!DOMAIN_RE.test(domain)) return 'invalid domain';
  if (!opts.allowSingleLabel && !domain.includes('.')) return 'domain is not fully qualified';
  return undefined;
}

/** Counts `Received:` header fields in the header section of a raw message. */
export function countReceived(raw: Buffer): number {
  let end = raw.indexOf('\r\n\r\n');
  if (end < 0) end = raw.indexOf('\n\n');
  const head = (end < 0 ? raw : raw.subarray(0, end)).toString('latin1');
  const m = head.match(/(?:^|\n)received:/gi);
  return m ? m.length : 0;
}

/** Constant-time comparison of secrets of any length (compares SHA-256 digests). */
export function secretEquals(a: Buffer | string, b: Buffer | string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
