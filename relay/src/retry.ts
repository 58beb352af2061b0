/**
 * Retry timing for queued messages: exponential backoff between delivery attempts, capped, and the
 * give-up point after `maxAge` in the queue. Pure functions of their inputs (times in epoch ms).
 */

/** Backoff policy, as in `RelayConfig.queue.retry`. */
export interface RetryPolicy {
  /** Wait after the first failed attempt. */
  initialMs: number;
  /** Each further wait is the previous one times this (>= 1). */
  factor: number;
  /** No wait is longer than this. */
  maxMs: number;
}

/** What to do after a failed attempt: try again at `at`, or give up (the message is too old). */
export type RetryDecision = { kind: 'retry'; at: number } | { kind: 'expire' };

function checkPolicy(policy: RetryPolicy): void {
  const { initialMs, factor, maxMs } = policy;
  if (!Number.isFinite(initialMs) || initialMs < 0)
    throw new RangeError(`retry initialMs must be >= 0, got ${initialMs}`);
  if (!Number.isFinite(factor) || factor < 1)
    throw new RangeError(`retry factor must be >= 1, got ${factor}`);
  if (!(maxMs >= 0)) throw new RangeError(`retry maxMs must be >= 0, got ${maxMs}`);
}

/**
 * The wait after failed attempt number `attempt` (1 = the first attempt failed): `initialMs`, then
 * multiplied by `factor` for each further attempt, never more than `maxMs`. Whole milliseconds.
 */
export function nextRetryDelay(attempt: number, policy: RetryPolicy): number {
  if (!Number.isInteger(attempt) || attempt < 1)
    throw new RangeError(`attempt must be an integer >= 1, got ${attempt}`);
  checkPolicy(policy);
  // Overflows to Infinity for large attempts, which the cap turns into maxMs.
  const delay = policy.initialMs * policy.factor ** (attempt - 1);
  return Math.min(policy.maxMs, Math.round(delay));
}

export interface ScheduleInput {
  /** Attempts made so far, all failed (>= 1). */
  attempts: number;
  /** When the message entered the queue. */
  arrivedAt: number;
  now: number;
  policy: RetryPolicy;
  /** How long a message may stay queued, counted from `arrivedAt`. */
  maxAgeMs: number;
}

/**
 * When to try again after the latest failed attempt. A retry that would fall after the deadline
 * (`arrivedAt + maxAgeMs`) is pulled in to one last attempt exactly at the deadline, provided the
 * deadline is still in the future; once it has come, the message expires.
 */
export function scheduleNext(input: ScheduleInput): RetryDecision {
  const { attempts, arrivedAt, now, policy, maxAgeMs } = input;
  const at = now + nextRetryDelay(attempts, policy);
  const deadline = arrivedAt + maxAgeMs;
  if (deadline <= now) return { kind: 'expire' };
  return { kind: 'retry', at: Math.min(at, deadline) };
}
