/**
 * Decide: `status.lint` of an SmtpRelay, the bulk-sender lint rules each tenant broke in the last hour
 * (ADR 014), merged from what every relay pod's GET /lint says: counts added up, the sample of the pod
 * that saw the latest violation. Pure; tenants by name, rules in the contract's order, so the same
 * figures give the same status (the controller writes status only when it changed).
 */
import type { SmtpRelayStatus } from '../api/types.js';
import { LINT_RULES } from '../../../relay/src/contract/index.js';
import type { PodFigures } from './figures.js';

export type LintStatus = NonNullable<SmtpRelayStatus['lint']>;

const order = (rule: string) => {
  const i = (LINT_RULES as readonly string[]).indexOf(rule);
  return i < 0 ? LINT_RULES.length : i;
};

export function lintStatus(figures: PodFigures[]): LintStatus {
  const byTenant = new Map<string, Map<string, LintStatus[number]['rules'][number]>>();
  for (const f of [...figures].sort((a, b) => a.name.localeCompare(b.name))) {
    for (const [tenant, rules] of Object.entries(f.lint ?? {})) {
      let merged = byTenant.get(tenant);
      if (!merged) byTenant.set(tenant, (merged = new Map()));
      for (const r of rules) {
        if (!(r.count > 0)) continue;
        const cur = merged.get(r.rule);
        const latest = !cur || (r.lastSeen ?? '') > (cur.lastSeen ?? '');
        merged.set(r.rule, {
          rule: r.rule,
          count: (cur?.count ?? 0) + r.count,
          ...(latest
            ? {
                lastSeen: r.lastSeen,
                ...(r.sample.messageId ? { sampleMessageId: r.sample.messageId } : {}),
                sampleQueueId: r.sample.queueId,
                pod: f.name,
              }
            : {
                lastSeen: cur.lastSeen,
                ...(cur.sampleMessageId ? { sampleMessageId: cur.sampleMessageId } : {}),
                sampleQueueId: cur.sampleQueueId,
                pod: cur.pod,
              }),
        });
      }
    }
  }
  return [...byTenant.keys()]
    .sort()
    .map((tenant) => ({
      tenant,
      rules: [...byTenant.get(tenant)!.values()].sort(
        (a, b) => order(a.rule) - order(b.rule) || a.rule.localeCompare(b.rule),
      ),
    }))
    .filter((t) => t.rules.length > 0);
}
