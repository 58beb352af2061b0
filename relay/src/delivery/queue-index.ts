/**
 * The in-memory queue index: what scheduling needs of every queued message and nothing more. One slot per
 * message in typed arrays (next attempt, arrival, size, attempts, interned tenant and destination domain,
 * flag bits), a Map from queue id to slot, and a min-heap of slots by next attempt time with positions, so
 * a message is rescheduled in place (no stale heap items). About 100-150 bytes per message, most of it the
 * id string and its Map entry. Envelopes and states stay on disk until the message is due.
 */
import type { QueuedEntry } from '../spool/types.js';

/** `domain` value of a message whose pending recipients are at several domains (see `multi`). */
export const SEVERAL = -1;
/** `domain` value of a message with no pending recipient (transient). */
export const NO_DOMAIN = 0;

export const F_BUSY = 1;
export const F_ATTEMPTED = 2;
export const F_DSN = 4;
/** Held: a paused tenant or a suspension; not attempted until released. */
export const F_HELD = 8;

/** Strings to small integers and back (tenants, domains). Id 0 is reserved. */
export class Interner {
  private readonly ids = new Map<string, number>();
  readonly names: string[] = [''];
  id(name: string): number {
    let i = this.ids.get(name);
    if (i === undefined) {
      i = this.names.length;
      this.names.push(name);
      this.ids.set(name, i);
    }
    return i;
  }
  find(name: string): number | undefined {
    return this.ids.get(name);
  }
}

/**
 * What the index keeps of a message: the fields the scan finds (QueuedEntry) but its id, and flag bits
 * (F_DSN for `dsn`, and the index's own).
 */
export type IndexFields = Omit<QueuedEntry, 'id' | 'dsn'> & { flags: number };

export class QueueIndex {
  readonly tenants = new Interner();
  readonly domainNames = new Interner();
  private cap = 0;
  private slots = new Map<string, number>();
  private idOf: (string | undefined)[] = [];
  private free: number[] = [];
  nextAt = new Float64Array(0);
  arrivedAt = new Float64Array(0);
  size = new Float64Array(0);
  attempts = new Uint16Array(0);
  tenant = new Uint16Array(0);
  domain = new Int32Array(0);
  flags = new Uint8Array(0);
  private heapPos = new Int32Array(0);
  private heap = new Int32Array(0);
  private heapLen = 0;
  /** Domain ids of the messages marked SEVERAL. */
  private readonly multi = new Map<number, Int32Array>();
  /** Slots in use, up to `end` (the high-water mark). */
  private end = 0;

  get count(): number {
    return this.slots.size;
  }
  /** Slots ever used (iterate 0..highWater, skipping free ones with `id(slot) === undefined`). */
  get highWater(): number {
    return this.end;
  }

  slot(id: string): number | undefined {
    return this.slots.get(id);
  }
  id(slot: number): string | undefined {
    return this.idOf[slot];
  }
  has(id: string): boolean {
    return this.slots.has(id);
  }
  tenantOf(slot: number): string {
    return this.tenants.names[this.tenant[slot]];
  }

  private grow(): void {
    const cap = Math.max(1024, this.cap * 2);
    const g = <T extends Float64Array | Uint16Array | Int32Array | Uint8Array>(
      a: T,
      C: new (n: number) => T,
    ): T => {
      const b = new C(cap);
      b.set(a);
      return b;
    };
    this.nextAt = g(this.nextAt, Float64Array);
    this.arrivedAt = g(this.arrivedAt, Float64Array);
    this.size = g(this.size, Float64Array);
    this.attempts = g(this.attempts, Uint16Array);
    this.tenant = g(this.tenant, Uint16Array);
    this.domain = g(this.domain, Int32Array);
    this.flags = g(this.flags, Uint8Array);
    this.heapPos = g(this.heapPos, Int32Array);
    this.heap = g(this.heap, Int32Array);
    this.cap = cap;
  }

  /** Adds a message (scheduled at f.nextAt). Returns its slot. */
  insert(id: string, f: IndexFields): number {
    let s = this.free.pop();
    if (s === undefined) {
      if (this.end === this.cap) this.grow();
      s = this.end++;
    }
    this.slots.set(id, s);
    this.idOf[s] = id;
    this.arrivedAt[s] = f.arrivedAt;
    this.size[s] = f.size;
    this.tenant[s] = this.tenants.id(f.tenant);
    this.flags[s] = f.flags;
    this.update(s, { attempts: f.attempts, domains: f.domains });
    this.heapPos[s] = -1;
    this.schedule(s, f.nextAt);
    return s;
  }

  /** Records what an attempt changed (attempts, pending domains). */
  update(s: number, f: { attempts: number; domains: string[] }): void {
    this.attempts[s] = Math.min(f.attempts, 0xffff);
    if (f.attempts > 0) this.flags[s] |= F_ATTEMPTED;
    this.multi.delete(s);
    if (f.domains.length === 0) this.domain[s] = NO_DOMAIN;
    else if (f.domains.length === 1) this.domain[s] = this.domainNames.id(f.domains[0]);
    else {
      this.domain[s] = SEVERAL;
      this.multi.set(
        s,
        Int32Array.from(f.domains, (x) => this.domainNames.id(x)),
      );
    }
  }

  /** Domain ids of a message's pending recipients. */
  domainsOf(s: number): ArrayLike<number> {
    const d = this.domain[s];
    if (d === SEVERAL) return this.multi.get(s)!;
    return d === NO_DOMAIN ? [] : [d];
  }

  hasDomain(s: number, domainId: number): boolean {
    const d = this.domain[s];
    if (d === SEVERAL) return this.multi.get(s)!.includes(domainId);
    return d === domainId;
  }

  remove(id: string): number | undefined {
    const s = this.slots.get(id);
    if (s === undefined) return undefined;
    this.unschedule(s);
    this.slots.delete(id);
    this.idOf[s] = undefined;
    this.multi.delete(s);
    this.flags[s] = 0;
    this.free.push(s);
    return s;
  }

  // ---- the schedule: a min-heap of slots by nextAt ----

  /** (Re)schedules a slot at `at`, in place. */
  schedule(s: number, at: number): void {
    this.nextAt[s] = at;
    const p = this.heapPos[s];
    if (p < 0) {
      const i = this.heapLen++;
      this.heap[i] = s;
      this.heapPos[s] = i;
      this.up(i);
    } else {
      this.up(p);
      this.down(this.heapPos[s]);
    }
  }

  /** Takes a slot out of the schedule (it is being attempted, or removed). */
  unschedule(s: number): void {
    const p = this.heapPos[s];
    if (p < 0) return;
    this.heapPos[s] = -1;
    const last = this.heap[--this.heapLen];
    if (p === this.heapLen) return;
    this.heap[p] = last;
    this.heapPos[last] = p;
    this.up(p);
    this.down(this.heapPos[last]);
  }

  /** The slot due first, or -1. */
  peek(): number {
    return this.heapLen ? this.heap[0] : -1;
  }

  get scheduled(): number {
    return this.heapLen;
  }

  private up(i: number): void {
    const h = this.heap;
    const s = h[i];
    const at = this.nextAt[s];
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.nextAt[h[p]] <= at) break;
      h[i] = h[p];
      this.heapPos[h[i]] = i;
      i = p;
    }
    h[i] = s;
    this.heapPos[s] = i;
  }

  private down(i: number): void {
    const h = this.heap;
    const n = this.heapLen;
    const s = h[i];
    const at = this.nextAt[s];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const m = r < n && this.nextAt[h[r]] < this.nextAt[h[l]] ? r : l;
      if (this.nextAt[h[m]] >= at) break;
      h[i] = h[m];
      this.heapPos[h[i]] = i;
      i = m;
    }
    h[i] = s;
    this.heapPos[s] = i;
  }
}
