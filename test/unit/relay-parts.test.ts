/** Unit tests for the small pure parts of the relay: routing, the retry heap, the bounce window, the greeting override. */
import { test, describe, mock } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { SMTPServer } from 'smtp-server';
import { selectRoute } from '../../relay/src/router.js';
import { TimeHeap } from '../../relay/src/heap.js';
import { BounceWindow } from '../../relay/src/metrics.js';
import { installSmtpHooks } from '../../relay/src/smtp-hooks.js';
import type { RelayConfig } from '../../relay/src/config.js';

const host = (h: string, port = 25) => ({ host: h, port, tls: 'none' as const });

describe('selectRoute', () => {
  const routing: RelayConfig['routing'] = {
    default: { type: 'mx' },
    domains: [
      { domain: 'example.com', ...host('exact.internal') },
      { domain: '*.example.com', ...host('wild.internal') },
      { domain: '*.eu.example.com', ...host('eu.internal') },
    ],
    backups: [],
  };
  test('exact domain first', () => {
    const r = selectRoute(routing, 'Example.COM');
    assert.equal(r.kind, 'domain');
    assert.equal(r.kind === 'domain' ? r.host.host : '', 'exact.internal');
  });
  test('the most specific wildcard matches subdomains only', () => {
    const a = selectRoute(routing, 'mail.example.com');
    const b = selectRoute(routing, 'x.eu.example.com');
    assert.equal(a.kind !== 'mx' && a.host.host, 'wild.internal');
    assert.equal(b.kind !== 'mx' && b.host.host, 'eu.internal');
    assert.equal(selectRoute(routing, 'notexample.com').kind, 'mx');
  });
  test('default MX, one destination key per domain; smarthost shares one key', () => {
    assert.deepEqual(selectRoute(routing, 'other.org'), {
      kind: 'mx',
      key: 'mx:other.org',
      domain: 'other.org',
    });
    const sh = {
      ...routing,
      default: { type: 'smarthost' as const, smarthost: host('smart.internal', 587) },
    };
    assert.equal(selectRoute(sh, 'a.org').key, selectRoute(sh, 'b.org').key);
    assert.equal(selectRoute(sh, 'a.org').kind, 'smarthost');
  });
});

test('TimeHeap pops in time order', () => {
  const h = new TimeHeap();
  const times = [50, 10, 40, 10, 30, 20, 60, 0];
  times.forEach((t, i) => h.push(t, `m${i}`));
  const out: number[] = [];
  for (let x = h.pop(); x; x = h.pop()) out.push(x.at);
  assert.deepEqual(
    out,
    [...times].sort((a, b) => a - b),
  );
});

test('BounceWindow: hard bounces over attempts in the window, per tenant', () => {
  const w = new BounceWindow(3_600_000, 60_000);
  const t0 = 1_000_000_000_000;
  for (let i = 0; i < 90; i++) w.record('a', t0 + i * 1000, false);
  for (let i = 0; i < 10; i++) w.record('a', t0 + i * 1000, true);
  w.record('b', t0, true);
  assert.equal(w.rates(t0 + 100_000).get('a'), 0.1);
  assert.equal(w.rates(t0 + 100_000).get('b'), 1);
  assert.equal(w.rates(t0 + 2 * 3_600_000).get('a'), 0, 'old buckets leave the window');
});

describe('greeting delay override (ADR 002)', () => {
  /**
   * Connects with setTimeout mocked, so the greeting pause never elapses on its own: returns whether the
   * 220 greeting came without moving the clock, and that it comes once the clock is moved by `tickMs`.
   */
  async function greeting(
    greetingDelayMs: number | undefined,
    tickMs: number,
  ): Promise<{ beforeTick: string; afterTick: string }> {
    const server = new SMTPServer({
      logger: false,
      disableReverseLookup: true,
      authOptional: true,
      ...(greetingDelayMs === undefined ? {} : { greetingDelayMs }),
    } as never);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.server.address() as net.AddressInfo).port;
    mock.timers.enable({ apis: ['setTimeout'] });
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.setEncoding('utf8');
    const got = new Promise<void>((resolve) =>
      s.on('data', (d: string) => ((buf += d), buf.includes('\r\n') && resolve())),
    );
    try {
      await new Promise<void>((r) => s.once('connect', () => r()));
      // let the server handle the connection: a bounded number of event-loop turns, no timers
      for (let i = 0; i < 50 && !buf; i++) await new Promise((r) => setImmediate(r));
      const beforeTick = buf;
      mock.timers.tick(tickMs);
      await got;
      return { beforeTick, afterTick: buf };
    } finally {
      mock.timers.reset();
      s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  }

  test('the hooks recognise the installed smtp-server', () => {
    assert.deepEqual(installSmtpHooks(), { init: true, command: true });
  });
  test('greetingDelayMs 0: the greeting comes at once', async () => {
    installSmtpHooks();
    const g = await greeting(0, 0);
    assert.match(g.beforeTick, /^220 /);
  });
  test('the upstream 100 ms pause stays the default, and a set pause is honoured', async () => {
    installSmtpHooks();
    const upstream = await greeting(undefined, 100);
    assert.equal(upstream.beforeTick, '', 'no greeting before 100 ms');
    assert.match(upstream.afterTick, /^220 /);
    const set = await greeting(1500, 1500);
    assert.equal(set.beforeTick, '');
    assert.match(set.afterTick, /^220 /);
  });
});
