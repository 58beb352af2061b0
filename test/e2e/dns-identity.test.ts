/**
 * DNS identity checks through a real relay and a real dnsmasq: the relay's own check of its pool
 * addresses (forward-confirmed reverse DNS, cartero_egress_fcrdns and the log), rechecked every
 * dns.identityCheckInterval; and POST /dns/checks (FCrDNS and DKIM TXT records, bad input, size cap).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { dkimDnsRecord, type DnsChecksResponse } from '../../relay/src/contract/index.js';
import { startDns, type DnsServer, type DnsZone } from '../helpers/dnsmasq.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { waitFor } from '../helpers/poll.js';

const TOKEN = 'dns-identity-token';
const ed = generateKeyPairSync('ed25519').privateKey;
const good = dkimDnsRecord({
  domain: 'shop.test',
  selector: 's1',
  algorithm: 'ed25519-sha256',
  privateKey: ed,
});
const other = dkimDnsRecord({
  domain: 'shop.test',
  selector: 's2',
  algorithm: 'ed25519-sha256',
  privateKey: generateKeyPairSync('ed25519').privateKey,
});

/** .50 verified, .51 EHLO mismatch, .52 forward mismatch, .53 no PTR (the last one added later). */
const zone = (fixed: boolean): DnsZone => ({
  localDomains: ['test', '3.0.127.in-addr.arpa'],
  a: [
    { name: 'mta1.good.test', ip: '127.0.3.50' },
    { name: 'someone-else.test', ip: '127.0.3.51' },
    { name: 'mta3.good.test', ip: '127.0.4.52' },
    ...(fixed ? [{ name: 'mta4.good.test', ip: '127.0.3.53' }] : []),
  ],
  ptr: [{ ip: '127.0.3.52', name: 'mta3.good.test' }],
  txt: [
    { name: good.name, value: good.value },
    { name: 's2._domainkey.shop.test', value: good.value }, // not the key s2 needs
  ],
});

let dns: DnsServer;
let relay: RelayProc;
const metrics = async () => (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
const checks = (body: unknown, token = TOKEN) =>
  fetch(`http://127.0.0.1:${relay.adminPort}/dns/checks`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

before(async () => {
  dns = await startDns(zone(false));
  relay = await startRelay({
    config: {
      trustedNetworks: ['127.0.0.0/8'],
      admin: { tokenFile: 'admin.token' },
      dns: { servers: [dns.server], timeout: '2s', identityCheckInterval: '10s' },
      ipPools: [
        {
          name: 'p',
          addresses: [
            { ip: '127.0.3.50', ehlo: 'mta1.good.test' },
            { ip: '127.0.3.51', ehlo: 'mta2.good.test' },
            { ip: '127.0.3.52', ehlo: 'mta3.good.test' },
            { ip: '127.0.3.53', ehlo: 'mta4.good.test' },
          ],
        },
      ],
    },
    secrets: { 'admin.token': TOKEN },
  });
});

after(async () => {
  await relay?.cleanup();
  await dns?.stop();
});

describe('DNS identity checks', { timeout: 90_000 }, () => {
  it('the pool addresses are checked at start: each result in cartero_egress_fcrdns and the log', async () => {
    const want = {
      '127.0.3.50': 'Verified',
      '127.0.3.51': 'EhloMismatch',
      '127.0.3.52': 'ForwardMismatch',
      '127.0.3.53': 'PtrMissing',
    };
    const text = await waitFor(
      async () => {
        const t = await metrics();
        return Object.entries(want).every(([ip, r]) =>
          t.includes(`cartero_egress_fcrdns{pool="p",ip="${ip}",result="${r}"} 1`),
        )
          ? t
          : undefined;
      },
      { what: 'every address checked', timeoutMs: 15_000 },
    );
    assert.match(text, /cartero_egress_fcrdns\{pool="p",ip="127\.0\.3\.50",result="PtrMissing"\} 0/);
    assert.match(text, /cartero_dns_identity_cache_entries [1-9]/);
    const line = await relay.waitForLog((l) => l.event === 'pool.fcrdns' && l.ip === '127.0.3.51');
    assert.equal(line.result, 'EhloMismatch');
    assert.deepEqual(line.ptr, ['someone-else.test']);
    assert.equal(line.level, 'warn');
  });

  it('POST /dns/checks judges addresses and DKIM records through the relay resolvers', async () => {
    const res = await checks({
      fcrdns: [
        { ip: '127.0.3.50', ehlo: 'mta1.good.test' },
        { ip: '127.0.3.52', ehlo: 'mta3.good.test' },
      ],
      dkim: [
        { domain: 'shop.test', selector: 's1', record: good.value },
        { domain: 'shop.test', selector: 's2', record: other.value },
        { domain: 'shop.test', selector: 's3', record: other.value },
      ],
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as DnsChecksResponse;
    assert.deepEqual(
      body.fcrdns.map((c) => [c.ip, c.result, c.ptr]),
      [
        ['127.0.3.50', 'Verified', ['mta1.good.test']],
        ['127.0.3.52', 'ForwardMismatch', ['mta3.good.test']],
      ],
    );
    assert.deepEqual(
      body.dkim.map((c) => [c.name, c.result]),
      [
        ['s1._domainkey.shop.test', 'Published'],
        ['s2._domainkey.shop.test', 'Mismatch'],
        ['s3._domainkey.shop.test', 'Missing'],
      ],
    );
  });

  it('POST /dns/checks refuses a bad body (400), an oversize body (413) and a missing token (401)', async () => {
    const bad = await checks({ fcrdns: [{ ip: 'not-an-ip', ehlo: 'a.test' }] });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /fcrdns\[0\]\.ip must be an IPv4 or IPv6/);
    assert.equal((await checks('{"fcrdns": [')).status, 400);
    const big = await checks({
      dkim: [{ domain: 'x.test', selector: 's', record: 'p=' + 'A'.repeat(300_000) }],
    });
    assert.equal(big.status, 413);
    assert.match(((await big.json()) as { error: string }).error, /at most 262144 bytes/);
    assert.equal((await checks({}, 'wrong')).status, 401);
  });

  it('rechecks every identityCheckInterval: a PTR record published later turns the address Verified', async () => {
    const port = dns.port;
    await dns.stop();
    dns = await startDns(zone(true), { port });
    await waitFor(
      async () =>
        (await metrics()).includes('cartero_egress_fcrdns{pool="p",ip="127.0.3.53",result="Verified"} 1'),
      { what: '127.0.3.53 verified by a periodic check', timeoutMs: 40_000, intervalMs: 500 },
    );
    const line = await relay.waitForLog(
      (l) => l.event === 'pool.fcrdns' && l.ip === '127.0.3.53' && l.result === 'Verified',
    );
    assert.equal(line.level, 'info');
  });
});
