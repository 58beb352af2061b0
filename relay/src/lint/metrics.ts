/** The bulk-sender lint's metrics (ADR 014, docs/metrics.md), in the relay's registry. Labels: tenant, rule, result. */
import { Counter, Gauge, type Registry } from 'prom-client';

export class LintMetrics {
  readonly violations: Counter<'tenant' | 'rule'>;
  readonly refused: Counter<'tenant'>;
  readonly spfChecks: Counter<'result'>;
  readonly spfSkipped: Counter<'reason'>;
  /** Set by the relay once its SPF checker exists. */
  cacheEntries: () => number = () => 0;

  constructor(r: Registry) {
    this.violations = new Counter({
      name: 'cartero_lint_violations_total',
      help: 'Messages that broke a bulk-sender lint rule (accepted under report, refused under enforce).',
      labelNames: ['tenant', 'rule'],
      registers: [r],
    });
    this.refused = new Counter({
      name: 'cartero_lint_refused_total',
      help: 'Messages refused at DATA (550) by the bulk-sender lint of a tenant with lint.policy enforce.',
      labelNames: ['tenant'],
      registers: [r],
    });
    this.spfChecks = new Counter({
      name: 'cartero_lint_spf_checks_total',
      help: 'SPF evaluations of the lint (cache hits not counted); timeout: the message stopped waiting.',
      labelNames: ['result'],
      registers: [r],
    });
    this.spfSkipped = new Counter({
      name: 'cartero_lint_spf_skipped_total',
      help: 'Messages whose SPF was not checked, by reason (no-pool, no-address, null-sender, unavailable, busy).',
      labelNames: ['reason'],
      registers: [r],
    });
    const entries = () => this.cacheEntries();
    new Gauge({
      name: 'cartero_lint_spf_cache_entries',
      help: 'SPF results cached by the lint (at most 10000).',
      registers: [r],
      collect() {
        this.set(entries());
      },
    });
  }
}
