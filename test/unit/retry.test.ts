import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nextRetryDelay, scheduleNext, type RetryPolicy } from '../../relay/src/retry.js';

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

/** The waits after attempts 1..n. */
const delays = (policy: RetryPolicy, n: number) =>
  Array.from({ length: n }, (_, i) => nextRetryDelay(i + 1, policy));

describe('nextRetryDelay', () => {
  it('doubles from 1m and caps at 1h (the config defaults)', () => {
    const policy = { initialMs: 1 * M, factor: 2, maxMs: 1 * H };
    assert.deepEqual(delays(policy, 9), [1 * M, 2 * M, 4 * M, 8 * M, 16 * M, 32 * M, 1 * H, 1 * H, 1 * H]);
  });

  it('stays at initialMs with factor 1', () => {
    assert.deepEqual(delays({ initialMs: 30 * S, factor: 1, maxMs: 1 * H }, 4), [
      30 * S,
      30 * S,
      30 * S,
      30 * S,
    ]);
  });

  it('handles fractional factors in whole milliseconds', () => {
    assert.deepEqual(
      delays({ initialMs: 1 * M, factor: 1.5, maxMs: 5 * M }, 6),
      [60_000, 90_000, 135_000, 202_500, 300_000, 300_000],
    );
    assert.deepEqual(delays({ initialMs: 1000, factor: 1.1, maxMs: 1 * H }, 3), [1000, 1100, 1210]);
  });

  it('caps a first wait that is already above maxMs', () => {
    assert.equal(nextRetryDelay(1, { initialMs: 2 * H, factor: 2, maxMs: 1 * H }), 1 * H);
  });

  it('does not overflow for huge attempt numbers', () => {
    const policy = { initialMs: 1 * M, factor: 2, maxMs: 4 * H };
    assert.equal(nextRetryDelay(5000, policy), 4 * H);
    assert.equal(nextRetryDelay(Number.MAX_SAFE_INTEGER, policy), 4 * H);
  });

  it('allows a zero initial wait', () => {
    assert.deepEqual(delays({ initialMs: 0, factor: 2, maxMs: 1 * H }, 3), [0, 0, 0]);
  });

  it('rejects attempts below 1 and non-integers', () => {
    const policy = { initialMs: 1 * M, factor: 2, maxMs: 1 * H };
    for (const attempt of [0, -1, 1.5, NaN, Infinity]) {
      assert.throws(() => nextRetryDelay(attempt, policy), RangeError, String(attempt));
    }
  });

  it('rejects nonsensical policies', () => {
    assert.throws(() => nextRetryDelay(1, { initialMs: -1, factor: 2, maxMs: 1 * H }), RangeError);
    assert.throws(() => nextRetryDelay(1, { initialMs: 1 * M, factor: 0.5, maxMs: 1 * H }), RangeError);
    assert.throws(() => nextRetryDelay(1, { initialMs: 1 * M, factor: NaN, maxMs: 1 * H }), RangeError);
    assert.throws(() => nextRetryDelay(1, { initialMs: 1 * M, factor: 2, maxMs: NaN }), RangeError);
  });
});

describe('scheduleNext', () => {
  const policy = { initialMs: 1 * M, factor: 2, maxMs: 1 * H };
  const arrivedAt = Date.UTC(2024, 0, 1);

  it('retries after the backoff delay, measured from now', () => {
    assert.deepEqual(
      scheduleNext({ attempts: 1, arrivedAt, now: arrivedAt + 5 * S, policy, maxAgeMs: 5 * D }),
      {
        kind: 'retry',
        at: arrivedAt + 5 * S + 1 * M,
      },
    );
    assert.deepEqual(
      scheduleNext({ attempts: 3, arrivedAt, now: arrivedAt + 10 * M, policy, maxAgeMs: 5 * D }),
      {
        kind: 'retry',
        at: arrivedAt + 10 * M + 4 * M,
      },
    );
  });

  it('retries exactly at the deadline when the backoff lands on it', () => {
    const now = arrivedAt + 5 * D - 1 * H;
    assert.deepEqual(scheduleNext({ attempts: 10, arrivedAt, now, policy, maxAgeMs: 5 * D }), {
      kind: 'retry',
      at: arrivedAt + 5 * D,
    });
  });

  it('pulls a retry past the deadline in to one final attempt at the deadline', () => {
    const now = arrivedAt + 5 * D - 10 * M;
    assert.deepEqual(scheduleNext({ attempts: 10, arrivedAt, now, policy, maxAgeMs: 5 * D }), {
      kind: 'retry',
      at: arrivedAt + 5 * D,
    });
    // One millisecond before the deadline still earns the final attempt.
    assert.deepEqual(
      scheduleNext({ attempts: 10, arrivedAt, now: arrivedAt + 5 * D - 1, policy, maxAgeMs: 5 * D }),
      {
        kind: 'retry',
        at: arrivedAt + 5 * D,
      },
    );
  });

  it('expires once the deadline has come or passed', () => {
    for (const now of [arrivedAt + 5 * D, arrivedAt + 5 * D + 1, arrivedAt + 6 * D]) {
      assert.deepEqual(scheduleNext({ attempts: 10, arrivedAt, now, policy, maxAgeMs: 5 * D }), {
        kind: 'expire',
      });
    }
  });

  it('expires even with a zero backoff at the deadline (no busy loop)', () => {
    const zero = { initialMs: 0, factor: 1, maxMs: 0 };
    assert.deepEqual(
      scheduleNext({ attempts: 1, arrivedAt, now: arrivedAt + 1 * H, policy: zero, maxAgeMs: 1 * H }),
      {
        kind: 'expire',
      },
    );
  });

  it('expires a message whose first attempt failed after maxAge', () => {
    assert.deepEqual(
      scheduleNext({ attempts: 1, arrivedAt, now: arrivedAt + 2 * H, policy, maxAgeMs: 1 * H }),
      {
        kind: 'expire',
      },
    );
  });

  it('walks a whole queue lifetime: backoff, final attempt at the deadline, then expiry', () => {
    const maxAgeMs = 3 * H;
    let now = arrivedAt; // the first attempt fails immediately, each attempt takes no time
    const waits: number[] = [];
    for (let attempts = 1; ; attempts++) {
      const next = scheduleNext({ attempts, arrivedAt, now, policy, maxAgeMs });
      if (next.kind === 'expire') break;
      waits.push(next.at - now);
      now = next.at;
    }
    assert.deepEqual(waits, [1 * M, 2 * M, 4 * M, 8 * M, 16 * M, 32 * M, 1 * H, 57 * M]);
    assert.equal(now, arrivedAt + maxAgeMs);
  });

  it('rejects attempts below 1', () => {
    assert.throws(
      () => scheduleNext({ attempts: 0, arrivedAt, now: arrivedAt, policy, maxAgeMs: 1 * H }),
      RangeError,
    );
  });
});
