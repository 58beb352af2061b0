/** The bulk-sender lint's rule names (ADR 014), in the order they are reported: stable, part of the contract. */
export const LINT_RULES = ['dkim-alignment', 'spf', 'one-click-unsubscribe', 'message-id', 'date'] as const;
export type LintRule = (typeof LINT_RULES)[number];
