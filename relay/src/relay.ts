/**
 * Builds and wires the relay's parts from a resolved config; owns start, reload, drain and shutdown order.
 * The admin endpoints are registered from queue-admin.ts, tenant-admin.ts and drain-admin.ts.
 */
import type { Logger } from 'pino';
import type { RelayConfig } from './config.js';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Spool } from './spool/disk.js';
import { DeliveryEngine } from './delivery/engine.js';
import type { EngineDeps } from './delivery/types.js';
import { Inbound, type InboundDeps } from './inbound.js';
import { TenantRuntime } from './tenant-runtime.js';
import { AdminServer, HttpError } from './admin.js';
import { RelayMetrics } from './metrics.js';
import { MxResolver } from './dns.js';
import { OutboundTlsRuntime } from './delivery/tls-runtime.js';
import { registerSpoolMetrics } from './spool/metrics.js';
import { writeFileDurable } from './durable.js';
import { Suspensions } from './delivery/suspensions.js';
import { registerQueueOps } from './queue-admin.js';
import { registerTenantOps } from './tenant-admin.js';
import { registerComplaintOps } from './complaint-admin.js';
import { ComplaintMetrics } from './complaint-metrics.js';
import { registerDrainOps, type DrainPeer } from './drain-admin.js';
import type { DrainStatus } from './contract/admin-api.js';
import { checkTlsPair } from './tls-pair.js';
import { LintRuntime } from './lint/runtime.js';
import { registerLintOps } from './lint/admin.js';
import { loadSpfEvaluator } from './lint/load.js';
import { IdentityResolver } from './identity/resolver.js';
import { EgressIdentityMonitor } from './identity/monitor.js';
import { registerDnsChecks } from './identity/admin.js';
import { setUpFeedback, type Feedback } from './feedback/wire.js';
import { EventsRuntime } from './events/runtime.js';

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
  /** DNS identity checks: the resolver (replaced when `dns` changes) and the pool addresses' check. */
  private identityResolver: IdentityResolver;
  readonly egressIdentity: EgressIdentityMonitor;
  /** The feedback loop (relay/src/feedback/): bounces and complaints received, their listener. */
  readonly feedback: Feedback;
  /** Delivery events: the outbox on the spool volume and the webhook loops (relay/src/events/). */
  readonly events: EventsRuntime;

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
      warning: () =>
        new Map(
          this.deps.tenancy
            ? [...this.cfg.tenants.keys()].map((t) => [
                t,
                this.deps.tenancy.guard.state(t).state === 'warning',
              ])
            : [],
        ),
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
      suspended: () => this.engine.suspendedByTenant(),
      now,
    });
    registerSpoolMetrics(this.metrics.registry, () => this.spool);
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
    this.deps.lint = new LintRuntime(this.metrics.lint, o.log, now);
    this.deps.outboundTls = new OutboundTlsRuntime({
      cfg: () => this.deps.cfg,
      log: o.log,
      registry: this.metrics.registry,
      now,
    });
    // --- delivery events (issue 14): every part emits to the outbox through deps.events
    this.events = new EventsRuntime(cfg, this.metrics.registry, o.log, now, this.spool.space);
    this.deps.events = this.events;
    // --- end delivery events
    const engine = (this.engine = new DeliveryEngine(this.deps));
    this.deps.engine = engine;
    this.inbound = new Inbound(this.deps);
    this.admin = new AdminServer({
      metrics: this.metrics,
      engine,
      ready: () => this.ready,
      token: () => this.cfg.admin.token,
      config: () => ({ version: 1, hash: this.cfg.hash, revision: this.cfg.fleet.revision ?? null }),
      log: o.log,
    });
    this.identityResolver = new IdentityResolver({ servers: cfg.dns.servers, timeoutMs: cfg.dns.timeoutMs });
    this.egressIdentity = new EgressIdentityMonitor({
      registry: this.metrics.registry,
      log: o.log,
      resolver: () => this.identityResolver,
      pools: () => this.cfg.ipPools,
      intervalMs: () => this.cfg.dns.identityCheckIntervalMs,
    });
    registerDnsChecks(this.admin, () => this.identityResolver);
    this.feedback = setUpFeedback({
      cfg: () => this.cfg,
      tenancy: () => this.deps.tenancy,
      admin: this.admin,
      registry: this.metrics.registry,
      log: o.log,
      now,
      resolver: () => this.identityResolver,
      space: this.spool.space,
    });
    this.deps.sent = this.feedback.sent; // accept.ts records the messages a report may name (ADR 020)
    // complaints matched by the listener count against the complaint-rate guard (ADR 018); the listener
    // suppresses the recipient itself, with the report's feedback type and reporter as the reason
    this.feedback.complaints = {
      complaint: (tenant) => this.deps.tenancy.countComplaint(tenant, 'report'),
    };
    this.feedback.events = this.events; // asynchronous `bounced` and `complained` go to the webhooks too
  }

  /** The background index of the spool (started by start()). */
  recovery?: Promise<void>;

  /**
   * Indexes the queued messages after the relay listens: the engine schedules them as they come (new mail
   * is accepted and delivered meanwhile). Unreadable files are set aside and counted, never fatal.
   */
  private async recover(): Promise<void> {
    const m = this.metrics;
    const started = performance.now();
    m.recovering.set(1);
    try {
      const n = await this.engine.recover(
        this.spool.scan((q) => {
          m.recoveryScanned.inc();
          m.recoveryCorrupt.inc();
          m.spoolCorrupt.inc({ stage: 'start' });
          this.o.log.error(
            {
              event: 'spool.corrupt',
              stage: 'start',
              file: q.file,
              reason: q.reason,
              movedTo: q.movedTo ?? null,
            },
            'unreadable queue file set aside; it will not be delivered',
          );
        }),
        (n) => m.recoveryScanned.inc(n),
      );
      const secs = (performance.now() - started) / 1000;
      m.recoveryDuration.set(secs);
      this.o.log.info(
        { event: 'queue.recovered', messages: n, seconds: Math.round(secs * 10) / 10 },
        'spool indexed',
      );
      m.recovering.set(0);
    } catch (e) {
      // cartero_spool_recovering stays 1 and GET /queue says recovering: the queue is not fully known
      this.o.log.error(
        { event: 'queue.recovery-failed', err: (e as Error).message },
        'could not index the whole spool: restart the relay to read it again (mail on disk is kept)',
      );
    }
  }

  /** Starts delivery, the admin port and the listeners, then indexes the spool in the background. */
  async start(): Promise<void> {
    this.deps.tenancy = await TenantRuntime.open(this.cfg, this.deps.now, this.o.log);
    this.metrics.configInfo.set({ hash: this.cfg.hash }, 1);
    registerTenantOps(this.admin, {
      cfg: () => this.cfg,
      tenancy: () => this.deps.tenancy,
      engine: this.engine,
      log: this.o.log,
    });
    // --- complaint-rate guard (ADR 018): metrics and POST /tenants/<name>/complaints
    const complaintMetrics = new ComplaintMetrics(this.metrics.registry, () =>
      this.deps.tenancy.guard.complaintRates(),
    );
    this.deps.tenancy.onComplaint = (tenant, source) => complaintMetrics.count(tenant, source);
    registerComplaintOps(this.admin, {
      cfg: () => this.cfg,
      tenancy: () => this.deps.tenancy,
      log: this.o.log,
    });
    const suspensions = new Suspensions(path.join(this.cfg.spoolDir, 'suspensions.json'));
    await suspensions.load();
    this.engine.suspensions = suspensions;
    registerQueueOps(this.admin, {
      engine: this.engine,
      suspensions,
      tenantExists: (name) => this.cfg.tenants.has(name),
      log: this.o.log,
      now: this.deps.now,
    });
    registerDrainOps(this.admin, { status: () => this.drainStatus(), drain: (peers) => this.drain(peers) });
    // --- bulk-sender lint (ADR 014): SPF through mailauth when it is installed
    const spf = await loadSpfEvaluator();
    if (spf.error)
      this.o.log.warn(
        { event: 'lint.spf-unavailable', err: spf.error },
        'mailauth is not installed: the lint does not check SPF',
      );
    this.deps.lint!.configure(this.cfg, spf.evaluate);
    registerLintOps(this.admin, () => this.deps.lint!.summary);
    this.admin.route('GET', '/events', () => [200, this.events.view()]); // docs/events.md
    await this.spool.open();
    await this.events.start(); // before delivery: its first outcomes are events
    this.engine.start();
    const adminPort = await this.admin.start(this.cfg.admin.address, this.cfg.admin.port);
    this.o.log.info(
      { event: 'admin.listening', address: this.cfg.admin.address, port: adminPort },
      'admin port ready',
    );
    const pending = await readFile(this.drainFile(), 'utf8').then(
      (t) => JSON.parse(t) as { peers: DrainPeer[]; since: number },
      () => undefined,
    );
    if (pending) this.inbound.stopAccepting(); // before the first connection can land
    await this.inbound.start();
    await this.feedback.listener.start();
    this.feedback.sent.start();
    if (this.cfg.tls) {
      try {
        this.showCert(checkTlsPair(this.cfg.tls.cert, this.cfg.tls.key).notAfter);
      } catch {
        /* the listeners started with it, so Node took it; only the metric is missing */
      }
    }
    this.ready = true;
    if (pending) this.applyDrain(pending.peers ?? [], pending.since ?? Date.now());
    this.o.log.info({ event: 'ready' }, 'relay ready; indexing the spool in the background');
    this.recovery = this.recover();
    void this.egressIdentity.start();
  }

  /**
   * Applies a new config without dropping connections or queued mail: tenants, accounts, limits, routes,
   * pools, shaping, retries, the admin token and a renewed TLS certificate change at once. Listeners, the
   * spool folder, the admin address and adding or removing the tls section need a restart; a change to
   * them is logged and otherwise ignored. Throws (and changes nothing) when the new config cannot be
   * applied.
   */
  reload(next: RelayConfig): void {
    const cur = this.cfg;
    const restartNeeded: string[] = [];
    // a listener's client limits apply at once (the guard reads them live); the rest needs new sockets
    const bound = (ls: RelayConfig['listeners']) => JSON.stringify(ls.map(({ limits: _limits, ...l }) => l));
    if (bound(next.listeners) !== bound(cur.listeners)) restartNeeded.push('listeners');
    if (next.spoolDir !== cur.spoolDir) restartNeeded.push('paths.spool');
    if (next.admin.address !== cur.admin.address || next.admin.port !== cur.admin.port)
      restartNeeded.push('admin address/port');
    if (!!next.tls !== !!cur.tls) restartNeeded.push('tls');
    if (JSON.stringify(next.feedback.listener) !== JSON.stringify(cur.feedback.listener))
      restartNeeded.push('feedback.listener');
    this.deps.tenancy.reconfigure(next); // validates pools and limits first; throws before anything changed
    next = this.reloadTls(cur, next);
    if (JSON.stringify(next.dns) !== JSON.stringify(cur.dns)) {
      this.deps.resolver = new MxResolver({
        servers: next.dns.servers,
        timeoutMs: next.dns.timeoutMs,
        allowPrivateTargets: next.dns.allowPrivateTargets,
      });
      this.identityResolver = new IdentityResolver({
        servers: next.dns.servers,
        timeoutMs: next.dns.timeoutMs,
      });
    }
    this.deps.cfg = next;
    this.deps.lint?.configure(next);
    this.events
      .reload(next)
      .catch((e: Error) =>
        this.o.log.error(
          { event: 'events.reload-failed', err: e.message },
          'webhook endpoints not reconfigured',
        ),
      );
    this.inbound.reconfigure();
    this.engine.reconfigure();
    this.metrics.configInfo.reset();
    this.metrics.configInfo.set({ hash: next.hash }, 1);
    this.metrics.reloads.inc({ result: 'applied' });
    void this.egressIdentity.reconfigure();
    this.o.log.info(
      { event: 'config.reloaded', hash: next.hash, previous: cur.hash, restartNeeded },
      'config reloaded',
    );
    if (restartNeeded.length) {
      this.o.log.warn(
        { event: 'config.restart-needed', fields: restartNeeded },
        `these changes take effect at the next restart: ${restartNeeded.join(', ')}`,
      );
    }
  }

  /**
   * A changed certificate or key (cert-manager renewing the Secret): a pair that parses and matches goes
   * to the TLS listeners for new handshakes (open connections keep theirs); a bad pair is logged and
   * counted, and the running one stays (the rest of the config is applied). Returns the config to apply.
   */
  private reloadTls(cur: RelayConfig, next: RelayConfig): RelayConfig {
    if (!cur.tls || !next.tls) return next; // added or removed: a restart (see reload)
    if (next.tls.cert.equals(cur.tls.cert) && next.tls.key.equals(cur.tls.key)) return next;
    let info;
    try {
      info = checkTlsPair(next.tls.cert, next.tls.key);
    } catch (e) {
      this.metrics.tlsReloads.inc({ result: 'invalid' });
      this.o.log.error(
        { event: 'tls.invalid', err: (e as Error).message },
        'new TLS certificate refused; the running certificate stays',
      );
      return { ...next, tls: cur.tls };
    }
    const listeners = this.inbound.updateTls(next.tls);
    this.metrics.tlsReloads.inc({ result: 'applied' });
    this.showCert(info.notAfter);
    this.o.log.info(
      {
        event: 'tls.reloaded',
        listeners,
        notAfter: new Date(info.notAfter).toISOString(),
        fingerprint: info.fingerprint256,
        subject: info.subject,
      },
      'TLS certificate reloaded; new handshakes use it',
    );
    return next;
  }

  private showCert(notAfter: number): void {
    for (const l of this.cfg.listeners)
      if (l.tls !== 'none') this.metrics.tlsNotAfter.set({ listener: l.name }, Math.floor(notAfter / 1000));
  }

  /** A config that could not be loaded or applied: the running one stays. */
  reloadFailed(err: Error): void {
    this.metrics.reloads.inc({ result: 'invalid' });
    this.o.log.error(
      { event: 'config.invalid', err: err.message, keeping: this.cfg.hash },
      'new config refused; the running config stays',
    );
  }

  // ---- drain ----

  private drainFile(): string {
    return path.join(this.cfg.spoolDir, 'drain.json');
  }

  /**
   * Stops accepting mail for good and empties the queue: to the peers given (hand-off over SMTP as the
   * peer account, with tenant, attempts, arrival time and DSN parameters), or by delivering it when no
   * peer is given. Persisted, so a relay restarted while draining goes on draining. Idempotent.
   */
  async drain(peers: DrainPeer[]): Promise<void> {
    if (peers.length && !this.cfg.peer)
      throw new HttpError(409, 'hand-off needs the peer account (config: peer)');
    await writeFileDurable(
      this.drainFile(),
      JSON.stringify({ v: 1, peers, since: this.drainSince ?? Date.now() }),
    );
    this.applyDrain(peers, this.drainSince ?? Date.now());
  }

  private drainSince?: number;
  private drainPeers: DrainPeer[] = [];

  private applyDrain(peers: DrainPeer[], since: number): void {
    this.ready = false;
    this.drainSince = since;
    this.drainPeers = peers;
    this.inbound.stopAccepting();
    const peer = this.cfg.peer;
    if (!peers.length) this.engine.stopHandoff(); // asked again without peers: deliver what is left
    const hops =
      peers.length && peer
        ? peers.map((p) => ({
            host: p.host,
            port: p.port,
            name: p.host,
            tls: p.tls ?? 'none',
            credentials: { username: peer.username, password: peer.password.toString('utf8') },
            kind: 'backup' as const,
          }))
        : [];
    // delivery events go to the peers too (ADR 019), the ones pending first: mail follows their first pass
    const session = () => ({
      ehloName: this.cfg.hostname,
      connectTimeoutMs: this.cfg.delivery.connectTimeoutMs,
      commandTimeoutMs: this.cfg.delivery.commandTimeoutMs,
    });
    const events = this.events
      .handOff(hops, session)
      .catch((e: Error) =>
        this.o.log.error({ event: 'events.handoff-error', err: e.message }, 'delivery events not handed off'),
      );
    // (unless a drain asked again meanwhile changed the peers: that one starts the hand-off)
    if (hops.length) void events.then(() => this.drainPeers === peers && this.engine.startDrain(hops));
    else this.engine.flush();
    this.o.log.warn(
      { event: 'drain', peers: peers.map((p) => `${p.host}:${p.port}`), queued: this.engine.stats().depth },
      'draining: no new mail is accepted',
    );
  }

  drainStatus(): DrainStatus & Record<string, unknown> {
    const depth = this.engine.stats().depth;
    return {
      draining: this.drainSince !== undefined,
      since: this.drainSince ? new Date(this.drainSince).toISOString() : null,
      peers: this.drainPeers,
      queued: depth,
      handedOff: this.engine.handedOff,
      recovering: this.engine.recovering,
      // its delivery events: acknowledged by every endpoint, or (with peers) taken by a peer (ADR 019)
      eventsPending: !this.events.caughtUp(),
      eventsHandedOff: this.events.handedOff,
      done: this.drainSince !== undefined && depth === 0 && !this.engine.recovering && this.events.caughtUp(),
    };
  }

  /** Graceful stop: refuse new mail, let open transactions finish, stop delivery, close the admin port. */
  stop(graceMs = this.cfg.gracePeriodMs): Promise<void> {
    this.stopping ??= (async () => {
      this.ready = false;
      this.egressIdentity.stop();
      const deadline = Date.now() + graceMs;
      await this.inbound.stop(graceMs);
      await this.feedback.listener.stop();
      await this.feedback.sent.stop(); // what the accepted mail left in its buffer
      this.deps.lint?.stop(); // SPF lookups still running for accepted mail end now (temperror)
      await this.engine.stop(Math.max(0, deadline - Date.now()));
      await this.recovery;
      await this.events.stop();
      await this.deps.tenancy?.close();
      await this.admin.stop();
      this.o.log.info({ event: 'stopped', queued: this.spool.size }, 'relay stopped');
    })();
    return this.stopping;
  }
}
