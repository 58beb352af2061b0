/** The complaint-rate guard (ADR 018): thresholds, volume floor, window expiry, cool-down and resume. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BounceGuard, DEFAULT_GUARD, type GuardConfig, type TenantState } from '../../relay/src/guard.js';
import {
  BOUNCE_RATE,
  COMPLAINT_RATE,
  DEFAULT_COMPLAINT_GUARD,
  combine,
  judgeRate,
  type RateThresholds,
} from '../../relay/src/complaint-guard.js';
import { RateWindow } from '../../relay/src/rate-window.js';

const HOUR = 3_600_000;
const T0 = 1_700_000_000_000;

function setup(over: Partial<RateThresholds> = {}) {
  const clock = { t: T0 };
  const cfg: GuardConfig = { ...DEFAULT_GUARD, complaints: { ...DEFAULT_COMPLAINT_GUARD, ...over } };
  const guard = new BounceGuard(
    () => cfg,
    () => clock.t,
  );
  return { clock, guard };
}

function deliver(g: BounceGuard, tenant: string, n: number): TenantState[] {
  const out: TenantState[] = [];
  for (let i = 0; i < n; i++) {
    const c = g.record(tenant, 'delivered');
    if (c) out.push(c);
  }
  return out;
}

function complain(g: BounceGuard, tenant: string, n: number): TenantState[] {
  const out: TenantState[] = [];
  for (let i = 0; i < n; i++) {
    const c = g.complaint(tenant);
    if (c) out.push(c);
  }
  return out;
}

test('defaults: warn 0.1 %, pause 0.3 %, 24 h window, 1000 delivered before judging, 24 h pause', () => {
  assert.deepEqual(
    { ...DEFAULT_COMPLAINT_GUARD },
    { warn: 0.001, pause: 0.003, windowMs: 24 * HOUR, minVolume: 1000, cooldownMs: 24 * HOUR },
  );
});

test('judgeRate: nothing below minVolume, warn at warn, pause at pause, reasons name the rate', () => {
  const c = DEFAULT_COMPLAINT_GUARD;
  assert.equal(judgeRate(COMPLAINT_RATE, { hits: 5, total: 999 }, c), undefined);
  assert.equal(judgeRate(COMPLAINT_RATE, { hits: 0, total: 1000 }, c), undefined);
  const w = judgeRate(COMPLAINT_RATE, { hits: 1, total: 1000 }, c);
  assert.equal(w?.level, 'warn');
  assert.equal(
    w?.reason,
    'complaint rate 0.10% (1 complaints over 1000 delivered recipients in the last 24h) reached the warning threshold 0.10%',
  );
  const p = judgeRate(COMPLAINT_RATE, { hits: 3, total: 1000 }, c);
  assert.equal(p?.level, 'pause');
  assert.match(p!.reason, /^complaint rate 0\.30% .* pause threshold 0\.30%$/);
  assert.equal(judgeRate(COMPLAINT_RATE, { hits: 2, total: 1000 }, c)?.level, 'warn');
});

test('combine: a pause wins over a warning, the bounce rate over the complaint rate', () => {
  const warn = { level: 'warn' as const, reason: 'w' };
  const pause = { level: 'pause' as const, reason: 'p' };
  assert.equal(combine(undefined, undefined), undefined);
  assert.deepEqual(combine(warn, pause), { ...pause, by: 'complaint' });
  assert.deepEqual(combine(pause, pause), { ...pause, by: 'bounce' });
  assert.deepEqual(combine(undefined, warn), { ...warn, by: 'complaint' });
  assert.deepEqual(combine(warn, warn), { ...warn, by: 'bounce' });
  assert.ok(
    judgeRate(BOUNCE_RATE, { hits: 10, total: 100 }, DEFAULT_GUARD)?.reason.startsWith('hard bounce'),
  );
});

test('RateWindow: hit() counts the numerator only, buckets leave the window', () => {
  const w = new RateWindow(60_000); // 1 s buckets
  w.add(T0, false);
  w.add(T0, false);
  w.hit(T0);
  assert.deepEqual([w.hits, w.total, w.rate], [1, 2, 0.5]);
  w.advance(T0 + 30_000);
  w.add(T0 + 30_000, false);
  assert.deepEqual([w.hits, w.total], [1, 3]);
  w.advance(T0 + 60_000); // the first bucket left
  assert.deepEqual([w.hits, w.total], [0, 1]);
  w.advance(T0 + 200_000);
  assert.deepEqual([w.hits, w.total, w.rate], [0, 0, 0]);
});

test('below minVolume complaints never warn or pause, whatever the rate', () => {
  const { guard } = setup();
  deliver(guard, 'acme', 10);
  assert.deepEqual(complain(guard, 'acme', 5), []);
  const s = guard.state('acme');
  assert.equal(s.state, 'active');
  assert.equal(s.complaints, 5);
  assert.equal(s.delivered, 10);
  assert.equal(s.complaintRate, 0.5);
  // only delivered recipients make the denominator: bounces and deferrals do not
  guard.record('acme', 'soft');
  guard.record('acme', 'deferred');
  assert.equal(guard.state('acme').delivered, 10);
});

test('warn at 0.1 %, pause at 0.3 % with a 24 h cool-down, then active with empty windows', () => {
  const { guard, clock } = setup();
  assert.deepEqual(deliver(guard, 'acme', 1000), []);
  const w = complain(guard, 'acme', 1);
  assert.equal(w.length, 1);
  assert.equal(w[0].state, 'warning');
  assert.equal(w[0].by, 'guard');
  assert.match(w[0].reason!, /^complaint rate 0\.10%/);
  assert.deepEqual(complain(guard, 'acme', 1), [], 'still warning: reported once');
  const p = complain(guard, 'acme', 1);
  assert.equal(p.length, 1);
  assert.equal(p[0].state, 'paused');
  assert.match(
    p[0].reason!,
    /^complaint rate 0\.30% \(3 complaints over 1000 delivered recipients in the last 24h\) reached the pause threshold 0\.30%$/,
  );
  assert.equal(p[0].pausedUntil, T0 + 24 * HOUR);
  assert.deepEqual(guard.pauses(), [
    { tenant: 'acme', reason: p[0].reason!, pausedAt: T0, pausedUntil: T0 + 24 * HOUR, by: 'guard' },
  ]);
  // paused: more complaints and deliveries are counted but change nothing
  assert.deepEqual(complain(guard, 'acme', 3), []);
  assert.deepEqual(deliver(guard, 'acme', 10), []);
  clock.t = T0 + 24 * HOUR - 1;
  assert.equal(guard.state('acme').state, 'paused');
  clock.t = T0 + 24 * HOUR;
  const back = guard.record('acme', 'delivered');
  assert.equal(back?.state, 'active');
  assert.equal(back?.by, 'guard');
  assert.equal(guard.state('acme').complaints, 0);
  assert.equal(guard.state('acme').delivered, 1);
  assert.deepEqual(guard.pauses(), []);
});

test('the complaint cool-down applies to a complaint pause, not the bounce cool-down; 0 = until resumed', () => {
  const { guard, clock } = setup({ cooldownMs: 0, minVolume: 10, windowMs: HOUR });
  deliver(guard, 'acme', 10);
  const p = complain(guard, 'acme', 1); // 10 % is over both thresholds at once
  assert.equal(p.length, 1);
  assert.equal(p[0].state, 'paused');
  assert.equal(p[0].pausedUntil, undefined);
  clock.t = T0 + 1000 * HOUR;
  assert.equal(guard.state('acme').state, 'paused');
  guard.resume('acme');
  const s = guard.state('acme');
  assert.equal(s.state, 'active');
  assert.equal(s.by, 'admin');
  assert.equal(s.complaints, 0);
  assert.equal(s.delivered, 0);
});

test('complaints leave the window: a warning ends once they are older than the window', () => {
  const { guard, clock } = setup({ minVolume: 100, windowMs: HOUR });
  deliver(guard, 'acme', 1000);
  assert.equal(complain(guard, 'acme', 1)[0].state, 'warning');
  clock.t = T0 + HOUR - 60_001; // an event stays at least windowMs - one bucket (1 min)
  assert.deepEqual(complain(guard, 'acme', 0), []);
  assert.equal(guard.complaintRates().get('acme'), 0.001, 'the complaint is still in the window');
  assert.equal(guard.state('acme').state, 'warning');
  clock.t = T0 + HOUR; // the whole window (deliveries and complaint) left it
  const back = deliver(guard, 'acme', 1);
  assert.equal(back.length, 1);
  assert.equal(back[0].state, 'active');
  assert.equal(guard.state('acme').complaints, 0);
  assert.equal(guard.complaintRates().get('acme'), 0);
});

test('rates stay apart: complaints do not touch the bounce rate and hard bounces not the complaint rate', () => {
  const { guard } = setup({ minVolume: 10 });
  deliver(guard, 'acme', 1000);
  for (let i = 0; i < 10; i++) guard.record('acme', 'hard');
  complain(guard, 'acme', 1);
  const s = guard.state('acme');
  assert.equal(s.hard, 10);
  assert.equal(s.attempted, 1010);
  assert.equal(s.complaints, 1);
  assert.equal(s.delivered, 1000);
  assert.equal(s.state, 'warning');
  assert.match(s.reason!, /^complaint rate/);
  assert.equal(guard.complaintRates().get('acme'), 0.001);
  assert.equal(guard.rates().get('acme'), 10 / 1010);
});

test('a window of another length after a reload starts the complaint window over', () => {
  const clock = { t: T0 };
  let cfg: GuardConfig = { ...DEFAULT_GUARD, complaints: { ...DEFAULT_COMPLAINT_GUARD, minVolume: 10 } };
  const guard = new BounceGuard(
    () => cfg,
    () => clock.t,
  );
  deliver(guard, 'acme', 10);
  assert.equal(guard.state('acme').delivered, 10);
  cfg = { ...cfg, complaints: { ...cfg.complaints!, windowMs: HOUR } };
  complain(guard, 'acme', 1);
  assert.equal(guard.state('acme').delivered, 0);
  assert.equal(guard.state('acme').complaints, 1);
  assert.equal(guard.state('acme').state, 'active', 'not judged on an empty denominator');
});
