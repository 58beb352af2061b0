import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  PeriodicSaver,
  RATE_SPEC_PATTERN,
  RateLimiter,
  RateUsageStore,
  formatRateSpec,
  parseRateSpec,
  type LimiterConfig,
  type TakeResult,
  type WindowUsage,
} from '../../relay/src/ratelimit.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const H = 3_600_000;

/** A clock the test moves by hand. */
function clock(start: number): {
  now: () => number;
  set: (t: number) => void;
  advance: (ms: number) => void;
} {
  let t = start;
  return {
    now: () => t,
    set: (v) => {
      t = v;
    },
    advance: (ms) => {
      t += ms;
    },
  };
}

function limiter(
  specs: string[],
  t: number,
  extra: Omit<LimiterConfig, 'limits'> = {},
  initial?: WindowUsage[],
) {
  const c = clock(t);
  const l = new RateLimiter({ limits: specs.map(parseRateSpec), ...extra }, c.now, initial);
  return { l, c };
}

/** Takes one at a time until refused; returns how many were taken and the refusal. */
function drain(l: RateLimiter, max = 100_000): { taken: number; refusal: TakeResult } {
  for (let i = 0; i < max; i++) {
    const r = l.tryTake();
    if (!r.ok) return { taken: i, refusal: r };
  }
  throw new Error('never refused');
}

describe('parseRateSpec / formatRateSpec', () => {
  it('round-trips many values', () => {
    for (const unit of ['s', 'm', 'h', 'd'] as const) {
      for (const count of [1, 2, 9, 10, 99, 100, 1000, 12345, 1_000_000, Number.MAX_SAFE_INTEGER]) {
        const text = `${count}/${unit}`;
        assert.deepEqual(parseRateSpec(text), { count, unit }, text);
        assert.equal(formatRateSpec(parseRateSpec(text)), text);
        assert.match(text, new RegExp(RATE_SPEC_PATTERN));
      }
    }
    assert.deepEqual(parseRateSpec('100/h'), { count: 100, unit: 'h' });
  });

  it('refuses anything else with a RangeError', () => {
    const bad = [
      '0/h',
      '10/w',
      '1.5/h',
      'abc',
      '10/',
      '/h',
      '',
      '-1/h',
      '+1/h',
      '01/h',
      '10 /h',
      '10/ h',
      ' 10/h',
      '10/h ',
      '10/H',
      '10/hour',
      '10/sec',
      '10/min',
      '10/day',
      '10/ms',
      '1e3/h',
      '10//h',
      '10/h/d',
      '10',
      '99999999999999999999/h',
    ];
    for (const text of bad) {
      assert.throws(() => parseRateSpec(text), RangeError, JSON.stringify(text));
      if (text !== '99999999999999999999/h')
        assert.doesNotMatch(text, new RegExp(RATE_SPEC_PATTERN), JSON.stringify(text));
    }
    assert.throws(() => parseRateSpec('10/w'), /not a rate limit: "10\/w" \(write e\.g\./);
    assert.throws(() => parseRateSpec(undefined as unknown as string), RangeError);
  });
});

describe('RateLimiter: per-second and per-minute buckets', () => {
  it('allows a burst of the bucket size, then refills at the rate', () => {
    const { l, c } = limiter(['10/s'], 1_000_000, { burst: 25 });
    assert.equal(drain(l).taken, 25);
    c.advance(100); // 10/s: one token per 100 ms
    assert.deepEqual(l.tryTake(), { ok: true });
    assert.equal(l.tryTake().ok, false);
    c.advance(10_000); // refills to the burst, not beyond
    assert.equal(drain(l).taken, 25);
  });

  it('10/s refills one token every 100 ms and says how long to wait', () => {
    const { l, c } = limiter(['10/s'], 5_000);
    const { taken, refusal } = drain(l);
    assert.equal(taken, 10);
    assert.deepEqual(refusal, { ok: false, limit: '10/s', retryAfterMs: 100 });
    c.advance(40);
    assert.deepEqual(l.tryTake(), { ok: false, limit: '10/s', retryAfterMs: 60 });
    c.advance(60);
    assert.equal(l.tryTake().ok, true);
    assert.equal(l.tryTake().ok, false);
    // Over a long stretch, exactly 10 per second get through.
    let ok = 0;
    for (let i = 0; i < 1000; i++) {
      c.advance(10);
      if (l.tryTake().ok) ok++;
    }
    assert.equal(ok, 100);
  });

  it('a 3/s bucket refills exactly (no float drift)', () => {
    const { l, c } = limiter(['3/s'], 0);
    assert.equal(drain(l).taken, 3);
    const r = l.tryTake();
    assert.deepEqual(r, { ok: false, limit: '3/s', retryAfterMs: 334 });
    c.advance(333);
    assert.equal(l.tryTake().ok, false);
    c.advance(1);
    assert.equal(l.tryTake().ok, true);
    let ok = 0;
    for (let i = 0; i < 3000; i++) {
      c.advance(1);
      if (l.tryTake().ok) ok++;
    }
    assert.equal(ok, 9);
  });

  it('a per-minute bucket; tryTake(n) waits for n tokens', () => {
    const { l, c } = limiter(['60/m'], 0);
    assert.equal(l.tryTake(50).ok, true);
    assert.deepEqual(l.tryTake(20), { ok: false, limit: '60/m', retryAfterMs: 10_000 });
    c.advance(10_000);
    assert.equal(l.tryTake(20).ok, true);
    assert.equal(l.tryTake(0).ok, true);
    assert.throws(() => l.tryTake(-1), RangeError);
    assert.throws(() => l.tryTake(1.5), RangeError);
  });

  it('a clock that goes back does not refill nor stall', () => {
    const { l, c } = limiter(['10/s'], 100_000);
    drain(l);
    c.advance(-50_000);
    assert.equal(l.tryTake().ok, false);
    c.advance(100);
    assert.equal(l.tryTake().ok, true);
  });
});

describe('RateLimiter: hour and day windows', () => {
  it('the hour window resets at the UTC hour boundary, not 60 min after first use', () => {
    const start = Date.UTC(2024, 4, 10, 10, 30, 0);
    const { l, c } = limiter(['5/h'], start);
    assert.equal(drain(l).taken, 5);
    c.set(Date.UTC(2024, 4, 10, 10, 59, 0));
    assert.deepEqual(l.tryTake(), { ok: false, limit: '5/h', retryAfterMs: 60_000 });
    c.set(Date.UTC(2024, 4, 10, 10, 59, 59, 999));
    assert.deepEqual(l.tryTake(), { ok: false, limit: '5/h', retryAfterMs: 1 });
    c.set(Date.UTC(2024, 4, 10, 11, 0, 0));
    assert.equal(drain(l).taken, 5);
    // 60 minutes after the first use of this window is not a boundary.
    c.set(Date.UTC(2024, 4, 10, 11, 30, 0));
    assert.equal(l.tryTake().ok, false);
    const [u] = l.usage();
    assert.deepEqual(u, {
      unit: 'h',
      limit: 5,
      used: 5,
      windowStart: Date.UTC(2024, 4, 10, 11),
      resetsAt: Date.UTC(2024, 4, 10, 12),
    });
  });

  it('the day window resets at UTC midnight', () => {
    const { l, c } = limiter(['3/d'], Date.UTC(2024, 0, 31, 0, 0, 1));
    assert.equal(drain(l).taken, 3);
    c.set(Date.UTC(2024, 0, 31, 23, 0, 0));
    assert.deepEqual(l.tryTake(), { ok: false, limit: '3/d', retryAfterMs: H });
    c.set(Date.UTC(2024, 1, 1, 0, 0, 0));
    assert.equal(drain(l).taken, 3);
    assert.equal(l.usage()[0].windowStart, Date.UTC(2024, 1, 1));
    assert.equal(l.usage()[0].resetsAt, Date.UTC(2024, 1, 2));
  });

  it('usage of a fresh limiter', () => {
    const t = Date.UTC(2024, 0, 1, 5, 15);
    const { l } = limiter(['10/s', '100/h', '1000/d'], t);
    assert.deepEqual(l.usage(), [
      { unit: 's', limit: 10, used: 0, windowStart: t, resetsAt: t },
      {
        unit: 'h',
        limit: 100,
        used: 0,
        windowStart: Date.UTC(2024, 0, 1, 5),
        resetsAt: Date.UTC(2024, 0, 1, 6),
      },
      { unit: 'd', limit: 1000, used: 0, windowStart: Date.UTC(2024, 0, 1), resetsAt: Date.UTC(2024, 0, 2) },
    ]);
    l.tryTake(4);
    assert.deepEqual(l.usage()[0], { unit: 's', limit: 10, used: 4, windowStart: t, resetsAt: t + 400 });
  });
});

describe('RateLimiter: several limits', () => {
  it('is all-or-nothing across limits', () => {
    const t = Date.UTC(2024, 0, 1, 12, 0, 0);
    const { l, c } = limiter(['5/s', '8/h'], t);
    assert.equal(drain(l).taken, 5); // the bucket blocks first
    assert.deepEqual(
      l.usage().map((u) => u.used),
      [5, 5],
    );
    c.advance(1000);
    assert.equal(l.tryTake(3).ok, true);
    assert.deepEqual(
      l.usage().map((u) => u.used),
      [3, 8],
    );
    c.advance(1000);
    // The hour window is full: the refusal takes nothing from the (full) bucket.
    assert.deepEqual(l.tryTake(), { ok: false, limit: '8/h', retryAfterMs: H - 2000 });
    assert.deepEqual(
      l.usage().map((u) => u.used),
      [0, 8],
    );
    // A request too big for the bucket takes nothing from the window.
    const { l: l2 } = limiter(['5/s', '8/h'], t);
    assert.equal(l2.tryTake(6).ok, false);
    assert.deepEqual(
      l2.usage().map((u) => u.used),
      [0, 0],
    );
  });

  it('reports the limit that frees up last', () => {
    const t = Date.UTC(2024, 0, 1, 12, 0, 0);
    const { l } = limiter(['2/s', '2/h', '2/d'], t);
    assert.equal(l.tryTake(2).ok, true);
    assert.deepEqual(l.tryTake(), { ok: false, limit: '2/d', retryAfterMs: 12 * H });
  });

  it('no limits: always ok', () => {
    const { l } = limiter([], 0);
    for (let i = 0; i < 1000; i++) assert.equal(l.tryTake(1000).ok, true);
    assert.deepEqual(l.usage(), []);
  });

  it('refuses a bad configuration', () => {
    const now = () => 0;
    assert.throws(
      () => new RateLimiter({ limits: [parseRateSpec('1/h'), parseRateSpec('2/h')] }, now),
      /second/,
    );
    assert.throws(() => new RateLimiter({ limits: [], share: 0 }, now), RangeError);
    assert.throws(() => new RateLimiter({ limits: [], share: 1.5 }, now), RangeError);
    assert.throws(() => new RateLimiter({ limits: [], burst: 0 }, now), RangeError);
    assert.throws(() => new RateLimiter({ limits: [{ count: 0, unit: 'h' }] }, now), RangeError);
    assert.throws(() => new RateLimiter({ limits: [{ count: 1, unit: 'w' as 'h' }] }, now), RangeError);
  });
});

describe('RateLimiter: fleet share', () => {
  it('share 0.5 halves the effective limit (and the burst)', () => {
    const t = Date.UTC(2024, 0, 1, 12);
    const { l, c } = limiter(['1000/h'], t, { share: 0.5 });
    assert.equal(l.usage()[0].limit, 500);
    assert.equal(drain(l).taken, 500);
    assert.deepEqual(l.tryTake(), { ok: false, limit: '1000/h', retryAfterMs: H });
    c.advance(H);
    assert.equal(drain(l).taken, 500);

    const b = limiter(['10/s'], 0, { share: 0.5, burst: 40 });
    assert.equal(b.l.usage()[0].limit, 5);
    assert.equal(drain(b.l).taken, 20);
    assert.deepEqual(b.l.tryTake(), { ok: false, limit: '10/s', retryAfterMs: 200 }); // refills at 5/s
  });

  it('the effective limit is floor(count * share), at least 1, without float noise', () => {
    const eff = (spec: string, share: number) => limiter([spec], 0, { share }).l.usage()[0].limit;
    assert.equal(eff('1/h', 0.5), 1);
    assert.equal(eff('3/h', 0.5), 1);
    assert.equal(eff('100/h', 0.29), 29);
    assert.equal(eff('10/h', 0.3), 3);
    assert.equal(eff('100/h', 1 / 3), 33);
    assert.equal(eff('300/h', 1 / 3), 100);
    assert.equal(eff('7/d', 1), 7);
  });
});

describe('RateLimiter: restart, reload, departing replicas', () => {
  it('usage() passed back as initial keeps hour/day counts of the current windows', () => {
    const t = Date.UTC(2024, 2, 3, 14, 10);
    const a = limiter(['10/s', '100/h', '1000/d'], t);
    assert.equal(a.l.tryTake(7).ok, true);
    const saved = JSON.parse(JSON.stringify(a.l.usage())) as WindowUsage[];

    // Restart in the same hour: both windows keep their counts; the bucket starts full.
    const b = limiter(['10/s', '100/h', '1000/d'], t + 20 * 60_000, {}, saved);
    assert.deepEqual(
      b.l.usage().map((u) => u.used),
      [0, 7, 7],
    );
    assert.equal(b.l.tryTake(94).ok, false);
    assert.equal(b.l.tryTake(10).ok, true);

    // Restart in the next hour of the same day: the hour count is dropped, the day count kept.
    const c = limiter(['10/s', '100/h', '1000/d'], Date.UTC(2024, 2, 3, 15, 0), {}, saved);
    assert.deepEqual(
      c.l.usage().map((u) => u.used),
      [0, 0, 7],
    );

    // Restart the next day: both dropped.
    const d = limiter(['10/s', '100/h', '1000/d'], Date.UTC(2024, 2, 4, 14, 10), {}, saved);
    assert.deepEqual(
      d.l.usage().map((u) => u.used),
      [0, 0, 0],
    );

    // Entries for limits no longer configured, and junk, are ignored.
    const junk = [
      ...saved,
      { unit: 'w', used: 5, windowStart: 0 },
      null,
      { unit: 'h', used: -3, windowStart: Date.UTC(2024, 2, 3, 14) },
    ] as unknown as WindowUsage[];
    const e = limiter(['100/h'], t, {}, junk);
    assert.deepEqual(
      e.l.usage().map((u) => u.used),
      [7],
    );
  });

  it('reconfigure keeps counts of limits that still exist', () => {
    const t = Date.UTC(2024, 2, 3, 14, 10);
    const { l, c } = limiter(['10/s', '100/h', '1000/d'], t);
    assert.equal(l.tryTake(6).ok, true);
    l.reconfigure({ limits: ['20/s', '50/h', '10/m'].map(parseRateSpec) });
    assert.deepEqual(
      l.usage().map((u) => [u.unit, u.limit, u.used]),
      [
        ['s', 20, 6],
        ['h', 50, 6],
        ['m', 10, 0],
      ],
    );
    assert.equal(l.tryTake(10).ok, true);
    assert.deepEqual(l.tryTake(), { ok: false, limit: '10/m', retryAfterMs: 6000 });
    // Lowering a window limit below its count blocks until the window resets.
    c.advance(60_000);
    l.reconfigure({ limits: [parseRateSpec('10/h')], share: 1 });
    assert.deepEqual(l.tryTake(), { ok: false, limit: '10/h', retryAfterMs: 50 * 60_000 - 60_000 });
    // A bad configuration changes nothing.
    assert.throws(() => l.reconfigure({ limits: [parseRateSpec('10/h')], share: 2 }), RangeError);
    assert.deepEqual(
      l.usage().map((u) => [u.unit, u.limit, u.used]),
      [['h', 10, 16]],
    );
  });

  it('addUsed counts recipients of departed replicas in the current window', () => {
    const t = Date.UTC(2024, 2, 3, 14, 10);
    const { l, c } = limiter(['10/s', '100/h', '1000/d'], t);
    l.addUsed('h', 95);
    l.addUsed('d', 500);
    assert.deepEqual(
      l.usage().map((u) => u.used),
      [0, 95, 500],
    );
    assert.equal(l.tryTake(6).ok, false);
    assert.equal(l.tryTake(5).ok, true);
    assert.deepEqual(l.tryTake(), { ok: false, limit: '100/h', retryAfterMs: 50 * 60_000 });
    c.set(Date.UTC(2024, 2, 3, 15));
    assert.deepEqual(
      l.usage().map((u) => u.used),
      [0, 0, 505], // the bucket refilled long ago
    );
    assert.throws(() => l.addUsed('h', -1), RangeError);
    const { l: noDay } = limiter(['10/h'], t);
    noDay.addUsed('d', 1000); // no day limit: nothing to count
    assert.deepEqual(
      noDay.usage().map((u) => u.used),
      [0],
    );
  });
});

describe('RateUsageStore and PeriodicSaver', () => {
  let dir: string;
  before(async () => {
    dir = await makeTmpDir('cartero-ratelimit-test-');
  });
  after(async () => {
    await removeTmpDir(dir);
  });

  const sample: Record<string, WindowUsage[]> = {
    acme: [
      {
        unit: 'h',
        limit: 100,
        used: 7,
        windowStart: Date.UTC(2024, 0, 1, 5),
        resetsAt: Date.UTC(2024, 0, 1, 6),
      },
      { unit: 'd', limit: 1000, used: 70, windowStart: Date.UTC(2024, 0, 1), resetsAt: Date.UTC(2024, 0, 2) },
    ],
    'other tenant': [],
  };

  it('save/load round trip, and a missing file loads as empty', async () => {
    const store = new RateUsageStore(path.join(dir, 'sub', 'usage.json'));
    assert.deepEqual(await store.load(), {});
    assert.equal(store.lastLoadError, undefined);
    await store.save(sample);
    assert.deepEqual(await new RateUsageStore(store.file).load(), sample);
    assert.deepEqual(await readdir(path.join(dir, 'sub')), ['usage.json']); // no temp file left
  });

  it('coalesces concurrent saves; the last data wins', async () => {
    const store = new RateUsageStore(path.join(dir, 'coalesce.json'));
    const all = Array.from({ length: 20 }, (_, i) =>
      store.save({ t: [{ unit: 'h', limit: 100, used: i, windowStart: 0, resetsAt: H }] }),
    );
    await Promise.all(all);
    assert.equal((await store.load()).t[0].used, 19);
  });

  it('a corrupt file loads as empty state, not a crash', async () => {
    const file = path.join(dir, 'corrupt.json');
    const store = new RateUsageStore(file);
    for (const text of [
      '{"v":1,"tenants":{"a":[{"unit":"h"',
      'null',
      '[]',
      '{"v":2,"tenants":{}}',
      '\0\0\0',
    ]) {
      await writeFile(file, text);
      assert.deepEqual(await store.load(), {}, text);
      assert.ok(store.lastLoadError, text);
    }
    // Bad entries are dropped, good ones kept.
    await writeFile(
      file,
      JSON.stringify({
        v: 1,
        tenants: { a: [{ unit: 'x', used: 1, windowStart: 0 }, sample.acme[0], 'junk'], b: 'junk' },
      }),
    );
    assert.deepEqual(await store.load(), { a: [sample.acme[0]] });
    // The file feeds a limiter fine.
    const l = new RateLimiter(
      { limits: [parseRateSpec('100/h')] },
      () => Date.UTC(2024, 0, 1, 5, 30),
      (await store.load()).a,
    );
    assert.equal(l.usage()[0].used, 7);
  });

  it('PeriodicSaver: saves on stop, no overlapping saves, errors reported', async () => {
    let calls = 0;
    const s = new PeriodicSaver(async () => {
      calls++;
    }, 60_000);
    s.start();
    await s.stop();
    assert.equal(calls, 1);

    const errors: unknown[] = [];
    let n = 0;
    let active = 0;
    let overlapped = false;
    const p = new PeriodicSaver(
      async () => {
        if (active) overlapped = true;
        active++;
        await new Promise((r) => setImmediate(r));
        active--;
        if (++n === 2) throw new Error('disk full');
      },
      1,
      (e) => errors.push(e),
    );
    p.start();
    while (n < 4) await new Promise((r) => setTimeout(r, 1));
    await p.stop();
    assert.equal(overlapped, false);
    assert.equal(errors.length, 1);
    assert.throws(() => new PeriodicSaver(async () => {}, 0), RangeError);
  });
});
