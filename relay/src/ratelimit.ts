/**
 * Per-tenant rate limits, counted in accepted recipients.
 *
 * Limits are written `N/s`, `N/m`, `N/h`, `N/d`. Per-second and per-minute limits are token buckets
 * (capacity `burst ?? N`, refilled continuously at N per period). Hour and day limits are fixed windows
 * aligned to UTC hour/day boundaries, as mailbox providers count them; their counters are meant to
 * survive a restart: the caller persists `usage()` (see RateUsageStore) and passes it back as `initial`.
 *
 * In a fleet of N replicas each replica enforces `share` (1/N) of every limit, so the fleet as a whole
 * stays under the configured figure without coordinating on every recipient.
 *
 * `tryTake` runs on every RCPT: it allocates nothing when it succeeds and never touches the disk.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { writeFileDurable } from './durable.js';

export type RateUnit = 's' | 'm' | 'h' | 'd';

/** A configured limit: `100/h` is `{ count: 100, unit: 'h' }`. */
export interface RateSpec {
  count: number;
  unit: RateUnit;
}

/** For the JSON Schema: one positive integer, a slash, one unit. */
export const RATE_SPEC_PATTERN = '^[1-9][0-9]*/(s|m|h|d)$';
const RATE_SPEC_RE = /^([1-9][0-9]*)\/(s|m|h|d)$/;

/** Length of each unit's period in ms. */
export const RATE_UNIT_MS: Readonly<Record<RateUnit, number>> = Object.freeze({
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
});

export function parseRateSpec(text: string): RateSpec {
  const m = typeof text === 'string' ? RATE_SPEC_RE.exec(text) : null;
  if (!m)
    throw new RangeError(
      `not a rate limit: ${JSON.stringify(text)} (write e.g. 10/s, 600/m, 1000/h, 10000/d)`,
    );
  const count = Number(m[1]);
  if (!Number.isSafeInteger(count)) throw new RangeError(`rate limit too large: ${JSON.stringify(text)}`);
  return { count, unit: m[2] as RateUnit };
}

export function formatRateSpec(r: RateSpec): string {
  return `${r.count}/${r.unit}`;
}

export interface LimiterConfig {
  limits: RateSpec[];
  /** Bucket capacity of the per-second and per-minute limits (default: the limit's count). Scaled by `share`. */
  burst?: number;
  /** 0 < share <= 1: this replica's share of the fleet limit (default 1). */
  share?: number;
}

export type TakeResult = { ok: true } | { ok: false; limit: string; retryAfterMs: number };

/** The state of one limit, for the admin API and for persistence across restarts. */
export interface WindowUsage {
  unit: RateUnit;
  /** Effective limit on this replica: floor(count * share), at least 1. */
  limit: number;
  /** h/d: recipients counted in the current window. s/m: tokens missing from the bucket (rounded up). */
  used: number;
  /** h/d: start of the current window (ms since the epoch, on a UTC hour/day boundary). s/m: the time of the snapshot. */
  windowStart: number;
  /** h/d: end of the current window. s/m: when the bucket will be full again. */
  resetsAt: number;
}

/** floor(count * share), at least 1, without float noise turning 29 into 28.999999999999996. */
function effective(count: number, share: number): number {
  const x = count * share;
  const r = Math.round(x);
  const v = Math.abs(x - r) <= 1e-9 * Math.max(1, x) ? r : Math.floor(x);
  return Math.max(1, v);
}

function checkConfig(cfg: LimiterConfig): void {
  if (!cfg || !Array.isArray(cfg.limits)) throw new RangeError('rate limiter: limits must be an array');
  const seen = new Set<RateUnit>();
  for (const l of cfg.limits) {
    if (!l || !Object.prototype.hasOwnProperty.call(RATE_UNIT_MS, l.unit))
      throw new RangeError(`rate limiter: bad unit ${JSON.stringify(l?.unit)} (s, m, h or d)`);
    if (!Number.isSafeInteger(l.count) || l.count < 1)
      throw new RangeError(`rate limiter: count must be a positive integer, got ${String(l.count)}`);
    if (seen.has(l.unit)) throw new RangeError(`rate limiter: a second limit per ${l.unit}`);
    seen.add(l.unit);
  }
  if (cfg.burst !== undefined && (!Number.isSafeInteger(cfg.burst) || cfg.burst < 1))
    throw new RangeError(`rate limiter: burst must be a positive integer, got ${String(cfg.burst)}`);
  if (cfg.share !== undefined && !(Number.isFinite(cfg.share) && cfg.share > 0 && cfg.share <= 1))
    throw new RangeError(`rate limiter: share must be in (0, 1], got ${String(cfg.share)}`);
}

/**
 * One limit. Buckets keep their level in integer "token-milliseconds" (1 token = periodMs units, refilled
 * at `limit` units per ms), so refills and waits are exact integers: no float drift.
 */
class Limit {
  readonly unit: RateUnit;
  /** The configured limit as written (fleet-wide), reported when it blocks. */
  readonly spec: string;
  readonly periodMs: number;
  readonly isWindow: boolean;
  /** Effective count on this replica. */
  readonly limit: number;
  // Bucket
  readonly capacity: number;
  private readonly capUnits: number;
  private level: number;
  private last: number;
  // Window
  used = 0;
  start: number;

  constructor(spec: RateSpec, burst: number | undefined, share: number, now: number) {
    this.unit = spec.unit;
    this.spec = formatRateSpec(spec);
    this.periodMs = RATE_UNIT_MS[spec.unit];
    this.isWindow = spec.unit === 'h' || spec.unit === 'd';
    this.limit = effective(spec.count, share);
    this.capacity = this.isWindow ? this.limit : effective(burst ?? spec.count, share);
    this.capUnits = this.capacity * this.periodMs;
    this.level = this.capUnits;
    this.last = now;
    this.start = Math.floor(now / this.periodMs) * this.periodMs;
  }

  /** Brings the state up to `now`: refills the bucket, or rolls the window over at its boundary. */
  refresh(now: number): void {
    if (this.isWindow) {
      if (now >= this.start + this.periodMs) {
        this.start = Math.floor(now / this.periodMs) * this.periodMs;
        this.used = 0;
      }
      // A clock that went back keeps the current window and its count (the safe side).
    } else if (now > this.last) {
      const level = this.level + (now - this.last) * this.limit;
      this.level = level < this.capUnits ? level : this.capUnits;
      this.last = now;
    } else {
      this.last = now; // clock went back: no refill, but do not stall until it catches up
    }
  }

  hasRoom(n: number): boolean {
    return this.isWindow ? this.used + n <= this.limit : this.level >= n * this.periodMs;
  }

  /** How long until `n` fits (a request larger than the limit never fits: time until empty window / full bucket). */
  retryAfter(n: number, now: number): number {
    if (this.isWindow) return Math.max(1, this.start + this.periodMs - now);
    const need = Math.min(n, this.capacity) * this.periodMs - this.level;
    return Math.max(1, Math.ceil(need / this.limit));
  }

  take(n: number): void {
    if (this.isWindow) this.used += n;
    else this.level -= n * this.periodMs;
  }

  /** Tokens missing from the bucket (bucket only). */
  deficitUnits(): number {
    return this.capUnits - this.level;
  }

  /** Sets the bucket so that `deficit` token-units are missing, clamped to [empty, full]. */
  setDeficitUnits(deficit: number, now: number): void {
    this.level = Math.min(this.capUnits, Math.max(0, this.capUnits - deficit));
    this.last = now;
  }

  usage(now: number): WindowUsage {
    if (this.isWindow)
      return {
        unit: this.unit,
        limit: this.limit,
        used: this.used,
        windowStart: this.start,
        resetsAt: this.start + this.periodMs,
      };
    const deficit = this.deficitUnits();
    return {
      unit: this.unit,
      limit: this.limit,
      used: Math.ceil(deficit / this.periodMs),
      windowStart: now,
      resetsAt: now + Math.ceil(deficit / this.limit),
    };
  }
}

const OK: TakeResult = Object.freeze({ ok: true as const });

function isUsage(u: unknown): u is WindowUsage {
  if (typeof u !== 'object' || u === null) return false;
  const w = u as Record<string, unknown>;
  return (
    typeof w.unit === 'string' &&
    Object.prototype.hasOwnProperty.call(RATE_UNIT_MS, w.unit) &&
    Number.isSafeInteger(w.used) &&
    (w.used as number) >= 0 &&
    Number.isFinite(w.windowStart)
  );
}

export class RateLimiter {
  private limits: Limit[] = [];
  private readonly now: () => number;

  /**
   * `initial`: a previous `usage()` (e.g. from before a restart). Hour and day counts are kept when their
   * window is still the current one, dropped otherwise; per-second and per-minute buckets start full.
   */
  constructor(cfg: LimiterConfig, now: () => number, initial?: WindowUsage[]) {
    this.now = now;
    this.reconfigure(cfg);
    if (initial) {
      const t = now();
      for (const u of initial) {
        if (!isUsage(u)) continue;
        const l = this.find(u.unit);
        if (!l || !l.isWindow) continue;
        l.refresh(t);
        if (u.windowStart === l.start) l.used = u.used;
      }
    }
  }

  /**
   * Takes `n` (default 1) from every limit, or nothing if any limit lacks room. When refused, reports the
   * blocking limit (as configured, e.g. '1000/h') that frees up last, and how long until all have room.
   */
  tryTake(n = 1): TakeResult {
    if (!(n >= 0) || !Number.isSafeInteger(n)) throw new RangeError(`tryTake: not a count: ${String(n)}`);
    if (n === 0) return OK;
    const limits = this.limits;
    const now = this.now();
    let blocked = false;
    for (let i = 0; i < limits.length; i++) {
      limits[i].refresh(now);
      if (!limits[i].hasRoom(n)) blocked = true;
    }
    if (!blocked) {
      for (let i = 0; i < limits.length; i++) limits[i].take(n);
      return OK;
    }
    let worst: Limit | undefined;
    let wait = 0;
    for (const l of limits) {
      if (l.hasRoom(n)) continue;
      const w = l.retryAfter(n, now);
      if (w > wait) {
        wait = w;
        worst = l;
      }
    }
    return { ok: false, limit: worst!.spec, retryAfterMs: wait };
  }

  /** The state of every configured limit, in configuration order. */
  usage(): WindowUsage[] {
    const now = this.now();
    return this.limits.map((l) => {
      l.refresh(now);
      return l.usage(now);
    });
  }

  /**
   * Hot reload. Limits whose unit is still configured keep their count (windows: recipients counted in the
   * current window; buckets: tokens missing), against the new limit; others start fresh. Throws a
   * RangeError, changing nothing, when the configuration is invalid.
   */
  reconfigure(cfg: LimiterConfig): void {
    checkConfig(cfg);
    const now = this.now();
    const share = cfg.share ?? 1;
    this.limits = cfg.limits.map((spec) => {
      const l = new Limit(spec, cfg.burst, share, now);
      const old = this.find(spec.unit);
      if (old) {
        old.refresh(now);
        if (l.isWindow) l.used = old.used;
        else l.setDeficitUnits(old.deficitUnits(), now);
      }
      return l;
    });
  }

  /**
   * Counts `used` recipients accepted elsewhere (by fleet replicas that went away) in the current hour or
   * day window. Does nothing when no limit of that unit is configured.
   */
  addUsed(unit: 'h' | 'd', used: number): void {
    if (!Number.isSafeInteger(used) || used < 0)
      throw new RangeError(`addUsed: not a count: ${String(used)}`);
    const l = this.find(unit);
    if (!l) return;
    l.refresh(this.now());
    l.used += used;
  }

  private find(unit: RateUnit): Limit | undefined {
    for (const l of this.limits) if (l.unit === unit) return l;
    return undefined;
  }
}

const STORE_FORMAT = 1;

/**
 * The hour/day counters of every tenant, in one JSON file rewritten durably (temp file, fsync, rename,
 * directory fsync). A missing or unreadable file loads as empty: losing counters must not stop the relay.
 */
export class RateUsageStore {
  readonly file: string;
  /** Why the last load() found nothing usable in an existing file (undefined: fine or absent). */
  lastLoadError: string | undefined;
  private pending:
    { json: string; waiters: { resolve: () => void; reject: (e: unknown) => void }[] } | undefined;
  private running = false;
  private dirReady = false;

  constructor(file: string) {
    this.file = file;
  }

  async load(): Promise<Record<string, WindowUsage[]>> {
    this.lastLoadError = undefined;
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.lastLoadError = `cannot read: ${String(e)}`;
      return {};
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      this.lastLoadError = `not JSON: ${(e as Error).message}`;
      return {};
    }
    const d = doc as { v?: unknown; tenants?: unknown } | null;
    if (
      typeof d !== 'object' ||
      d === null ||
      d.v !== STORE_FORMAT ||
      typeof d.tenants !== 'object' ||
      !d.tenants
    ) {
      this.lastLoadError = `not a rate usage file (format ${STORE_FORMAT})`;
      return {};
    }
    const out: Record<string, WindowUsage[]> = {};
    for (const [tenant, list] of Object.entries(d.tenants as Record<string, unknown>)) {
      if (!Array.isArray(list)) continue;
      out[tenant] = list.filter(isUsage).map((u) => ({
        unit: u.unit,
        limit: Number(u.limit) || 0,
        used: u.used,
        windowStart: u.windowStart,
        resetsAt: Number(u.resetsAt) || 0,
      }));
    }
    return out;
  }

  /**
   * Writes `data` durably. Calls made while a write is running are coalesced into one next write (of the
   * latest data); each call resolves once a write containing its data, or later data, is on disk.
   */
  save(data: Record<string, WindowUsage[]>): Promise<void> {
    const json = JSON.stringify({ v: STORE_FORMAT, tenants: data });
    return new Promise((resolve, reject) => {
      if (this.pending) {
        this.pending.json = json;
        this.pending.waiters.push({ resolve, reject });
      } else {
        this.pending = { json, waiters: [{ resolve, reject }] };
      }
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.pending) {
      const batch = this.pending;
      this.pending = undefined;
      try {
        await this.write(batch.json);
        for (const w of batch.waiters) w.resolve();
      } catch (e) {
        for (const w of batch.waiters) w.reject(e);
      }
    }
    this.running = false;
  }

  private async write(json: string): Promise<void> {
    const dir = path.dirname(this.file);
    if (!this.dirReady) {
      await fsp.mkdir(dir, { recursive: true });
      this.dirReady = true;
    }
    await writeFileDurable(this.file, json);
  }
}

/**
 * Calls `save` every `intervalMs` (never two at once; the timer does not keep the process alive), and
 * once more on stop(). Errors of periodic saves go to `onError`; the final save's error is stop()'s.
 */
export class PeriodicSaver {
  private timer: NodeJS.Timeout | undefined;
  private inflight: Promise<void> | undefined;
  private running = false;

  constructor(
    private readonly save: () => Promise<void>,
    private readonly intervalMs: number,
    private readonly onError: (e: unknown) => void = () => {},
  ) {
    if (!(Number.isFinite(intervalMs) && intervalMs > 0))
      throw new RangeError(
        `PeriodicSaver: interval must be a positive number of ms, got ${String(intervalMs)}`,
      );
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.inflight) await this.inflight;
    await this.save();
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  private tick(): void {
    this.timer = undefined;
    this.inflight = (async () => {
      try {
        await this.save();
      } catch (e) {
        this.onError(e);
      }
    })().finally(() => {
      this.inflight = undefined;
      if (this.running) this.schedule();
    });
  }
}
