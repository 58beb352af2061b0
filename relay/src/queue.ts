/**
 * The delivery engine: keeps the queue index in memory, schedules attempts, groups recipients by route
 * into transactions, runs them on reused outbound sessions with per-destination and global concurrency
 * caps, falls back through MX hosts and backup routes, and applies the outcome durably (state file,
 * DSN into our own queue, removal) before it forgets anything.
 */
import type { Logger } from 'pino';
import type { RelayConfig } from './config.js';
import {
  Spool,
  type Envelope,
  type DeliveryState,
  type SpooledMessage,
  newQueueId,
  initialState,
} from './spool/disk.js';
import { TimeHeap } from './heap.js';
import { selectRoute, type Route } from './router.js';
import { OutboundSession, HopError, type Hop, type TxResult } from './outbound.js';
import type { MxResolver } from './dns.js';
import { scheduleNext } from './retry.js';
import { renderDsn, dsnRecipientsWanted, type DsnRecipient } from './dsn.js';
import type { RelayMetrics } from './metrics.js';
import type { TenantRuntime } from './tenant-runtime.js';
import { isHardBounce } from './tenant-runtime.js';
import { isThrottleReply, type DestinationLimits } from './shaping.js';

interface Entry {
  env: Envelope;
  state: DeliveryState;
  bodyOffset: number;
  body?: Buffer;
  busy: boolean;
  scheduledAt: number;
}

type Outcome = {
  /** Overrides the retry schedule (drain: try the peers again soon). */
  retryAt?: number;
  /** Do not try again before this time (pool caps, destination back-off). */
  notBefore?: number;
  result: 'delivered' | 'deferred' | 'bounced';
  reply: string;
  status: string;
  remoteMta?: string;
  route: Route['kind'] | 'backup' | 'handoff';
};

export const HANDOFF_HEADER = 'X-Cartero-Handoff';

/** What travels with a message handed to a peer relay (base64url JSON in the X-Cartero-Handoff header). */
export interface HandoffMeta {
  v: 1;
  tenant: string;
  arrivedAt: number;
  origin: Envelope['origin'];
  dsn: Envelope['dsn'];
  delayWarned: boolean;
  attempts: number;
  rcpts: { address: string; notify?: string[]; orcpt?: string; attempts: number; lastReply?: string }[];
  /** Queue id on the relay that handed it off. */
  from: string;
}

interface Job {
  /** Set when the relay drains: the recipients go to a peer relay, metadata and all. */
  handoff?: boolean;
  entry: Entry;
  route: Route;
  rcpts: number[];
  resolve: (o: Map<number, Outcome>) => void;
}

class Destination {
  limits!: DestinationLimits;
  mxChecked = false;
  queue: Job[] = [];
  active = 0;
  idle: OutboundSession[] = [];
  idleTimer?: NodeJS.Timeout;
  constructor(
    readonly key: string,
    readonly route: Route,
  ) {}
}

export interface EngineDeps {
  cfg: RelayConfig;
  spool: Spool;
  resolver: MxResolver;
  metrics: RelayMetrics;
  tenancy: TenantRuntime;
  log: Logger;
  now: () => number;
}

const ENHANCED_RE = /^[245]\.\d{1,3}\.\d{1,3}$/;

function statusFromReply(code: number | undefined, reply: string, fallback: string): string {
  const m = /^(?:\d{3}[ -])?([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply);
  if (m && ENHANCED_RE.test(m[1]) && code !== undefined && m[1][0] === String(code)[0]) return m[1];
  if (code === undefined) return fallback;
  return code >= 500 ? '5.0.0' : code >= 400 ? '4.0.0' : '2.0.0';
}

function domainOf(addr: string): string {
  return addr.slice(addr.lastIndexOf('@') + 1).toLowerCase();
}

export class DeliveryEngine {
  private readonly entries = new Map<string, Entry>();
  private readonly heap = new TimeHeap();
  private readonly dests = new Map<string, Destination>();
  private readonly starved = new Set<Destination>();
  private activeJobs = 0;
  private timer?: NodeJS.Timeout;
  private running = false;
  private inFlight = new Set<Promise<void>>();
  private cachedBytes = 0;
  private readonly maxCachedBytes = 64 * 1024 * 1024;

  constructor(private readonly d: EngineDeps) {}

  /** Queue figures for metrics and the admin API. */
  private readonly tenantUse = new Map<string, { messages: number; bytes: number }>();

  private countTenant(env: Envelope, sign: 1 | -1): void {
    let u = this.tenantUse.get(env.tenant);
    if (!u) this.tenantUse.set(env.tenant, (u = { messages: 0, bytes: 0 }));
    u.messages += sign;
    u.bytes += sign * env.size;
  }

  /** Messages and bytes a tenant has queued: O(1), for quota checks. */
  tenantUsage(tenant: string): { messages: number; bytes: number } {
    return this.tenantUse.get(tenant) ?? { messages: 0, bytes: 0 };
  }

  /** Queue summary by tenant, destination domain (pending recipients) and state. */
  summary(): {
    depth: number;
    byTenant: Record<string, number>;
    byDomain: Record<string, number>;
    byState: Record<'new' | 'deferred' | 'active', number>;
  } {
    const byTenant: Record<string, number> = {};
    const byDomain: Record<string, number> = {};
    const byState = { new: 0, deferred: 0, active: 0 };
    for (const e of this.entries.values()) {
      byTenant[e.env.tenant] = (byTenant[e.env.tenant] ?? 0) + 1;
      byState[e.busy ? 'active' : e.state.attempts > 0 ? 'deferred' : 'new']++;
      e.state.rcpts.forEach((r, i) => {
        if (r.status === 'pending') {
          const d = domainOf(e.env.rcpts[i].address);
          byDomain[d] = (byDomain[d] ?? 0) + 1;
        }
      });
    }
    return { depth: this.entries.size, byTenant, byDomain, byState };
  }

  /** Pages through queued messages in queue-id (arrival) order, after the id `after`. */
  page(opts: { after?: string; limit: number; tenant?: string; domain?: string; state?: string }): {
    messages: ReturnType<DeliveryEngine['list']>;
    next?: string;
  } {
    const ids = [...this.entries.keys()].filter((id) => !opts.after || id > opts.after).sort();
    const out: ReturnType<DeliveryEngine['list']> = [];
    let next: string | undefined;
    for (const id of ids) {
      const e = this.entries.get(id)!;
      if (opts.tenant && e.env.tenant !== opts.tenant) continue;
      if (
        opts.domain &&
        !e.env.rcpts.some(
          (r, i) => e.state.rcpts[i].status === 'pending' && domainOf(r.address) === opts.domain,
        )
      )
        continue;
      const state = e.busy ? 'active' : e.state.attempts > 0 ? 'deferred' : 'new';
      if (opts.state && state !== opts.state) continue;
      if (out.length === opts.limit) {
        next = out[out.length - 1].id;
        break;
      }
      out.push(this.describe(e));
    }
    return { messages: out, ...(next ? { next } : {}) };
  }

  /**
   * Deletes a queued message (admin). With `bounce`, its pending recipients are reported to the sender
   * as failed first. Refused (false) while a delivery attempt for it is in flight.
   */
  async delete(id: string, bounce: boolean): Promise<'deleted' | 'busy' | 'missing'> {
    const e = this.entries.get(id);
    if (!e) return 'missing';
    if (e.busy) return 'busy';
    e.busy = true;
    try {
      if (bounce) {
        const now = this.d.now();
        const failed = e.state.rcpts
          .map((r, i) => ({ r, i }))
          .filter(
            ({ r, i }) =>
              r.status === 'pending' && dsnRecipientsWanted(e.env.rcpts[i].notify?.join(','), 'failed'),
          )
          .map(
            ({ r, i }) =>
              ({
                address: e.env.rcpts[i].address,
                orcpt: e.env.rcpts[i].orcpt,
                action: 'failed',
                status: '5.0.0',
                diagnostic: `deleted from the queue by an administrator; last error: ${r.lastReply ?? 'none'}`,
                lastAttemptAt: new Date(r.lastAttemptAt ?? now),
              }) as DsnRecipient,
          );
        if (failed.length) await this.queueDsn(e, failed);
      }
      await this.d.spool.remove(id, e.env.size);
      this.entries.delete(id);
      this.countTenant(e.env, -1);
      if (e.body) this.cachedBytes -= e.body.length;
      this.d.log.info(
        { event: 'queue.deleted', queueId: id, tenant: e.env.tenant, bounce },
        'message deleted by admin',
      );
      return 'deleted';
    } catch (err) {
      e.busy = false;
      throw err;
    }
  }

  stats(): { depth: number; byTenant: Map<string, number>; oldestArrival?: number; active: number } {
    const byTenant = new Map<string, number>();
    let oldest: number | undefined;
    for (const e of this.entries.values()) {
      byTenant.set(e.env.tenant, (byTenant.get(e.env.tenant) ?? 0) + 1);
      if (oldest === undefined || e.env.arrivedAt < oldest) oldest = e.env.arrivedAt;
    }
    return { depth: this.entries.size, byTenant, oldestArrival: oldest, active: this.activeJobs };
  }

  list(limit = 100): ReturnType<DeliveryEngine['describe']>[] {
    const out = [];
    for (const e of this.entries.values()) {
      if (out.length >= limit) break;
      out.push(this.describe(e));
    }
    return out;
  }

  private describe(e: Entry): {
    id: string;
    tenant: string;
    from: string;
    arrivedAt: number;
    nextAttemptAt: number;
    attempts: number;
    rcpts: { address: string; status: string; lastReply?: string }[];
  } {
    return {
      id: e.env.id,
      tenant: e.env.tenant,
      from: e.env.from,
      arrivedAt: e.env.arrivedAt,
      nextAttemptAt: e.state.nextAttemptAt,
      attempts: e.state.attempts,
      rcpts: e.env.rcpts.map((r, i) => ({
        address: r.address,
        status: e.state.rcpts[i].status,
        lastReply: e.state.rcpts[i].lastReply,
      })),
    };
  }

  /** Adds a durably queued message. `body` (the raw message) saves a read when it is at hand. */
  add(msg: SpooledMessage, body?: Buffer): void {
    const entry: Entry = {
      env: msg.env,
      state: msg.state,
      bodyOffset: msg.bodyOffset,
      busy: false,
      scheduledAt: msg.state.nextAttemptAt,
    };
    if (body && this.cachedBytes + body.length <= this.maxCachedBytes) {
      entry.body = body;
      this.cachedBytes += body.length;
    }
    this.entries.set(msg.env.id, entry);
    this.countTenant(msg.env, 1);
    this.schedule(entry, msg.state.nextAttemptAt);
  }

  start(): void {
    this.running = true;
    this.arm();
  }

  /** After a config reload: destination limits are recomputed from the new shaping rules. */
  reconfigure(): void {
    for (const dest of this.dests.values()) {
      dest.limits = this.d.tenancy.shaper.limitsFor(dest.route.domain);
      dest.mxChecked = false;
      this.pump(dest);
    }
  }

  /** Makes every queued message due now (admin flush). */
  flush(): void {
    const now = this.d.now();
    for (const e of this.entries.values()) if (!e.busy) this.schedule(e, now);
  }

  /** Runs whatever is due now (tests that move the clock call this instead of waiting). */
  kick(): void {
    if (this.running) this.tick();
  }

  /** Stops starting attempts; waits up to `graceMs` for attempts in flight, then closes every session. */
  async stop(graceMs: number): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    for (const dest of this.dests.values()) {
      // jobs not started yet stay queued on disk; their entries are simply not finished
      for (const j of dest.queue.splice(0)) j.resolve(new Map());
    }
    const all = Promise.allSettled([...this.inFlight]);
    let t: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((r) => (t = setTimeout(r, graceMs)))]);
    if (t) clearTimeout(t);
    for (const dest of this.dests.values()) {
      for (const s of dest.idle) s.quit();
      dest.idle = [];
      if (dest.idleTimer) clearTimeout(dest.idleTimer);
    }
  }

  private schedule(entry: Entry, at: number): void {
    entry.scheduledAt = at;
    this.heap.push(at, entry.env.id);
    if (this.running && this.heap.peek()?.id === entry.env.id) this.arm();
  }

  private arm(): void {
    if (!this.running) return;
    if (this.timer) clearTimeout(this.timer);
    const top = this.heap.peek();
    if (!top) return;
    // Wake at least every second, so that an injected clock that jumps is noticed.
    const delay = Math.min(Math.max(0, top.at - this.d.now()), 1000);
    this.timer = setTimeout(() => this.tick(), delay);
  }

  private tick(): void {
    const now = this.d.now();
    for (let top = this.heap.peek(); top && top.at <= now; top = this.heap.peek()) {
      this.heap.pop();
      const e = this.entries.get(top.id);
      if (!e || e.busy || e.scheduledAt !== top.at) continue; // stale heap item
      this.track(this.attempt(e));
    }
    this.arm();
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private async attempt(entry: Entry): Promise<void> {
    entry.busy = true;
    const { env, state } = entry;
    const outcomes = new Map<number, Outcome>();
    try {
      const paused = this.d.tenancy.guard.state(env.tenant);
      if (paused.state === 'paused' && env.origin !== 'dsn' && !this.drainPeers?.length) {
        // a paused tenant's queued mail stays queued: it is held, not attempted, until the pause ends
        // (checked every minute, so an admin resume takes effect within a minute)
        entry.busy = false;
        this.schedule(entry, Math.min(paused.pausedUntil ?? Infinity, this.d.now() + 60_000));
        return;
      }
      if (this.drainPeers?.length) {
        // draining: every pending recipient goes to a peer relay in one transaction
        const rcpts = state.rcpts.map((r, i) => (r.status === 'pending' ? i : -1)).filter((i) => i >= 0);
        const route: Route = {
          kind: 'domain',
          key: 'handoff',
          domain: 'handoff',
          host: { host: 'peers', port: 0, tls: 'none' },
        };
        const r = await new Promise<Map<number, Outcome>>((resolve) =>
          this.enqueue({ handoff: true, entry, route, rcpts, resolve }),
        );
        for (const [i, o] of r) outcomes.set(i, o);
        await this.finish(entry, outcomes);
        return;
      }
      // group pending recipients by route and by their DSN parameters (nodemailer sends one NOTIFY/ORCPT per transaction)
      const groups = new Map<string, { route: Route; rcpts: number[] }>();
      state.rcpts.forEach((r, i) => {
        if (r.status !== 'pending') return;
        const rc = env.rcpts[i];
        const route = selectRoute(this.d.cfg.routing, domainOf(rc.address));
        const k = `${route.key}|${rc.notify?.join(',') ?? ''}|${rc.orcpt ?? ''}`;
        let g = groups.get(k);
        if (!g) groups.set(k, (g = { route, rcpts: [] }));
        g.rcpts.push(i);
      });
      const results = await Promise.all(
        [...groups.values()].map(
          (g) =>
            new Promise<Map<number, Outcome>>((resolve) =>
              this.enqueue({ entry, route: g.route, rcpts: g.rcpts, resolve }),
            ),
        ),
      );
      for (const r of results) for (const [i, o] of r) outcomes.set(i, o);
      await this.finish(entry, outcomes);
    } catch (e) {
      // Could not record the outcome (disk trouble): keep the message as it was on disk and try again later.
      this.d.log.error(
        { event: 'queue.error', queueId: env.id, err: (e as Error).message },
        'could not record delivery outcome',
      );
      entry.busy = false;
      this.schedule(entry, this.d.now() + this.d.cfg.queue.retry.initialMs);
    }
  }

  private enqueue(job: Job): void {
    if (!this.running) return job.resolve(new Map());
    let dest = this.dests.get(job.route.key);
    if (!dest) {
      this.dests.set(job.route.key, (dest = new Destination(job.route.key, job.route)));
      dest.limits = this.d.tenancy.shaper.limitsFor(job.route.domain);
    }
    dest.queue.push(job);
    this.pump(dest);
  }

  private pump(dest: Destination): void {
    const cfg = this.d.cfg.delivery;
    const cap = Math.min(cfg.perDestinationConcurrency, dest.limits.maxConnections);
    while (dest.queue.length && dest.active < cap) {
      if (this.activeJobs >= cfg.concurrency) {
        this.starved.add(dest);
        return;
      }
      const job = dest.queue.shift()!;
      dest.active++;
      this.activeJobs++;
      this.track(
        this.runJob(dest, job).finally(() => {
          dest.active--;
          this.activeJobs--;
          this.pump(dest);
          if (this.activeJobs < cfg.concurrency && this.starved.size) {
            const list = [...this.starved];
            this.starved.clear();
            for (const s of list) this.pump(s);
          }
        }),
      );
    }
  }

  private hopFailed(queueId: string, hop: Hop, reply: string, msg: string): void {
    this.d.log.info(
      { event: 'hop.failed', queueId, hop: `${hop.name}[${hop.host}]:${hop.port}`, reply },
      msg,
    );
  }

  private backupHops(): Hop[] {
    return this.d.cfg.routing.backups.map((b) => ({
      host: b.host,
      port: b.port,
      name: b.host,
      tls: b.tls,
      credentials: b.credentials,
      kind: 'backup',
    }));
  }

  private async hopsFor(
    route: Route,
  ): Promise<
    | { hops: Hop[] }
    | { permanent: { status: string; reason: string } }
    | { temporary: { status: string; reason: string } }
  > {
    const backups = this.backupHops();
    if (route.kind !== 'mx') {
      const h = route.host;
      return {
        hops: [
          {
            host: h.host,
            port: h.port,
            name: h.host,
            tls: h.tls,
            credentials: h.credentials,
            kind: route.kind,
          },
          ...backups,
        ],
      };
    }
    const res = await this.d.resolver.resolveDestination(route.domain);
    if (res.kind === 'permanent') return { permanent: { status: res.status, reason: res.reason } };
    if (res.kind === 'temporary') {
      return backups.length ? { hops: backups } : { temporary: { status: res.status, reason: res.reason } };
    }
    const hops: Hop[] = [];
    for (const h of res.hosts)
      for (const a of h.addresses)
        hops.push({
          host: a,
          port: this.d.cfg.dns.mxPort,
          name: h.exchange,
          tls: 'opportunistic',
          kind: 'mx',
        });
    return { hops: [...hops, ...backups] };
  }

  private async body(entry: Entry): Promise<Buffer> {
    if (entry.body) return entry.body;
    const b = await this.d.spool.readBody(entry);
    if (Buffer.isBuffer(b)) return b;
    const chunks: Buffer[] = [];
    for await (const c of b) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  private perConnection(dest: Destination): number {
    return Math.min(this.d.cfg.delivery.maxMessagesPerConnection, dest.limits.messagesPerConnection);
  }

  /** An idle session of this destination bound to the same egress address, if any. */
  private takeIdle(dest: Destination, localAddress: string | undefined): OutboundSession | undefined {
    for (let i = dest.idle.length - 1; i >= 0; i--) {
      const s = dest.idle[i];
      if (!s.usable || s.transactions >= this.perConnection(dest)) {
        dest.idle.splice(i, 1);
        s.quit();
        continue;
      }
      if (s.localAddress === localAddress) {
        dest.idle.splice(i, 1);
        return s;
      }
    }
    return undefined;
  }

  private release(dest: Destination, s: OutboundSession): void {
    if (
      !this.running ||
      !s.usable ||
      s.transactions >= this.perConnection(dest) ||
      dest.idle.length >= Math.min(this.d.cfg.delivery.perDestinationConcurrency, dest.limits.maxConnections)
    ) {
      s.quit();
      return;
    }
    dest.idle.push(s);
    if (!dest.idleTimer) {
      const idleMs = this.d.cfg.delivery.connectionIdleMs;
      dest.idleTimer = setInterval(
        () => {
          const cutoff = Date.now() - idleMs;
          dest.idle = dest.idle.filter((x) => (x.lastUsed < cutoff || !x.usable ? (x.quit(), false) : true));
          if (!dest.idle.length) {
            clearInterval(dest.idleTimer);
            dest.idleTimer = undefined;
          }
        },
        Math.max(100, Math.floor(idleMs / 2)),
      );
      dest.idleTimer.unref();
    }
  }

  private async runJob(dest: Destination, job: Job): Promise<void> {
    if (job.handoff) return this.runHandoff(dest, job);
    const { entry, route, rcpts } = job;
    const env = entry.env;
    const out = new Map<number, Outcome>();
    const all = (o: Omit<Outcome, 'route'> & { route?: Outcome['route'] }) => {
      for (const i of rcpts) out.set(i, { route: route.kind, ...o });
    };
    const started = process.hrtime.bigint();
    const shaper = this.d.tenancy.shaper;
    /** Room held on a pool address for this attempt (so concurrent attempts cannot overshoot its caps). */
    let reserved: { pool: string; ip: string } | undefined;
    try {
      const until = shaper.backoffUntil(dest.key);
      const backedOff = until !== undefined && until > this.d.now();
      if (backedOff && this.d.cfg.routing.backups.length === 0) {
        return all({
          result: 'deferred',
          status: '4.4.5',
          reply: `destination backed off after a throttling reply, until ${new Date(until).toISOString()}`,
          notBefore: until,
        });
      }
      const pool = this.d.tenancy.poolOf(env.tenant);
      let egress: { ip: string; ehlo: string; bind: boolean } | undefined;
      if (pool && this.d.tenancy.pools.has(pool)) {
        const pick = this.d.tenancy.pools.pick(pool, rcpts.length);
        if (!pick.ok)
          return all({
            result: 'deferred',
            status: '4.4.5',
            reply: `ip pool ${pool}: ${pick.reason}`,
            notBefore: pick.retryAt,
          });
        egress = { ip: pick.ip, ehlo: pick.ehlo, bind: pick.bind };
        reserved = { pool, ip: pick.ip };
      }
      // while the destination is backed off, only the backup routes are tried
      const plan = backedOff ? { hops: this.backupHops() } : await this.hopsFor(route);
      if ('permanent' in plan)
        return all({ result: 'bounced', status: plan.permanent.status, reply: plan.permanent.reason });
      if ('temporary' in plan)
        return all({ result: 'deferred', status: plan.temporary.status, reply: plan.temporary.reason });
      const body = await this.body(entry);
      const first = env.rcpts[rcpts[0]];
      const envelope = {
        from: env.from,
        to: rcpts.map((i) => env.rcpts[i].address),
        size: body.length,
        eightBit: env.eightBit,
        dsn: { ret: env.dsn.ret, envid: env.dsn.envid, notify: first.notify, orcpt: first.orcpt },
      };
      let last: HopError | undefined;
      if (route.kind === 'mx' && !dest.mxChecked && plan.hops[0]?.kind === 'mx') {
        // shaping rules may name the MX host (e.g. every domain hosted at one provider)
        dest.mxChecked = true;
        dest.limits = shaper.limitsFor(route.domain, plan.hops[0].name);
      }
      const localAddress = egress?.bind ? egress.ip : undefined;
      let reused = this.takeIdle(dest, localAddress);
      for (let h = 0; h < plan.hops.length; h++) {
        const hop = reused?.hop ?? plan.hops[h];
        let session: OutboundSession;
        const wasReused = !!reused;
        try {
          session =
            reused ??
            (await OutboundSession.open(hop, {
              ehloName: egress?.ehlo ?? this.d.cfg.hostname,
              ...(localAddress ? { localAddress } : {}),
              connectTimeoutMs: this.d.cfg.delivery.connectTimeoutMs,
              commandTimeoutMs: this.d.cfg.delivery.commandTimeoutMs,
            }));
        } catch (e) {
          last = e instanceof HopError ? e : new HopError('connect', undefined, (e as Error).message);
          if (isThrottleReply(last.code, last.reply)) shaper.onThrottle(dest.key);
          this.hopFailed(env.id, hop, last.reply, 'next hop unavailable');
          continue;
        }
        reused = undefined;
        let tx: TxResult;
        for (let i = 0; i < 1000; i++) {
          const t = shaper.takeSend(dest.key, dest.limits);
          if (t.ok || !this.running) break;
          await new Promise((r) => setTimeout(r, Math.min(t.waitMs, 1000)));
        }
        try {
          tx = await session.send(envelope, body);
        } catch (e) {
          const he = e instanceof HopError ? e : new HopError('data', undefined, (e as Error).message);
          if (isThrottleReply(he.code, he.reply)) shaper.onThrottle(dest.key);
          if (wasReused && he.code === undefined && he.stage !== 'data') {
            h--; // a cached session that died while idle: dial the same hop again
            continue;
          }
          last = he;
          if (he.stage === 'data' || (he.stage === 'mail' && !he.temporary)) {
            return all({
              result: he.temporary ? 'deferred' : 'bounced',
              status: statusFromReply(he.code, he.reply, '4.4.2'),
              reply: he.reply,
              remoteMta: hop.name,
              route: hop.kind === 'backup' ? 'backup' : route.kind,
            });
          }
          this.hopFailed(env.id, hop, he.reply, 'next hop refused the transaction');
          continue;
        }
        this.release(dest, session);
        const delivered = tx.rcpts.filter((r) => r.ok).length;
        if (delivered) shaper.onSuccess(dest.key);
        if (egress && pool && delivered) {
          this.d.tenancy.pools.record(pool, egress.ip, delivered);
          this.d.metrics.egressSent.inc({ pool, ip: egress.ip }, delivered);
        }
        if (tx.rcpts.some((r) => !r.ok && isThrottleReply(r.code, r.reply))) shaper.onThrottle(dest.key);
        tx.rcpts.forEach((r, k) => {
          const kind = hop.kind === 'backup' ? 'backup' : route.kind;
          if (r.ok)
            out.set(rcpts[k], {
              result: 'delivered',
              status: '2.0.0',
              reply: r.reply,
              remoteMta: hop.name,
              route: kind,
            });
          else {
            const temporary = r.code === undefined || r.code < 500;
            out.set(rcpts[k], {
              result: temporary ? 'deferred' : 'bounced',
              status: statusFromReply(r.code, r.reply, '4.0.0'),
              reply: r.reply,
              remoteMta: hop.name,
              route: kind,
            });
          }
        });
        return;
      }
      // Every hop failed before a transaction could start (connect, greeting, EHLO, TLS, AUTH, or a 4xx to
      // MAIL): that is a problem of the route, not of the recipients, so defer, even on a 5xx greeting or a
      // refused login; maxAge bounds how long.
      const reason = last ? last.reply : 'no usable next hop';
      all({
        result: 'deferred',
        status: last?.code ? statusFromReply(last.code, reason, '4.4.1').replace(/^5/, '4') : '4.4.1',
        reply: reason,
      });
    } catch (e) {
      all({ result: 'deferred', status: '4.3.0', reply: `local error: ${(e as Error).message}` });
    } finally {
      if (reserved) this.d.tenancy.pools.release(reserved.pool, reserved.ip, rcpts.length);
      const secs = Number(process.hrtime.bigint() - started) / 1e9;
      const anyDelivered = [...out.values()].some((o) => o.result === 'delivered');
      this.d.metrics.deliveryDuration.observe(
        { result: anyDelivered ? 'delivered' : ([...out.values()][0]?.result ?? 'deferred') },
        secs,
      );
      job.resolve(out);
    }
  }

  // ---- drain: hand queued mail to peer relays ----

  private drainPeers?: Hop[];
  /** Recipients handed to peers since the drain began (this process). */
  handedOff = 0;

  /** Starts handing every queued message to the peers (in order, the next one when one fails). */
  startDrain(peers: Hop[]): void {
    this.drainPeers = peers;
    this.flush();
  }

  /** Back to normal delivery (a drain asked again without peers). */
  stopHandoff(): void {
    this.drainPeers = undefined;
  }

  get draining(): boolean {
    return this.drainPeers !== undefined;
  }

  /** The metadata a peer needs to carry on where we left off; only peers may send it (inbound checks AUTH). */
  static handoffHeader(env: Envelope, state: DeliveryState, rcpts: number[]): Buffer {
    const meta: HandoffMeta = {
      v: 1,
      tenant: env.tenant,
      arrivedAt: env.arrivedAt,
      origin: env.origin,
      dsn: env.dsn,
      delayWarned: state.delayWarned,
      attempts: state.attempts,
      rcpts: rcpts.map((i) => ({
        ...env.rcpts[i],
        attempts: state.rcpts[i].attempts,
        lastReply: state.rcpts[i].lastReply,
      })),
      from: env.id,
    };
    return Buffer.from(`${HANDOFF_HEADER}: ${Buffer.from(JSON.stringify(meta)).toString('base64url')}\r\n`);
  }

  private async runHandoff(dest: Destination, job: Job): Promise<void> {
    const { entry, rcpts } = job;
    const env = entry.env;
    const out = new Map<number, Outcome>();
    const retryAt = this.d.now() + 5000;
    try {
      const peers = this.drainPeers ?? [];
      const body = Buffer.concat([
        DeliveryEngine.handoffHeader(env, entry.state, rcpts),
        await this.body(entry),
      ]);
      let last = 'no peer relay given';
      for (const hop of peers) {
        let session: OutboundSession;
        try {
          session =
            this.takeIdle(dest, undefined) ??
            (await OutboundSession.open(hop, {
              ehloName: this.d.cfg.hostname,
              connectTimeoutMs: this.d.cfg.delivery.connectTimeoutMs,
              commandTimeoutMs: this.d.cfg.delivery.commandTimeoutMs,
            }));
        } catch (e) {
          last = e instanceof HopError ? e.reply : (e as Error).message;
          continue;
        }
        let tx: TxResult;
        try {
          tx = await session.send(
            {
              from: env.from,
              to: rcpts.map((i) => env.rcpts[i].address),
              size: body.length,
              eightBit: env.eightBit,
            },
            body,
          );
        } catch (e) {
          last = e instanceof HopError ? e.reply : (e as Error).message;
          continue;
        }
        this.release(dest, session);
        tx.rcpts.forEach((r, k) =>
          out.set(
            rcpts[k],
            r.ok
              ? {
                  result: 'delivered',
                  status: '2.0.0',
                  reply: r.reply,
                  remoteMta: hop.name,
                  route: 'handoff',
                }
              : {
                  result: 'deferred',
                  status: '4.0.0',
                  reply: r.reply,
                  remoteMta: hop.name,
                  route: 'handoff',
                  retryAt,
                },
          ),
        );
        return;
      }
      for (const i of rcpts)
        out.set(i, {
          result: 'deferred',
          status: '4.4.1',
          reply: `hand-off failed: ${last}`,
          route: 'handoff',
          retryAt,
        });
    } catch (e) {
      for (const i of rcpts)
        out.set(i, {
          result: 'deferred',
          status: '4.3.0',
          reply: `hand-off failed: ${(e as Error).message}`,
          route: 'handoff',
          retryAt,
        });
    } finally {
      job.resolve(out);
    }
  }

  /** Applies outcomes: state, metrics, logs, DSNs, then saves or removes. Nothing is forgotten before it is durable. */
  private async finish(entry: Entry, outcomes: Map<number, Outcome>): Promise<void> {
    const env = entry.env;
    // Work on a copy: the entry's state changes only once the new state (and any DSN) is on disk, so a
    // failed write leaves the message exactly as it was, to be tried again (a bounce is never forgotten).
    const state: DeliveryState = structuredClone(entry.state);
    const now = this.d.now();
    const failed: DsnRecipient[] = [];
    if (outcomes.size) state.attempts++;
    for (const [i, o] of outcomes) {
      const r = state.rcpts[i];
      const rc = env.rcpts[i];
      r.attempts++;
      r.lastAttemptAt = now;
      r.lastReply = o.reply;
      r.lastStatus = o.status;
      if (o.remoteMta) r.remoteMta = o.remoteMta;
      const logBase = {
        queueId: env.id,
        tenant: env.tenant,
        from: env.from,
        to: rc.address,
        route: o.route,
        status: o.status,
        reply: o.reply,
        remoteMta: o.remoteMta,
        attempt: r.attempts,
      };
      if (o.result === 'delivered' && o.route === 'handoff') {
        r.status = 'delivered';
        this.handedOff++;
        this.d.metrics.delivered.inc({ tenant: env.tenant, route: 'handoff' });
        this.d.log.info({ event: 'handed-off', ...logBase }, 'handed off to a peer relay');
      } else if (o.result === 'delivered') {
        r.status = 'delivered';
        this.d.metrics.delivered.inc({ tenant: env.tenant, route: o.route });
        this.d.log.info({ event: 'delivered', ...logBase }, 'delivered');
      } else if (o.result === 'bounced') {
        r.status = 'bounced';
        this.d.metrics.bounced.inc({ tenant: env.tenant, kind: isHardBounce(o.status) ? 'hard' : 'soft' });
        this.d.log.info({ event: 'bounced', ...logBase }, 'bounced');
        if (dsnRecipientsWanted(rc.notify?.join(','), 'failed'))
          failed.push({
            address: rc.address,
            orcpt: rc.orcpt,
            action: 'failed',
            status: o.status,
            diagnostic: o.reply,
            remoteMta: o.remoteMta,
            lastAttemptAt: new Date(now),
          } as DsnRecipient);
      } else {
        this.d.metrics.deferred.inc({ tenant: env.tenant });
        this.d.log.info({ event: 'deferred', ...logBase }, 'deferred');
      }
    }
    // The tenant's reputation: our own DSNs do not count (a bad sender address is not a bad list).
    if (env.origin !== 'dsn') {
      for (const [i, o] of outcomes)
        if (o.route !== 'handoff')
          await this.d.tenancy.onOutcome(env.tenant, env.rcpts[i].address, o.result, o.status, o.reply);
    }
    let pending = state.rcpts.map((r, i) => (r.status === 'pending' ? i : -1)).filter((i) => i >= 0);
    let next: number | undefined;
    const retry = this.d.tenancy.retryPolicy(env.tenant);
    if (pending.length) {
      if (!this.running && outcomes.size === 0) {
        // shutting down: the attempt never ran; leave the message as it is on disk
        entry.busy = false;
        return;
      }
      const plan = scheduleNext({
        attempts: Math.max(1, state.attempts),
        arrivedAt: env.arrivedAt,
        now,
        policy: retry.policy,
        maxAgeMs: retry.maxAgeMs,
      });
      if (plan.kind === 'expire') {
        // this was the last attempt: what is still pending bounces as expired (RFC 3463 4.4.7)
        const hours = Math.round((now - env.arrivedAt) / 3_600_000);
        for (const i of pending) {
          const r = state.rcpts[i];
          const rc = env.rcpts[i];
          r.status = 'expired';
          const reason = `delivery time expired after ${hours}h; last error: ${r.lastReply ?? 'none'}`;
          this.d.metrics.bounced.inc({ tenant: env.tenant, kind: 'expired' });
          this.d.log.info(
            {
              event: 'expired',
              queueId: env.id,
              tenant: env.tenant,
              from: env.from,
              to: rc.address,
              status: '4.4.7',
              reply: r.lastReply,
              attempt: r.attempts,
            },
            'expired',
          );
          if (dsnRecipientsWanted(rc.notify?.join(','), 'failed'))
            failed.push({
              address: rc.address,
              orcpt: rc.orcpt,
              action: 'failed',
              status: '4.4.7',
              diagnostic: reason,
              remoteMta: r.remoteMta,
              lastAttemptAt: r.lastAttemptAt ? new Date(r.lastAttemptAt) : undefined,
            } as DsnRecipient);
        }
        pending = [];
      } else {
        const notBefore = Math.max(0, ...[...outcomes.values()].map((o) => o.notBefore ?? 0));
        const overrides = [...outcomes.values()]
          .filter((o) => o.retryAt !== undefined)
          .map((o) => o.retryAt!);
        next = overrides.length ? Math.min(...overrides) : Math.max(plan.at, notBefore);
        state.nextAttemptAt = next;
      }
    }
    if (pending.length) {
      const warnAfter = this.d.cfg.queue.delayWarningAfterMs;
      if (warnAfter !== undefined && !state.delayWarned && now - env.arrivedAt >= warnAfter) {
        state.delayWarned = true;
        const delayed = pending
          .filter((i) => dsnRecipientsWanted(env.rcpts[i].notify?.join(','), 'delayed'))
          .map(
            (i) =>
              ({
                address: env.rcpts[i].address,
                orcpt: env.rcpts[i].orcpt,
                action: 'delayed',
                status: state.rcpts[i].lastStatus ?? '4.0.0',
                diagnostic: state.rcpts[i].lastReply,
                remoteMta: state.rcpts[i].remoteMta,
                lastAttemptAt: new Date(now),
                willRetryUntil: new Date(env.arrivedAt + retry.maxAgeMs),
              }) as DsnRecipient,
          );
        if (delayed.length) await this.queueDsn(entry, delayed);
      }
    }
    if (failed.length) await this.queueDsn(entry, failed);
    if (pending.length) {
      await this.d.spool.saveState(env.id, state);
      entry.state = state;
      entry.busy = false;
      this.schedule(entry, next!);
    } else {
      await this.d.spool.remove(env.id, env.size);
      entry.state = state;
      this.entries.delete(env.id);
      this.countTenant(env, -1);
      if (entry.body) this.cachedBytes -= entry.body.length;
      entry.body = undefined;
    }
  }

  /** Queues a DSN to the original sender through our own spool. Never to the null sender; never about a DSN. */
  private async queueDsn(entry: Entry, recipients: DsnRecipient[]): Promise<void> {
    const env = entry.env;
    if (env.from === '' || env.origin === 'dsn') {
      this.d.log.info(
        {
          event: 'dsn.suppressed',
          queueId: env.id,
          reason: env.from === '' ? 'null sender' : 'message is a DSN',
        },
        'no DSN for this message',
      );
      return;
    }
    const now = this.d.now();
    const raw = renderDsn({
      reportingMta: this.d.cfg.hostname,
      queueId: env.id,
      arrivalDate: new Date(env.arrivedAt),
      envid: env.dsn.envid,
      ret: env.dsn.ret,
      sender: env.from,
      recipients,
      original: await this.body(entry),
      now: new Date(now),
      messageIdDomain: this.d.cfg.hostname,
    });
    const id = newQueueId(now);
    const dsnEnv: Envelope = {
      v: 1,
      id,
      tenant: env.tenant,
      pool: env.pool,
      arrivedAt: now,
      from: '',
      rcpts: [{ address: env.from }],
      dsn: {},
      size: raw.length,
      eightBit: /[\x80-\xff]/.test(raw.toString('latin1')),
      smtpUtf8: /[\u0080-\uffff]/.test(env.from),
      origin: 'dsn',
      client: { address: '127.0.0.1', helo: this.d.cfg.hostname, listener: 'internal' },
    };
    const bodyOffset = await this.d.spool.write(dsnEnv, [raw], { internal: true });
    const action = recipients[0].action;
    this.d.metrics.dsnSent.inc({ action });
    this.d.log.info(
      {
        event: 'dsn.queued',
        queueId: id,
        about: env.id,
        to: env.from,
        action,
        recipients: recipients.length,
      },
      'DSN queued',
    );
    this.add({ env: dsnEnv, state: initialState(dsnEnv, now), bodyOffset }, raw);
  }
}
