/**
 * The relay's Prometheus metrics, in its own registry. Labels are bounded by configuration
 * (tenant, route kind, listener), never by recipient, message id or free text. See docs/metrics.md.
 */
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';
import { LintMetrics } from './lint/metrics.js';

export type RouteKind = 'mx' | 'smarthost' | 'domain' | 'backup' | 'handoff';
export type BounceKind = 'hard' | 'soft' | 'expired';

export class RelayMetrics {
  readonly registry = new Registry();
  readonly queueDepth: Gauge<'tenant'>;
  readonly queueOldestAge: Gauge;
  readonly received: Counter<'tenant'>;
  readonly dkimSigned: Counter<'tenant' | 'algorithm'>;
  readonly dkimUnsigned: Counter<'tenant' | 'reason'>;
  readonly dkimRefused: Counter<'tenant' | 'reason'>;
  readonly delivered: Counter<'tenant' | 'route'>;
  readonly deferred: Counter<'tenant'>;
  readonly bounced: Counter<'tenant' | 'kind'>;
  readonly bounceRate: Gauge<'tenant'>;
  readonly deliveryDuration: Histogram<'result'>;
  readonly connections: Gauge<'listener'>;
  readonly rejected: Counter<'listener' | 'reason'>;
  readonly dsnSent: Counter<'action'>;
  readonly rateLimited: Counter<'tenant'>;
  readonly rateLimitStoreFallbacks: Counter<'reason'>;
  readonly egressSent: Counter<'pool' | 'ip'>;
  readonly tenantPaused: Gauge<'tenant'>;
  readonly tenantWarning: Gauge<'tenant'>;
  readonly egressCapUsage: Gauge<'pool' | 'ip' | 'window'>;
  readonly suppressed: Gauge;
  readonly configInfo: Gauge<'hash'>;
  readonly reloads: Counter<'result'>;
  readonly tlsReloads: Counter<'result'>;
  readonly tlsNotAfter: Gauge<'listener'>;
  readonly spoolCorrupt: Counter<'stage'>;
  readonly recoveryScanned: Counter;
  readonly recoveryCorrupt: Counter;
  readonly recovering: Gauge;
  readonly recoveryDuration: Gauge;
  readonly queueSuspended: Gauge<'tenant'>;
  /** The bulk-sender lint's metrics (lint/metrics.ts). */
  readonly lint: LintMetrics;

  constructor(collectors: {
    paused?: () => Map<string, boolean>;
    warning?: () => Map<string, boolean>;
    capUsage?: () => { pool: string; ip: string; hour?: number; day?: number }[];
    suppressions?: () => number;
    suspended?: () => Map<string, number>;
    queue: () => { byTenant: Map<string, number>; oldestArrival?: number };
    bounceRates: () => Map<string, number>;
    now: () => number;
  }) {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'cartero_' });
    this.queueDepth = new Gauge({
      name: 'cartero_queue_depth',
      help: 'Messages in the queue with at least one recipient not yet delivered or bounced.',
      labelNames: ['tenant'],
      registers: [r],
      collect() {
        this.reset();
        for (const [tenant, n] of collectors.queue().byTenant) this.set({ tenant }, n);
      },
    });
    this.queueOldestAge = new Gauge({
      name: 'cartero_queue_oldest_age_seconds',
      help: 'Age of the oldest message in the queue (0 when empty).',
      registers: [r],
      collect() {
        const o = collectors.queue().oldestArrival;
        this.set(o === undefined ? 0 : Math.max(0, (collectors.now() - o) / 1000));
      },
    });
    this.received = new Counter({
      name: 'cartero_messages_received_total',
      help: 'Messages accepted (250) and queued.',
      labelNames: ['tenant'],
      registers: [r],
    });
    this.dkimSigned = new Counter({
      name: 'cartero_dkim_signed_total',
      help: 'DKIM signatures added at acceptance (a dual-signed message counts once per algorithm).',
      labelNames: ['tenant', 'algorithm'],
      registers: [r],
    });
    this.dkimUnsigned = new Counter({
      name: 'cartero_dkim_unsigned_total',
      help: 'Messages accepted without a signature, by reason.',
      labelNames: ['tenant', 'reason'],
      registers: [r],
    });
    this.dkimRefused = new Counter({
      name: 'cartero_dkim_refused_total',
      help: 'Messages refused at DATA because no key could sign them (dkim.unmatched: refuse).',
      labelNames: ['tenant', 'reason'],
      registers: [r],
    });
    this.delivered = new Counter({
      name: 'cartero_messages_delivered_total',
      help: 'Recipients delivered (2xx from the next hop).',
      labelNames: ['tenant', 'route'],
      registers: [r],
    });
    this.deferred = new Counter({
      name: 'cartero_messages_deferred_total',
      help: 'Recipient delivery attempts that failed temporarily and will be retried.',
      labelNames: ['tenant'],
      registers: [r],
    });
    this.bounced = new Counter({
      name: 'cartero_messages_bounced_total',
      help: 'Recipients that failed for good: hard (5xx), soft (permanent local failure), expired (maxAge reached).',
      labelNames: ['tenant', 'kind'],
      registers: [r],
    });
    this.bounceRate = new Gauge({
      name: 'cartero_bounce_rate',
      help: 'Hard bounces over attempted recipients in the sliding window (0..1).',
      labelNames: ['tenant'],
      registers: [r],
      collect() {
        this.reset();
        for (const [tenant, v] of collectors.bounceRates()) this.set({ tenant }, v);
      },
    });
    this.deliveryDuration = new Histogram({
      name: 'cartero_delivery_duration_seconds',
      help: 'Duration of one delivery transaction to the next hop (connection reuse included).',
      labelNames: ['result'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [r],
    });
    this.connections = new Gauge({
      name: 'cartero_smtp_connections',
      help: 'Open inbound SMTP connections.',
      labelNames: ['listener'],
      registers: [r],
    });
    this.rejected = new Counter({
      name: 'cartero_smtp_rejected_total',
      help: 'Inbound commands refused, by reason.',
      labelNames: ['listener', 'reason'],
      registers: [r],
    });
    this.dsnSent = new Counter({
      name: 'cartero_dsn_generated_total',
      help: 'Delivery status notifications generated.',
      labelNames: ['action'],
      registers: [r],
    });
    this.rateLimited = new Counter({
      name: 'cartero_rate_limited_total',
      help: 'Recipients refused (451 4.7.1) because the tenant reached a rate limit.',
      labelNames: ['tenant'],
      registers: [r],
    });
    this.rateLimitStoreFallbacks = new Counter({
      name: 'cartero_ratelimit_store_fallbacks_total',
      help: "Recipients checked against this replica's share of the tenant limits because the shared store did not answer (reason: down, timeout, busy, reply).",
      labelNames: ['reason'],
      registers: [r],
    });
    this.egressSent = new Counter({
      name: 'cartero_egress_sent_total',
      help: 'Recipients delivered from each pool address.',
      labelNames: ['pool', 'ip'],
      registers: [r],
    });
    this.tenantPaused = new Gauge({
      name: 'cartero_tenant_paused',
      help: '1 while the tenant is paused (bounce-rate guard or admin), else 0.',
      labelNames: ['tenant'],
      registers: [r],
      collect() {
        this.reset();
        for (const [tenant, p] of collectors.paused?.() ?? []) this.set({ tenant }, p ? 1 : 0);
      },
    });
    this.tenantWarning = new Gauge({
      name: 'cartero_tenant_bounce_warning',
      help: "1 while the tenant's bounce rate is above its warn threshold (and below pause), else 0.",
      labelNames: ['tenant'],
      registers: [r],
      collect() {
        this.reset();
        for (const [tenant, w] of collectors.warning?.() ?? []) this.set({ tenant }, w ? 1 : 0);
      },
    });
    this.egressCapUsage = new Gauge({
      name: 'cartero_egress_cap_usage_ratio',
      help: "Share of a pool address's hourly or daily cap (warm-up included) used in the current window.",
      labelNames: ['pool', 'ip', 'window'],
      registers: [r],
      collect() {
        this.reset();
        for (const u of collectors.capUsage?.() ?? []) {
          if (u.hour !== undefined) this.set({ pool: u.pool, ip: u.ip, window: 'hour' }, u.hour);
          if (u.day !== undefined) this.set({ pool: u.pool, ip: u.ip, window: 'day' }, u.day);
        }
      },
    });
    this.suppressed = new Gauge({
      name: 'cartero_suppressed_recipients',
      help: 'Entries in the suppression list (all tenants).',
      registers: [r],
      collect() {
        this.set(collectors.suppressions?.() ?? 0);
      },
    });
    this.configInfo = new Gauge({
      name: 'cartero_config_info',
      help: 'Always 1; the hash label names the config (file and secrets) this relay runs.',
      labelNames: ['hash'],
      registers: [r],
    });
    this.spoolCorrupt = new Counter({
      name: 'cartero_spool_corrupt_total',
      help: 'Queue files found damaged and set aside (spool/corrupt/), by stage: start (the scan) or delivery.',
      labelNames: ['stage'],
      registers: [r],
    });
    this.recoveryScanned = new Counter({
      name: 'cartero_spool_recovery_scanned_total',
      help: 'Queue files read by the background index of the spool after a start.',
      registers: [r],
    });
    this.recoveryCorrupt = new Counter({
      name: 'cartero_spool_recovery_corrupt_total',
      help: 'Queue files the background index found unreadable and set aside.',
      registers: [r],
    });
    this.recovering = new Gauge({
      name: 'cartero_spool_recovering',
      help: '1 while the spool is being indexed after a start (the queue is not fully known yet), else 0.',
      registers: [r],
    });
    this.recoveryDuration = new Gauge({
      name: 'cartero_spool_recovery_duration_seconds',
      help: 'How long the last background index of the spool took (set when it finished).',
      registers: [r],
    });
    this.queueSuspended = new Gauge({
      name: 'cartero_queue_suspended',
      help: 'Queued messages held by a suspension (admin or fleet), by tenant.',
      labelNames: ['tenant'],
      registers: [r],
      collect() {
        this.reset();
        for (const [tenant, n] of collectors.suspended?.() ?? []) this.set({ tenant }, n);
      },
    });
    this.reloads = new Counter({
      name: 'cartero_config_reloads_total',
      help: 'Config reloads, by result (applied, invalid).',
      labelNames: ['result'],
      registers: [r],
    });
    this.tlsReloads = new Counter({
      name: 'cartero_tls_reloads_total',
      help: 'Changed TLS certificate files, by result (applied, invalid: the running certificate stays).',
      labelNames: ['result'],
      registers: [r],
    });
    this.tlsNotAfter = new Gauge({
      name: 'cartero_tls_cert_not_after_seconds',
      help: 'Expiry (notAfter, seconds since the epoch) of the certificate each TLS listener serves.',
      labelNames: ['listener'],
      registers: [r],
    });
    this.lint = new LintMetrics(r);
  }
}

/** Hard bounces over attempted recipients per tenant, over a sliding window of fixed buckets. */
export class BounceWindow {
  private readonly buckets = new Map<string, { start: number; attempted: number; hard: number }[]>();
  constructor(
    private readonly windowMs = 3_600_000,
    private readonly bucketMs = 60_000,
  ) {}
  record(tenant: string, now: number, hard: boolean): void {
    let list = this.buckets.get(tenant);
    if (!list) this.buckets.set(tenant, (list = []));
    const start = now - (now % this.bucketMs);
    let b = list[list.length - 1];
    if (!b || b.start !== start) list.push((b = { start, attempted: 0, hard: 0 }));
    b.attempted++;
    if (hard) b.hard++;
    while (list.length && list[0].start <= now - this.windowMs) list.shift();
  }
  rates(now: number): Map<string, number> {
    const out = new Map<string, number>();
    for (const [tenant, list] of this.buckets) {
      let a = 0;
      let h = 0;
      for (const b of list)
        if (b.start > now - this.windowMs) {
          a += b.attempted;
          h += b.hard;
        }
      out.set(tenant, a ? h / a : 0);
    }
    return out;
  }
}
