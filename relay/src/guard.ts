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
 * Nothing here sleeps or reads the wall clock: `now` is injected, cool-downs expire when the tenant is next
 * looked at (`state`, `record`, `pauses`, `rates`).
 */

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
}

export const DEFAULT_GUARD: Readonly<GuardConfig> = Object.freeze({
  warn: 0.05,
  pause: 0.1,
  windowMs: 3_600_000,
  minVolume: 100,
  cooldownMs: 3_600_000,
});

/** Buckets per window. */
export const WINDOW_BUCKETS = 60;

export type GuardActor = 'guard' | 'admin' | 'fleet';

export type TenantState = {
  state: 'active' | 'warning' | 'paused';
  /** Hard bounces over attempted recipients in the window, 0..1 (0 when nothing was attempted). */
  rate: number;
  attempted: number;
  hard: number;
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

/** Fixed ring of buckets with running totals. */
class Window {
  readonly bucketMs: number;
  private readonly attempted = new Uint32Array(WINDOW_BUCKETS);
  private readonly hardB = new Uint32Array(WINDOW_BUCKETS);
  /** Absolute number (time / bucketMs) of the newest bucket; -Infinity = nothing yet. */
  private head = Number.NEGATIVE_INFINITY;
  total = 0;
  hard = 0;

  constructor(readonly windowMs: number) {
    this.bucketMs = Math.max(1, windowMs / WINDOW_BUCKETS);
  }

  /** Moves the window to `now`, dropping buckets that left it. A clock going back counts into the newest bucket. */
  advance(now: number): void {
    const b = Math.floor(now / this.bucketMs);
    if (b <= this.head) return;
    if (b - this.head >= WINDOW_BUCKETS) {
      this.attempted.fill(0);
      this.hardB.fill(0);
      this.total = 0;
      this.hard = 0;
    } else {
      for (let i = this.head + 1; i <= b; i++) {
        const k = i % WINDOW_BUCKETS;
        this.total -= this.attempted[k];
        this.hard -= this.hardB[k];
        this.attempted[k] = 0;
        this.hardB[k] = 0;
      }
    }
    this.head = b;
  }

  add(now: number, hard: boolean): void {
    this.advance(now);
    const k = this.head % WINDOW_BUCKETS;
    this.attempted[k]++;
    this.total++;
    if (hard) {
      this.hardB[k]++;
      this.hard++;
    }
  }

  clear(): void {
    this.head = Number.NEGATIVE_INFINITY;
    this.attempted.fill(0);
    this.hardB.fill(0);
    this.total = 0;
    this.hard = 0;
  }

  get rate(): number {
    return this.total ? this.hard / this.total : 0;
  }
}

interface Tenant {
  window: Window;
  state: TenantState['state'];
  reason?: string;
  pausedAt?: number;
  pausedUntil?: number;
  by?: GuardActor;
}

const pct = (r: number) => `${(r * 100).toFixed(1)}%`;

function windowText(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
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
    if (t.state !== 'paused') this.judge(t, c, now);
    return expired || t.state !== before ? this.view(t) : undefined;
  }

  /** The tenant's state now. Ends a cool-down that has passed (paused -> active, with an empty window). */
  state(tenant: string): TenantState {
    const t = this.tenants.get(tenant);
    if (!t) return { state: 'active', rate: 0, attempted: 0, hard: 0 };
    this.expireNotify(tenant, t, this.now());
    return this.view(t);
  }

  /**
   * Pauses a tenant, until `untilMs` (an absolute time, like `Date.now()`) or, without it, until someone
   * resumes it. Pausing a paused tenant replaces the reason, end and actor and keeps when it was paused.
   */
  pause(tenant: string, reason: string, untilMs?: number, by: 'admin' | 'fleet' = 'admin'): void {
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

  private tenant(name: string, c = this.cfg(name)): Tenant {
    let t = this.tenants.get(name);
    if (!t) this.tenants.set(name, (t = { window: new Window(c.windowMs), state: 'active' }));
    else if (t.window.windowMs !== c.windowMs) t.window = new Window(c.windowMs); // reconfigured: start over
    return t;
  }

  private judge(t: Tenant, c: GuardConfig, now: number): void {
    const w = t.window;
    const judged = w.total >= c.minVolume && w.total > 0;
    const rate = w.rate;
    const figures = `${pct(rate)} (${w.hard} of ${w.total} recipients in the last ${windowText(c.windowMs)})`;
    if (judged && rate >= c.pause) {
      t.state = 'paused';
      t.reason = `hard bounce rate ${figures} reached the pause threshold ${pct(c.pause)}`;
      t.pausedAt = now;
      t.pausedUntil = c.cooldownMs > 0 && Number.isFinite(c.cooldownMs) ? now + c.cooldownMs : undefined;
      t.by = 'guard';
    } else if (judged && rate >= c.warn) {
      if (t.state !== 'warning') t.by = 'guard';
      t.state = 'warning';
      t.reason = `hard bounce rate ${figures} reached the warning threshold ${pct(c.warn)}`;
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
      hard: t.window.hard,
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
    t.reason = undefined;
    t.pausedAt = undefined;
    t.pausedUntil = undefined;
    t.by = by;
  }
}
