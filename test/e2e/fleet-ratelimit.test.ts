/**
 * Fleet-wide tenant rate limits through a shared Redis (docs/adr/009-fleet-rate-limits.md): three relay
 * processes, each with a third of every limit as its local share, count in one redis-server.
 *
 * Figures are asserted against what a token bucket of the fleet limit can admit in the time the test
 * measured, so a slow machine changes the expected figure, never the verdict. Load is bounded: a fixed
 * number of RCPTs, or polling at most every 25 ms until a deadline.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startRedis, type RedisProc } from '../helpers/redis.js';
import { SmtpSession } from '../helpers/smtpsession.js';
import { waitFor } from '../helpers/poll.js';

const TENANTS: Record<string, string[]> = {
  single: ['30/m'], // all traffic on one relay
  singlefast: ['10/s'],
  spread: ['30/m'], // traffic over the three relays
  spreadfast: ['10/s'],
  small: ['2/m'], // fewer than the replicas
  outage: ['30/m'], // after the store is killed
};
const pass = (t: string) => `${t}-Pa55word`;

function config(redis: RedisProc): Record<string, unknown> {
  return {
    tenants: Object.entries(TENANTS).map(([name, rateLimits]) => ({
      name,
      accounts: [{ username: `${name}-app`, passwordFile: `${name}.password` }],
      senderDomains: [`${name}.test`],
      rateLimits,
    })),
    fleet: {
      rateLimitShare: 1 / 3,
      rateLimitStore: {
        type: 'redis',
        address: redis.hostPort,
        passwordFile: 'redis.password',
        timeout: '300ms',
      },
    },
  };
}

/** A logged-in session of `tenant` with a MAIL transaction open. */
async function session(port: number, tenant: string): Promise<SmtpSession> {
  const s = await SmtpSession.open(port);
  const [auth] = await s.command(
    `AUTH PLAIN ${Buffer.from(`\0${tenant}-app\0${pass(tenant)}`).toString('base64')}`,
  );
  assert.equal(auth.code, 235, auth.text);
  const [mail] = await s.command(`MAIL FROM:<x@${tenant}.test>`);
  assert.equal(mail.code, 250, mail.text);
  return s;
}

let seq = 0;
async function rcpt(s: SmtpSession): Promise<number> {
  const [r] = await s.command(`RCPT TO:<r${seq++}@dest.test>`);
  if (r.code !== 250) assert.match(r.text, /^451 4\.7\.1 Rate limit /);
  return r.code;
}

async function metricsText(relay: RelayProc): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`);
  return r.text();
}

describe('fleet rate limits shared through Redis (three relays)', () => {
  let redis: RedisProc;
  let relays: RelayProc[] = [];
  const sessions: SmtpSession[] = [];
  const open = async (i: number, tenant: string) => {
    const s = await session(relays[i].ports.smtp, tenant);
    sessions.push(s);
    return s;
  };

  before(async () => {
    redis = await startRedis({ address: '127.0.0.62', password: 'fleet-Pa55' });
    const secrets: Record<string, string> = { 'redis.password': 'fleet-Pa55' };
    for (const t of Object.keys(TENANTS)) secrets[`${t}.password`] = pass(t);
    relays = await Promise.all([0, 1, 2].map(() => startRelay({ config: config(redis), secrets })));
  });

  after(async () => {
    for (const s of sessions) await s.quit().catch(() => {});
    await Promise.all(relays.map((r) => r.cleanup()));
    await redis.stop();
  });

  test('all of a per-minute tenant on one relay: at least 95 % of the fleet limit', async () => {
    const s = await open(0, 'single');
    const t0 = Date.now();
    let ok = 0;
    for (let i = 0; i < 45; i++) if ((await rcpt(s)) === 250) ok++;
    const elapsed = Date.now() - t0;
    const ceiling = 30 + Math.floor((30 * elapsed) / 60_000);
    console.log(
      `per minute, one relay: ${ok} admitted of a fleet limit of 30/m (local share: 10) in ${elapsed} ms`,
    );
    assert.ok(ok >= 0.95 * 30, `admitted ${ok}`);
    assert.ok(ok <= ceiling, `admitted ${ok}, at most ${ceiling}`);
  });

  test('all of a per-second tenant on one relay: at least 95 % of burst + rate over two seconds', async () => {
    const s = await open(0, 'singlefast');
    let ok = 0;
    let tries = 0;
    const t0 = Date.now();
    await waitFor(
      async () => {
        tries++;
        if ((await rcpt(s)) === 250) ok++;
        return Date.now() - t0 >= 2000;
      },
      { timeoutMs: 10_000, intervalMs: 25, what: 'two seconds of RCPTs' },
    );
    const elapsed = Date.now() - t0;
    const fleet = 10 + (10 * elapsed) / 1000; // a full bucket plus the refill over the time measured
    console.log(
      `per second, one relay: ${ok} admitted in ${elapsed} ms of ${tries} tries; the fleet limit allows ${fleet.toFixed(1)}`,
    );
    // a loaded machine may send fewer RCPTs than the limit allows: then every one must have been admitted
    assert.ok(ok >= 0.95 * Math.min(fleet, tries) - 1, `admitted ${ok} of ${fleet} (${tries} tries)`);
    assert.ok(ok <= fleet + 1, `admitted ${ok}, at most ${fleet}`);
  });

  test('a tenant spread over the three relays never exceeds the limit plus one replica burst', async () => {
    const ss = [await open(0, 'spread'), await open(1, 'spread'), await open(2, 'spread')];
    const t0 = Date.now();
    let ok = 0;
    for (let i = 0; i < 60; i++) if ((await rcpt(ss[i % 3])) === 250) ok++;
    const elapsed = Date.now() - t0;
    console.log(`per minute, three relays: ${ok} admitted of 30/m in ${elapsed} ms`);
    assert.ok(ok <= 30 + 10, `admitted ${ok}: over limit + one replica burst`);
    assert.ok(ok <= 30 + Math.floor((30 * elapsed) / 60_000), `admitted ${ok}`);
    assert.ok(ok >= 0.95 * 30, `admitted ${ok}`);

    const fs = [await open(0, 'spreadfast'), await open(1, 'spreadfast'), await open(2, 'spreadfast')];
    let okf = 0;
    let i = 0;
    const t1 = Date.now();
    await waitFor(
      async () => {
        if ((await rcpt(fs[i++ % 3])) === 250) okf++;
        return Date.now() - t1 >= 1000;
      },
      { timeoutMs: 10_000, intervalMs: 10, what: 'a second of RCPTs' },
    );
    const e1 = Date.now() - t1;
    const bucket = 10 + (10 * e1) / 1000; // what one bucket of the fleet limit admits in that time
    console.log(
      `per second, three relays: ${okf} admitted in ${e1} ms of ${i} tries; one fleet bucket allows ${bucket.toFixed(1)}`,
    );
    assert.ok(okf <= bucket + 1, `admitted ${okf} in ${e1} ms`);
    assert.ok(okf >= 0.95 * Math.min(bucket, i) - 1, `admitted ${okf} in ${e1} ms of ${i} tries`);
  });

  test('a limit of 2 on three relays admits 2 fleet-wide', async () => {
    const ss = [await open(0, 'small'), await open(1, 'small'), await open(2, 'small')];
    const t0 = Date.now();
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) codes.push(await rcpt(ss[i % 3]));
    const refill = Math.floor((2 * (Date.now() - t0)) / 60_000);
    const ok = codes.filter((c) => c === 250).length;
    console.log(`2/m on three relays: codes ${codes.join(' ')}`);
    assert.deepEqual(codes.slice(0, 2), [250, 250], 'the first two, on two different relays');
    assert.ok(ok >= 2 && ok <= 2 + refill, `admitted ${ok}: ${codes.join(' ')}`);
  });

  test('the store killed mid-test: the relays fall back to their share, answer within the timeout, log once', async () => {
    const ss = [await open(0, 'outage'), await open(1, 'outage'), await open(2, 'outage')];
    assert.equal(await rcpt(ss[0]), 250, 'counted in the store');
    await redis.kill();
    const codes: number[][] = [[], [], []];
    let slowest = 0;
    for (let i = 0; i < 45; i++) {
      const t = Date.now();
      codes[i % 3].push(await rcpt(ss[i % 3]));
      slowest = Math.max(slowest, Date.now() - t);
    }
    const admitted = codes.map((c) => c.filter((x) => x === 250).length);
    console.log(`store down: admitted ${admitted.join(' + ')} (share 10 each), slowest RCPT ${slowest} ms`);
    // each relay enforces its third of 30/m (the first RCPT went to the store, not the local share)
    assert.deepEqual(admitted, [10, 10, 10]);
    assert.ok(slowest < 300 + 1000, `an RCPT took ${slowest} ms`);
    for (const r of relays) {
      const m = /^cartero_ratelimit_store_fallbacks_total\{reason="(down|timeout)"\} (\d+)/m.exec(
        await metricsText(r),
      );
      assert.ok(m && Number(m[2]) >= 1, 'fallbacks counted');
      await waitFor(() => r.logs.some((l) => l.event === 'ratelimit.store.down'), {
        what: 'store.down logged',
      });
      assert.equal(
        r.logs.filter((l) => l.event === 'ratelimit.store.down').length,
        1,
        'logged once per outage',
      );
    }

    // the store comes back (empty, on the same port): the relays reconnect and count fleet-wide again
    redis = await startRedis({ address: redis.address, port: redis.port, password: 'fleet-Pa55' });
    const back = await open(1, 'single');
    await waitFor(
      async () => (await rcpt(back)) === 250 && relays[1].logs.some((l) => l.event === 'ratelimit.store.up'),
      {
        timeoutMs: 15_000,
        intervalMs: 100,
        what: 'relay 1 counting in the store again',
      },
    );
    const view = (await (await fetch(`http://127.0.0.1:${relays[1].adminPort}/ratelimits`)).json()) as {
      scope: string;
      store: { up: boolean };
      tenants: Record<string, { unit: string; limit: number; used: number }[]>;
    };
    assert.equal(view.scope, 'fleet');
    assert.equal(view.store.up, true);
    assert.equal(view.tenants.single[0].limit, 30, 'the fleet-wide figure, not the share');
  });
});
