/**
 * GET /lint: per tenant, the bulk-sender lint rules broken in the last hour, with a count and the latest
 * sample (LintSummaryResponse in the contract). The operator merges the pods' answers into the SmtpRelay
 * status (`status.lint`).
 */
import type { AdminServer } from '../admin.js';
import type { LintSummaryResponse } from '../contract/admin-api.js';
import type { LintSummary } from './summary.js';

export function registerLintOps(a: AdminServer, summary: () => LintSummary): void {
  a.route('GET', '/lint', () => [200, summary().view() satisfies LintSummaryResponse]);
}
