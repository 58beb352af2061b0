/**
 * IP pools: the source addresses (and the EHLO names that go with them) a delivery may leave from,
 * with per-address hourly and daily caps and an optional warm-up schedule for new addresses.
 *
 * `pick` chooses an address without counting; the caller counts with `record` once a transaction
 * was accepted, so failed attempts do not eat into the caps. So that concurrent transactions do not
 * overshoot a cap (every message picked before the first one is recorded), `pick(pool, n)` also
 * reserves room for `n` messages, which the caller gives back with `release` when the attempt is over
 * (after `record`). Reservations live in memory only.
 * Windows are aligned to UTC hours and days (epoch ms are UTC, so `floor(t / HOUR) * HOUR` is the
 * start of the UTC hour). Counters roll over lazily when the window they belong to has passed.
 */
import { isIP } from 'node:net';
import { CarteroError } from './errors.js';

export interface PoolAddressConfig {
  /** Source IP address for outbound connections (`OutboundOptions.localAddress`). */
  ip: string;
  /** EHLO name that goes with the address (its PTR name, ideally; `OutboundOptions.ehloName`). */
  ehlo: string;
  /** At most this many messages per UTC hour from this address. */
  perHour?: number;
  /** At most this many messages per UTC day from this address. */
  perDay?: number;
  /** false: connect without binding to `ip` (an egress gateway gives the pod this address). */
  bind?: boolean;
}

export interface PoolConfig {
  name: string;
  addresses: PoolAddressConfig[];
  /**
   * Warm-up: a daily cap for every address of the pool. `start` (YYYY-MM-DD) is UTC day 1, and
   * `dailyCaps[i]` applies on day i + 1; before `start`, day 1's cap applies; after the last listed
   * day there is no warm-up cap (only `perDay`, if any).
   */
  warmup?: { start: string; dailyCaps: number[] };
}

export type Pick =
  { ok: true; ip: string; ehlo: string; bind: boolean } | { ok: false; retryAt: number; reason: string };

/** One address's counters and current caps (for metrics, the admin API and persistence). */
export interface AddressUsage {
  pool: string;
  ip: string;
  hourStart: number;
  hourUsed: number;
  dayStart: number;
  dayUsed: number;
  hourCap?: number;
  /** min(perDay, today's warm-up cap). */
  dayCap?: number;
  /** Today's warm-up day (1 = the start day), when the pool has a warm-up schedule. */
  warmupDay?: number;
}

const HOUR = 3_600_000;
const DAY = 86_400_000;

interface AddressState {
  ip: string;
  ehlo: string;
  bind: boolean;
  perHour?: number;
  perDay?: number;
  hourStart: number;
  hourUsed: number;
  dayStart: number;
  dayUsed: number;
  /** Messages picked for transactions still in flight (see `pick` and `release`). */
  reserved: number;
}

interface PoolState {
  name: string;
  addresses: AddressState[];
  /** Warm-up start (epoch ms of 00:00 UTC) and caps. */
  warmup?: { startMs: number; dailyCaps: number[] };
  /** Round-robin cursor: ties go to the first tied address at or after this index. */
  rr: number;
}

function checkCap(value: number | undefined, what: string): void {
  if (value !== undefined && (!Number.isInteger(value) || value < 1))
    throw new RangeError(`${what} must be an integer >= 1, got ${value}`);
}

function parseDay(s: string, what: string): number {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  const ms = m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : NaN;
  // Date.UTC rolls 2024-02-30 over to March: reject dates that do not round-trip.
  if (!m || !Number.isFinite(ms) || new Date(ms).toISOString().slice(0, 10) !== s)
    throw new RangeError(`${what} must be a date YYYY-MM-DD, got ${JSON.stringify(s)}`);
  return ms;
}

function buildPool(p: PoolConfig, index: number): PoolState {
  const where = `pools[${index}]`;
  if (typeof p.name !== 'string' || p.name === '') throw new RangeError(`${where}.name must not be empty`);
  if (!Array.isArray(p.addresses) || p.addresses.length === 0)
    throw new RangeError(`pool ${p.name}: needs at least one address`);
  const seen = new Set<string>();
  const addresses = p.addresses.map((a, i): AddressState => {
    const aw = `pool ${p.name}: addresses[${i}]`;
    if (isIP(a.ip) === 0) throw new RangeError(`${aw}.ip is not an IP address: ${JSON.stringify(a.ip)}`);
    if (seen.has(a.ip)) throw new RangeError(`${aw}.ip ${a.ip} is listed twice`);
    seen.add(a.ip);
    if (typeof a.ehlo !== 'string' || a.ehlo === '') throw new RangeError(`${aw}.ehlo must not be empty`);
    checkCap(a.perHour, `${aw}.perHour`);
    checkCap(a.perDay, `${aw}.perDay`);
    return {
      ip: a.ip,
      ehlo: a.ehlo,
      bind: a.bind !== false,
      perHour: a.perHour,
      perDay: a.perDay,
      hourStart: 0,
      hourUsed: 0,
      dayStart: 0,
      dayUsed: 0,
      reserved: 0,
    };
  });
  let warmup: PoolState['warmup'];
  if (p.warmup) {
    const startMs = parseDay(p.warmup.start, `pool ${p.name}: warmup.start`);
    const caps = p.warmup.dailyCaps;
    if (!Array.isArray(caps) || caps.length === 0)
      throw new RangeError(`pool ${p.name}: warmup.dailyCaps must list at least one day`);
    caps.forEach((c, i) => checkCap(c, `pool ${p.name}: warmup.dailyCaps[${i}]`));
    warmup = { startMs, dailyCaps: [...caps] };
  }
  return { name: p.name, addresses, warmup, rr: 0 };
}

function buildPools(pools: PoolConfig[]): Map<string, PoolState> {
  const out = new Map<string, PoolState>();
  pools.forEach((p, i) => {
    const s = buildPool(p, i);
    if (out.has(s.name)) throw new RangeError(`pool ${s.name} is defined twice`);
    out.set(s.name, s);
  });
  return out;
}

/** Warm-up day (1-based, never below 1) and its cap (undefined after the schedule) on the UTC day `dayStart`. */
function warmupOn(pool: PoolState, dayStart: number): { day: number; cap?: number } | undefined {
  if (!pool.warmup) return undefined;
  const day = Math.max(1, Math.floor((dayStart - pool.warmup.startMs) / DAY) + 1);
  return { day, cap: pool.warmup.dailyCaps[day - 1] };
}

function minCap(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.min(a, b);
}

export class PoolManager {
  private pools: Map<string, PoolState>;

  /**
   * @param initial counters saved from `usage()`; entries for addresses no longer configured, and
   *   entries from windows that have passed, are ignored.
   * @throws RangeError on an invalid configuration.
   */
  constructor(
    pools: PoolConfig[],
    private readonly now: () => number,
    initial?: AddressUsage[],
  ) {
    this.pools = buildPools(pools);
    for (const u of initial ?? []) {
      const a = this.pools.get(u?.pool)?.addresses.find((x) => x.ip === u.ip);
      if (!a) continue;
      if (Number.isFinite(u.hourStart) && Number.isFinite(u.hourUsed) && u.hourUsed >= 0) {
        a.hourStart = u.hourStart;
        a.hourUsed = u.hourUsed;
      }
      if (Number.isFinite(u.dayStart) && Number.isFinite(u.dayUsed) && u.dayUsed >= 0) {
        a.dayStart = u.dayStart;
        a.dayUsed = u.dayUsed;
      }
    }
  }

  has(pool: string): boolean {
    return this.pools.has(pool);
  }

  /**
   * Chooses the address of `pool` with the most remaining capacity (uncapped counts as unlimited;
   * ties go round robin), without counting it. When every address is at a cap, returns when the
   * earliest one has room again: the next UTC hour for an hourly cap, the next UTC day for a daily
   * one. The caller should defer the delivery until then, never bounce it.
   * With `reserve` > 0, room for that many messages is held on the chosen address (counted against its
   * caps, like sent ones) until `release`; room held this way is not counted as sent.
   * @throws CarteroError `ERR_POOL_UNKNOWN` for a pool that is not configured (check with `has`).
   */
  pick(pool: string, reserve = 0): Pick {
    const p = this.pools.get(pool);
    if (!p) throw new CarteroError('ERR_POOL_UNKNOWN', `unknown IP pool ${JSON.stringify(pool)}`);
    const t = this.now();
    const hourStart = Math.floor(t / HOUR) * HOUR;
    const dayStart = Math.floor(t / DAY) * DAY;
    const warm = warmupOn(p, dayStart)?.cap;
    const n = p.addresses.length;
    let best = -1;
    let bestLeft = 0;
    let retryAt = Infinity;
    let hourFull = 0;
    let dayFull = 0;
    for (let k = 0; k < n; k++) {
      // Visit in round-robin order from the cursor, so the first address with the most room wins ties.
      const i = (p.rr + k) % n;
      const a = p.addresses[i];
      roll(a, hourStart, dayStart);
      const dayCap = minCap(a.perDay, warm);
      const hourLeft = a.perHour === undefined ? Infinity : a.perHour - a.hourUsed - a.reserved;
      const dayLeft = dayCap === undefined ? Infinity : dayCap - a.dayUsed - a.reserved;
      const left = Math.min(hourLeft, dayLeft);
      if (left > 0) {
        if (best < 0 || left > bestLeft) {
          best = i;
          bestLeft = left;
        }
      } else if (dayLeft <= 0) {
        dayFull++;
        retryAt = Math.min(retryAt, dayStart + DAY);
      } else {
        hourFull++;
        retryAt = Math.min(retryAt, hourStart + HOUR);
      }
    }
    if (best >= 0) {
      p.rr = (best + 1) % n;
      const a = p.addresses[best];
      if (reserve > 0) a.reserved += reserve;
      return { ok: true, ip: a.ip, ehlo: a.ehlo, bind: a.bind };
    }
    const parts = [];
    if (hourFull) parts.push(`${hourFull} at the hourly cap`);
    if (dayFull) parts.push(`${dayFull} at the daily cap`);
    return {
      ok: false,
      retryAt,
      reason: `every address of IP pool ${pool} is at a cap (${parts.join(', ')})`,
    };
  }

  /**
   * Counts `n` messages sent from `ip` of `pool` (call once the transaction was accepted). Unknown
   * pools and addresses are ignored: a delivery may finish after a reload removed its address.
   */
  record(pool: string, ip: string, n = 1): void {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`n must be an integer >= 0, got ${n}`);
    const a = this.pools.get(pool)?.addresses.find((x) => x.ip === ip);
    if (!a) return;
    const t = this.now();
    roll(a, Math.floor(t / HOUR) * HOUR, Math.floor(t / DAY) * DAY);
    a.hourUsed += n;
    a.dayUsed += n;
  }

  /** Gives back room reserved by `pick(pool, n)` once the attempt is over (call `record` first). */
  release(pool: string, ip: string, n: number): void {
    const a = this.pools.get(pool)?.addresses.find((x) => x.ip === ip);
    if (a) a.reserved = Math.max(0, a.reserved - n);
  }

  /** Every configured address with its counters for the current windows and its current caps. */
  usage(): AddressUsage[] {
    const t = this.now();
    const hourStart = Math.floor(t / HOUR) * HOUR;
    const dayStart = Math.floor(t / DAY) * DAY;
    const out: AddressUsage[] = [];
    for (const p of this.pools.values()) {
      const warm = warmupOn(p, dayStart);
      for (const a of p.addresses) {
        const u: AddressUsage = {
          pool: p.name,
          ip: a.ip,
          hourStart,
          hourUsed: a.hourStart === hourStart ? a.hourUsed : 0,
          dayStart,
          dayUsed: a.dayStart === dayStart ? a.dayUsed : 0,
        };
        if (a.perHour !== undefined) u.hourCap = a.perHour;
        const dayCap = minCap(a.perDay, warm?.cap);
        if (dayCap !== undefined) u.dayCap = dayCap;
        if (warm) u.warmupDay = warm.day;
        out.push(u);
      }
    }
    return out;
  }

  /**
   * Hot reload: replaces the pools, keeping the counters of every (pool, address) pair that remains
   * and the round-robin position of every pool that remains.
   * @throws RangeError on an invalid configuration (the old one stays in force).
   */
  reconfigure(pools: PoolConfig[]): void {
    const next = buildPools(pools);
    for (const p of next.values()) {
      const old = this.pools.get(p.name);
      if (!old) continue;
      p.rr = old.rr % p.addresses.length;
      for (const a of p.addresses) {
        const o = old.addresses.find((x) => x.ip === a.ip);
        if (!o) continue;
        a.hourStart = o.hourStart;
        a.hourUsed = o.hourUsed;
        a.dayStart = o.dayStart;
        a.dayUsed = o.dayUsed;
        a.reserved = o.reserved;
      }
    }
    this.pools = next;
  }
}

/** Starts new windows when the current hour or day is not the one the counters belong to. */
function roll(a: AddressState, hourStart: number, dayStart: number): void {
  if (a.hourStart !== hourStart) {
    a.hourStart = hourStart;
    a.hourUsed = 0;
  }
  if (a.dayStart !== dayStart) {
    a.dayStart = dayStart;
    a.dayUsed = 0;
  }
}
