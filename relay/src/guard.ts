/**
 * The per-tenant bounce-rate guard.
 *
 * Every recipient outcome of a tenant goes into a sliding window. The rate is hard bounces over attempted
 * recipients, where delivered, hard and soft bounces count as attempted and deferrals do not (a deferral is
 * not an outcome yet; counting it would let a tenant dilute its rate by retrying). Once the window holds at
 * least `minVolume` attempted recipients the guard judges the tenant:
 *
 *   rate >= pause  -> paused, for `cooldownMs` (then active again, with an empty window)
 *   rate >= warn   -> warning
 *   otherwise      -> active
 *
 * Below `minVolume` the guard does not judge: a tenant that is not paused is active. A paused tenant stays
 * paused whatever its outcomes (deliveries already running still report theirs) until its cool-down passes
 * or someone resumes it.
 *
 * The window is `WINDOW_BUCKETS` fixed buckets of `windowMs / WINDOW_BUCKETS` in a ring, with running totals:
 * recording is O(1) (amortised: moving the clock forward clears at most every bucket once), memory per
 * tenant is fixed. The window covers the current bucket and the `WINDOW_BUCKETS - 1` before it, so an outcome
 * leaves it between `windowMs - bucket` and `windowMs` after it was recorded.
 *
 * The default window is 1 h (1 min buckets), like the `cartero_bounce_rate` gauge always had: short enough
 * that a bad list sent by a tenant with a lot of good traffic is not diluted by a day of that traffic (a 24 h
 * window would let a 10 000-recipient list with 30 % hard bounces pass under a 100 000-a-day sender), long
 * enough that with `minVolume` 100 a single batch of a few bad addresses does not pause a small sender.
 *
 * The guard also judges the tenant's complaint rate (ADR 018): feedback-loop complaints (`complaint()`)
 * over delivered recipients, in a second window with its own thresholds (`GuardConfig.complaints`,
 * default DEFAULT_COMPLAINT_GUARD). Either rate can warn or pause; the tenant has one state, so a pause by
 * either is resumed, persisted and shared across the fleet the same way. The judgement is in
 * complaint-guard.ts, the window in rate-window.ts.
 *
 * Nothing here sleeps or reads the wall clock: `now` is injected, cool-downs expire when the tenant is next
 * looked at (`state`, `record`, `pauses`, `rates`).
 */

import {
  BOUNCE_RATE,
  COMPLAINT_RATE,
  DEFAULT_COMPLAINT_GUARD,
  combine,
  judgeRate,
  type RateThresholds,
} from './complaint-guard.js';
import { RateWindow, WINDOW_BUCKETS } from './rate-window.js';

export interface GuardConfig {
  /** Rate (0..1) at or above which the tenant is flagged 'warning'. */
  warn: number;
  /** Rate (0..1) at or above which the tenant is paused. */
  pause: number;
  /** Length of the sliding window. */
  windowMs: number;
  /** Attempted recipients in the window below which the guard does not judge. */
  minVolume: number;
  /** How long a pause by the guard lasts; 0 or not finite = until someone resumes the tenant. */
  cooldownMs: number;
  /** The complaint rate's thresholds (default DEFAULT_COMPLAINT_GUARD). */
  complaints?: RateThresholds;
}

export const DEFAULT_GUARD: Readonly<GuardConfig> = Object.freeze({
  warn: 0.05,
  pause: 0.1,
  windowMs: 3_600_000,
  minVolume: 100,
  cooldownMs: 3_600_000,
});

export { WINDOW_BUCKETS };

export type GuardActor = 'guard' | 'admin' | 'fleet';

export type TenantState = {
  state: 'active' | 'warning' | 'paused';
  /** Hard bounces over attempted recipients in the window, 0..1 (0 when nothing was attempted). */
  rate: number;
  attempted: number;
  hard: number;
  /** Complaints over delivered recipients in the complaint window, 0..1 (0 when nothing was delivered). */
  complaintRate: number;
  /** Delivered recipients in the complaint window. */
  delivered: number;
  /** Complaints in the complaint window. */
  complaints: number;
  /** Why the tenant is warned or paused, one line. */
  reason?: string;
  pausedAt?: number;
  /** When a pause ends by itself; undefined while paused = until someone resumes the tenant. */
  pausedUntil?: number;
  /** Who paused or warned the tenant, or who made it active again ('guard' when a cool-down ended). */
  by?: GuardActor;
};

/** A pause, as persisted across restarts and shared across a fleet. */
export interface PauseRecord {
  tenant: string;
  reason: string;
  pausedAt: number;
  pausedUntil?: number;
  by: string;
}

export type Outcome = 'delivered' | 'hard' | 'soft' | 'deferred';

interface Tenant {
  window: RateWindow;
  complaints: RateWindow;
  state: TenantState['state'];
  reason?: string;
  pausedAt?: number;
  pausedUntil?: number;
  by?: GuardActor;
}

function actor(by: string): GuardActor {
  return by === 'guard' || by === 'fleet' ? by : 'admin';
}

export class BounceGuard {
  private readonly tenants = new Map<string, Tenant>();
  /**
   * Called when a cool-down ends outside `record()` (in `state`, `pauses` or `rates`), so the resume can be
   * logged; `record()` reports changes by its return value instead, `pause`/`resume` are the caller's own.
   */
  onExpire?: (tenant: string, state: TenantState) => void;

  constructor(
    private readonly cfg: (tenant: string) => GuardConfig,
    private readonly now: () => number,
    persisted?: PauseRecord[],
  ) {
    const t = now();
    for (const p of persisted ?? []) {
      if (p.pausedUntil !== undefined && p.pausedUntil <= t) continue;
      const ten = this.tenant(p.tenant);
      Object.assign(ten, {
        state: 'paused',
        reason: p.reason,
        pausedAt: p.pausedAt,
        pausedUntil: p.pausedUntil,
        by: actor(p.by),
      });
    }
  }

  /**
   * Records one recipient outcome. Returns the tenant's new state when this call changed it (including a
   * cool-down that ended just now), so the caller logs each change once; undefined otherwise.
   */
  record(tenant: string, outcome: Outcome): TenantState | undefined {
    const now = this.now();
    const c = this.cfg(tenant);
    const t = this.tenant(tenant, c);
    const before = t.state;
    const expired = this.expire(t, now);
    if (outcome !== 'deferred') t.window.add(now, outcome === 'hard');
    else t.window.advance(now);
    if (outcome === 'delivered') t.complaints.add(now, false);
    else t.complaints.advance(now);
    if (t.state !== 'paused') this.judge(t, c, now);
    return expired || t.state !== before ? this.view(t) : undefined;
  }

  /**
   * Records one complaint (a feedback report, or one entered by hand) against the tenant's complaint rate.
   * Returns the tenant's new state when this call changed it, like `record()`.
   */
  complaint(tenant: string): TenantState | undefined {
    const now = this.now();
    const c = this.cfg(tenant);
    const t = this.tenant(tenant, c);
    const before = t.state;
    const expired = this.expire(t, now);
    t.complaints.hit(now);
    t.window.advance(now);
    if (t.state !== 'paused') this.judge(t, c, now);
    return expired || t.state !== before ? this.view(t) : undefined;
  }

  /** The tenant's state now. Ends a cool-down that has passed (paused -> active, with an empty window). */
  state(tenant: string): TenantState {
    const t = this.tenants.get(tenant);
    if (!t)
      return {
        state: 'active',
        rate: 0,
        attempted: 0,
        hard: 0,
        complaintRate: 0,
        delivered: 0,
        complaints: 0,
      };
    this.expireNotify(tenant, t, this.now());
    return this.view(t);
  }

  /**
   * Pauses a tenant, until `untilMs` (an absolute time, like `Date.now()`) or, without it, until someone
   * resumes it. Pausing a paused tenant replaces the reason, end and actor and keeps when it was paused.
   */
  pause(tenant: string, reason: string, untilMs?: number, by: GuardActor = 'admin'): void {
    const now = this.now();
    const t = this.tenant(tenant);
    this.expire(t, now);
    if (t.state !== 'paused') t.pausedAt = now;
    t.state = 'paused';
    t.reason = reason;
    t.pausedUntil = untilMs;
    t.by = by;
  }

  /** Makes the tenant active and empties its window, so it is judged on what it sends from now on. */
  resume(tenant: string, by: 'admin' | 'fleet' = 'admin'): void {
    const t = this.tenants.get(tenant);
    if (!t) return;
    this.activate(t, by);
  }

  /** Current pauses (ended cool-downs left out), to persist and to share across a fleet. */
  pauses(): PauseRecord[] {
    const now = this.now();
    const out: PauseRecord[] = [];
    for (const [name, t] of this.tenants) {
      this.expireNotify(name, t, now);
      if (t.state !== 'paused') continue;
      const p: PauseRecord = {
        tenant: name,
        reason: t.reason ?? '',
        pausedAt: t.pausedAt ?? now,
        by: t.by ?? 'admin',
      };
      if (t.pausedUntil !== undefined) p.pausedUntil = t.pausedUntil;
      out.push(p);
    }
    return out;
  }

  /** Hard-bounce rate per tenant over the window now (0 once its window emptied), for `cartero_bounce_rate`. */
  rates(): Map<string, number> {
    const now = this.now();
    const out = new Map<string, number>();
    for (const [name, t] of this.tenants) {
      this.expireNotify(name, t, now);
      t.window.advance(now);
      out.set(name, t.window.rate);
    }
    return out;
  }

  /** Complaint rate per tenant over its complaint window now, for `cartero_tenant_complaint_rate`. */
  complaintRates(): Map<string, number> {
    const now = this.now();
    const out = new Map<string, number>();
    for (const [name, t] of this.tenants) {
      this.expireNotify(name, t, now);
      t.complaints.advance(now);
      out.set(name, t.complaints.rate);
    }
    return out;
  }

  private tenant(name: string, c = this.cfg(name)): Tenant {
    const cw = (c.complaints ?? DEFAULT_COMPLAINT_GUARD).windowMs;
    let t = this.tenants.get(name);
    if (!t)
      this.tenants.set(
        name,
        (t = { window: new RateWindow(c.windowMs), complaints: new RateWindow(cw), state: 'active' }),
      );
    else {
      // reconfigured: that window starts over
      if (t.window.windowMs !== c.windowMs) t.window = new RateWindow(c.windowMs);
      if (t.complaints.windowMs !== cw) t.complaints = new RateWindow(cw);
    }
    return t;
  }

  private judge(t: Tenant, c: GuardConfig, now: number): void {
    const cc = c.complaints ?? DEFAULT_COMPLAINT_GUARD;
    const v = combine(judgeRate(BOUNCE_RATE, t.window, c), judgeRate(COMPLAINT_RATE, t.complaints, cc));
    if (v?.level === 'pause') {
      const cooldownMs = v.by === 'complaint' ? cc.cooldownMs : c.cooldownMs;
      t.state = 'paused';
      t.reason = v.reason;
      t.pausedAt = now;
      t.pausedUntil = cooldownMs > 0 && Number.isFinite(cooldownMs) ? now + cooldownMs : undefined;
      t.by = 'guard';
    } else if (v) {
      if (t.state !== 'warning') t.by = 'guard';
      t.state = 'warning';
      t.reason = v.reason;
    } else if (t.state === 'warning') {
      t.state = 'active';
      t.reason = undefined;
      t.by = undefined;
    }
  }

  private view(t: Tenant): TenantState {
    const s: TenantState = {
      state: t.state,
      rate: t.window.rate,
      attempted: t.window.total,
      hard: t.window.hits,
      complaintRate: t.complaints.rate,
      delivered: t.complaints.total,
      complaints: t.complaints.hits,
    };
    if (t.reason !== undefined) s.reason = t.reason;
    if (t.state === 'paused') {
      s.pausedAt = t.pausedAt;
      if (t.pausedUntil !== undefined) s.pausedUntil = t.pausedUntil;
    }
    if (t.by !== undefined) s.by = t.by;
    return s;
  }

  /** Ends a passed cool-down; returns whether it did. */
  private expire(t: Tenant, now: number): boolean {
    if (t.state !== 'paused' || t.pausedUntil === undefined || t.pausedUntil > now) return false;
    this.activate(t, 'guard');
    return true;
  }

  private expireNotify(name: string, t: Tenant, now: number): void {
    if (this.expire(t, now)) this.onExpire?.(name, this.view(t));
  }

  private activate(t: Tenant, by: GuardActor | undefined): void {
    t.state = 'active';
    t.window.clear();
    t.complaints.clear();
    t.reason = undefined;
    t.pausedAt = undefined;
    t.pausedUntil = undefined;
    t.by = by;
  }
}
