/**
 * The MTA-STS fetcher against a real dnsmasq and a real HTTPS policy host: it resolves through the given
 * servers, verifies the policy host's certificate against the given CAs, refuses private addresses unless
 * allowed, and bounds size and time.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import ipaddr from 'ipaddr.js';
import { StsFetcher, type StsFetchOptions } from '../../relay/src/mta-sts/fetch.js';
import { makeSelfSignedCert, makeTestCa } from '../helpers/certs.js';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';
import { startPolicyServer, stsPolicy, type PolicyServer } from '../helpers/mta-sts-server.js';

let dns: DnsServer;
let good: PolicyServer;
let selfSigned: PolicyServer;
let ca: string;

before(async () => {
  const testCa = await makeTestCa();
  ca = testCa.cert.toString();
  good = await startPolicyServer({
    address: '127.0.5.20',
    tls: await testCa.issue(['mta-sts.a.test', 'mta-sts.big.test', 'mta-sts.hang.test']),
  });
  selfSigned = await startPolicyServer({
    address: '127.0.5.21',
    tls: await makeSelfSignedCert('mta-sts.self.test'),
  });
  good.set('a.test', { kind: 'policy', text: stsPolicy('enforce', ['mx.a.test'], 60) });
  good.set('big.test', { kind: 'policy', text: 'x'.repeat(70_000) });
  good.set('hang.test', { kind: 'hang' });
  selfSigned.set('self.test', { kind: 'policy', text: stsPolicy('enforce', ['mx.self.test'], 60) });
  dns = await startDns({
    a: [
      { name: 'mta-sts.a.test', ip: '127.0.5.20' },
      { name: 'mta-sts.big.test', ip: '127.0.5.20' },
      { name: 'mta-sts.hang.test', ip: '127.0.5.20' },
      { name: 'mta-sts.self.test', ip: '127.0.5.21' },
      { name: 'mta-sts.wrongname.test', ip: '127.0.5.20' },
    ],
    txt: [{ name: '_mta-sts.a.test', value: 'v=STSv1; id=7' }],
  });
});

after(async () => {
  await Promise.all([good?.close(), selfSigned?.close()]);
  await dns?.stop();
});

const fetcher = (o: Partial<StsFetchOptions> = {}) =>
  new StsFetcher({
    servers: [dns.server],
    dnsTimeoutMs: 2000,
    fetchTimeoutMs: 2000,
    port: good.port,
    ca: [...tls.rootCertificates, ca],
    allowPrivateTargets: [ipaddr.parseCIDR('127.0.0.0/8')],
    ...o,
  });

describe('StsFetcher', () => {
  it('reads the TXT record and the policy through the configured resolver and CA', async () => {
    const f = fetcher();
    assert.deepEqual(await f.txt('_mta-sts.a.test'), { kind: 'records', records: [['v=STSv1; id=7']] });
    assert.deepEqual(await f.txt('_mta-sts.none.test'), { kind: 'none' });
    assert.match(await f.fetch('a.test'), /^version: STSv1\r\nmode: enforce\r\n/);
  });

  it('refuses a policy host on a private address unless allowed', async () => {
    await assert.rejects(
      fetcher({ allowPrivateTargets: [] }).fetch('a.test'),
      /only private addresses \(127\.0\.5\.20\)/,
    );
  });

  it('refuses a certificate the CAs do not vouch for, and one for another name', async () => {
    await assert.rejects(fetcher({ port: selfSigned.port }).fetch('self.test'), /self[- ]signed/);
    await assert.rejects(
      fetcher({ ca: undefined }).fetch('a.test'),
      /certificate/,
      'the test CA only with caFile',
    );
    await assert.rejects(fetcher().fetch('wrongname.test'), /does not match|altnames/);
  });

  it('stops at 64 KiB and at the time limit', async () => {
    await assert.rejects(fetcher().fetch('big.test'), /larger than 65536 octets/);
    const started = Date.now();
    await assert.rejects(fetcher({ fetchTimeoutMs: 300 }).fetch('hang.test'), /timed out/);
    assert.ok(Date.now() - started < 2000);
  });

  it('has no policy for a host without an address', async () => {
    await assert.rejects(fetcher().fetch('nohost.test'), /mta-sts\.nohost\.test has no address/);
  });
});
