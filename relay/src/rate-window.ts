/**
 * A sliding rate window: `WINDOW_BUCKETS` fixed buckets of `windowMs / WINDOW_BUCKETS` in a ring, with
 * running totals of a denominator (`total`) and a numerator (`hits`). Recording is O(1) (amortised: moving
 * the clock forward clears at most every bucket once), memory is fixed. The window covers the current bucket
 * and the `WINDOW_BUCKETS - 1` before it, so an event leaves it between `windowMs - bucket` and `windowMs`
 * after it was recorded. Used by the bounce-rate guard (hard bounces over attempted recipients) and the
 * complaint-rate guard (complaints over delivered recipients).
 */

/** Buckets per window. */
export const WINDOW_BUCKETS = 60;

export class RateWindow {
  readonly bucketMs: number;
  private readonly totalB = new Uint32Array(WINDOW_BUCKETS);
  private readonly hitsB = new Uint32Array(WINDOW_BUCKETS);
  /** Absolute number (time / bucketMs) of the newest bucket; -Infinity = nothing yet. */
  private head = Number.NEGATIVE_INFINITY;
  total = 0;
  hits = 0;

  constructor(readonly windowMs: number) {
    this.bucketMs = Math.max(1, windowMs / WINDOW_BUCKETS);
  }

  /** Moves the window to `now`, dropping buckets that left it. A clock going back counts into the newest bucket. */
  advance(now: number): void {
    const b = Math.floor(now / this.bucketMs);
    if (b <= this.head) return;
    if (b - this.head >= WINDOW_BUCKETS) {
      this.totalB.fill(0);
      this.hitsB.fill(0);
      this.total = 0;
      this.hits = 0;
    } else {
      for (let i = this.head + 1; i <= b; i++) {
        const k = i % WINDOW_BUCKETS;
        this.total -= this.totalB[k];
        this.hits -= this.hitsB[k];
        this.totalB[k] = 0;
        this.hitsB[k] = 0;
      }
    }
    this.head = b;
  }

  /** One event of the denominator, and of the numerator too when `hit`. */
  add(now: number, hit: boolean): void {
    this.advance(now);
    const k = this.head % WINDOW_BUCKETS;
    this.totalB[k]++;
    this.total++;
    if (hit) {
      this.hitsB[k]++;
      this.hits++;
    }
  }

  /** One event of the numerator only (a complaint about a message counted when it was delivered). */
  hit(now: number): void {
    this.advance(now);
    this.hitsB[this.head % WINDOW_BUCKETS]++;
    this.hits++;
  }

  clear(): void {
    this.head = Number.NEGATIVE_INFINITY;
    this.totalB.fill(0);
    this.hitsB.fill(0);
    this.total = 0;
    this.hits = 0;
  }

  /** hits over total, 0 when the window is empty. May exceed 1 when `hit()` outnumbers `add()`. */
  get rate(): number {
    return this.total ? this.hits / this.total : 0;
  }
}
