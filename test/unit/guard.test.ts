/** BounceGuard with an injected clock: thresholds, volume floor, cool-down, admin pauses, sliding window. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BounceGuard, DEFAULT_GUARD, type GuardConfig, type TenantState } from '../../relay/src/guard.js';

const HOUR = 3_600_000;
const T0 = 1_700_000_000_000;

function setup(over: Partial<GuardConfig> = {}) {
  const clock = { t: T0 };
  const cfg: GuardConfig = { ...DEFAULT_GUARD, ...over };
  const guard = new BounceGuard(
    () => cfg,
    () => clock.t,
  );
  return { clock, guard, cfg };
}

/** Records `n` outcomes, collecting the state changes reported. */
function feed(
  g: BounceGuard,
  tenant: string,
  outcome: 'delivered' | 'hard' | 'soft' | 'deferred',
  n: number,
) {
  const changes: TenantState[] = [];
  for (let i = 0; i < n; i++) {
    const c = g.record(tenant, outcome);
    if (c) changes.push(c);
  }
  return changes;
}

test('below minVolume the guard never judges, whatever the rate', () => {
  const { guard } = setup();
  assert.deepEqual(feed(guard, 'acme', 'hard', 99), []);
  const s = guard.state('acme');
  assert.equal(s.state, 'active');
  assert.equal(s.rate, 1);
  assert.equal(s.attempted, 99);
  assert.equal(s.hard, 99);
  assert.deepEqual(guard.pauses(), []);
});

test('warning once at the warn threshold, then back to active when the rate falls', () => {
  const { guard } = setup();
  assert.deepEqual(feed(guard, 'acme', 'delivered', 94), []);
  assert.deepEqual(feed(guard, 'acme', 'hard', 5), []); // 99 attempted: not judged yet
  const changes = feed(guard, 'acme', 'soft', 1); // 100 attempted, 5 hard = 5%
  assert.equal(changes.length, 1);
  assert.equal(changes[0].state, 'warning');
  assert.equal(changes[0].by, 'guard');
  assert.match(changes[0].reason!, /5\.0%.*warning threshold 5\.0%/);
  assert.deepEqual(feed(guard, 'acme', 'hard', 2), [], 'still warning: reported once'); // 7/102
  assert.equal(guard.state('acme').state, 'warning');
  const back = feed(guard, 'acme', 'delivered', 100); // 7/202
  assert.equal(back.length, 1);
  assert.equal(back[0].state, 'active');
  assert.equal(back[0].reason, undefined);
});

test('pauses at the pause threshold with a reason naming the rate and the threshold', () => {
  const { guard, clock } = setup();
  feed(guard, 'acme', 'delivered', 90);
  const changes = feed(guard, 'acme', 'hard', 10);
  assert.deepEqual(
    changes.map((c) => c.state),
    ['paused'],
    'straight from active to paused (the warning band was passed below minVolume)',
  );
  const p = changes[0];
  assert.equal(p.by, 'guard');
  assert.equal(p.rate, 0.1);
  assert.equal(p.pausedAt, clock.t);
  assert.equal(p.pausedUntil, clock.t + HOUR);
  assert.equal(
    p.reason,
    'hard bounce rate 10.0% (10 of 100 recipients in the last 1h) reached the pause threshold 10.0%',
  );
  // Outcomes of deliveries already running still count, but do not change the state.
  assert.deepEqual(feed(guard, 'acme', 'delivered', 500), []);
  assert.equal(guard.state('acme').state, 'paused');
  assert.equal(guard.state('other').state, 'active', 'other tenants are not affected');
});

test('deferrals are not counted as attempted', () => {
  const { guard } = setup();
  feed(guard, 'acme', 'delivered', 50);
  feed(guard, 'acme', 'hard', 10);
  assert.deepEqual(feed(guard, 'acme', 'deferred', 1000), []);
  const s = guard.state('acme');
  assert.equal(s.attempted, 60);
  assert.equal(s.state, 'active', 'still below minVolume');
  feed(guard, 'acme', 'delivered', 40);
  assert.equal(guard.state('acme').state, 'paused'); // 10/100
});

test('a guard pause ends after the cool-down, with a fresh window', () => {
  const { guard, clock } = setup({ cooldownMs: HOUR });
  const expired: string[] = [];
  guard.onExpire = (t, s) => expired.push(`${t}:${s.state}`);
  feed(guard, 'acme', 'hard', 100);
  assert.equal(guard.state('acme').state, 'paused');
  clock.t += HOUR - 1;
  assert.equal(guard.state('acme').state, 'paused');
  clock.t += 1;
  const s = guard.state('acme');
  assert.equal(s.state, 'active');
  assert.equal(s.attempted, 0, 'the window restarted');
  assert.equal(s.by, 'guard');
  assert.deepEqual(expired, ['acme:active']);
  assert.deepEqual(feed(guard, 'acme', 'delivered', 1), [], 'does not pause again on the old bounces');
  assert.deepEqual(guard.pauses(), []);
});

test('record() reports a cool-down that ended', () => {
  const { guard, clock } = setup();
  feed(guard, 'acme', 'hard', 100);
  clock.t += 2 * HOUR;
  const c = guard.record('acme', 'delivered');
  assert.equal(c?.state, 'active');
  assert.equal(c?.attempted, 1);
});

test('cooldownMs 0 pauses until someone resumes', () => {
  const { guard, clock } = setup({ cooldownMs: 0 });
  feed(guard, 'acme', 'hard', 100);
  const s = guard.state('acme');
  assert.equal(s.state, 'paused');
  assert.equal(s.pausedUntil, undefined);
  clock.t += 1000 * HOUR;
  assert.equal(guard.state('acme').state, 'paused');
});

test('an admin pause without an end stays until resumed; resume clears the window', () => {
  const { guard, clock } = setup();
  feed(guard, 'acme', 'delivered', 80);
  feed(guard, 'acme', 'hard', 8);
  guard.pause('acme', 'complaint from a mailbox provider');
  clock.t += 365 * 24 * HOUR;
  const s = guard.state('acme');
  assert.equal(s.state, 'paused');
  assert.equal(s.by, 'admin');
  assert.equal(s.reason, 'complaint from a mailbox provider');
  assert.equal(s.pausedAt, T0);
  assert.equal(s.pausedUntil, undefined);
  assert.deepEqual(guard.pauses(), [
    { tenant: 'acme', reason: 'complaint from a mailbox provider', pausedAt: T0, by: 'admin' },
  ]);
  guard.resume('acme');
  const r = guard.state('acme');
  assert.equal(r.state, 'active');
  assert.equal(r.by, 'admin');
  assert.equal(r.attempted, 0);
  assert.deepEqual(guard.pauses(), []);
});

test('a pause with an end (absolute time) ends by itself', () => {
  const { guard, clock } = setup();
  guard.pause('acme', 'fleet says so', T0 + 5000, 'fleet');
  assert.equal(guard.state('acme').by, 'fleet');
  clock.t = T0 + 5000;
  assert.equal(guard.state('acme').state, 'active');
});

test('the window slides: old bounces leave it', () => {
  const { guard, clock } = setup({ windowMs: HOUR, minVolume: 100 });
  feed(guard, 'acme', 'hard', 9);
  clock.t += 30 * 60_000;
  feed(guard, 'acme', 'delivered', 90);
  assert.equal(guard.state('acme').hard, 9);
  clock.t += 31 * 60_000; // the 9 bounces are now 61 min old
  assert.deepEqual(feed(guard, 'acme', 'hard', 9), [], '9/99: the old bounces no longer count');
  const s = guard.state('acme');
  assert.equal(s.attempted, 99);
  assert.equal(s.hard, 9);
  assert.equal(guard.rates().get('acme'), 9 / 99);
  clock.t += 2 * HOUR;
  assert.equal(guard.rates().get('acme'), 0, 'an empty window reads 0');
});

test('memory per tenant is bounded: a long run of outcomes keeps exact totals', () => {
  const { guard, clock } = setup({ windowMs: HOUR, minVolume: 1_000_000 });
  for (let i = 0; i < 10_000; i++) {
    clock.t += 1000; // 10 000 s = 2.8 h of one outcome a second
    guard.record('acme', i % 10 === 0 ? 'hard' : 'delivered');
  }
  const s = guard.state('acme');
  // The window covers the current 1 min bucket and the 59 before it: between 3540 and 3600 outcomes.
  assert.ok(s.attempted >= 3540 && s.attempted <= 3600, String(s.attempted));
  assert.ok(Math.abs(s.rate - 0.1) < 0.005, String(s.rate));
});

test('pauses() round trip through the constructor', () => {
  const { guard, clock } = setup();
  feed(guard, 'a', 'hard', 100);
  guard.pause('b', 'by hand');
  guard.pause('c', 'short', T0 + 10, 'fleet');
  const saved = JSON.parse(JSON.stringify(guard.pauses()));
  clock.t += 60_000; // c's pause ended meanwhile
  const cfg = { ...DEFAULT_GUARD };
  const g2 = new BounceGuard(
    () => cfg,
    () => clock.t,
    saved,
  );
  const a = g2.state('a');
  assert.equal(a.state, 'paused');
  assert.equal(a.by, 'guard');
  assert.equal(a.pausedAt, T0);
  assert.equal(a.pausedUntil, T0 + HOUR);
  assert.match(a.reason!, /pause threshold/);
  assert.equal(g2.state('b').state, 'paused');
  assert.equal(g2.state('b').pausedUntil, undefined);
  assert.equal(g2.state('c').state, 'active');
  assert.deepEqual(
    g2.pauses().map((p) => p.tenant),
    ['a', 'b'],
  );
  clock.t = T0 + HOUR;
  assert.deepEqual(
    g2.pauses().map((p) => p.tenant),
    ['b'],
  );
});

test('per-tenant configuration', () => {
  const clock = { t: T0 };
  const strict: GuardConfig = { ...DEFAULT_GUARD, minVolume: 10, pause: 0.02 };
  const g = new BounceGuard(
    (t) => (t === 'strict' ? strict : DEFAULT_GUARD),
    () => clock.t,
  );
  feed(g, 'strict', 'delivered', 9);
  feed(g, 'lax', 'delivered', 9);
  assert.equal(g.record('strict', 'hard')?.state, 'paused');
  assert.equal(g.record('lax', 'hard'), undefined);
});
