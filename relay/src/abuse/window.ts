/**
 * Bounded per-key event counters over a sliding window, for the abuse throttles (AUTH failures per
 * address and per account, connections per address). Each key costs a few numbers: the window is
 * approximated from the current and the previous fixed window (the previous one weighted by how much of
 * it still overlaps), as rate limiters at scale do; it never under-counts by more than one window's
 * worth of skew and never needs a list of timestamps.
 *
 * The map is capped: at the cap, keys whose windows and locks are over are swept; if none are, the
 * oldest key goes (an attacker who floods keys ages out old counts, never grows memory).
 */
import type { IPv6 } from 'ipaddr.js';
import { parseIp } from '../policy.js';

export interface WindowEntry {
  /** Start of the current fixed window (epoch ms). */
  start: number;
  cur: number;
  prev: number;
  /** Locked until (epoch ms); 0 when not locked. */
  lockedUntil: number;
}

export class SlidingCounter {
  private readonly m = new Map<string, WindowEntry>();

  constructor(
    private readonly now: () => number,
    readonly cap = 100_000,
  ) {}

  get size(): number {
    return this.m.size;
  }

  /** Events counted for `key` in the last `windowMs`. */
  count(key: string, windowMs: number): number {
    const e = this.m.get(key);
    return e ? weighted(this.roll(e, windowMs), windowMs, this.now()) : 0;
  }

  /** Counts one event; returns the count including it. */
  hit(key: string, windowMs: number): number {
    let e = this.m.get(key);
    if (!e) {
      if (this.m.size >= this.cap) this.makeRoom(windowMs);
      e = { start: this.now(), cur: 0, prev: 0, lockedUntil: 0 };
      this.m.set(key, e);
    }
    this.roll(e, windowMs).cur++;
    return weighted(e, windowMs, this.now());
  }

  /** Until when `key` is locked, or undefined. */
  lockedUntil(key: string): number | undefined {
    const e = this.m.get(key);
    return e && e.lockedUntil > this.now() ? e.lockedUntil : undefined;
  }

  /** Locks `key` until `until`; the count starts again after the lock. */
  lock(key: string, until: number): void {
    const e = this.m.get(key);
    if (!e) return;
    e.lockedUntil = until;
    e.cur = 0;
    e.prev = 0;
    e.start = this.now();
  }

  /** Keys locked right now (walks the map: for a metrics scrape, not per request). */
  locked(): number {
    const t = this.now();
    let n = 0;
    for (const e of this.m.values()) if (e.lockedUntil > t) n++;
    return n;
  }

  forget(key: string): void {
    this.m.delete(key);
  }

  private roll(e: WindowEntry, windowMs: number): WindowEntry {
    const t = this.now();
    const elapsed = t - e.start;
    if (elapsed >= 2 * windowMs || elapsed < 0) {
      e.prev = 0;
      e.cur = 0;
      e.start = t;
    } else if (elapsed >= windowMs) {
      e.prev = e.cur;
      e.cur = 0;
      e.start += windowMs;
    }
    return e;
  }

  private makeRoom(windowMs: number): void {
    const t = this.now();
    for (const [k, e] of this.m) {
      if (e.lockedUntil <= t && t - e.start >= 2 * windowMs) this.m.delete(k);
    }
    if (this.m.size < this.cap) return;
    // everything is recent: drop the oldest tenth (insertion order)
    let n = Math.max(1, Math.floor(this.cap / 10));
    for (const k of this.m.keys()) {
      if (n-- <= 0) break;
      this.m.delete(k);
    }
  }
}

function weighted(e: WindowEntry, windowMs: number, t: number): number {
  const into = Math.min(1, Math.max(0, (t - e.start) / windowMs));
  return e.cur + e.prev * (1 - into);
}

/**
 * The key a client address is counted under: the address itself for IPv4, its /64 for IPv6 (one
 * subscriber usually holds a whole /64, so counting single IPv6 addresses would count nothing).
 * IPv4-mapped IPv6 addresses count as their IPv4 address (parseIp maps them).
 */
export function clientKey(address: string): string {
  const a = parseIp(address);
  if (!a) return address;
  if (a.kind() === 'ipv6')
    return `${(a as IPv6).parts
      .slice(0, 4)
      .map((p) => p.toString(16))
      .join(':')}::/64`;
  return a.toString();
}
