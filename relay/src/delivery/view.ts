/**
 * What the admin API and the metrics see of the queue, answered from the slim index (counters, flags,
 * interned tenants and domains); envelopes are loaded from disk only for the page of messages returned.
 */
import { dsnRecipientsWanted, type DsnRecipient } from '../dsn.js';
import { F_ATTEMPTED, F_BUSY, type QueueIndex } from './queue-index.js';
import type { ActiveMessage, EngineDeps } from './types.js';

export type QueueState = 'new' | 'deferred' | 'active';

export interface MessageView {
  id: string;
  tenant: string;
  from: string;
  arrivedAt: number;
  nextAttemptAt: number;
  attempts: number;
  rcpts: { address: string; status: string; lastReply?: string }[];
}

export abstract class QueueView {
  /** Messages and bytes queued per tenant: O(1) for quota checks. */
  private readonly tenantUse = new Map<string, { messages: number; bytes: number }>();

  constructor(
    protected readonly d: EngineDeps,
    protected readonly index: QueueIndex,
    /** Envelopes and states in memory: messages being attempted, or just accepted. */
    protected readonly loaded: Map<string, ActiveMessage>,
  ) {}

  protected abstract forget(id: string): void;
  protected abstract unload(id: string): void;
  protected abstract load(id: string): Promise<ActiveMessage | undefined>;
  /** True when a DSN was queued (none for the null sender or about a DSN). */
  protected abstract queueDsn(m: ActiveMessage, recipients: DsnRecipient[]): Promise<boolean>;

  protected countTenant(tenant: string, size: number, sign: 1 | -1): void {
    let u = this.tenantUse.get(tenant);
    if (!u) this.tenantUse.set(tenant, (u = { messages: 0, bytes: 0 }));
    u.messages += sign;
    u.bytes += sign * size;
  }

  /** Messages and bytes a tenant has queued: O(1), for quota checks. */
  tenantUsage(tenant: string): { messages: number; bytes: number } {
    return this.tenantUse.get(tenant) ?? { messages: 0, bytes: 0 };
  }

  protected stateOf(s: number): QueueState {
    const f = this.index.flags[s];
    return f & F_BUSY ? 'active' : f & F_ATTEMPTED ? 'deferred' : 'new';
  }

  /** Depth, depth per tenant and the oldest arrival (one pass over a typed array). */
  protected figures(): { depth: number; byTenant: Map<string, number>; oldestArrival?: number } {
    const byTenant = new Map<string, number>();
    for (const [t, u] of this.tenantUse) if (u.messages > 0) byTenant.set(t, u.messages);
    const ix = this.index;
    let oldest = Infinity;
    for (let s = 0; s < ix.highWater; s++)
      if (ix.arrivedAt[s] < oldest && ix.id(s) !== undefined) oldest = ix.arrivedAt[s];
    return { depth: ix.count, byTenant, ...(oldest !== Infinity ? { oldestArrival: oldest } : {}) };
  }

  /** Queue summary by tenant, destination domain (messages with a pending recipient there) and state. */
  summary(): {
    depth: number;
    byTenant: Record<string, number>;
    byDomain: Record<string, number>;
    byState: Record<QueueState, number>;
  } {
    const ix = this.index;
    const byDomain: Record<string, number> = {};
    const byState = { new: 0, deferred: 0, active: 0 };
    for (let s = 0; s < ix.highWater; s++) {
      if (ix.id(s) === undefined) continue;
      byState[this.stateOf(s)]++;
      const ds = ix.domainsOf(s);
      for (let k = 0; k < ds.length; k++) {
        const name = ix.domainNames.names[ds[k]];
        byDomain[name] = (byDomain[name] ?? 0) + 1;
      }
    }
    return { depth: ix.count, byTenant: Object.fromEntries(this.figures().byTenant), byDomain, byState };
  }

  /** Slots matching a tenant and/or a pending recipient's domain (undefined = any). */
  protected matching(tenant?: string, domain?: string): number[] {
    const ix = this.index;
    const t = tenant === undefined ? 0 : ix.tenants.find(tenant);
    const dm = domain === undefined ? 0 : ix.domainNames.find(domain);
    if (t === undefined || dm === undefined) return [];
    const out: number[] = [];
    for (let s = 0; s < ix.highWater; s++) {
      if (ix.id(s) === undefined) continue;
      if (t && ix.tenant[s] !== t) continue;
      if (dm && !ix.hasDomain(s, dm)) continue;
      out.push(s);
    }
    return out;
  }

  /** Pages through queued messages in queue-id (arrival) order, after the id `after`. */
  async page(opts: {
    after?: string;
    limit: number;
    tenant?: string;
    domain?: string;
    state?: string;
  }): Promise<{
    messages: MessageView[];
    next?: string;
  }> {
    const ix = this.index;
    // the smallest limit+1 ids after `after`, kept sorted: one pass, no sort of the whole queue
    const keep = opts.limit + 1;
    const ids: string[] = [];
    for (const s of this.matching(opts.tenant, opts.domain)) {
      const id = ix.id(s)!;
      if (opts.after && id <= opts.after) continue;
      if (ids.length === keep && id >= ids[keep - 1]) continue;
      if (opts.state && this.stateOf(s) !== opts.state) continue;
      let lo = 0;
      let hi = ids.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (ids[mid] < id) lo = mid + 1;
        else hi = mid;
      }
      ids.splice(lo, 0, id);
      if (ids.length > keep) ids.pop();
    }
    const out: MessageView[] = [];
    for (const id of ids) {
      if (out.length === opts.limit) return { messages: out, next: out[out.length - 1].id };
      const v = await this.view(id);
      if (v) out.push(v);
    }
    return { messages: out };
  }

  /** The first `limit` messages (at most 1000), envelopes read from disk. */
  async list(limit = 100): Promise<MessageView[]> {
    return (await this.page({ limit: Math.min(limit, 1000) })).messages;
  }

  private async view(id: string): Promise<MessageView | undefined> {
    let m = this.loaded.get(id);
    if (!m) {
      try {
        m = await this.d.spool.load(id);
      } catch {
        return undefined;
      }
    }
    const s = this.index.slot(id);
    if (s === undefined) return undefined;
    const { env, state } = m;
    return {
      id: env.id,
      tenant: env.tenant,
      from: env.from,
      arrivedAt: env.arrivedAt,
      nextAttemptAt: this.index.nextAt[s],
      attempts: state.attempts,
      rcpts: env.rcpts.map((r, i) => ({
        address: r.address,
        status: state.rcpts[i].status,
        lastReply: state.rcpts[i].lastReply,
      })),
    };
  }

  /**
   * Deletes a queued message (admin). With `bounce`, its pending recipients are reported to the sender
   * as failed first. Refused ('busy') while a delivery attempt for it is in flight.
   */
  async delete(id: string, bounce: boolean): Promise<'deleted' | 'busy' | 'missing'> {
    const r = await this.remove(
      id,
      bounce ? 'deleted from the queue by an administrator' : undefined,
      'queue.deleted',
    );
    return r.result;
  }

  /**
   * Takes a message out of the queue, with a DSN (status 5.0.0 and `dsnReason`) for its pending recipients
   * when a reason is given; with `domain`, only the recipients at that domain go (the message stays if
   * others are pending).
   */
  protected async remove(
    id: string,
    dsnReason: string | undefined,
    event: string,
    domain?: string,
  ): Promise<{ result: 'deleted' | 'busy' | 'missing'; dsn: boolean }> {
    const ix = this.index;
    const s = ix.slot(id);
    if (s === undefined) return { result: 'missing', dsn: false };
    if (ix.flags[s] & F_BUSY) return { result: 'busy', dsn: false };
    ix.flags[s] |= F_BUSY;
    const at = ix.nextAt[s];
    ix.unschedule(s);
    let done = false;
    try {
      const m = this.loaded.get(id) ?? (await this.load(id));
      if (!m) return { result: 'missing', dsn: false };
      const now = this.d.now();
      let dsn = false;
      const state = structuredClone(m.state);
      const hit = state.rcpts
        .map((r, i) => i)
        .filter(
          (i) =>
            state.rcpts[i].status === 'pending' &&
            (!domain || m.env.rcpts[i].address.toLowerCase().endsWith(`@${domain}`)),
        );
      if (dsnReason) {
        const failed = hit
          .filter((i) => dsnRecipientsWanted(m.env.rcpts[i].notify?.join(','), 'failed'))
          .map(
            (i) =>
              ({
                address: m.env.rcpts[i].address,
                orcpt: m.env.rcpts[i].orcpt,
                action: 'failed',
                status: '5.0.0',
                diagnostic: `${dsnReason}; last error: ${state.rcpts[i].lastReply ?? 'none'}`,
                lastAttemptAt: new Date(state.rcpts[i].lastAttemptAt ?? now),
              }) as DsnRecipient,
          );
        if (failed.length) dsn = await this.queueDsn(m, failed);
      }
      for (const i of hit) {
        state.rcpts[i].status = 'bounced';
        state.rcpts[i].lastReply = dsnReason ?? 'removed from the queue by an administrator';
        state.rcpts[i].lastStatus = '5.0.0';
      }
      if (state.rcpts.some((r) => r.status === 'pending')) {
        await this.d.spool.saveState(id, state);
        m.state = state;
        this.partiallyRemoved(s, m);
      } else {
        await this.d.spool.remove(id, m.env.size);
        this.forget(id);
      }
      done = true;
      this.d.log.info(
        { event, queueId: id, tenant: m.env.tenant, bounce: !!dsnReason, ...(domain ? { domain } : {}) },
        'message removed by admin',
      );
      return { result: 'deleted', dsn };
    } finally {
      const s2 = ix.slot(id);
      if (s2 !== undefined) {
        ix.flags[s2] &= ~F_BUSY;
        ix.schedule(s2, at);
        if (done) this.unload(id);
      }
    }
  }

  /** A message lost some recipients (purge by domain): its index entry follows. */
  protected abstract partiallyRemoved(s: number, m: ActiveMessage): void;
}
