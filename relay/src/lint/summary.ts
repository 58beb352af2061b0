/**
 * The rules each tenant broke in the last hour, with a count and the latest sample (its Message-ID and
 * queue id), for the admin API (GET /lint) and, merged across the fleet, the SmtpRelay status. Bounded:
 * one entry per (tenant, rule), tenants at most MAX_TENANTS (the config's), rules fixed; counts live in
 * BUCKETS buckets of the window, so the figure of an idle tenant changes at most once a bucket and is gone
 * one window after its last violation (the operator writes status only when it changed).
 */
import type { LintRuleSummary, LintSummaryResponse } from '../contract/admin-api.js';
import { LINT_RULES, type LintRule } from './rules.js';

export const WINDOW_MS = 3_600_000;
export const BUCKETS = 6;
/** Tenants tracked at most (a config's tenants are far fewer; a reload drops the ones removed). */
export const MAX_TENANTS = 1000;

interface Entry {
  /** Count per bucket, and which bucket (epoch bucket number) each slot holds. */
  counts: number[];
  slots: number[];
  lastSeen: number;
  sample: { queueId: string; messageId?: string };
}

export class LintSummary {
  private readonly entries = new Map<string, Map<LintRule, Entry>>();
  private readonly bucketMs = WINDOW_MS / BUCKETS;

  constructor(private readonly now: () => number = Date.now) {}

  /** Counts one violation of `rule` by a message of `tenant`. */
  record(tenant: string, rule: LintRule, sample: { queueId: string; messageId?: string }): void {
    let rules = this.entries.get(tenant);
    if (!rules) {
      if (this.entries.size >= MAX_TENANTS) return;
      rules = new Map();
      this.entries.set(tenant, rules);
    }
    const t = this.now();
    const b = Math.floor(t / this.bucketMs);
    let e = rules.get(rule);
    if (!e) {
      e = {
        counts: new Array<number>(BUCKETS).fill(0),
        slots: new Array<number>(BUCKETS).fill(-1),
        lastSeen: t,
        sample,
      };
      rules.set(rule, e);
    }
    const i = b % BUCKETS;
    if (e.slots[i] !== b) {
      e.slots[i] = b;
      e.counts[i] = 0;
    }
    e.counts[i]++;
    e.lastSeen = t;
    e.sample = sample;
  }

  /** Forgets tenants not in `keep` (a reload removed them). */
  retain(keep: (tenant: string) => boolean): void {
    for (const t of this.entries.keys()) if (!keep(t)) this.entries.delete(t);
  }

  /** The rules broken in the window, per tenant (tenants and rules in a stable order; none: absent). */
  view(): LintSummaryResponse {
    const b = Math.floor(this.now() / this.bucketMs);
    const tenants: Record<string, LintRuleSummary[]> = {};
    for (const tenant of [...this.entries.keys()].sort()) {
      const rules = this.entries.get(tenant)!;
      const out: LintRuleSummary[] = [];
      for (const rule of LINT_RULES) {
        const e = rules.get(rule);
        if (!e) continue;
        let count = 0;
        for (let i = 0; i < BUCKETS; i++) if (e.slots[i] > b - BUCKETS) count += e.counts[i];
        if (count === 0) {
          rules.delete(rule);
          continue;
        }
        out.push({ rule, count, lastSeen: new Date(e.lastSeen).toISOString(), sample: { ...e.sample } });
      }
      if (out.length) tenants[tenant] = out;
      else this.entries.delete(tenant);
    }
    return { windowSeconds: WINDOW_MS / 1000, tenants };
  }
}
