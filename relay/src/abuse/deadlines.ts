/**
 * Deadlines, not just idle timers. smtp-server's idle timer restarts with every byte, so a client that
 * sends one byte every few seconds keeps its slot for ever. Here, as with Postfix's
 * `smtpd_per_record_deadline` and `smtpd_min_data_rate`:
 * - a command line must be complete within `commandTimeoutMs` of the previous reply (bytes trickled in
 *   do not extend it);
 * - DATA gets `commandTimeoutMs` plus one second per `minDataRate` bytes received, so a message keeps
 *   its time as long as it arrives at that average rate or better.
 * Time the client spends waiting for us (a handler running, a delayed AUTH answer) is not counted.
 * `overdue` is the pure decision; `DeadlineWatch` applies it to open connections once a second.
 */

export interface DeadlineLimits {
  commandTimeoutMs: number;
  /** Bytes per second a DATA transfer must average; 0: no data rate (the command timeout still starts it). */
  minDataRate: number;
}

export interface Progress {
  /** Inside DATA (the message is being received). */
  inData: boolean;
  /** The client waits for our answer: nothing is owed by it. */
  waitingForUs: boolean;
  /** Bytes read from the client so far (any monotonic count). */
  bytes: number;
}

export interface PhaseState {
  inData: boolean;
  /** When the client started to owe us the current command line or DATA (epoch ms). */
  since: number;
  /** `bytes` at `since`. */
  bytesAtStart: number;
}

export type Overdue = 'command_timeout' | 'data_too_slow';

/** Whether a connection in `s` (now showing `p`) is past its deadline at `now`. */
export function overdue(s: PhaseState, p: Progress, now: number, l: DeadlineLimits): Overdue | undefined {
  if (p.waitingForUs) return undefined;
  const elapsed = now - s.since;
  if (!s.inData) return elapsed > l.commandTimeoutMs ? 'command_timeout' : undefined;
  if (l.minDataRate <= 0) return undefined;
  const allowance = l.commandTimeoutMs + ((p.bytes - s.bytesAtStart) * 1000) / l.minDataRate;
  return elapsed > allowance ? 'data_too_slow' : undefined;
}

/** The next phase state: a new phase starts when DATA begins or ends, or while the client waits for us. */
export function advance(s: PhaseState, p: Progress, now: number): PhaseState {
  if (p.waitingForUs || p.inData !== s.inData) return { inData: p.inData, since: now, bytesAtStart: p.bytes };
  return s;
}

export interface Watched {
  progress(): Progress;
  limits(): DeadlineLimits;
  cut(reason: Overdue): void;
}

/** Watches open connections; one timer for all of them. */
export class DeadlineWatch {
  private readonly conns = new Map<Watched, PhaseState>();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly now: () => number,
    private readonly intervalMs = 1000,
  ) {}

  get size(): number {
    return this.conns.size;
  }

  add(w: Watched): void {
    this.conns.set(w, { inData: false, since: this.now(), bytesAtStart: w.progress().bytes });
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.intervalMs);
      this.timer.unref();
    }
  }

  /** A complete command line arrived: the client owes nothing until our reply. */
  commandSeen(w: Watched): void {
    const s = this.conns.get(w);
    if (s) this.conns.set(w, { inData: s.inData, since: this.now(), bytesAtStart: w.progress().bytes });
  }

  remove(w: Watched): void {
    this.conns.delete(w);
    if (this.conns.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  tick(): void {
    const now = this.now();
    for (const [w, s] of this.conns) {
      const p = w.progress();
      const next = advance(s, p, now);
      if (next !== s) {
        this.conns.set(w, next);
        continue;
      }
      const why = overdue(s, p, now, w.limits());
      if (why) {
        this.conns.delete(w);
        w.cut(why);
      }
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.conns.clear();
  }
}
