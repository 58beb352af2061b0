import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import ipaddr from 'ipaddr.js';
import {
  isPrivateTarget,
  MxResolver,
  TtlCache,
  type Cidr,
  type MxResolverOptions,
} from '../../relay/src/dns.js';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';

const cidrs = (...list: string[]): Cidr[] => list.map((c) => ipaddr.parseCIDR(c));
/** MX hosts in these tests live on 127.0.4.x, which only an allow-list makes usable. */
const LOOPBACK = cidrs('127.0.0.0/8', '::1/128');

let dns: DnsServer;
before(async () => {
  dns = await startDns({
    mx: [
      { domain: 'prio.test', host: 'mx1.prio.test', pref: 20 },
      { domain: 'prio.test', host: 'mx2.prio.test', pref: 10 },
      { domain: 'equal.test', host: 'a.equal.test', pref: 10 },
      { domain: 'equal.test', host: 'b.equal.test', pref: 10 },
      { domain: 'dual.test', host: 'mx.dual.test', pref: 10 },
      { domain: 'partial.test', host: 'ghost.partial.test', pref: 5 },
      { domain: 'partial.test', host: 'real.partial.test', pref: 10 },
      { domain: 'dangling.test', host: 'ghost.dangling.test', pref: 10 },
      { domain: 'mxbroken.test', host: 'mx.broken.test', pref: 10 },
      { domain: 'mixed.test', host: 'mx.mixed.test', pref: 10 },
      { domain: 'cache.test', host: 'mx.cache.test', pref: 10 },
      { domain: 'burst.test', host: 'mx.burst.test', pref: 10 },
    ],
    a: [
      { name: 'mx1.prio.test', ip: '127.0.4.1' },
      { name: 'mx2.prio.test', ip: '127.0.4.2' },
      { name: 'a.equal.test', ip: '127.0.4.3' },
      { name: 'b.equal.test', ip: '127.0.4.4' },
      { name: 'implicit.test', ip: '127.0.4.5' },
      { name: 'mx.dual.test', ip: '127.0.4.6' },
      { name: 'real.partial.test', ip: '127.0.4.7' },
      { name: 'mx.mixed.test', ip: '10.0.0.1' },
      { name: 'mx.mixed.test', ip: '93.184.216.34' },
      { name: 'mx.cache.test', ip: '127.0.4.8' },
      { name: 'mx.burst.test', ip: '127.0.4.9' },
    ],
    aaaa: [{ name: 'mx.dual.test', ip: '::1' }],
    nullMx: ['nullmx.test'],
    servfail: ['broken.test'],
    noAnswer: ['slow.test'],
  });
});
after(() => dns?.stop());

function resolver(opts: Partial<MxResolverOptions> = {}): MxResolver {
  return new MxResolver({ servers: [dns.server], timeoutMs: 2000, allowPrivateTargets: LOOPBACK, ...opts });
}

async function mxQueries(domain: string): Promise<number> {
  return (await dns.queries()).filter((q) => q.type === 'MX' && q.name === domain).length;
}

describe('MxResolver against dnsmasq', () => {
  it('orders MX hosts by preference, lowest first', async () => {
    assert.deepEqual(await resolver().resolveDestination('prio.test'), {
      kind: 'hosts',
      hosts: [
        { exchange: 'mx2.prio.test', preference: 10, addresses: ['127.0.4.2'] },
        { exchange: 'mx1.prio.test', preference: 20, addresses: ['127.0.4.1'] },
      ],
    });
  });

  it('returns every host of equal preference, in an order the random function picks', async () => {
    const order = async (r: number) => {
      const res = await resolver({ random: () => r }).resolveDestination('EQUAL.test.');
      assert.equal(res.kind, 'hosts');
      return res.hosts.map((h) => `${h.exchange}=${h.addresses.join()}`);
    };
    const first = await order(0);
    const second = await order(0.99);
    assert.deepEqual([...first].sort(), ['a.equal.test=127.0.4.3', 'b.equal.test=127.0.4.4']);
    assert.deepEqual(second, [...first].reverse());
  });

  it('uses the domain itself when it has no MX but an address (implicit MX)', async () => {
    assert.deepEqual(await resolver().resolveDestination('implicit.test'), {
      kind: 'hosts',
      hosts: [{ exchange: 'implicit.test', preference: 0, addresses: ['127.0.4.5'] }],
    });
  });

  it('lists IPv4 addresses before IPv6 ones', async () => {
    const res = await resolver().resolveDestination('dual.test');
    assert.deepEqual(res, {
      kind: 'hosts',
      hosts: [{ exchange: 'mx.dual.test', preference: 10, addresses: ['127.0.4.6', '::1'] }],
    });
  });

  it('skips MX hosts that do not resolve', async () => {
    const res = await resolver().resolveDestination('partial.test');
    assert.deepEqual(res, {
      kind: 'hosts',
      hosts: [{ exchange: 'real.partial.test', preference: 10, addresses: ['127.0.4.7'] }],
    });
  });

  it('fails a null MX domain for good (null-mx)', async () => {
    const res = await resolver().resolveDestination('nullmx.test');
    assert.equal(res.kind, 'permanent');
    assert.equal(res.failure, 'null-mx');
    assert.match(res.reason, /null MX/);
  });

  it('fails a domain that does not exist for good (nxdomain)', async () => {
    const res = await resolver().resolveDestination('nope.test');
    assert.deepEqual(res, {
      kind: 'permanent',
      failure: 'nxdomain',
      reason: 'nope.test: domain does not exist (NXDOMAIN)',
    });
  });

  it('fails for good (no-route) when no MX host has an address', async () => {
    const res = await resolver().resolveDestination('dangling.test');
    assert.equal(res.kind, 'permanent');
    assert.equal(res.failure, 'no-route');
    assert.match(res.reason, /ghost\.dangling\.test/);
  });

  it('fails temporarily on SERVFAIL', async () => {
    const res = await resolver().resolveDestination('broken.test');
    assert.equal(res.kind, 'temporary');
    assert.match(res.reason, /ESERVFAIL/);
  });

  it('defers when the only MX host fails to resolve with SERVFAIL', async () => {
    const res = await resolver().resolveDestination('mxbroken.test');
    assert.equal(res.kind, 'temporary');
    assert.match(res.reason, /mx\.broken\.test: ESERVFAIL/);
  });

  it('defers when the DNS server does not answer within timeoutMs', async () => {
    const started = Date.now();
    const res = await resolver({ timeoutMs: 300 }).resolveDestination('slow.test');
    assert.equal(res.kind, 'temporary');
    assert.match(res.reason, /ETIMEOUT/);
    assert.ok(Date.now() - started < 2000, 'the timeout bounds the lookup');
  });

  it('defers when the DNS server is down', async () => {
    const down = await startDns({});
    await down.stop();
    const res = await resolver({ servers: [down.server] }).resolveDestination('prio.test');
    assert.equal(res.kind, 'temporary');
  });

  it('refuses private targets unless allow-listed', async () => {
    const res = await resolver({ allowPrivateTargets: [] }).resolveDestination('prio.test');
    assert.equal(res.kind, 'permanent');
    assert.equal(res.failure, 'no-route');
    assert.match(res.reason, /refused: private address 127\.0\.4\.2 \(mx2\.prio\.test\)/);
  });

  it('drops only the private addresses of a host', async () => {
    const res = await resolver({ allowPrivateTargets: [] }).resolveDestination('mixed.test');
    assert.deepEqual(res, {
      kind: 'hosts',
      hosts: [{ exchange: 'mx.mixed.test', preference: 10, addresses: ['93.184.216.34'] }],
    });
  });

  it('answers repeated lookups from the cache until the TTL passes', async () => {
    let now = 1_000_000;
    const r = resolver({ cacheTtlMs: 60_000, now: () => now });
    const before = await mxQueries('cache.test');
    const first = await r.resolveDestination('cache.test');
    assert.equal(await mxQueries('cache.test'), before + 1);
    now += 59_000;
    assert.deepEqual(await r.resolveDestination('cache.test'), first);
    assert.equal(await mxQueries('cache.test'), before + 1, 'served from the cache');
    now += 1_000;
    assert.deepEqual(await r.resolveDestination('cache.test'), first);
    assert.equal(await mxQueries('cache.test'), before + 2, 'expired after the TTL');
  });

  it('shares one lookup between concurrent resolves of a domain', async () => {
    const before = await mxQueries('burst.test');
    const results = await Promise.all(
      Array.from({ length: 5 }, () => resolver().resolveDestination('burst.test')),
    );
    assert.equal(results.length, 5);
    // Five resolvers, five lookups; one resolver, one.
    assert.equal(await mxQueries('burst.test'), before + 5);
    const r = resolver();
    await Promise.all(Array.from({ length: 5 }, () => r.resolveDestination('burst.test')));
    assert.equal(await mxQueries('burst.test'), before + 6);
  });

  it('does not cache temporary failures', async () => {
    const r = resolver();
    const before = await mxQueries('broken.test');
    assert.equal((await r.resolveDestination('broken.test')).kind, 'temporary');
    assert.equal((await r.resolveDestination('broken.test')).kind, 'temporary');
    assert.equal(await mxQueries('broken.test'), before + 2);
  });
});

describe('isPrivateTarget', () => {
  it('refuses loopback, private, link-local, CGNAT, unspecified and multicast addresses', () => {
    for (const ip of [
      '127.0.0.1',
      '10.1.2.3',
      '172.16.0.1',
      '192.168.1.1',
      '169.254.1.1',
      '100.64.0.1',
      '0.0.0.0',
      '224.0.0.1',
      '255.255.255.255',
      '::1',
      '::',
      'fd00::1',
      'fe80::1',
      'ff02::1',
      '::ffff:127.0.0.1',
      '64:ff9b::a00:1',
      'not an address',
    ]) {
      assert.equal(isPrivateTarget(ip, []), true, ip);
    }
  });

  it('accepts public addresses', () => {
    for (const ip of ['93.184.216.34', '8.8.8.8', '2606:2800:220:1:248:1893:25c8:1946', '::ffff:8.8.8.8']) {
      assert.equal(isPrivateTarget(ip, []), false, ip);
    }
  });

  it('accepts private addresses inside an allowed CIDR, of either family', () => {
    const allow = cidrs('10.0.0.0/8', 'fd00::/8');
    assert.equal(isPrivateTarget('10.9.8.7', allow), false);
    assert.equal(isPrivateTarget('::ffff:10.9.8.7', allow), false);
    assert.equal(isPrivateTarget('fd00::5', allow), false);
    assert.equal(isPrivateTarget('192.168.0.1', allow), true);
    assert.equal(isPrivateTarget('fe80::1', allow), true);
  });
});

describe('TtlCache', () => {
  it('expires entries after the TTL and evicts the oldest beyond the limit', () => {
    let now = 0;
    const cache = new TtlCache<number>(1000, 2, () => now);
    cache.set('a', 1);
    now = 999;
    assert.equal(cache.get('a'), 1);
    now = 1000;
    assert.equal(cache.get('a'), undefined);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.set('c', 3);
    assert.equal(cache.size, 2);
    assert.equal(cache.get('a'), undefined);
    assert.equal(cache.get('c'), 3);
  });
});
