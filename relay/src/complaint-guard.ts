/**
 * The rate judgement shared by the tenant guard's two rates (guard.ts), as pure functions: the hard-bounce
 * rate (hard bounces over attempted recipients) and the complaint rate (feedback-loop complaints over
 * delivered recipients). Each has its own thresholds, window, volume floor and cool-down.
 *
 * Complaint defaults (docs/adr/018-complaint-rate-guard.md): warn at 0.1 % (SES puts an account under
 * review there; Gmail's Postmaster Tools asks bulk senders to stay below it), pause at 0.3 % (the rate
 * Gmail and Yahoo require a bulk sender never to reach), over 24 h (Gmail reports a daily rate), judged
 * only once the window holds 1000 delivered recipients (at 0.3 %, 3 complaints: one complaint out of a
 * handful of messages says nothing), a pause lasting 24 h.
 */

export interface RateThresholds {
  /** Rate (0..1) at or above which the tenant is flagged 'warning'. */
  warn: number;
  /** Rate (0..1) at or above which the tenant is paused. */
  pause: number;
  /** Length of the sliding window. */
  windowMs: number;
  /** Events of the denominator in the window below which the guard does not judge. */
  minVolume: number;
  /** How long a pause by the guard lasts; 0 or not finite = until someone resumes the tenant. */
  cooldownMs: number;
}

export const DEFAULT_COMPLAINT_GUARD: Readonly<RateThresholds> = Object.freeze({
  warn: 0.001,
  pause: 0.003,
  windowMs: 86_400_000,
  minVolume: 1000,
  cooldownMs: 86_400_000,
});

/** What a rate is called in reasons: its name, what its numerator and denominator count, its precision. */
export interface RateKind {
  name: string;
  /** Reason figures: `${hits} ${of} ${total} ${unit}`. */
  of: string;
  unit: string;
  /** Decimals of the percentages. */
  digits: number;
}

export const BOUNCE_RATE: RateKind = { name: 'hard bounce rate', of: 'of', unit: 'recipients', digits: 1 };
export const COMPLAINT_RATE: RateKind = {
  name: 'complaint rate',
  of: 'complaints over',
  unit: 'delivered recipients',
  digits: 2,
};

export type RateVerdict = { level: 'pause' | 'warn'; reason: string } | undefined;

export const pct = (r: number, digits = 1) => `${(r * 100).toFixed(digits)}%`;

export function windowText(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}

/** Judges one rate: pause or warn (with the one-line reason), or nothing below warn or below minVolume. */
export function judgeRate(
  kind: RateKind,
  w: { hits: number; total: number },
  c: RateThresholds,
): RateVerdict {
  if (w.total < c.minVolume || w.total <= 0) return undefined;
  const rate = w.hits / w.total;
  const figures = `${pct(rate, kind.digits)} (${w.hits} ${kind.of} ${w.total} ${kind.unit} in the last ${windowText(c.windowMs)})`;
  if (rate >= c.pause)
    return {
      level: 'pause',
      reason: `${kind.name} ${figures} reached the pause threshold ${pct(c.pause, kind.digits)}`,
    };
  if (rate >= c.warn)
    return {
      level: 'warn',
      reason: `${kind.name} ${figures} reached the warning threshold ${pct(c.warn, kind.digits)}`,
    };
  return undefined;
}

/** The verdict on both rates: a pause wins over a warning, the bounce rate over the complaint rate. */
export function combine(
  bounce: RateVerdict,
  complaint: RateVerdict,
): { level: 'pause' | 'warn'; reason: string; by: 'bounce' | 'complaint' } | undefined {
  if (bounce?.level === 'pause') return { ...bounce, by: 'bounce' };
  if (complaint?.level === 'pause') return { ...complaint, by: 'complaint' };
  if (bounce) return { ...bounce, by: 'bounce' };
  if (complaint) return { ...complaint, by: 'complaint' };
  return undefined;
}
