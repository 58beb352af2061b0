/**
 * Outbound TLS policy, the pure decision (docs/adr/013-outbound-tls-policy.md): from the configured
 * default, the per-destination policies and the destination's MTA-STS policy, what TLS a delivery by MX
 * needs and which MX hosts it may use.
 *
 * Levels, as Postfix's smtp_tls_security_level:
 * - `opportunistic` (Postfix `may`): STARTTLS when offered, certificate not checked, else plain text.
 * - `required` (Postfix `encrypt`): STARTTLS or no delivery; the certificate is not checked.
 * - `verify` (Postfix `verify`/`secure`): STARTTLS with a certificate that validates (system CAs plus
 *   outboundTls.caFile) for the MX host name; else no delivery.
 * A hop that cannot meet its level fails; when no hop can, the recipients are deferred (4.7.5).
 */
import { mxAllowed, type StsPolicy } from '../mta-sts/policy.js';

export type TlsLevel = 'opportunistic' | 'required' | 'verify';

const STRENGTH: Record<TlsLevel, number> = { opportunistic: 0, required: 1, verify: 2 };

/** The stronger of two levels. */
export function stronger(a: TlsLevel, b: TlsLevel): TlsLevel {
  return STRENGTH[a] >= STRENGTH[b] ? a : b;
}

export interface DomainTlsPolicy {
  /** `example.com` (that domain only) or `.example.com` (its subdomains), lower case. */
  domain: string;
  level: TlsLevel;
}

/**
 * The policy for recipient domain `domain` (lower case, no trailing dot), as Postfix's tls_policy_maps
 * with parent_domain_matches_subdomains off: an exact entry first, else the `.parent` entry of the
 * nearest parent. Undefined when none applies.
 */
export function matchDomainPolicy(
  policies: readonly DomainTlsPolicy[],
  domain: string,
): DomainTlsPolicy | undefined {
  const d = domain.toLowerCase().replace(/\.$/, '');
  const exact = policies.find((p) => p.domain === d);
  if (exact) return exact;
  for (let i = d.indexOf('.'); i >= 0; i = d.indexOf('.', i + 1)) {
    const parent = policies.find((p) => p.domain === d.slice(i));
    if (parent) return parent;
  }
  return undefined;
}

export interface TlsPolicySources {
  /** outboundTls.level: the default for delivery by MX. */
  configured: TlsLevel;
  /** The outboundTls.policies entry of the destination, if any: it replaces the default (up or down). */
  destination?: TlsLevel;
  /** The destination's MTA-STS policy, when it has a valid one. */
  sts?: Pick<StsPolicy, 'mode' | 'mx'>;
}

export interface TlsDecision {
  level: TlsLevel;
  /** Where the level came from (logs, metrics). */
  source: 'default' | 'destination' | 'mta-sts';
  /**
   * Which MX hosts may be used: under an `enforce` MTA-STS policy, those it lists; otherwise all.
   */
  mxFilter: (host: string) => boolean;
  /** The MTA-STS mode in force (`none` when there is no policy). */
  stsMode: StsPolicy['mode'];
}

/**
 * What TLS a delivery by MX needs. A destination policy replaces the default; an `enforce` MTA-STS policy
 * then raises the level to `verify` (never lowers it) and filters the MX hosts; `testing` and `none`
 * change nothing (the caller reports what `testing` would have refused).
 */
export function decideTls(s: TlsPolicySources): TlsDecision {
  const base = s.destination ?? s.configured;
  const source = s.destination !== undefined ? 'destination' : 'default';
  const sts = s.sts;
  if (sts?.mode === 'enforce') {
    return {
      level: stronger(base, 'verify'),
      source: STRENGTH[base] >= STRENGTH.verify ? source : 'mta-sts',
      mxFilter: (host) => mxAllowed(sts, host),
      stsMode: 'enforce',
    };
  }
  return { level: base, source, mxFilter: () => true, stsMode: sts?.mode ?? 'none' };
}
