/**
 * The bulk-sender lint's decision (ADR 014), pure: which rules a message breaks, from what its header
 * section says, which domains the relay signs it for, and what SPF said of its envelope domain. The
 * rules' names are stable (metric labels, the admin API, the SmtpRelay status, the 550's text).
 */
import type { LintHeaders } from './headers.js';

import { LINT_RULES, type LintRule } from '../contract/lint-rules.js';

/** Every rule, in the order they are reported (the names are the contract's). */
export { LINT_RULES, type LintRule };

export type LintPolicy = 'report' | 'enforce';

/** An SPF result as RFC 7208 names them. */
export type SpfResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'permerror' | 'temperror';

/** What the SPF check made of a message's envelope domain and the addresses its mail may leave from. */
export type SpfOutcome =
  | { checked: true; domain: string; results: { ip: string; result: SpfResult }[] }
  /** Not checked: no pool (the egress address is not known), the null sender, a busy checker... */
  | { checked: false; reason: SpfSkip };
export type SpfSkip = 'no-pool' | 'no-address' | 'null-sender' | 'unavailable' | 'busy';

/**
 * SPF results that break the rule: any answer DNS gave that does not authorise the address. temperror
 * (a lookup that failed or took too long) is not an answer: it never breaks the rule, so it never
 * refuses mail under `enforce` (ADR 014).
 */
export const SPF_FAILING: ReadonlySet<SpfResult> = new Set([
  'fail',
  'softfail',
  'neutral',
  'none',
  'permerror',
]);

export interface LintViolation {
  rule: LintRule;
  /** Why, for the 550's text and the log (no message content beyond domains and addresses). */
  detail: string;
}

export interface LintInput {
  /** The tenant is a bulk sender: the one-click unsubscribe rule applies. */
  bulk: boolean;
  headers: LintHeaders;
  /** The domains the relay signs this message for (dkim/signer.ts's choice: the From domain or a parent). */
  signingDomains: string[];
  /** The SPF outcome; undefined while not known (it comes later than the header rules). */
  spf?: SpfOutcome;
}

/** `d` aligns with `from` under DMARC's relaxed mode: equal, or a parent of it that is not a bare TLD. */
export function aligned(d: string, from: string): boolean {
  return d === from || (d.includes('.') && from.endsWith(`.${d}`));
}

/** The header rules (all but SPF), from the header section alone. */
export function lintHeaderRules(i: Omit<LintInput, 'spf'>): LintViolation[] {
  const h = i.headers;
  const out: LintViolation[] = [];
  if (!h.fromDomain) {
    out.push({
      rule: 'dkim-alignment',
      detail:
        h.fromProblem === 'several'
          ? 'more than one From field'
          : h.fromProblem === 'missing'
            ? 'no From field'
            : 'From names no single domain',
    });
  } else if (
    !i.signingDomains.some((d) => aligned(d, h.fromDomain!)) &&
    !h.signedDomains.some((d) => aligned(d, h.fromDomain!))
  ) {
    out.push({ rule: 'dkim-alignment', detail: `no DKIM key signs for the From domain ${h.fromDomain}` });
  }
  if (i.bulk) {
    const https = h.unsubscribeUris.some((u) => /^https:\/\/[^/?#\s]+/i.test(u));
    if (!h.unsubscribeUris.length) out.push({ rule: 'one-click-unsubscribe', detail: 'no List-Unsubscribe' });
    else if (!https) out.push({ rule: 'one-click-unsubscribe', detail: 'List-Unsubscribe has no https URI' });
    else if (!h.oneClickPost)
      out.push({
        rule: 'one-click-unsubscribe',
        detail: 'no List-Unsubscribe-Post: List-Unsubscribe=One-Click',
      });
  }
  if (h.messageIdProblem)
    out.push({ rule: 'message-id', detail: problemText('Message-ID', h.messageIdProblem) });
  if (h.dateProblem) out.push({ rule: 'date', detail: problemText('Date', h.dateProblem) });
  return out;
}

/** The SPF rule: broken when DNS gave an answer that does not authorise one of the addresses. */
export function lintSpf(spf: SpfOutcome | undefined): LintViolation[] {
  if (!spf?.checked) return [];
  const bad = spf.results.filter((r) => SPF_FAILING.has(r.result));
  if (!bad.length) return [];
  return [
    {
      rule: 'spf',
      detail: `SPF of ${spf.domain} does not authorise ${bad.map((r) => `${r.ip} (${r.result})`).join(', ')}`,
    },
  ];
}

/** Every rule the message breaks, in LINT_RULES order. */
export function lintMessage(i: LintInput): LintViolation[] {
  const all = [...lintHeaderRules(i), ...lintSpf(i.spf)];
  return all.sort((a, b) => LINT_RULES.indexOf(a.rule) - LINT_RULES.indexOf(b.rule));
}

function problemText(name: string, p: 'missing' | 'several' | 'malformed'): string {
  return p === 'missing'
    ? `no ${name} field`
    : p === 'several'
      ? `more than one ${name} field`
      : `${name} is malformed`;
}

/**
 * The enhanced status code (RFC 3463, RFC 7372) of a refusal for these violations: 5.7.26 (multiple
 * authentication checks failed) when both DKIM alignment and SPF fail, 5.7.22 (no valid author-matched
 * DKIM signature) or 5.7.23 (SPF validation failed) for one of them, else 5.7.1 (delivery not authorized:
 * the sender's own policy).
 */
export function lintEnhancedCode(v: LintViolation[]): string {
  const dkim = v.some((x) => x.rule === 'dkim-alignment');
  const spf = v.some((x) => x.rule === 'spf');
  if (dkim && spf) return '5.7.26';
  if (dkim) return '5.7.22';
  if (spf) return '5.7.23';
  return '5.7.1';
}

/** The text of the 550 under `enforce`: the rules by name, then why (bounded: a reply line is short). */
export function lintRefusalText(v: LintViolation[]): string {
  const text = `Refused by the bulk-sender lint [${v.map((x) => x.rule).join(', ')}]: ${v.map((x) => x.detail).join('; ')}`;
  return text.length > 400 ? `${text.slice(0, 397)}...` : text;
}
