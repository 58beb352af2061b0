/**
 * MTA-STS (RFC 8461), the pure part: the `_mta-sts` TXT record, the policy file, and which MX hosts a
 * policy allows. No I/O (the fetch is in fetch.ts, the cache in cache.ts).
 *
 * Written here rather than taken from mailauth's lib/mta-sts.js: its `validateMx` lets `*.example.com`
 * match any depth (`a.b.example.com`), which RFC 8461 §4.1 forbids (the wildcard stands for exactly one
 * label), and its fetch has no size limit, no CA option and a fixed port (see fetch.ts).
 */

/** The largest policy file read, in octets (RFC 8461 §3.3: senders may refuse bigger ones; 64 KiB). */
export const MAX_POLICY_BYTES = 64 * 1024;
/** The longest max_age honoured, in seconds (RFC 8461 §3.2: "maximum value of 31557600"). */
export const MAX_AGE_CAP_S = 31_557_600;
/** At most this many `mx` lines are kept from one policy. */
export const MAX_MX_PATTERNS = 256;

export type StsMode = 'enforce' | 'testing' | 'none';

export interface StsPolicy {
  mode: StsMode;
  /** Lower-case host names or `*.suffix` wildcards, without trailing dots. */
  mx: string[];
  /** Seconds, capped at MAX_AGE_CAP_S. */
  maxAgeS: number;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

/**
 * The policy id of a domain from the TXT records at `_mta-sts.<domain>` (each record a list of strings,
 * as node's resolveTxt gives them). RFC 8461 §3.1: exactly one record starting `v=STSv1`, with an `id`
 * of 1 to 32 alphanumerics; other records are ignored; none, or several, means no policy.
 */
export function parseStsTxt(records: string[][]): Parsed<{ id: string }> {
  const sts = records.map((r) => r.join('')).filter((r) => /^v=STSv1\s*(;|$)/.test(r));
  if (sts.length === 0) return { ok: false, reason: 'no v=STSv1 TXT record' };
  if (sts.length > 1) return { ok: false, reason: `${sts.length} v=STSv1 TXT records (exactly one allowed)` };
  for (const field of sts[0].split(';')) {
    const m = /^\s*id\s*=\s*([A-Za-z0-9]{1,32})\s*$/.exec(field);
    if (m) return { ok: true, value: { id: m[1] } };
  }
  return { ok: false, reason: 'the v=STSv1 TXT record has no valid id (1 to 32 letters and digits)' };
}

const HOST_PATTERN = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * A policy file (RFC 8461 §3.2): `key: value` lines separated by CRLF (LF accepted), `version: STSv1`,
 * `mode`, `max_age` and, unless the mode is `none`, at least one `mx`. Unknown keys are ignored; the
 * first `version`, `mode` and `max_age` count. A max_age above MAX_AGE_CAP_S is capped.
 */
export function parseStsPolicy(text: string): Parsed<StsPolicy> {
  if (text.length > MAX_POLICY_BYTES) return { ok: false, reason: `larger than ${MAX_POLICY_BYTES} octets` };
  const fields = new Map<string, string>();
  const mx: string[] = [];
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const key = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (key === 'mx') {
      const host = value.toLowerCase().replace(/\.$/, '');
      if (!HOST_PATTERN.test(host))
        return { ok: false, reason: `mx: not a host name: ${value.slice(0, 100)}` };
      if (!mx.includes(host) && mx.length < MAX_MX_PATTERNS) mx.push(host);
    } else if (!fields.has(key)) fields.set(key, value);
  }
  if (fields.get('version') !== 'STSv1') return { ok: false, reason: 'version is not STSv1' };
  const mode = fields.get('mode');
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none')
    return { ok: false, reason: `mode must be enforce, testing or none, not ${JSON.stringify(mode ?? '')}` };
  const age = fields.get('max_age') ?? '';
  if (!/^[0-9]{1,10}$/.test(age)) return { ok: false, reason: 'max_age is not a number of seconds' };
  if (mode !== 'none' && mx.length === 0) return { ok: false, reason: `mode ${mode} without an mx line` };
  return { ok: true, value: { mode, mx, maxAgeS: Math.min(Number(age), MAX_AGE_CAP_S) } };
}

/**
 * Whether MX host `host` matches a policy's `mx` pattern (RFC 8461 §4.1): equal (case-insensitive, a
 * trailing dot ignored), or for `*.example.com` one label followed by `.example.com` (not deeper, and not
 * `example.com` itself).
 */
export function matchMx(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase().replace(/\.$/, '');
  const h = host.toLowerCase().replace(/\.$/, '');
  if (!p.startsWith('*.')) return p === h;
  const suffix = p.slice(1); // ".example.com"
  if (!h.endsWith(suffix)) return false;
  const label = h.slice(0, h.length - suffix.length);
  return label.length > 0 && !label.includes('.');
}

/** Whether a policy allows MX host `host` (a `none` policy allows every host). */
export function mxAllowed(policy: Pick<StsPolicy, 'mode' | 'mx'>, host: string): boolean {
  return policy.mode === 'none' || policy.mx.some((p) => matchMx(p, host));
}
