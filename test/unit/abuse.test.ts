import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SlidingCounter, clientKey } from '../../relay/src/abuse/window.js';
import {
  AuthThrottle,
  DEFAULT_AUTH_LIMITS,
  closesConnection,
  failureDelay,
  type AuthLimits,
} from '../../relay/src/abuse/auth-throttle.js';
import { ClientConnections, admitGlobal } from '../../relay/src/abuse/client-limits.js';
import { advance, overdue, type PhaseState } from '../../relay/src/abuse/deadlines.js';

function clock(t = 1_000_000) {
  const c = { t, now: () => c.t };
  return c;
}

describe('SlidingCounter', () => {
  test('counts within the window and forgets after two windows', () => {
    const c = clock();
    const s = new SlidingCounter(c.now);
    for (let i = 0; i < 5; i++) s.hit('a', 1000);
    assert.equal(s.count('a', 1000), 5);
    c.t += 1500; // half of the previous window still overlaps
    assert.equal(s.count('a', 1000), 2.5);
    c.t += 1000;
    assert.equal(s.count('a', 1000), 0);
  });
  test('a clock that goes backwards starts afresh instead of going negative', () => {
    const c = clock();
    const s = new SlidingCounter(c.now);
    s.hit('a', 1000);
    c.t -= 10_000;
    assert.equal(s.count('a', 1000), 0);
  });
  test('stays under its cap when flooded with keys, keeping locked ones longest', () => {
    const c = clock();
    const s = new SlidingCounter(c.now, 100);
    s.hit('locked', 1000);
    s.lock('locked', c.t + 60_000);
    c.t += 5000;
    for (let i = 0; i < 1000; i++) s.hit(`k${i}`, 1000);
    assert.ok(s.size <= 100);
  });
  test('lock and lockedUntil', () => {
    const c = clock();
    const s = new SlidingCounter(c.now);
    s.hit('a', 1000);
    s.lock('a', c.t + 500);
    assert.equal(s.lockedUntil('a'), c.t + 500);
    assert.equal(s.locked(), 1);
    c.t += 501;
    assert.equal(s.lockedUntil('a'), undefined);
    assert.equal(s.locked(), 0);
  });
});

describe('clientKey', () => {
  test('IPv4 as is, IPv6 by /64, mapped IPv4 as IPv4', () => {
    assert.equal(clientKey('192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('2001:db8:1:2:aaaa::1'), clientKey('2001:db8:1:2:bbbb::9'));
    assert.notEqual(clientKey('2001:db8:1:2::1'), clientKey('2001:db8:1:3::1'));
    assert.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7');
  });
});

describe('AuthThrottle', () => {
  const limits: AuthLimits = {
    ...DEFAULT_AUTH_LIMITS,
    clientFailures: 3,
    accountFailures: 5,
    lockoutMs: 10_000,
  };
  const attempt = (address: string, username = 'alice', extra = {}) => ({
    address,
    username,
    trusted: false,
    peer: false,
    ...extra,
  });

  test('growing delay after the first failure, capped; the Nth failure closes', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((n) => failureDelay(n, DEFAULT_AUTH_LIMITS)),
      [0, 1000, 2000, 4000, 8000, 8000],
    );
    assert.equal(closesConnection(2, DEFAULT_AUTH_LIMITS), false);
    assert.equal(closesConnection(3, DEFAULT_AUTH_LIMITS), true);
  });

  test('an address is locked after its budget, for the lockout, then free again', () => {
    const c = clock();
    const t = new AuthThrottle(() => limits, c.now);
    assert.deepEqual(t.failed(attempt('192.0.2.1')), []);
    assert.deepEqual(t.failed(attempt('192.0.2.1')), []);
    assert.deepEqual(t.failed(attempt('192.0.2.1')), [{ scope: 'client', until: c.t + 10_000 }]);
    assert.deepEqual(t.locked(attempt('192.0.2.1', 'bob')), { scope: 'client', until: c.t + 10_000 });
    assert.equal(t.locked(attempt('192.0.2.2', 'bob')), undefined);
    c.t += 10_001;
    assert.equal(t.locked(attempt('192.0.2.1')), undefined);
  });

  test('an account is locked by failures from many addresses, for every untrusted address', () => {
    const c = clock();
    const t = new AuthThrottle(() => limits, c.now);
    for (let i = 1; i <= 4; i++) assert.deepEqual(t.failed(attempt(`192.0.2.${i}`)), []);
    assert.deepEqual(t.failed(attempt('192.0.2.5')), [{ scope: 'account', until: c.t + 10_000 }]);
    assert.equal(
      t.locked(attempt('198.51.100.1', 'ALICE'))?.scope,
      'account',
      'names compare case-insensitively',
    );
    assert.equal(t.locked(attempt('198.51.100.1', 'alice', { trusted: true })), undefined);
    assert.equal(t.lockedAccounts(), 1);
  });

  test('trusted clients are neither counted nor locked; the peer account is exempt from the address lock', () => {
    const c = clock();
    const t = new AuthThrottle(() => limits, c.now);
    for (let i = 0; i < 10; i++) assert.deepEqual(t.failed(attempt('10.0.0.1', 'x', { trusted: true })), []);
    assert.equal(t.locked(attempt('10.0.0.1', 'x', { trusted: true })), undefined);
    for (let i = 0; i < 3; i++) t.failed(attempt('192.0.2.9', 'x'));
    assert.equal(t.locked(attempt('192.0.2.9', 'x'))?.scope, 'client');
    assert.equal(t.locked(attempt('192.0.2.9', 'peer', { peer: true })), undefined);
  });

  test('budgets of 0 turn the locks off', () => {
    const c = clock();
    const t = new AuthThrottle(() => ({ ...limits, clientFailures: 0, accountFailures: 0 }), c.now);
    for (let i = 0; i < 100; i++) assert.deepEqual(t.failed(attempt('192.0.2.1')), []);
    assert.equal(t.locked(attempt('192.0.2.1')), undefined);
  });
});

describe('ClientConnections', () => {
  test('caps concurrent connections per address and releases once', () => {
    const c = clock();
    const cc = new ClientConnections(c.now);
    const l = { maxConnectionsPerClient: 2 };
    const a = cc.admit('192.0.2.1', false, l);
    const b = cc.admit('192.0.2.1', false, l);
    assert.ok(a.ok && b.ok);
    assert.deepEqual(cc.admit('192.0.2.1', false, l), { ok: false, reason: 'client_connections' });
    assert.ok(cc.admit('192.0.2.2', false, l).ok);
    assert.ok(cc.admit('192.0.2.1', true, l).ok, 'trusted clients are exempt');
    if (a.ok) {
      a.release();
      a.release();
    }
    assert.ok(cc.admit('192.0.2.1', false, l).ok);
    assert.deepEqual(cc.admit('192.0.2.1', false, l), { ok: false, reason: 'client_connections' });
  });
  test('rate per address over a sliding window', () => {
    const c = clock();
    const cc = new ClientConnections(c.now);
    const l = { maxConnectionsPerClient: 100, connectionRatePerClient: { count: 3, perMs: 60_000 } };
    for (let i = 0; i < 3; i++) {
      const a = cc.admit('192.0.2.1', false, l);
      assert.ok(a.ok);
      if (a.ok) a.release();
    }
    assert.deepEqual(cc.admit('192.0.2.1', false, l), { ok: false, reason: 'client_rate' });
    c.t += 120_000;
    assert.ok(cc.admit('192.0.2.1', false, l).ok);
  });
  test('the listener-wide cap keeps a reserve for trusted clients', () => {
    assert.equal(admitGlobal(900, 1000, 100, false), true);
    assert.equal(admitGlobal(901, 1000, 100, false), false);
    assert.equal(admitGlobal(1000, 1000, 100, true), true);
    assert.equal(admitGlobal(1001, 1000, 100, true), false);
  });
});

describe('deadlines', () => {
  const l = { commandTimeoutMs: 10_000, minDataRate: 500 };
  const s = (since: number, inData = false, bytesAtStart = 0): PhaseState => ({
    inData,
    since,
    bytesAtStart,
  });

  test('a command line must be complete within the timeout whatever trickles in', () => {
    assert.equal(overdue(s(0), { inData: false, waitingForUs: false, bytes: 999 }, 10_000, l), undefined);
    assert.equal(
      overdue(s(0), { inData: false, waitingForUs: false, bytes: 999 }, 10_001, l),
      'command_timeout',
    );
  });
  test('time the client waits for us does not count', () => {
    assert.equal(overdue(s(0), { inData: false, waitingForUs: true, bytes: 0 }, 60_000, l), undefined);
    const next = advance(s(0), { inData: false, waitingForUs: true, bytes: 5 }, 60_000);
    assert.deepEqual(next, s(60_000, false, 5));
  });
  test('DATA gets the timeout plus a second per minDataRate bytes', () => {
    // 30 s in: 10 s + 10,000 B / 500 B/s = 30 s allowed
    assert.equal(
      overdue(s(0, true), { inData: true, waitingForUs: false, bytes: 10_000 }, 30_000, l),
      undefined,
    );
    assert.equal(
      overdue(s(0, true), { inData: true, waitingForUs: false, bytes: 10_000 }, 30_001, l),
      'data_too_slow',
    );
    assert.equal(
      overdue(s(0, true), { inData: true, waitingForUs: false, bytes: 0 }, 1e9, { ...l, minDataRate: 0 }),
      undefined,
      'minDataRate 0: no data deadline',
    );
  });
  test('a new phase starts when DATA begins or ends', () => {
    const st = s(0);
    assert.equal(advance(st, { inData: false, waitingForUs: false, bytes: 10 }, 5), st);
    assert.deepEqual(advance(st, { inData: true, waitingForUs: false, bytes: 10 }, 5), s(5, true, 10));
  });
});
