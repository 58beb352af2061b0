/**
 * Loads mailauth's SPF evaluator (RFC 7208) for the lint. mailauth is needed at run time for the SPF rule
 * (ADR 014); where it is not installed the rule is not checked (`cartero_lint_spf_skipped_total{reason=
 * "unavailable"}`) and the relay says so once at start, rather than failing.
 */
import type { SpfEvaluator } from './spf.js';

export async function loadSpfEvaluator(): Promise<{ evaluate?: SpfEvaluator; error?: string }> {
  try {
    const m = (await import('mailauth/lib/spf/index.js')) as unknown as { spf?: SpfEvaluator };
    if (typeof m.spf !== 'function') return { error: 'mailauth/lib/spf has no spf export' };
    return { evaluate: m.spf };
  } catch (e) {
    return { error: (e as Error).message };
  }
}
