/**
 * The relay's periodic check of its pool addresses (relay/src/identity/monitor.ts), with a stand-in
 * resolver: the metric per result, a log line only when a result changes, the interval read at each
 * round (a reload's new value applies), reconfigure dropping the old addresses' series.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { EgressIdentityMonitor, type PoolAddresses } from '../../relay/src/identity/monitor.js';
import type { IdentityResolver } from '../../relay/src/identity/resolver.js';
import type { DnsLookup } from '../../relay/src/identity/judge.js';
import { waitFor } from '../helpers/poll.js';

/** PTR and A answers from maps; counts the PTR lookups. */
function fakeResolver(ptr: Map<string, string>, a: Map<string, string>) {
  const r = {
    reverse: async (ip: string): Promise<DnsLookup<string>> => {
      r.asked++;
      const n = ptr.get(ip);
      return n ? { ok: true, records: [n] } : { ok: false, failure: 'nxdomain', code: 'ENOTFOUND' };
    },
    addresses: async (name: string): Promise<DnsLookup<string>> => {
      const ip = a.get(name);
      return ip ? { ok: true, records: [ip] } : { ok: false, failure: 'nxdomain', code: 'ENOTFOUND' };
    },
    asked: 0,
    cached: 0,
  };
  return r;
}

describe('EgressIdentityMonitor', () => {
  it('reports each result, logs changes only, rechecks every interval (read each round)', async () => {
    const registry = new Registry();
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const ptr = new Map([['192.0.2.1', 'mta.example']]);
    const a = new Map([['mta.example', '192.0.2.1']]);
    const resolver = fakeResolver(ptr, a);
    let pools: PoolAddresses[] = [
      {
        name: 'p',
        addresses: [
          { ip: '192.0.2.1', ehlo: 'mta.example' },
          { ip: '192.0.2.2', ehlo: 'b.example' },
        ],
      },
    ];
    let intervalMs = 60_000;
    const m = new EgressIdentityMonitor({
      registry,
      log,
      resolver: () => resolver as unknown as IdentityResolver,
      pools: () => pools,
      intervalMs: () => intervalMs,
    });
    const first = await m.start();
    assert.deepEqual(
      first.map((c) => [c.ip, c.result]),
      [
        ['192.0.2.1', 'Verified'],
        ['192.0.2.2', 'PtrMissing'],
      ],
    );
    const text = await registry.metrics();
    assert.match(text, /cartero_egress_fcrdns\{pool="p",ip="192\.0\.2\.2",result="PtrMissing"\} 1/);
    assert.match(text, /cartero_egress_fcrdns\{pool="p",ip="192\.0\.2\.2",result="Verified"\} 0/);
    assert.equal(lines.filter((l) => l.event === 'pool.fcrdns').length, 2);

    // a shorter interval (as after a reload) applies from the next round; unchanged results log nothing
    intervalMs = 10;
    await m.reconfigure();
    const before = resolver.asked;
    await waitFor(() => resolver.asked >= before + 4, { what: 'two more rounds' });
    ptr.set('192.0.2.2', 'b.example');
    a.set('b.example', '192.0.2.2');
    await waitFor(async () => /ip="192\.0\.2\.2",result="Verified"\} 1/.test(await registry.metrics()), {
      what: 'the fixed address verified by a later round',
    });
    const logged = lines.filter((l) => l.event === 'pool.fcrdns');
    assert.deepEqual(
      logged.slice(2).map((l) => [l.ip, l.result]),
      [
        ['192.0.2.1', 'Verified'], // after reconfigure, each address is reported once again
        ['192.0.2.2', 'PtrMissing'],
        ['192.0.2.2', 'Verified'],
      ],
    );

    // another pool after a reload: the old series go
    pools = [{ name: 'q', addresses: [{ ip: '192.0.2.1', ehlo: 'mta.example' }] }];
    await m.reconfigure();
    const after = await registry.metrics();
    assert.doesNotMatch(after, /pool="p"/);
    assert.match(after, /cartero_egress_fcrdns\{pool="q",ip="192\.0\.2\.1",result="Verified"\} 1/);
    m.stop();
  });
});
