/** Builds and wires the relay's parts from a resolved config; owns start and shutdown order. */
import type { Logger } from 'pino';
import type { RelayConfig } from './config.js';
import { Spool } from './spool.js';
import { DeliveryEngine, type EngineDeps } from './queue.js';
import { Inbound, type InboundDeps } from './inbound.js';
import { TenantRuntime } from './tenant-runtime.js';
import { AdminServer } from './admin.js';
import { RelayMetrics } from './metrics.js';
import { MxResolver } from './dns.js';

export interface RelayOptions {
  now?: () => number;
  log: Logger;
}

type RelayDeps = EngineDeps & InboundDeps;

export class Relay {
  readonly spool: Spool;
  readonly engine: DeliveryEngine;
  readonly inbound: Inbound;
  readonly admin: AdminServer;
  readonly metrics: RelayMetrics;
  readonly deps: RelayDeps;
  private ready = false;

  /** The config in force (replaced by a reload). */
  get cfg(): RelayConfig {
    return this.deps.cfg;
  }
  private stopping?: Promise<void>;

  constructor(
    cfg: RelayConfig,
    private readonly o: RelayOptions,
  ) {
    const now = o.now ?? Date.now;
    this.spool = new Spool({
      dir: cfg.spoolDir,
      maxMessages: cfg.queue.maxMessages,
      minFreeBytes: cfg.queue.minFreeBytes,
      now,
    });
    const resolver = new MxResolver({
      servers: cfg.dns.servers,
      timeoutMs: cfg.dns.timeoutMs,
      allowPrivateTargets: cfg.dns.allowPrivateTargets,
    });
    this.metrics = new RelayMetrics({
      queue: () => this.engine.stats(),
      bounceRates: () => this.deps.tenancy?.guard.rates() ?? new Map(),
      paused: () =>
        new Map(
          this.deps.tenancy
            ? [...this.cfg.tenants.keys()].map((t) => [
                t,
                this.deps.tenancy.guard.state(t).state === 'paused',
              ])
            : [],
        ),
      capUsage: () =>
        (this.deps.tenancy?.pools.usage() ?? []).map((u) => ({
          pool: u.pool,
          ip: u.ip,
          ...(u.hourCap ? { hour: u.hourUsed / u.hourCap } : {}),
          ...(u.dayCap ? { day: u.dayUsed / u.dayCap } : {}),
        })),
      suppressions: () => this.deps.tenancy?.suppressions.size ?? 0,
      now,
    });
    // One dependency object shared by the parts: the tenancy runtime is set in start(), and a config
    // reload replaces `cfg` here for all of them at once.
    this.deps = {
      cfg,
      spool: this.spool,
      resolver,
      metrics: this.metrics,
      log: o.log,
      now,
      tenancy: undefined as unknown as TenantRuntime,
    } as RelayDeps;
    const engine = (this.engine = new DeliveryEngine(this.deps));
    this.deps.engine = engine;
    this.inbound = new Inbound(this.deps);
    this.admin = new AdminServer({
      metrics: this.metrics,
      engine,
      ready: () => this.ready,
      token: () => this.cfg.admin.token,
      config: () => ({ version: 1, hash: this.cfg.hash }),
    });
  }

  /** Recovers the spool, starts delivery, then the listeners and the admin port. */
  async start(): Promise<void> {
    this.deps.tenancy = await TenantRuntime.open(this.cfg, this.deps.now, this.o.log);
    this.metrics.configInfo.set({ hash: this.cfg.hash }, 1);
    const recovered = await this.spool.open();
    for (const q of this.spool.quarantined)
      this.o.log.error(
        { event: 'spool.corrupt', file: q.file, reason: q.reason, movedTo: q.movedTo ?? null },
        'unreadable queue file set aside; it will not be delivered',
      );
    for (const m of recovered) this.engine.add(m);
    if (recovered.length)
      this.o.log.info({ event: 'queue.recovered', messages: recovered.length }, 'recovered queued messages');
    this.engine.start();
    const adminPort = await this.admin.start(this.cfg.admin.address, this.cfg.admin.port);
    this.o.log.info(
      { event: 'admin.listening', address: this.cfg.admin.address, port: adminPort },
      'admin port ready',
    );
    await this.inbound.start();
    this.ready = true;
    this.o.log.info({ event: 'ready', queued: recovered.length }, 'relay ready');
  }

  /** Graceful stop: refuse new mail, let open transactions finish, stop delivery, close the admin port. */
  stop(graceMs = this.cfg.gracePeriodMs): Promise<void> {
    this.stopping ??= (async () => {
      this.ready = false;
      const deadline = Date.now() + graceMs;
      await this.inbound.stop(graceMs);
      await this.engine.stop(Math.max(0, deadline - Date.now()));
      await this.deps.tenancy?.close();
      await this.admin.stop();
      this.o.log.info({ event: 'stopped', queued: this.spool.size }, 'relay stopped');
    })();
    return this.stopping;
  }
}
