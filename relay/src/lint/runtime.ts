/**
 * The bulk-sender lint at DATA (ADR 014), the I/O around the pure rules (rules.ts): a message's SPF check
 * starts when its DATA starts (it runs while the body streams in), its header rules are decided from the
 * header section the relay holds anyway, and at the end of DATA:
 * - `report`: the message is accepted; the header rules are counted at once, the SPF rule when its result
 *   comes (the client never waits for DNS);
 * - `enforce`: the relay waits for the SPF result (at most the checker's time limit) and refuses with
 *   550 naming every rule broken; a temperror is no violation, so DNS trouble never refuses mail.
 * Mail handed on by a peer relay was linted by the relay that accepted it, and is not linted again.
 */
import type { Logger } from 'pino';
import type { RelayConfig } from '../contract/config-types.js';
import { reply } from '../errors.js';
import type { LintMetrics } from './metrics.js';
import { parseHeaderFields } from '../dkim/sign.js';
import { lintHeaders, type LintHeaders } from './headers.js';
import {
  lintEnhancedCode,
  lintHeaderRules,
  lintRefusalText,
  lintSpf,
  type LintViolation,
  type SpfOutcome,
} from './rules.js';
import { addressesToCheck, SpfChecker, type SpfEvaluator } from './spf.js';
import { LintSummary } from './summary.js';

/** Longest wait for SPF at the end of DATA under enforce, whatever dns.timeout says. */
export const MAX_SPF_WAIT_MS = 5000;

export class LintRuntime {
  readonly summary: LintSummary;
  private spf?: SpfChecker;
  private evaluator?: SpfEvaluator;
  private dnsKey = '';

  constructor(
    private readonly metrics: LintMetrics,
    private readonly log: Logger,
    private readonly now: () => number,
  ) {
    this.summary = new LintSummary(now);
    metrics.cacheEntries = () => this.spf?.cacheSize ?? 0;
  }

  /**
   * Sets the SPF evaluator (mailauth's `spf`, loaded by the relay at start; undefined: SPF is not
   * checked) and the resolver settings; a change of `dns` starts a new checker (and cache).
   */
  configure(cfg: RelayConfig, evaluator: SpfEvaluator | undefined = this.evaluator): void {
    this.summary.retain((t) => cfg.tenants.has(t));
    const key = JSON.stringify([cfg.dns.servers, cfg.dns.timeoutMs]);
    if (evaluator === this.evaluator && key === this.dnsKey && this.spf) return;
    this.spf?.cancel();
    this.evaluator = evaluator;
    this.dnsKey = key;
    this.spf = evaluator
      ? new SpfChecker({
          evaluate: evaluator,
          servers: cfg.dns.servers,
          timeoutMs: Math.min(cfg.dns.timeoutMs, MAX_SPF_WAIT_MS),
          now: this.now,
          hostname: cfg.hostname,
          onEvaluated: (result) => this.metrics.spfChecks.inc({ result }),
        })
      : undefined;
  }

  /** Ends the SPF lookups in flight (shutdown, after the listeners closed). */
  stop(): void {
    this.spf?.cancel();
  }

  /** Starts linting a message of `tenant` whose MAIL FROM is `from` (its SPF check starts now). */
  begin(cfg: RelayConfig, tenant: string, from: string): MessageLint {
    const t = cfg.tenants.get(tenant);
    return new MessageLint(
      this,
      tenant,
      t?.bulk ?? false,
      t?.lint.policy ?? 'report',
      this.spfFor(cfg, tenant, from),
    );
  }

  private spfFor(cfg: RelayConfig, tenant: string, from: string): Promise<SpfOutcome> {
    const at = from.lastIndexOf('@');
    if (!from || at < 0) return Promise.resolve({ checked: false, reason: 'null-sender' });
    const poolName = cfg.tenants.get(tenant)?.ipPool;
    if (!poolName) return Promise.resolve({ checked: false, reason: 'no-pool' });
    const ips = addressesToCheck(cfg.ipPools.find((p) => p.name === poolName));
    if (!ips.length) return Promise.resolve({ checked: false, reason: 'no-address' });
    const spf = this.spf;
    if (!spf) return Promise.resolve({ checked: false, reason: 'unavailable' });
    const domain = from.slice(at + 1).toLowerCase();
    return Promise.all(ips.map((ip) => spf.check(domain, ip))).then((rs) =>
      rs.some((r) => r === undefined)
        ? { checked: false, reason: 'busy' }
        : { checked: true, domain, results: ips.map((ip, i) => ({ ip, result: rs[i]! })) },
    );
  }

  /** Counts violations of a message (metric and summary). */
  count(tenant: string, v: LintViolation[], sample: { queueId: string; messageId?: string }): void {
    for (const x of v) {
      this.metrics.violations.inc({ tenant, rule: x.rule });
      this.summary.record(tenant, x.rule, sample);
    }
  }

  skipped(reason: string): void {
    this.metrics.spfSkipped.inc({ reason });
  }

  refused(tenant: string, queueId: string, v: LintViolation[]): void {
    this.metrics.refused.inc({ tenant });
    this.log.info(
      { event: 'lint.refused', queueId, tenant, rules: v.map((x) => x.rule) },
      lintRefusalText(v),
    );
  }

  reported(tenant: string, queueId: string, v: LintViolation[]): void {
    this.log.debug(
      { event: 'lint.violation', queueId, tenant, rules: v.map((x) => x.rule) },
      lintRefusalText(v),
    );
  }
}

/** The lint of one message, from DATA to its end. */
export class MessageLint {
  private headers?: LintHeaders;
  private headerViolations: LintViolation[] = [];

  constructor(
    private readonly rt: LintRuntime,
    readonly tenant: string,
    private readonly bulk: boolean,
    readonly policy: 'report' | 'enforce',
    private readonly spf: Promise<SpfOutcome>,
  ) {}

  /** The header section (as received, before our Received line) and the domains the relay signs it for. */
  head(head: Buffer, signingDomains: string[]): void {
    this.headers = lintHeaders(parseHeaderFields(head));
    this.headerViolations = lintHeaderRules({ bulk: this.bulk, headers: this.headers, signingDomains });
  }

  /** The header rules broken (the SPF rule is not known yet). */
  get headerRules(): string[] {
    return this.headerViolations.map((v) => v.rule);
  }

  /**
   * At the end of DATA, before the message is committed: under `enforce`, waits for SPF and throws the
   * 550 when a rule is broken (counted here). Under `report` does nothing (see `accepted`).
   */
  async enforce(queueId: string): Promise<void> {
    if (this.policy !== 'enforce') return;
    const spf = await this.spf;
    if (!spf.checked) this.rt.skipped(spf.reason);
    const v = [...this.headerViolations, ...lintSpf(spf)];
    if (!v.length) return;
    this.rt.count(this.tenant, v, this.sample(queueId));
    this.rt.refused(this.tenant, queueId, v);
    throw reply.lint(lintEnhancedCode(v), lintRefusalText(v));
  }

  /** The message was accepted as `queueId`: counts what it broke (the SPF rule once its result comes). */
  accepted(queueId: string): void {
    const sample = this.sample(queueId);
    if (this.headerViolations.length) {
      this.rt.count(this.tenant, this.headerViolations, sample);
      this.rt.reported(this.tenant, queueId, this.headerViolations);
    }
    if (this.policy === 'enforce') return; // SPF was decided before the commit
    void this.spf.then((spf) => {
      if (!spf.checked) return this.rt.skipped(spf.reason);
      const v = lintSpf(spf);
      if (!v.length) return;
      this.rt.count(this.tenant, v, sample);
      this.rt.reported(this.tenant, queueId, v);
    });
  }

  private sample(queueId: string): { queueId: string; messageId?: string } {
    return { queueId, ...(this.headers?.messageId ? { messageId: this.headers.messageId } : {}) };
  }
}
