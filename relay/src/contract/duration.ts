/** Durations in config are written like `250ms`, `30s`, `5m`, `4h`, `5d` (one unit, whole numbers). */
export const DURATION_PATTERN = '^[0-9]+(ms|s|m|h|d)$';
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * The longest delay a Node.js timer honours: setTimeout/setInterval (and socket timeouts) treat anything
 * above 2^31-1 ms (about 24.8 days) as 1 ms. A duration used as a timer delay must not exceed it.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Milliseconds of a duration. Throws a RangeError for text that is not a duration, and for one too long
 * to count in whole milliseconds exactly (beyond Number.MAX_SAFE_INTEGER, e.g. a 400-digit number), which
 * would otherwise come out as a rounded figure or Infinity.
 */
export function parseDuration(text: string): number {
  const m = /^([0-9]+)(ms|s|m|h|d)$/.exec(text);
  if (!m) throw new RangeError(`not a duration: ${JSON.stringify(text)} (write e.g. 30s, 5m, 4h, 5d)`);
  const ms = Number(m[1]) * UNIT_MS[m[2]];
  if (!Number.isSafeInteger(ms)) throw new RangeError(`duration too long: ${abbreviate(text)}`);
  return ms;
}

function abbreviate(text: string): string {
  return JSON.stringify(text.length > 24 ? `${text.slice(0, 10)}…${text.slice(-10)}` : text);
}

export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms >= UNIT_MS[unit] && ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${ms}ms`;
}
