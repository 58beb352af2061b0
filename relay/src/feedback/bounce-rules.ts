/**
 * Non-standard bounces (no message/delivery-status part): rules as data, tried in order on the plain
 * text of the report (the first 64 KiB). A rule gives the status when its pattern matches; the recipient
 * is the first address the text names near it (or the token's, checked by the caller). Add a rule here,
 * with a sample in test/unit/feedback-report.test.ts; keep the patterns anchored on SMTP wording, never
 * on a provider's prose alone, so a human reply quoting a bounce does not count.
 */
export interface BounceRule {
  name: string;
  /** Matched against the text; the first capture group, when present, is the enhanced status. */
  pattern: RegExp;
  /** The status when the pattern has no capture (or it captured nothing). */
  status: string;
}

export const BOUNCE_RULES: readonly BounceRule[] = [
  // "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown" (Postfix, Exim, most MTAs)
  { name: 'smtp-enhanced', pattern: /\b5[0-9]{2}[ -]{1,10}(5\.[0-9]{1,3}\.[0-9]{1,3})\b/, status: '5.0.0' },
  // "The email account that you tried to reach does not exist" (large webmail, with or without the code)
  {
    name: 'account-does-not-exist',
    pattern: /\b(?:account|mailbox) (?:that you tried to reach )?does not exist\b/i,
    status: '5.1.1',
  },
  // qmail: "Sorry, no mailbox here by that name. (#5.1.1)"
  { name: 'qmail', pattern: /\(#(5\.[0-9]{1,3}\.[0-9]{1,3})\)/, status: '5.1.1' },
  // "user unknown" / "unknown user" / "no such user" with a 550 reply but no enhanced code
  {
    name: 'user-unknown',
    pattern: /\b55[03]\b[^\n]{0,200}\b(?:user unknown|unknown user|no such user)\b/i,
    status: '5.1.1',
  },
];

/** The first rule that matches `text`, with the status it gives. */
export function matchBounceRule(text: string): { rule: string; status: string } | undefined {
  for (const r of BOUNCE_RULES) {
    const m = r.pattern.exec(text);
    if (m) return { rule: r.name, status: m[1] ?? r.status };
  }
  return undefined;
}
