/**
 * The live state of tenancy: rate limiters, the bounce-rate guard, the suppression list, IP pool counters
 * and destination shaping, built from the config, persisted under the spool directory, and consulted by
 * the inbound policy and the delivery engine. Policy answers are SMTP reply errors (or undefined).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { RelayConfig, TenantConfig } from './config.js';
import { SmtpReplyError } from './errors.js';
import { writeFileDurable } from './durable.js';
import { TenantDirectory } from './tenancy.js';
import {
  RateLimiter,
  RateUsageStore,
  PeriodicSaver,
  parseRateSpec,
  type RateSpec,
  type TakeResult,
  type WindowUsage,
} from './ratelimit.js';
import { RedisRateStore } from './ratelimit-store.js';
import { RespError } from './resp.js';
import { BounceGuard, type GuardConfig, type PauseRecord, type TenantState } from './guard.js';
import { SuppressionStore } from './suppression.js';
import { PoolManager, type AddressUsage } from './pools.js';
import { Shaper, type ShapingConfig } from './shaping.js';
import { isHardBounce } from './delivery/classify.js';

/** Where a complaint came from: a parsed feedback report (`complaint()`), or entered through the admin API. */
export type ComplaintSource = 'report' | 'admin';

interface PersistedState {
  v: 1;
  pools: AddressUsage[];
  pauses: PauseRecord[];
}

function shapingConfig(cfg: RelayConfig): ShapingConfig {
  return { defaults: cfg.shaping.defaults, rules: cfg.shaping.rules, backoff: cfg.shaping.backoff };
}

function specOf(t: TenantConfig): { limits: RateSpec[]; burst?: number } {
  return { limits: t.rateLimits.map(parseRateSpec), ...(t.burst ? { burst: t.burst } : {}) };
}

export class TenantRuntime {
  dir: TenantDirectory;
  readonly guard: BounceGuard;
  readonly suppressions: SuppressionStore;
  pools: PoolManager;
  readonly shaper: Shaper;
  private readonly limiters = new Map<string, RateLimiter>();
  private readonly rateStore: RateUsageStore;
  private readonly stateFile: string;
  private saver?: PeriodicSaver;
  private cfg: RelayConfig;
  /** The fleet's shared rate-limit store (fleet.rateLimitStore), and the tenant limits it is asked about. */
  private store?: RedisRateStore;
  private storeKey = '';
  private storeDown = false;
  private readonly specs = new Map<string, { limits: RateSpec[]; burst?: number }>();
  onStateChange?: (tenant: string, state: TenantState) => void;
  /** Each complaint counted against a tenant (for `cartero_complaints_total`). */
  onComplaint?: (tenant: string, source: ComplaintSource) => void;

  private constructor(
    cfg: RelayConfig,
    private readonly now: () => number,
    private readonly log: Logger,
    persisted: { rates: Record<string, WindowUsage[]>; state?: PersistedState },
  ) {
    this.cfg = cfg;
    this.dir = new TenantDirectory(cfg);
    this.rateStore = new RateUsageStore(path.join(cfg.spoolDir, 'rate-usage.json'));
    this.stateFile = path.join(cfg.spoolDir, 'tenancy-state.json');
    for (const t of cfg.tenants.values()) {
      this.limiters.set(t.name, this.newLimiter(t, persisted.rates[t.name]));
      this.specs.set(t.name, specOf(t));
    }
    this.setStore(cfg);
    this.guard = new BounceGuard((t) => this.guardConfig(t), now, persisted.state?.pauses);
    this.guard.onExpire = (tenant, st) => this.changed(tenant, st);
    this.suppressions = new SuppressionStore({ dir: path.join(cfg.spoolDir, 'suppressions'), now });
    this.pools = new PoolManager(cfg.ipPools, now, persisted.state?.pools);
    this.shaper = new Shaper(shapingConfig(cfg), now);
  }

  /** Builds the runtime and loads what survived the last run (rate windows, pauses, pool counters, suppressions). */
  static async open(cfg: RelayConfig, now: () => number, log: Logger): Promise<TenantRuntime> {
    await fsp.mkdir(cfg.spoolDir, { recursive: true });
    const rates = await new RateUsageStore(path.join(cfg.spoolDir, 'rate-usage.json')).load();
    let state: PersistedState | undefined;
    try {
      const s = JSON.parse(
        await fsp.readFile(path.join(cfg.spoolDir, 'tenancy-state.json'), 'utf8'),
      ) as PersistedState;
      if (s.v === 1) state = s;
    } catch {
      /* first start, or an unreadable file: start from zero counters */
    }
    const rt = new TenantRuntime(cfg, now, log, { rates, state });
    await rt.suppressions.open();
    rt.saver = new PeriodicSaver(
      () => rt.save(),
      1000,
      (e) =>
        log.warn({ event: 'tenancy.save.failed', err: (e as Error).message }, 'could not save tenancy state'),
    );
    rt.saver.start();
    return rt;
  }

  private newLimiter(t: TenantConfig, initial?: WindowUsage[]): RateLimiter {
    return new RateLimiter(
      {
        limits: t.rateLimits.map(parseRateSpec),
        ...(t.burst ? { burst: t.burst } : {}),
        share: this.cfg.fleet.rateLimitShare,
      },
      this.now,
      initial,
    );
  }

  private guardConfig(tenant: string): GuardConfig {
    const tc = this.cfg.tenants.get(tenant) ?? this.cfg.tenants.get('default')!;
    const b = tc.bounceRate;
    return {
      warn: b.warn,
      pause: b.pause,
      windowMs: b.windowMs,
      minVolume: b.minVolume,
      cooldownMs: b.cooldownMs,
      complaints: { ...tc.complaintRate },
    };
  }

  private changed(tenant: string, st: TenantState): void {
    this.log.warn(
      {
        event: `tenant.${st.state}`,
        tenant,
        rate: st.rate,
        attempted: st.attempted,
        hard: st.hard,
        complaintRate: st.complaintRate,
        complaints: st.complaints,
        delivered: st.delivered,
        reason: st.reason,
        by: st.by,
      },
      `tenant ${tenant} is ${st.state}`,
    );
    this.onStateChange?.(tenant, st);
  }

  async save(): Promise<void> {
    const rates: Record<string, WindowUsage[]> = {};
    for (const [t, l] of this.limiters) rates[t] = l.usage().filter((u) => u.unit === 'h' || u.unit === 'd');
    await this.rateStore.save(rates);
    await writeFileDurable(
      this.stateFile,
      JSON.stringify({
        v: 1,
        pools: this.pools.usage(),
        pauses: this.guard.pauses(),
      } satisfies PersistedState),
    );
  }

  async close(): Promise<void> {
    this.store?.close();
    this.store = undefined;
    await this.saver?.stop();
    await this.suppressions.close();
  }

  /** Hot reload: new tenants, limits, pools and shaping; counters of what still exists carry on. */
  reconfigure(cfg: RelayConfig): void {
    const pools = new PoolManager(cfg.ipPools, this.now, this.pools.usage()); // validates before anything changes
    this.shaper.reconfigure(shapingConfig(cfg));
    this.cfg = cfg;
    this.dir = new TenantDirectory(cfg);
    this.pools = pools;
    for (const t of cfg.tenants.values()) {
      const l = this.limiters.get(t.name);
      const lc = {
        limits: t.rateLimits.map(parseRateSpec),
        ...(t.burst ? { burst: t.burst } : {}),
        share: cfg.fleet.rateLimitShare,
      };
      if (l) l.reconfigure(lc);
      else this.limiters.set(t.name, this.newLimiter(t));
    }
    for (const name of [...this.limiters.keys()]) if (!cfg.tenants.has(name)) this.limiters.delete(name);
    this.specs.clear();
    for (const t of cfg.tenants.values()) this.specs.set(t.name, specOf(t));
    this.setStore(cfg);
  }

  /** Opens, replaces or closes the shared store when its configuration changed. */
  private setStore(cfg: RelayConfig): void {
    const sc = cfg.fleet.rateLimitStore;
    const key = sc ? JSON.stringify(sc) : '';
    if (key === this.storeKey) return;
    this.store?.close();
    this.store = undefined;
    this.storeKey = key;
    this.storeDown = false;
    if (!sc) return;
    this.store = new RedisRateStore(sc, (up, why) => {
      if (!up) this.storeFailed(new RespError('down', why ?? 'connection lost'));
    });
  }

  /** Logs once per outage; the caller counts every fallback. */
  private storeFailed(e: unknown): void {
    if (this.storeDown) return;
    this.storeDown = true;
    const sc = this.cfg.fleet.rateLimitStore;
    this.log.warn(
      {
        event: 'ratelimit.store.down',
        store: sc ? `${sc.host}:${sc.port}` : undefined,
        err: (e as Error).message,
        share: this.cfg.fleet.rateLimitShare,
      },
      'rate-limit store unavailable: enforcing the local share of every limit until it answers',
    );
  }

  private storeAnswered(): void {
    if (!this.storeDown) return;
    this.storeDown = false;
    this.log.info({ event: 'ratelimit.store.up' }, 'rate-limit store answers again: limits are fleet-wide');
  }

  /** Whether limits are counted in a shared store, and whether it answered last time. */
  storeState(): { type: 'redis'; up: boolean } | undefined {
    return this.store ? { type: 'redis', up: !this.storeDown && this.store.connected } : undefined;
  }

  /**
   * Takes one recipient from the tenant's limits: fleet-wide in the store when there is one and it
   * answers in time, else from this replica's share. `fallback` says why the store was not used.
   */
  async take(tenant: string): Promise<{ result?: TakeResult; fallback?: string }> {
    const store = this.store;
    const spec = this.specs.get(tenant);
    if (store && spec?.limits.length) {
      try {
        const result = await store.take(tenant, spec.limits, spec.burst);
        this.storeAnswered();
        return { result };
      } catch (e) {
        this.storeFailed(e);
        return {
          result: this.limiters.get(tenant)?.tryTake(1),
          fallback: e instanceof RespError ? e.kind : 'error',
        };
      }
    }
    return { result: this.limiters.get(tenant)?.tryTake(1) };
  }

  /**
   * The state of the tenant's limits for the admin API: fleet-wide from the store (limit = the configured
   * figure), or this replica's (limit = its share) without a store or while it does not answer.
   */
  async rateUsage(tenant: string): Promise<{ scope: 'fleet' | 'replica'; usage: WindowUsage[] }> {
    const spec = this.specs.get(tenant);
    if (this.store && spec?.limits.length) {
      try {
        const usage = await this.store.usage(tenant, spec.limits, spec.burst);
        this.storeAnswered();
        return { scope: 'fleet', usage };
      } catch (e) {
        this.storeFailed(e);
      }
    }
    return { scope: 'replica', usage: this.limiters.get(tenant)?.usage() ?? [] };
  }

  tenant(name: string): TenantConfig | undefined {
    return this.cfg.tenants.get(name);
  }

  limiter(name: string): RateLimiter | undefined {
    return this.limiters.get(name);
  }

  /** MAIL FROM: is the tenant paused, may it use this sender domain, is it over its queue quota? */
  checkMail(
    tenant: string,
    from: string,
    queued: { messages: number; bytes: number },
  ): SmtpReplyError | undefined {
    const st = this.guard.state(tenant);
    if (st.state === 'paused') {
      return new SmtpReplyError(
        'ERR_TENANT_PAUSED',
        451,
        '4.7.1',
        `Tenant ${tenant} is paused: ${st.reason ?? 'by an administrator'}; try again later`,
      );
    }
    const sp = this.dir.senderProblem(tenant, from);
    if (sp) return new SmtpReplyError('ERR_SENDER_DOMAIN', 550, '5.7.1', `<${from}>: ${sp}`);
    return this.checkQuota(tenant, queued, 0);
  }

  /** Is the tenant over its spool quota (with `size` more bytes)? */
  checkQuota(
    tenant: string,
    queued: { messages: number; bytes: number },
    size: number,
  ): SmtpReplyError | undefined {
    const q = this.cfg.tenants.get(tenant)?.quota;
    if (!q) return undefined;
    if (
      (q.messages !== undefined && queued.messages >= q.messages) ||
      (q.bytes !== undefined && queued.bytes + size > q.bytes)
    ) {
      return new SmtpReplyError(
        'ERR_TENANT_QUOTA',
        452,
        '4.3.1',
        `Tenant ${tenant} is over its queue quota (${queued.messages} messages, ${queued.bytes} bytes queued); try again later`,
      );
    }
    return undefined;
  }

  /**
   * RCPT TO: suppressed recipient, or over the tenant's rate limit (takes one recipient from the limits
   * when accepted). `fallback`: the shared store did not answer and the local share decided.
   */
  async checkRcpt(
    tenant: string,
    rcpt: string,
  ): Promise<{ err?: SmtpReplyError; reason?: 'suppressed' | 'rate_limited'; fallback?: string }> {
    const t = this.cfg.tenants.get(tenant);
    if (t?.suppression.enabled) {
      const s = this.suppressions.isSuppressed(tenant, rcpt);
      if (s) {
        return {
          reason: 'suppressed',
          err: new SmtpReplyError(
            'ERR_SUPPRESSED',
            550,
            '5.1.1',
            `<${rcpt}>: recipient is suppressed for tenant ${tenant} since ${new Date(s.createdAt).toISOString()} (${s.reason})`,
          ),
        };
      }
    }
    const { result: r, fallback } = await this.take(tenant);
    const fb = fallback ? { fallback } : {};
    if (r && !r.ok) {
      const secs = Math.max(1, Math.ceil(r.retryAfterMs / 1000));
      return {
        reason: 'rate_limited',
        err: new SmtpReplyError(
          'ERR_RATE_LIMITED',
          451,
          '4.7.1',
          `Rate limit ${r.limit} reached for tenant ${tenant}; try again in ${secs} s`,
        ),
        ...fb,
      };
    }
    return fb;
  }

  /** A recipient's final or temporary outcome: feeds the bounce guard and the suppression list. */
  async onOutcome(
    tenant: string,
    rcpt: string,
    outcome: 'delivered' | 'bounced' | 'deferred',
    status: string,
    reply: string,
  ): Promise<void> {
    const hard = outcome === 'bounced' && isHardBounce(status);
    const t = this.cfg.tenants.get(tenant);
    // the suppression first: when it cannot be written the caller fails (a report gets 451 and comes
    // again, an attempt is repeated) and the bounce must not have been counted yet, or it counts twice
    if (hard && t?.suppression.enabled) {
      await this.suppressions.add({
        tenant,
        address: rcpt,
        reason: reply.slice(0, 300),
        source: 'bounce',
        ttlMs: t.suppression.ttlMs,
      });
      this.log.info(
        { event: 'suppression.added', tenant, to: rcpt, reason: reply },
        'recipient suppressed after a hard bounce',
      );
    }
    const st = this.guard.record(
      tenant,
      outcome === 'delivered' ? 'delivered' : outcome === 'deferred' ? 'deferred' : hard ? 'hard' : 'soft',
    );
    if (st) this.changed(tenant, st);
  }

  /**
   * A complaint from a parsed feedback report (ARF): counts against the tenant's complaint rate and
   * suppresses the recipient (`source: complaint`), for callers that have only the tenant and recipient.
   * The inbound feedback listener suppresses with the report's own reason and only counts
   * (`countComplaint`, wired in relay.ts). A tenant this relay does not know is logged and ignored.
   */
  complaint(tenant: string, recipient: string): void {
    this.addComplaint(tenant, recipient, 'report').catch((e: unknown) =>
      this.log.warn(
        { event: 'complaint.failed', tenant, to: recipient, err: (e as Error).message },
        'could not record a complaint',
      ),
    );
  }

  /** A complaint (see `complaint()`), awaited: counted, then the recipient suppressed. False: unknown tenant. */
  async addComplaint(
    tenant: string,
    recipient: string,
    source: ComplaintSource,
    reason = 'complaint (feedback report)',
  ): Promise<boolean> {
    if (!this.cfg.tenants.has(tenant)) {
      this.log.warn({ event: 'complaint.unknown_tenant', tenant }, 'complaint for an unknown tenant ignored');
      return false;
    }
    this.countComplaint(tenant, source);
    const t = this.cfg.tenants.get(tenant)!;
    const address = recipient.trim().slice(0, 320);
    if (t.suppression.enabled && /^[^@\s]+@[^@\s]+$/.test(address)) {
      await this.suppressions.add({
        tenant,
        address,
        reason: reason.slice(0, 300),
        source: 'complaint',
        ttlMs: t.suppression.ttlMs,
      });
    }
    return true;
  }

  /** Counts one complaint against a known tenant's complaint rate (the suppression is the caller's). */
  countComplaint(tenant: string, source: ComplaintSource): void {
    if (!this.cfg.tenants.has(tenant)) return;
    this.onComplaint?.(tenant, source);
    const st = this.guard.complaint(tenant);
    this.log.info({ event: 'complaint', tenant, source }, `complaint counted for tenant ${tenant}`);
    if (st) this.changed(tenant, st);
  }

  retryPolicy(tenant: string): { policy: RelayConfig['queue']['retry']; maxAgeMs: number } {
    const t = this.cfg.tenants.get(tenant);
    return { policy: t?.retry ?? this.cfg.queue.retry, maxAgeMs: t?.maxAgeMs ?? this.cfg.queue.maxAgeMs };
  }

  poolOf(tenant: string): string | undefined {
    return this.cfg.tenants.get(tenant)?.ipPool;
  }
}
