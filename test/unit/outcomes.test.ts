/** applyOutcomes: the pure rules that turn one attempt's outcomes into the next delivery state. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyOutcomes, type OutcomeInput } from '../../relay/src/delivery/outcomes.js';
import type { Outcome } from '../../relay/src/delivery/types.js';
import { initialState, type Envelope } from '../../relay/src/spool/types.js';

const HOUR = 3_600_000;
const T0 = Date.parse('2026-12-01T00:00:00Z');

function env(rcpts: { address: string; notify?: string[] }[]): Envelope {
  return {
    v: 1,
    id: '0000000000000000000A',
    tenant: 't',
    pool: null,
    arrivedAt: T0,
    from: 'owner@sender.test',
    rcpts,
    dsn: {},
    size: 10,
    eightBit: false,
    smtpUtf8: false,
    origin: 'smtp',
    client: { address: '127.0.0.1', helo: 'x', listener: 'smtp' },
  };
}

const retry = { policy: { initialMs: 10 * 60_000, factor: 2, maxMs: 4 * HOUR }, maxAgeMs: 5 * 24 * HOUR };
const ok: Outcome = { result: 'delivered', status: '2.0.0', reply: '250 ok', route: 'mx' };
const temp: Outcome = { result: 'deferred', status: '4.3.0', reply: '451 later', route: 'mx' };
const hard: Outcome = { result: 'bounced', status: '5.1.1', reply: '550 no such user', route: 'mx' };

function input(e: Envelope, outcomes: [number, Outcome][], over: Partial<OutcomeInput> = {}): OutcomeInput {
  return {
    env: e,
    state: initialState(e, T0),
    outcomes: new Map(outcomes),
    now: T0 + 1000,
    retry,
    delayWarningAfterMs: 4 * HOUR,
    running: true,
    ...over,
  };
}

test('a delivered, bounced and deferred mix: only the deferred stays pending, retried per the schedule', () => {
  const e = env([{ address: 'a@x.test' }, { address: 'b@x.test' }, { address: 'c@y.test' }]);
  const before = initialState(e, T0);
  const p = applyOutcomes({
    ...input(e, [
      [0, ok],
      [1, hard],
      [2, temp],
    ]),
    state: before,
  });
  assert.deepEqual([p.delivered, p.bounced, p.deferred, p.expired], [[0], [1], [2], []]);
  assert.deepEqual(
    p.state.rcpts.map((r) => r.status),
    ['delivered', 'bounced', 'pending'],
  );
  assert.equal(p.state.attempts, 1);
  assert.equal(p.next, T0 + 1000 + 10 * 60_000);
  assert.equal(p.state.nextAttemptAt, p.next);
  assert.deepEqual(
    p.failed.map((f) => [f.address, f.status]),
    [['b@x.test', '5.1.1']],
  );
  assert.deepEqual(p.delayed, [], 'no warning before delayWarningAfter');
  assert.equal(before.rcpts[0].status, 'pending', 'the input state is not modified');
});

test('all final: remove; NOTIFY=NEVER gets no DSN', () => {
  const e = env([{ address: 'a@x.test' }, { address: 'b@x.test', notify: ['NEVER'] }]);
  const p = applyOutcomes(
    input(e, [
      [0, ok],
      [1, hard],
    ]),
  );
  assert.equal(p.next, 'remove');
  assert.deepEqual(p.failed, []);
});

test('at maxAge the pending recipients expire with 4.4.7 and the message is removed', () => {
  const e = env([{ address: 'a@x.test' }, { address: 'b@x.test' }]);
  const p = applyOutcomes(
    input(
      e,
      [
        [0, temp],
        [1, ok],
      ],
      { now: T0 + retry.maxAgeMs },
    ),
  );
  assert.equal(p.next, 'remove');
  assert.deepEqual(p.expired, [0]);
  assert.equal(p.state.rcpts[0].status, 'expired');
  assert.equal(p.failed.length, 1);
  assert.equal(p.failed[0].status, '4.4.7');
  assert.match(p.failed[0].diagnostic ?? '', /expired after 120h; last error: 451 later/);
});

test('the delay warning is due once, after delayWarningAfter', () => {
  const e = env([{ address: 'a@x.test' }]);
  const first = applyOutcomes(input(e, [[0, temp]], { now: T0 + 5 * HOUR }));
  assert.equal(first.delayed.length, 1);
  assert.equal(first.delayed[0].action, 'delayed');
  assert.equal(first.delayed[0].willRetryUntil?.getTime(), T0 + retry.maxAgeMs);
  assert.equal(first.state.delayWarned, true);
  const second = applyOutcomes({ ...input(e, [[0, temp]], { now: T0 + 6 * HOUR }), state: first.state });
  assert.deepEqual(second.delayed, [], 'warned once only');
  assert.equal(second.state.attempts, 2);
});

test('retryAt overrides the schedule; notBefore only pushes it later', () => {
  const e = env([{ address: 'a@x.test' }, { address: 'b@x.test' }]);
  const r = applyOutcomes(
    input(e, [
      [0, { ...temp, retryAt: T0 + 6000 }],
      [1, temp],
    ]),
  );
  assert.equal(r.next, T0 + 6000);
  const late = T0 + 2 * HOUR;
  const n = applyOutcomes(
    input(e, [
      [0, { ...temp, notBefore: late }],
      [1, temp],
    ]),
  );
  assert.equal(n.next, late);
  const early = applyOutcomes(input(e, [[0, { ...temp, notBefore: T0 + 5 }]]));
  assert.equal(early.next, T0 + 1000 + 10 * 60_000, 'an earlier notBefore does not pull the retry in');
});

test('hand-off: handed-off recipients are final, a refused one retries soon', () => {
  const e = env([{ address: 'a@x.test' }, { address: 'b@x.test' }]);
  const p = applyOutcomes(
    input(e, [
      [0, { ...ok, route: 'handoff' }],
      [1, { ...temp, route: 'handoff', retryAt: T0 + 6000 }],
    ]),
  );
  assert.deepEqual(p.handedOff, [0]);
  assert.deepEqual(p.delivered, []);
  assert.equal(p.next, T0 + 6000);
});

test('stopping with nothing attempted leaves the message unchanged', () => {
  const e = env([{ address: 'a@x.test' }]);
  const p = applyOutcomes(input(e, [], { running: false }));
  assert.equal(p.next, 'unchanged');
  assert.equal(p.state.attempts, 0);
});
