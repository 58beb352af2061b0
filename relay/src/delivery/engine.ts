/**
 * The delivery engine: schedules attempts from the slim queue index, loads a message's envelope and state
 * from the spool when it becomes due (at most `activeLimit` at once), groups its recipients by route into
 * transactions run on reused sessions within per-destination and global caps, and applies the outcome
 * durably (DSN into our own queue, state file or removal) before it forgets anything. It reaches the
 * spool only through the SpoolStore interface.
 *
 * This file is the scheduling loop. The decisions of one attempt (jobs by route, pause holds, load
 * failures, damaged copies) are pure functions in attempt.ts; applying outcomes is outcomes.ts, running
 * a transaction transport.ts (handoff.ts while draining), bulk admin operations bulk.ts.
 */
import type { Hop } from '../outbound.js';
import type { DsnRecipient } from '../dsn.js';
import {
  MAX_BUFFERED_BODY,
  SpoolCorruptError,
  type QueuedEntry,
  type SpooledMessage,
} from '../spool/types.js';
import { tagsReturnPath } from '../feedback/return-path.js';
import { damagedCopyRecipients, isGone, loadError, pauseHold, pendingDomains, planJobs } from './attempt.js';
import { applyOutcomes, reportOutcomes } from './outcomes.js';
import { outcomeEvents } from '../events/from-outcomes.js';
import { writeDsn } from './bounces.js';
import { handoffHeader, runHandoff } from './handoff.js';
import { F_ATTEMPTED, F_BUSY, F_DSN, F_HELD, QueueIndex } from './queue-index.js';
import { Destination } from './sessions.js';
import { runDelivery, type JobContext } from './transport.js';
import type { ActiveMessage, EngineDeps, Job, Outcome } from './types.js';
import { BulkOps } from './bulk.js';
import { withSignatures } from '../dkim/stored.js';

/** Messages loaded (envelope and state in memory) at once, as Postfix's qmgr_message_active_limit. */
export const ACTIVE_LIMIT = 10_000;
const MAX_CACHED_BYTES = 64 * 1024 * 1024;
/** Due messages looked at per timer turn, so that a million due at once never blocks the event loop long. */
const TICK_BUDGET = 2000;

export { pendingDomains } from './attempt.js';

export class DeliveryEngine extends BulkOps {
  private readonly dests = new Map<string, Destination>();
  private readonly starved = new Set<Destination>();
  private activeJobs = 0;
  /** Messages being attempted (or deleted). */
  private busyCount = 0;
  private timer?: NodeJS.Timeout;
  private running = false;
  private inFlight = new Set<Promise<void>>();
  private cachedBytes = 0;
  private readonly ctx: JobContext;
  private drainPeers?: Hop[];
  /** Recipients handed to peers since the drain began (this process). */
  handedOff = 0;
  /** While the background scan of the spool runs: states saved meanwhile, ids removed meanwhile. */
  private recovery?: { removed: Set<string> };

  constructor(
    d: EngineDeps,
    readonly activeLimit = ACTIVE_LIMIT,
  ) {
    super(d, new QueueIndex(), new Map());
    this.ctx = {
      d,
      running: () => this.running,
      bodyOf: (job) => () =>
        withSignatures(
          job.msg.env,
          job.msg.body ? Promise.resolve(job.msg.body) : this.d.spool.readBody(job.msg),
        ),
    };
  }

  /** Messages being attempted now (at most activeLimit) and messages loaded in memory. */
  get active(): { attempting: number; loaded: number } {
    return { attempting: this.busyCount, loaded: this.loaded.size };
  }

  get recovering(): boolean {
    return this.recovery !== undefined || this.recoveryFailed;
  }

  get draining(): boolean {
    return this.drainPeers !== undefined;
  }

  stats(): { depth: number; byTenant: Map<string, number>; oldestArrival?: number; active: number } {
    return { ...this.figures(), active: this.activeJobs };
  }

  /** Adds a durably queued message. `body` (the raw message, when small and at hand) saves a read. */
  add(msg: SpooledMessage, body?: Buffer): void {
    this.insert(msg, this.loaded.size < this.activeLimit, body);
  }

  private insert(msg: SpooledMessage, keep: boolean, body?: Buffer): boolean {
    const { env, state } = msg;
    if (this.index.has(env.id)) return false;
    const now = this.d.now();
    const s = this.index.insert(env.id, {
      nextAt: this.drainPeers ? Math.min(now, state.nextAttemptAt) : state.nextAttemptAt,
      arrivedAt: env.arrivedAt,
      size: env.size,
      attempts: state.attempts,
      tenant: env.tenant,
      domains: pendingDomains(msg),
      flags: env.origin === 'dsn' ? F_DSN : 0,
    });
    this.countTenant(env.tenant, env.size, 1);
    if (keep) {
      const a: ActiveMessage = { env, state, bodyOffset: msg.bodyOffset };
      if (body && body.length <= MAX_BUFFERED_BODY && this.cachedBytes + body.length <= MAX_CACHED_BYTES) {
        a.body = body;
        this.cachedBytes += body.length;
      }
      this.loaded.set(env.id, a);
    }
    if (this.running && this.index.peek() === s) this.arm();
    return true;
  }

  /** Indexes a message found by the start-up scan; its envelope and state are read when it becomes due. */
  private insertEntry(e: QueuedEntry): void {
    if (this.index.has(e.id)) return;
    const s = this.index.insert(e.id, {
      nextAt: this.drainPeers ? Math.min(this.d.now(), e.nextAt) : e.nextAt,
      arrivedAt: e.arrivedAt,
      size: e.size,
      attempts: e.attempts,
      tenant: e.tenant,
      domains: e.domains,
      flags: e.dsn ? F_DSN : 0,
    });
    this.countTenant(e.tenant, e.size, 1);
    if (this.running && this.index.peek() === s) this.arm();
  }

  /** Drops a message's loaded envelope, state and body (it goes back to waiting on disk). */
  protected unload(id: string): void {
    const a = this.loaded.get(id);
    if (a?.body) this.cachedBytes -= a.body.length;
    this.loaded.delete(id);
  }

  protected partiallyRemoved(s: number, m: ActiveMessage): void {
    this.index.update(s, { attempts: m.state.attempts, domains: pendingDomains(m) });
  }

  /** The message left the queue. */
  protected forget(id: string): void {
    const s = this.index.slot(id);
    if (s === undefined) return;
    this.countTenant(this.index.tenantOf(s), this.index.size[s], -1);
    this.index.remove(id);
    this.unload(id);
    this.recovery?.removed.add(id);
  }

  /**
   * Indexes the spool in the background (after a start, while the relay already listens): messages the
   * engine already knows (accepted meanwhile) are not added twice. Yields to the event loop between batches.
   */
  async recover(source: AsyncIterable<QueuedEntry[]>, onScanned?: (n: number) => void): Promise<number> {
    const rec = (this.recovery = { removed: new Set<string>() });
    let n = 0;
    try {
      for await (const batch of source) {
        n += batch.length;
        onScanned?.(batch.length);
        for (const e of batch) if (!rec.removed.has(e.id)) this.insertEntry(e);
        if (!this.running) break;
        await new Promise((r) => setImmediate(r));
      }
    } catch (e) {
      // Part of the spool was not read: its queue stays unknown (`recovering` true for good), so no drain is
      // declared finished and no volume released over mail still on disk. A restart reads it again.
      this.recoveryFailed = true;
      throw e;
    } finally {
      this.recovery = undefined;
      this.arm();
    }
    return n;
  }

  /** The start-up scan failed: the queue on disk is not fully known until a restart. */
  private recoveryFailed = false;

  start(): void {
    this.running = true;
    this.arm();
  }

  /** After a config reload: destination limits are recomputed from the new shaping rules. */
  reconfigure(): void {
    for (const dest of this.dests.values()) {
      dest.shape(this.d.tenancy.shaper);
      dest.mxChecked = false;
      this.pump(dest);
    }
  }

  /** Makes every queued message due now (admin flush, drain). Held messages are checked again. */
  flush(match?: (slot: number) => boolean): number {
    const now = this.d.now();
    const ix = this.index;
    let n = 0;
    for (let s = 0; s < ix.highWater; s++) {
      if (ix.id(s) === undefined || ix.flags[s] & F_BUSY || (match && !match(s))) continue;
      ix.flags[s] &= ~F_HELD;
      ix.schedule(s, now);
      n++;
    }
    this.arm();
    return n;
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
      // jobs not started yet stay queued on disk; their messages are simply not finished
      for (const j of dest.queue.splice(0)) j.resolve(new Map());
    }
    const all = Promise.allSettled([...this.inFlight]);
    let t: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((r) => (t = setTimeout(r, graceMs)))]);
    if (t) clearTimeout(t);
    for (const dest of this.dests.values()) dest.closeIdle();
  }

  private arm(): void {
    if (!this.running) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const top = this.index.peek();
    if (top < 0 || this.busyCount >= this.activeLimit) return; // a finishing attempt arms again
    // Wake at least every second, so that an injected clock that jumps is noticed.
    const delay = Math.min(Math.max(0, this.index.nextAt[top] - this.d.now()), 1000);
    this.timer = setTimeout(() => this.tick(), delay);
  }

  /** Until when a due message is held without loading it (paused tenant, suspension), or undefined. */
  protected holdUntil(s: number, now: number): number | undefined {
    if (this.index.flags[s] & F_DSN || this.drainPeers?.length) return undefined;
    // a paused tenant's queued mail is held, not attempted, until the pause ends
    return pauseHold(this.d.tenancy.guard.state(this.index.tenantOf(s)), now) ?? this.suspendedUntil(s, now);
  }

  private tick(): void {
    const now = this.d.now();
    const ix = this.index;
    let budget = TICK_BUDGET;
    for (let s = ix.peek(); s >= 0 && ix.nextAt[s] <= now; s = ix.peek()) {
      if (this.busyCount >= this.activeLimit) break;
      if (--budget < 0) {
        // a large batch due at once (a restart, a flush, held mail checked again): let I/O run in between
        if (this.timer) clearTimeout(this.timer);
        this.timer = setTimeout(() => this.tick(), 0);
        return;
      }
      if (ix.flags[s] & F_BUSY) {
        ix.unschedule(s); // taken by an admin operation, which schedules it again when done
        continue;
      }
      const hold = this.holdUntil(s, now);
      if (hold !== undefined) {
        ix.flags[s] |= F_HELD;
        ix.schedule(s, hold);
        continue;
      }
      ix.flags[s] = (ix.flags[s] & ~F_HELD) | F_BUSY;
      ix.unschedule(s);
      this.busyCount++;
      this.track(this.attempt(ix.id(s)!));
    }
    this.arm();
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /** Loads a message from the spool; undefined (and forgotten) when it is gone. */
  protected async load(id: string): Promise<ActiveMessage | undefined> {
    try {
      return await this.d.spool.load(id);
    } catch (e) {
      if (isGone(e)) {
        this.forget(id);
        return undefined;
      }
      throw loadError(e, id);
    }
  }

  /** Ends an attempt: back to waiting at `next` (unloaded), or gone. */
  private settle(id: string, next?: number): void {
    const s = this.index.slot(id);
    if (s !== undefined) {
      this.index.flags[s] &= ~F_BUSY;
      if (next !== undefined) this.index.schedule(s, next);
      else if (this.index.nextAt[s] > this.d.now()) this.index.schedule(s, this.index.nextAt[s]);
      else this.index.schedule(s, this.d.now() + this.d.cfg.queue.retry.initialMs);
    }
    this.unload(id);
  }

  private async attempt(id: string): Promise<void> {
    let m: ActiveMessage | undefined;
    let next: number | undefined;
    try {
      m = this.loaded.get(id) ?? (await this.load(id));
      if (!m) return;
      this.loaded.set(id, m);
      if (!m.body) {
        // the stored body must be what the envelope says before anything is sent (throws SpoolCorruptError)
        const b = await this.d.spool.readBody(m);
        if (!Buffer.isBuffer(b)) b.destroy();
        else if (this.cachedBytes + b.length <= MAX_CACHED_BYTES) {
          m.body = b;
          this.cachedBytes += b.length;
        }
      }
      const outcomes = new Map<number, Outcome>();
      const msg = m;
      const jobs = planJobs(msg, {
        draining: !!this.drainPeers?.length,
        routing: this.d.cfg.routing,
        held: (i) => this.heldRecipient(msg, i),
        perRecipient: tagsReturnPath(this.d.cfg, msg.env),
      });
      const results = await Promise.all(
        jobs.map((j) => new Promise<Map<number, Outcome>>((resolve) => this.enqueue({ ...j, resolve }))),
      );
      for (const r of results) for (const [i, o] of r) outcomes.set(i, o);
      next = await this.finish(m, outcomes);
    } catch (caught) {
      let e = caught;
      if (e instanceof SpoolCorruptError) {
        try {
          await this.corrupt(id, m, e.message);
          return;
        } catch (e2) {
          e = e2;
        }
      }
      // Could not record the outcome (disk trouble): keep the message as it was on disk and try again later.
      this.d.log.error(
        { event: 'queue.error', queueId: id, err: (e as Error).message },
        'could not record delivery outcome',
      );
      next = this.d.now() + this.d.cfg.queue.retry.initialMs;
    } finally {
      this.busyCount--;
      if (this.index.has(id)) this.settle(id, next);
      else this.unload(id);
      this.arm();
    }
  }

  /** A stored copy that is not what its envelope says: never sent; set aside, and the sender is told. */
  private async corrupt(id: string, m: ActiveMessage | undefined, reason: string): Promise<void> {
    const s = this.index.slot(id);
    if (s === undefined) return;
    if (m) {
      const failed = damagedCopyRecipients(m, this.d.now());
      if (failed.length) await this.queueDsn(m, failed);
    }
    const q = await this.d.spool.moveAside(id, m?.env.size ?? this.index.size[s], reason);
    this.d.metrics.spoolCorrupt.inc({ stage: 'delivery' });
    this.d.log.error(
      { event: 'spool.corrupt', stage: 'delivery', queueId: id, reason, movedTo: q.movedTo ?? null },
      'queued copy damaged: not sent, set aside',
    );
    this.forget(id);
  }

  private enqueue(job: Job): void {
    if (!this.running) return job.resolve(new Map());
    let dest = this.dests.get(job.route.key);
    if (!dest) {
      this.dests.set(job.route.key, (dest = new Destination(job.route.key, job.route)));
      dest.shape(this.d.tenancy.shaper);
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
      const run = job.handoff
        ? runHandoff(this.ctx, dest, job, this.drainPeers ?? [])
        : runDelivery(this.ctx, dest, job);
      this.track(
        run.finally(() => {
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

  // ---- drain: hand queued mail to peer relays ----

  /** Starts handing every queued message to the peers (in order, the next one when one fails). */
  startDrain(peers: Hop[]): void {
    this.drainPeers = peers;
    this.flush();
  }

  /** Back to normal delivery (a drain asked again without peers). */
  stopHandoff(): void {
    this.drainPeers = undefined;
  }

  /** Kept for callers of the former queue.ts. */
  static handoffHeader = handoffHeader;

  /**
   * Applies outcomes (see applyOutcomes): metrics, logs, DSNs, then saves or removes. Nothing is forgotten
   * before it is durable. Returns the next attempt time, or undefined when the message left the queue or
   * stays as it was.
   */
  private async finish(m: ActiveMessage, outcomes: Map<number, Outcome>): Promise<number | undefined> {
    const env = m.env;
    const now = this.d.now();
    const retry = this.d.tenancy.retryPolicy(env.tenant);
    const plan = applyOutcomes({
      env,
      state: m.state,
      outcomes,
      now,
      retry,
      delayWarningAfterMs: this.d.cfg.queue.delayWarningAfterMs,
      running: this.running,
    });
    const st = plan.state;
    this.handedOff += reportOutcomes(this.d, env, outcomes, plan);
    if (this.d.events) for (const e of outcomeEvents(env, outcomes, plan, now)) this.d.events.emit(e);
    // The tenant's reputation: our own DSNs do not count (a bad sender address is not a bad list).
    if (env.origin !== 'dsn') {
      for (const [i, o] of outcomes)
        if (o.route !== 'handoff')
          await this.d.tenancy.onOutcome(env.tenant, env.rcpts[i].address, o.result, o.status, o.reply);
    }
    if (plan.next === 'unchanged') return this.index.nextAt[this.index.slot(env.id)!];
    if (plan.delayed.length) await this.queueDsn(m, plan.delayed);
    if (plan.failed.length) await this.queueDsn(m, plan.failed);
    if (plan.next === 'remove') {
      await this.d.spool.remove(env.id, env.size);
      m.state = st;
      this.forget(env.id);
      return undefined;
    }
    await this.d.spool.saveState(env.id, st);
    m.state = st;
    const s = this.index.slot(env.id)!;
    this.index.update(s, { attempts: st.attempts, domains: pendingDomains(m) });
    if (st.attempts > 0) this.index.flags[s] |= F_ATTEMPTED;
    return plan.next;
  }

  /** Queues a DSN about `m` through our own spool and indexes it. */
  protected async queueDsn(m: ActiveMessage, recipients: DsnRecipient[]): Promise<boolean> {
    const dsn = await writeDsn(this.d, m, recipients);
    if (dsn) this.add(dsn.msg, dsn.raw);
    return !!dsn;
  }
}
