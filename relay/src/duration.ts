/** Durations in config are written like `250ms`, `30s`, `5m`, `4h`, `5d` (one unit, whole numbers). */
export const DURATION_PATTERN = '^[0-9]+(ms|s|m|h|d)$';
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(text: string): number {
  const m = /^([0-9]+)(ms|s|m|h|d)$/.exec(text);
  if (!m) throw new RangeError(`not a duration: ${JSON.stringify(text)} (write e.g. 30s, 5m, 4h, 5d)`);
  return Number(m[1]) * UNIT_MS[m[2]];
}

export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms >= UNIT_MS[unit] && ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${ms}ms`;
}
