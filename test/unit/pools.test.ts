import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PoolManager, type PoolConfig } from '../../relay/src/pools.js';
import { CarteroError } from '../../relay/src/errors.js';

const M = 60_000;
const H = 60 * M;
const D = 24 * H;

/** A settable clock. */
function clock(start: string) {
  const c = { t: Date.parse(start), now: () => c.t };
  return c;
}

const addr = (ip: string, caps: { perHour?: number; perDay?: number } = {}) => ({
  ip,
  ehlo: `mta-${ip.split('.').pop()}.example.test`,
  ...caps,
});

/** Picks n times, recording each pick; returns the chosen IPs. */
function send(pm: PoolManager, pool: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const p = pm.pick(pool);
    assert.ok(p.ok, `pick ${i}: ${JSON.stringify(p)}`);
    pm.record(pool, p.ip);
    out.push(p.ip);
  }
  return out;
}

describe('PoolManager.pick', () => {
  it('round-robins over uncapped addresses, without counting', () => {
    const c = clock('2025-03-10T12:00:00Z');
    const pm = new PoolManager(
      [{ name: 'p', addresses: [addr('10.0.0.1'), addr('10.0.0.2'), addr('10.0.0.3')] }],
      c.now,
    );
    const ips = Array.from({ length: 6 }, () => {
      const p = pm.pick('p');
      assert.ok(p.ok);
      return p.ip;
    });
    assert.deepEqual(ips, ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.1', '10.0.0.2', '10.0.0.3']);
    assert.ok(pm.usage().every((u) => u.hourUsed === 0 && u.dayUsed === 0));
    const p = pm.pick('p');
    assert.deepEqual(p, { ok: true, ip: '10.0.0.1', ehlo: 'mta-1.example.test', bind: true });
  });

  it('chooses the address with the most remaining capacity, round robin on ties', () => {
    const c = clock('2025-03-10T12:00:00Z');
    const pm = new PoolManager(
      [
        {
          name: 'p',
          addresses: [
            addr('10.0.0.1', { perHour: 10 }),
            addr('10.0.0.2', { perHour: 10 }),
            addr('10.0.0.3', { perHour: 4 }),
          ],
        },
      ],
      c.now,
    );
    pm.record('p', '10.0.0.1', 3); // left: 7, 10, 4
    assert.deepEqual(send(pm, 'p', 4), ['10.0.0.2', '10.0.0.2', '10.0.0.2', '10.0.0.1']);
    // left: 6, 7, 4; then the two alternate: each pick leaves the other with more (or, on a tie,
    // the round-robin cursor, which sits after the last chosen address, passes to the other)
    assert.deepEqual(send(pm, 'p', 4), ['10.0.0.2', '10.0.0.1', '10.0.0.2', '10.0.0.1']);
    assert.deepEqual(
      pm.usage().map((u) => u.hourUsed),
      [6, 5, 0],
    );
  });

  it('an uncapped address beats capped ones', () => {
    const c = clock('2025-03-10T12:00:00Z');
    const pm = new PoolManager(
      [{ name: 'p', addresses: [addr('10.0.0.1', { perHour: 1000 }), addr('10.0.0.2')] }],
      c.now,
    );
    assert.deepEqual(send(pm, 'p', 3), ['10.0.0.2', '10.0.0.2', '10.0.0.2']);
  });

  it('respects perHour and resets at the next UTC hour', () => {
    const c = clock('2025-03-10T12:59:00Z');
    const pm = new PoolManager([{ name: 'p', addresses: [addr('10.0.0.1', { perHour: 2 })] }], c.now);
    send(pm, 'p', 2);
    const full = pm.pick('p');
    assert.equal(full.ok, false);
    assert.ok(!full.ok);
    assert.equal(full.retryAt, Date.parse('2025-03-10T13:00:00Z'));
    assert.match(full.reason, /hourly cap/);
    c.t = Date.parse('2025-03-10T12:59:59.999Z');
    assert.equal(pm.pick('p').ok, false);
    c.t = Date.parse('2025-03-10T13:00:00Z');
    assert.equal(pm.pick('p').ok, true);
    assert.equal(pm.usage()[0].hourUsed, 0);
    assert.equal(pm.usage()[0].dayUsed, 2);
  });

  it('respects perDay and resets at the next UTC day', () => {
    const c = clock('2025-03-10T20:00:00Z');
    const pm = new PoolManager(
      [{ name: 'p', addresses: [addr('10.0.0.1', { perHour: 5, perDay: 7 })] }],
      c.now,
    );
    send(pm, 'p', 5);
    let p = pm.pick('p');
    assert.ok(!p.ok);
    assert.equal(p.retryAt, Date.parse('2025-03-10T21:00:00Z'));
    c.t += H;
    send(pm, 'p', 2);
    p = pm.pick('p');
    assert.ok(!p.ok);
    assert.equal(p.retryAt, Date.parse('2025-03-11T00:00:00Z'));
    assert.match(p.reason, /daily cap/);
    c.t = Date.parse('2025-03-10T23:59:59Z');
    assert.equal(pm.pick('p').ok, false);
    c.t = Date.parse('2025-03-11T00:00:00Z');
    assert.equal(pm.pick('p').ok, true);
  });

  it('when every address is capped, retryAt is the earliest reset', () => {
    const c = clock('2025-03-10T12:30:00Z');
    const pm = new PoolManager(
      [{ name: 'p', addresses: [addr('10.0.0.1', { perDay: 1 }), addr('10.0.0.2', { perHour: 1 })] }],
      c.now,
    );
    send(pm, 'p', 2);
    const p = pm.pick('p');
    assert.ok(!p.ok);
    // .1 is full for the day, .2 only for the hour
    assert.equal(p.retryAt, Date.parse('2025-03-10T13:00:00Z'));
    assert.match(p.reason, /1 at the hourly cap, 1 at the daily cap/);
    c.t = p.retryAt;
    assert.deepEqual(send(pm, 'p', 1), ['10.0.0.2']);
    const q = pm.pick('p');
    assert.ok(!q.ok);
    assert.equal(q.retryAt, Date.parse('2025-03-10T14:00:00Z'));
  });

  it('throws for an unknown pool; has() tells', () => {
    const pm = new PoolManager([{ name: 'p', addresses: [addr('10.0.0.1')] }], () => 0);
    assert.equal(pm.has('p'), true);
    assert.equal(pm.has('q'), false);
    assert.throws(
      () => pm.pick('q'),
      (e: unknown) => e instanceof CarteroError && e.code === 'ERR_POOL_UNKNOWN',
    );
  });
});

describe('PoolManager warm-up', () => {
  const pools: PoolConfig[] = [
    {
      name: 'warm',
      addresses: [addr('192.0.2.1', { perDay: 150 })],
      warmup: { start: '2025-03-10', dailyCaps: [2, 3, 200] },
    },
  ];

  it('applies day 1, 2, 3 caps across UTC midnights, then only perDay', () => {
    const c = clock('2025-03-09T12:00:00Z'); // before start: day 1's cap
    const pm = new PoolManager(pools, c.now);
    assert.equal(pm.usage()[0].warmupDay, 1);
    assert.equal(pm.usage()[0].dayCap, 2);
    send(pm, 'warm', 2);
    assert.equal(pm.pick('warm').ok, false);

    c.t = Date.parse('2025-03-10T00:00:00Z'); // day 1
    send(pm, 'warm', 2);
    const p = pm.pick('warm');
    assert.ok(!p.ok);
    assert.equal(p.retryAt, Date.parse('2025-03-11T00:00:00Z'));

    c.t = Date.parse('2025-03-10T23:59:59.999Z');
    assert.equal(pm.pick('warm').ok, false);
    c.t = Date.parse('2025-03-11T00:00:00Z'); // day 2
    assert.equal(pm.usage()[0].warmupDay, 2);
    send(pm, 'warm', 3);
    assert.equal(pm.pick('warm').ok, false);

    c.t = Date.parse('2025-03-12T08:00:00Z'); // day 3: min(perDay 150, warm-up 200)
    assert.deepEqual({ day: pm.usage()[0].warmupDay, cap: pm.usage()[0].dayCap }, { day: 3, cap: 150 });

    c.t = Date.parse('2025-03-13T08:00:00Z'); // day 4: past the schedule
    assert.equal(pm.usage()[0].warmupDay, 4);
    assert.equal(pm.usage()[0].dayCap, 150);
  });

  it('without perDay, the schedule ends with no daily cap', () => {
    const c = clock('2025-03-12T08:00:00Z');
    const pm = new PoolManager(
      [{ name: 'w', addresses: [addr('192.0.2.1')], warmup: { start: '2025-03-10', dailyCaps: [1, 1] } }],
      c.now,
    );
    assert.equal(pm.usage()[0].dayCap, undefined);
    send(pm, 'w', 50);
  });
});

describe('PoolManager persistence and reload', () => {
  it('usage() round-trips through initial; stale windows are dropped', () => {
    const c = clock('2025-03-10T12:10:00Z');
    const cfg: PoolConfig[] = [
      { name: 'p', addresses: [addr('10.0.0.1', { perHour: 5, perDay: 8 }), addr('10.0.0.2')] },
    ];
    const a = new PoolManager(cfg, c.now);
    a.record('p', '10.0.0.1', 5);
    a.record('p', '10.0.0.2', 2);
    const saved = JSON.parse(JSON.stringify(a.usage()));
    assert.deepEqual(saved[0], {
      pool: 'p',
      ip: '10.0.0.1',
      hourStart: Date.parse('2025-03-10T12:00:00Z'),
      hourUsed: 5,
      dayStart: Date.parse('2025-03-10T00:00:00Z'),
      dayUsed: 5,
      hourCap: 5,
      dayCap: 8,
    });

    const b = new PoolManager(cfg, c.now, [
      ...saved,
      { pool: 'gone', ip: '10.9.9.9', hourStart: 0, hourUsed: 1, dayStart: 0, dayUsed: 1 },
    ]);
    assert.deepEqual(b.usage(), a.usage());
    assert.deepEqual(b.pick('p'), { ok: true, ip: '10.0.0.2', ehlo: 'mta-2.example.test', bind: true });

    c.t += H; // next hour: hourly counters restart, daily ones carry on
    const d = new PoolManager(cfg, c.now, saved);
    assert.deepEqual(
      d.usage().map((u) => [u.hourUsed, u.dayUsed]),
      [
        [0, 5],
        [0, 2],
      ],
    );
    c.t += D; // next day
    const e = new PoolManager(cfg, c.now, saved);
    assert.ok(e.usage().every((u) => u.hourUsed === 0 && u.dayUsed === 0));
  });

  it('reconfigure keeps counters of addresses that remain, and applies new caps', () => {
    const c = clock('2025-03-10T12:10:00Z');
    const pm = new PoolManager(
      [{ name: 'p', addresses: [addr('10.0.0.1', { perHour: 10 }), addr('10.0.0.2', { perHour: 10 })] }],
      c.now,
    );
    pm.record('p', '10.0.0.1', 4);
    pm.record('p', '10.0.0.2', 6);
    pm.reconfigure([
      { name: 'p', addresses: [addr('10.0.0.1', { perHour: 4 }), addr('10.0.0.3', { perHour: 10 })] },
      { name: 'q', addresses: [addr('10.0.0.2')] },
    ]);
    assert.deepEqual(
      pm.usage().map((u) => [u.pool, u.ip, u.hourUsed, u.hourCap]),
      [
        ['p', '10.0.0.1', 4, 4],
        ['p', '10.0.0.3', 0, 10],
        ['q', '10.0.0.2', 0, undefined],
      ],
    );
    assert.deepEqual(send(pm, 'p', 2), ['10.0.0.3', '10.0.0.3']);
    pm.record('p', '10.0.0.2'); // removed from p: ignored
    assert.equal(pm.usage().length, 3);
  });

  it('rejects invalid configurations and keeps the old one', () => {
    const pm = new PoolManager([{ name: 'p', addresses: [addr('10.0.0.1')] }], () => 0);
    const bad: PoolConfig[][] = [
      [{ name: 'p', addresses: [] }],
      [{ name: 'p', addresses: [{ ip: 'not-an-ip', ehlo: 'x' }] }],
      [{ name: 'p', addresses: [addr('10.0.0.1'), addr('10.0.0.1')] }],
      [{ name: 'p', addresses: [addr('10.0.0.1', { perHour: 0 })] }],
      [{ name: 'p', addresses: [addr('10.0.0.1', { perDay: 1.5 })] }],
      [{ name: 'p', addresses: [addr('10.0.0.1')], warmup: { start: '2025-02-30', dailyCaps: [1] } }],
      [{ name: 'p', addresses: [addr('10.0.0.1')], warmup: { start: '2025-03-10', dailyCaps: [] } }],
      [
        { name: 'p', addresses: [addr('10.0.0.1')] },
        { name: 'p', addresses: [addr('10.0.0.2')] },
      ],
    ];
    for (const cfg of bad) assert.throws(() => pm.reconfigure(cfg), RangeError, JSON.stringify(cfg));
    assert.equal(pm.has('p'), true);
    assert.deepEqual(
      pm.usage().map((u) => u.ip),
      ['10.0.0.1'],
    );
    // IPv6 is fine
    pm.reconfigure([{ name: 'v6', addresses: [{ ip: '2001:db8::25', ehlo: 'mta.example.test' }] }]);
    assert.equal(pm.has('v6'), true);
  });
});

describe('PoolManager reservations (deliveries in flight)', () => {
  it('holds room for picks not yet recorded, so concurrent deliveries cannot overshoot a cap', () => {
    const c = clock('2025-03-10T12:00:00Z');
    const pm = new PoolManager([{ name: 'p', addresses: [addr('10.0.0.1', { perDay: 3 })] }], c.now);
    const held = [pm.pick('p', 1), pm.pick('p', 1), pm.pick('p', 1)];
    assert.ok(held.every((p) => p.ok));
    const fourth = pm.pick('p', 1);
    assert.equal(fourth.ok, false, 'three in flight fill a cap of three');
    // one delivery fails: its room comes back; one succeeds: recorded and released
    pm.release('p', '10.0.0.1', 1);
    pm.record('p', '10.0.0.1', 1);
    pm.release('p', '10.0.0.1', 1);
    assert.ok(pm.pick('p', 1).ok, 'the failed one left room for another');
    assert.equal(pm.pick('p', 1).ok, false);
  });
});

describe('egress gateway addresses', () => {
  it('a pool address marked bind: false is picked with bind false; others bind', () => {
    const c = clock('2025-03-10T12:00:00Z');
    const pm = new PoolManager(
      [
        { name: 'gw', addresses: [{ ip: '192.0.2.7', ehlo: 'gw.example.com', bind: false }] },
        { name: 'own', addresses: [addr('10.0.0.1')] },
      ],
      c.now,
    );
    const gw = pm.pick('gw');
    assert.ok(gw.ok);
    assert.equal(gw.bind, false);
    assert.equal(gw.ehlo, 'gw.example.com');
    const own = pm.pick('own');
    assert.ok(own.ok);
    assert.equal(own.bind, true);
  });
});
