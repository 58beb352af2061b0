/**
 * The DNS identity lookups (relay/src/identity/resolver.ts) against a real dnsmasq: PTR, A/AAAA and TXT
 * answers, the cache (injected clock; temporary failures not cached), the per-query timeout, and the
 * checks built on them (identity/check.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { IdentityResolver } from '../../relay/src/identity/resolver.js';
import { checkDkimTxt, checkFcrdns } from '../../relay/src/identity/check.js';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';

let dns: DnsServer;
before(async () => {
  dns = await startDns({
    localDomains: ['test', '3.0.127.in-addr.arpa'],
    a: [{ name: 'mta.id.test', ip: '127.0.3.10' }],
    aaaa: [{ name: 'six.id.test', ip: '2001:db8::10' }],
    txt: [{ name: 's._domainkey.id.test', value: 'v=DKIM1; k=ed25519; p=AAAA' }],
    servfail: ['broken.test'],
    noAnswer: ['silent.test'],
  });
});
after(() => dns?.stop());

describe('IdentityResolver', () => {
  it('answers PTR, A/AAAA and TXT; NXDOMAIN is not a temporary failure', async () => {
    const r = new IdentityResolver({ servers: [dns.server], timeoutMs: 2000 });
    assert.deepEqual(await r.reverse('127.0.3.10'), { ok: true, records: ['mta.id.test'] });
    assert.deepEqual(await r.addresses('mta.id.test'), { ok: true, records: ['127.0.3.10'] });
    assert.deepEqual(await r.addresses('six.id.test'), { ok: true, records: ['2001:db8::10'] });
    assert.deepEqual(await r.txt('s._domainkey.id.test'), {
      ok: true,
      records: [['v=DKIM1; k=ed25519; p=AAAA']],
    });
    const missing = await r.reverse('127.0.3.11');
    assert.equal(!missing.ok && missing.failure, 'nxdomain');
    const broken = await r.addresses('x.broken.test');
    assert.equal(!broken.ok && broken.failure, 'temporary');
  });

  it('caches answers for the TTL, not temporary failures', async () => {
    let now = 0;
    const r = new IdentityResolver({
      servers: [dns.server],
      timeoutMs: 2000,
      cacheTtlMs: 10_000,
      now: () => now,
    });
    const asked = async (name: string) => (await dns.queries()).filter((q) => q.name === name).length;
    await r.txt('s._domainkey.id.test');
    const n = await asked('s._domainkey.id.test');
    await r.txt('s._domainkey.id.test');
    assert.equal(await asked('s._domainkey.id.test'), n, 'served from the cache');
    now = 10_001;
    await r.txt('s._domainkey.id.test');
    assert.equal(await asked('s._domainkey.id.test'), n + 1, 'asked again after the TTL');
    await r.txt('y.broken.test');
    await r.txt('y.broken.test');
    assert.ok((await asked('y.broken.test')) >= 2, 'a SERVFAIL is asked again');
  });

  it('ends a query at the timeout whatever the server does', async () => {
    const r = new IdentityResolver({ servers: [dns.server], timeoutMs: 300 });
    const t0 = Date.now();
    const res = await r.txt('x.silent.test');
    assert.deepEqual(res, { ok: false, failure: 'temporary', code: 'ETIMEOUT' });
    assert.ok(Date.now() - t0 < 2000);
  });

  it('checks built on it', async () => {
    const r = new IdentityResolver({ servers: [dns.server], timeoutMs: 2000 });
    assert.equal((await checkFcrdns(r, '127.0.3.10', 'MTA.id.test')).result, 'Verified');
    assert.equal((await checkFcrdns(r, '127.0.3.11', 'mta.id.test')).result, 'PtrMissing');
    const d = await checkDkimTxt(r, 'ID.test.', 's', 'v=DKIM1; k=ed25519; p=AAAA');
    assert.deepEqual([d.name, d.result], ['s._domainkey.id.test', 'Published']);
  });
});
