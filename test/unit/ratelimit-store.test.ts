/**
 * The shared rate-limit store: the RESP codec and client bounds (pure, and against a silent fake server),
 * and the Lua script against a real redis-server on loopback.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { encodeCommand, parseReply, RespClient, RespError } from '../../relay/src/resp.js';
import {
  RedisRateStore,
  limitKey,
  parseScriptReply,
  scriptArgs,
  type RateLimitStoreConfig,
} from '../../relay/src/ratelimit-store.js';
import { parseRateSpec } from '../../relay/src/ratelimit.js';
import { startRedis, type RedisProc } from '../helpers/redis.js';
import { resolveConfig } from '../../relay/src/config.js';
import { createLogger } from '../../relay/src/log.js';
import { TenantRuntime } from '../../relay/src/tenant-runtime.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { unusedPort } from '../helpers/ports.js';
import { waitFor } from '../helpers/poll.js';

describe('RESP codec', () => {
  it('encodes a command as an array of bulk strings', () => {
    assert.equal(encodeCommand(['GET', 'ké']).toString(), '*2\r\n$3\r\nGET\r\n$3\r\nké\r\n');
  });

  it('parses every reply type, nested, and waits for the rest of a partial one', () => {
    const full = Buffer.from('*4\r\n:12\r\n$3\r\nabc\r\n*2\r\n+OK\r\n$-1\r\n-ERR nope\r\n+PONG\r\n');
    const r = parseReply(full)!;
    assert.deepEqual((r.value as unknown[]).slice(0, 3), [12, 'abc', ['OK', null]]);
    const v = r.value as unknown[];
    assert.ok(v[3] instanceof Error && v[3].message === 'ERR nope');
    assert.deepEqual(parseReply(full, r.end), { value: 'PONG', end: full.length });
    for (let cut = 0; cut < r.end; cut++)
      assert.equal(parseReply(full.subarray(0, cut)), undefined, `cut ${cut}`);
  });

  it('refuses a malformed stream', () => {
    assert.throws(() => parseReply(Buffer.from('?x\r\n')), /unexpected type/);
    assert.throws(() => parseReply(Buffer.from(':1x\r\n')), /bad integer/);
    assert.throws(() => parseReply(Buffer.from('$-5\r\n')), /bad length/);
  });
});

describe('script arguments and reply', () => {
  const limits = ['10/s', '600/m', '1000/h'].map(parseRateSpec);

  it('passes the fleet-wide figures: bucket capacity is the burst, a window is its count', () => {
    assert.deepEqual(scriptArgs(limits, 4, 1, false), [
      '1',
      '0',
      '1000',
      '10',
      '4',
      '60000',
      '600',
      '4',
      '3600000',
      '1000',
      '1000',
    ]);
    assert.deepEqual(scriptArgs(limits.slice(0, 1), undefined, 0, true), ['0', '1', '1000', '10', '10']);
    assert.equal(limitKey('cartero:', 'acme', 'm'), 'cartero:rl:{acme}:m');
  });

  it('reads a refusal as the blocking limit and its wait, and the usage of each limit', () => {
    const now = 7_200_000 + 5000;
    const { result, usage } = parseScriptReply(
      [0, 2, 1500, now, 3, now + 300, 600, now + 60_000, 7, 10_800_000],
      limits,
    );
    assert.deepEqual(result, { ok: false, limit: '600/m', retryAfterMs: 1500 });
    assert.deepEqual(usage[2], {
      unit: 'h',
      limit: 1000,
      used: 7,
      windowStart: 7_200_000,
      resetsAt: 10_800_000,
    });
    assert.deepEqual(usage[0], { unit: 's', limit: 10, used: 3, windowStart: now, resetsAt: now + 300 });
    assert.throws(() => parseScriptReply([1, 0, 0], limits), RespError);
  });
});

describe('RespClient bounds', () => {
  it('fails at once when nothing listens, and a silent server costs one timeout, then fails fast', async () => {
    const port = await unusedPort('127.0.0.1');
    const down = new RespClient({ host: '127.0.0.1', port, timeoutMs: 200 });
    try {
      // 'down', not 'timeout': it did not wait for the deadline
      await assert.rejects(down.command(['PING']), (e: RespError) => e.kind === 'down');
    } finally {
      down.close();
    }

    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s)); // reads, never answers
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const c = new RespClient({
      host: '127.0.0.1',
      port: (silent.address() as net.AddressInfo).port,
      timeoutMs: 150,
      maxInFlight: 2,
      backoffMinMs: 5000,
    });
    try {
      await waitFor(() => c.connected, { what: 'connected' });
      const t0 = Date.now();
      const p1 = c.command(['PING']);
      const p2 = c.command(['PING']);
      await assert.rejects(c.command(['PING']), (e: RespError) => e.kind === 'busy');
      await assert.rejects(p1, (e: RespError) => e.kind === 'timeout');
      await assert.rejects(p2, (e: RespError) => e.kind === 'timeout');
      const took = Date.now() - t0;
      assert.ok(took >= 140, `timed out after ${took} ms, not before its deadline`);
      // the connection is closed after a missed deadline; until the back-off ends, commands fail at once
      assert.equal(c.connected, false);
      // 'down' at once, not another 'timeout': no new connection to the silent server is tried
      await assert.rejects(c.command(['PING']), (e: RespError) => e.kind === 'down');
    } finally {
      c.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});

describe('RedisRateStore against redis-server', () => {
  let redis: RedisProc;
  const stores: RedisRateStore[] = [];
  const store = (extra: Partial<RateLimitStoreConfig> = {}) => {
    const s = new RedisRateStore({
      type: 'redis',
      host: redis.address,
      port: redis.port,
      password: 'unit-Pa55',
      keyPrefix: `t${stores.length}:`,
      timeoutMs: 2000,
      maxInFlight: 100,
      ...extra,
    });
    stores.push(s);
    return s;
  };

  before(async () => {
    redis = await startRedis({ address: '127.0.0.61', password: 'unit-Pa55' });
  });
  after(async () => {
    for (const s of stores) s.close();
    await redis.stop();
  });

  it('a per-second bucket admits its burst fleet-wide, then names the limit and the wait', async () => {
    const a = store();
    await waitFor(() => a.connected, { what: 'store connected' });
    const limits = [parseRateSpec('5/s')];
    const results = [];
    for (let i = 0; i < 8; i++) results.push(await a.take('acme', limits, undefined));
    const ok = results.filter((r) => r.ok).length;
    // 5 from the bucket, plus at most what refilled while the loop ran (5 per second)
    assert.ok(ok >= 5 && ok <= 6, `admitted ${ok}`);
    const refused = results.find((r) => !r.ok)!;
    assert.equal(!refused.ok && refused.limit, '5/s');
    assert.ok(!refused.ok && refused.retryAfterMs >= 1 && refused.retryAfterMs <= 200);
    // another tenant has its own bucket
    assert.equal((await a.take('globex', limits, undefined)).ok, true);
  });

  it('two stores on one Redis share the count; a blocked take takes from no limit; usage peeks', async () => {
    const a = store({ keyPrefix: 'shared:' });
    const b = store({ keyPrefix: 'shared:' });
    await waitFor(() => a.connected && b.connected, { what: 'stores connected' });
    const limits = ['100/m', '3/h'].map(parseRateSpec);
    const r = [];
    for (let i = 0; i < 5; i++) r.push((await (i % 2 ? b : a).take('acme', limits, 50)).ok);
    assert.deepEqual(r, [true, true, true, false, false]);
    const refused = await b.take('acme', limits, 50);
    assert.equal(!refused.ok && refused.limit, '3/h');
    const u = await a.usage('acme', limits, 50);
    assert.deepEqual(
      u.map((x) => [x.unit, x.limit, x.used]),
      [
        ['m', 100, 3],
        ['h', 3, 3],
      ],
    );
    assert.equal(u[1].resetsAt - u[1].windowStart, 3_600_000);
    assert.equal(u[1].resetsAt % 3_600_000, 0);
    assert.deepEqual(
      (await a.usage('acme', limits, 50)).map((x) => x.used),
      [3, 3],
      'peeking takes nothing',
    );
  });

  it('a wrong password never connects, and takes fail at once', async () => {
    const s = store({ password: 'wrong' });
    // 'down' (not connected), not 'timeout': the take does not wait for a connection that never comes
    await assert.rejects(
      s.take('acme', [parseRateSpec('5/s')], undefined),
      (e: RespError) => e instanceof RespError && e.kind === 'down',
    );
    assert.equal(s.connected, false);
  });
});

describe('TenantRuntime with a store that never answers', () => {
  it('waits one timeout, then uses the local share at once; logs once; reports the replica scope', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((sock) => sockets.push(sock));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.63', r));
    const dir = await makeTmpDir('cartero-rlstore-');
    const lines: Record<string, unknown>[] = [];
    const log = createLogger('info', { write: (l: string) => void lines.push(JSON.parse(l)) });
    const doc = (store: boolean) => ({
      version: 1,
      listeners: [{ name: 'smtp', port: 0 }],
      paths: { root: dir },
      tenants: [{ name: 'acme', trustedNetworks: ['127.0.0.1'], rateLimits: ['6/m'] }],
      fleet: {
        rateLimitShare: 0.5,
        ...(store
          ? {
              rateLimitStore: {
                type: 'redis',
                address: `127.0.0.63:${(silent.address() as net.AddressInfo).port}`,
                timeout: '150ms',
              },
            }
          : {}),
      },
    });
    const rt = await TenantRuntime.open(resolveConfig(doc(true), dir, {}), Date.now, log);
    try {
      await waitFor(() => rt.storeState()?.up, { what: 'connected to the silent server' });
      const t0 = Date.now();
      const first = await rt.checkRcpt('acme', 'a@dest.test');
      const took = Date.now() - t0;
      assert.equal(first.fallback, 'timeout');
      assert.equal(first.err, undefined);
      assert.ok(took >= 140, `waited ${took} ms: the store's deadline, not less`);
      const codes = [];
      for (let i = 0; i < 4; i++) {
        const r = await rt.checkRcpt('acme', `b${i}@dest.test`);
        assert.equal(r.fallback, 'down', "no wait while the store is down: 'down', not 'timeout'");
        codes.push(r.err ? r.err.responseCode : 250);
      }
      // the local share of 6/m is 3: the first RCPT and two more
      assert.deepEqual(codes, [250, 250, 451, 451]);
      const view = await rt.rateUsage('acme');
      assert.equal(view.scope, 'replica');
      assert.deepEqual(
        view.usage.map((u) => [u.unit, u.limit, u.used]),
        [['m', 3, 3]],
      );
      assert.equal(rt.storeState()?.up, false);
      assert.equal(lines.filter((l) => l.event === 'ratelimit.store.down').length, 1, 'logged once');

      // a reload without the store: local share only, no fallback reported
      rt.reconfigure(resolveConfig(doc(false), dir, {}));
      assert.equal(rt.storeState(), undefined);
      const r = await rt.checkRcpt('acme', 'c@dest.test');
      assert.equal(r.fallback, undefined);
      assert.equal(r.err?.responseCode, 451);
    } finally {
      await rt.close();
      for (const sock of sockets) sock.destroy();
      await new Promise((r) => silent.close(r));
      await removeTmpDir(dir);
    }
  });
});
