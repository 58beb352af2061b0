/**
 * Outbound TLS policy and MTA-STS with real pieces: dnsmasq serves the MX, A and `_mta-sts` TXT records,
 * a local HTTPS server (certificate from a test CA) serves the policies, and test MX hosts on 127.0.5.x
 * offer STARTTLS with a certificate from the test CA, a self-signed one, or no STARTTLS at all. The relay
 * trusts the test CA through outboundTls.caFile.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rename, writeFile } from 'node:fs/promises';
import YAML from 'yaml';
import { makeSelfSignedCert, makeTestCa } from '../helpers/certs.js';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';
import { startPolicyServer, stsPolicy, type PolicyServer } from '../helpers/mta-sts-server.js';
import { waitFor } from '../helpers/poll.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { sendMail } from '../helpers/swaks.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';

const POLICY_HOST = '127.0.5.10';
/** Domains with an MTA-STS TXT record and a policy on the policy host. */
const STS_DOMAINS = [
  'enforce.test',
  'enforce-rogue.test',
  'enforce-self.test',
  'testing.test',
  'expiry.test',
  'oversized.test',
  'slow.test',
  'redirect.test',
];

async function metric(relay: RelayProc, re: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => re.test(l));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

describe('outbound TLS policy and MTA-STS', () => {
  let dns: DnsServer;
  let policies: PolicyServer;
  let good: TestMx; // STARTTLS, certificate from the test CA for mx.good.test
  let rogue: TestMx; // STARTTLS, certificate from the test CA for mx.rogue.test
  let self: TestMx; // STARTTLS, self-signed certificate for mx.self.test
  let plain: TestMx; // no STARTTLS
  let relay: RelayProc;

  before(async () => {
    const ca = await makeTestCa();
    good = await startTestMx({
      address: '127.0.5.2',
      name: 'mx.good.test',
      tls: await ca.issue(['mx.good.test']),
    });
    const port = good.port; // dns.mxPort is one port for every MX host
    rogue = await startTestMx({
      address: '127.0.5.3',
      port,
      name: 'mx.rogue.test',
      tls: await ca.issue(['mx.rogue.test']),
    });
    self = await startTestMx({
      address: '127.0.5.4',
      port,
      name: 'mx.self.test',
      tls: await makeSelfSignedCert('mx.self.test'),
    });
    plain = await startTestMx({ address: '127.0.5.5', port, name: 'mx.plain.test' });
    policies = await startPolicyServer({
      address: POLICY_HOST,
      tls: await ca.issue(STS_DOMAINS.map((d) => `mta-sts.${d}`)),
    });
    policies.set('enforce.test', { kind: 'policy', text: stsPolicy('enforce', ['*.good.test'], 3600) });
    policies.set('enforce-rogue.test', {
      kind: 'policy',
      text: stsPolicy('enforce', ['mx.good.test'], 3600),
    });
    policies.set('enforce-self.test', { kind: 'policy', text: stsPolicy('enforce', ['mx.self.test'], 3600) });
    policies.set('testing.test', { kind: 'policy', text: stsPolicy('testing', ['mx.good.test'], 3600) });
    // would defer everything if it were used: only mx.nowhere.test is allowed
    const refuseAll = stsPolicy('enforce', ['mx.nowhere.test'], 3600);
    policies.set('oversized.test', {
      kind: 'policy',
      text: refuseAll + `x-padding: ${'a'.repeat(70_000)}\r\n`,
    });
    policies.set('slow.test', { kind: 'hang' });
    policies.set('redirect.test', {
      kind: 'status',
      status: 301,
      location: 'https://mta-sts.enforce.test/.well-known/mta-sts.txt',
    });
    policies.set('expiry.test', { kind: 'policy', text: stsPolicy('enforce', ['mx.rogue.test'], 3) });

    const mx = (domain: string, host: string, pref = 10) => ({ domain, host, pref });
    dns = await startDns({
      mx: [
        mx('enforce.test', 'mx.rogue.test', 5), // preferred, but not in the policy
        mx('enforce.test', 'mx.good.test', 10),
        mx('enforce-rogue.test', 'mx.rogue.test'),
        mx('enforce-self.test', 'mx.self.test'),
        mx('testing.test', 'mx.self.test'),
        mx('expiry.test', 'mx.good.test'),
        mx('oversized.test', 'mx.good.test'),
        mx('slow.test', 'mx.good.test'),
        mx('redirect.test', 'mx.good.test'),
        mx('verify-self.test', 'mx.self.test'),
        mx('verify-good.test', 'mx.good.test'),
        mx('required-plain.test', 'mx.plain.test'),
        mx('required-self.test', 'mx.self.test'),
        mx('plain.test', 'mx.plain.test'),
      ],
      a: [
        { name: 'mx.good.test', ip: '127.0.5.2' },
        { name: 'mx.rogue.test', ip: '127.0.5.3' },
        { name: 'mx.self.test', ip: '127.0.5.4' },
        { name: 'mx.plain.test', ip: '127.0.5.5' },
        ...STS_DOMAINS.map((d) => ({ name: `mta-sts.${d}`, ip: POLICY_HOST })),
      ],
      txt: STS_DOMAINS.map((d) => ({ name: `_mta-sts.${d}`, value: 'v=STSv1; id=20261205' })),
    });
    relay = await startRelay({
      config: {
        trustedNetworks: ['127.0.0.0/8'],
        queue: { retry: { initial: '1s', max: '1s' } },
        dns: { servers: [dns.server], allowPrivateTargets: ['127.0.0.0/8'], mxPort: port, timeout: '2s' },
        outboundTls: {
          level: 'opportunistic',
          caFile: 'test-ca.pem',
          policies: [
            { domain: 'verify-self.test', level: 'verify' },
            { domain: 'verify-good.test', level: 'verify' },
            { domain: 'required-plain.test', level: 'required' },
            { domain: 'required-self.test', level: 'required' },
          ],
          mtaSts: { port: policies.port, fetchTimeout: '1s', recheckInterval: '1s' },
        },
      },
      secrets: { 'test-ca.pem': ca.cert },
    });
  });

  after(async () => {
    await relay?.cleanup();
    await Promise.all([good?.close(), rogue?.close(), self?.close(), plain?.close(), policies?.close()]);
    await dns?.stop();
  });

  const deferredWith = (to: string, re: RegExp) =>
    relay.waitForLog((l) => l.event === 'deferred' && l.to === to && re.test(String(l.reply)), 15_000);

  test('enforce: the MX host the policy lists takes the mail over verified TLS; the unlisted one is never contacted', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok@enforce.test'] });
    const msg = await waitFor(() => good.byRecipient('ok@enforce.test')[0], {
      what: 'delivery to mx.good.test',
    });
    assert.equal(msg.secure, true);
    assert.equal(rogue.byRecipient('ok@enforce.test').length, 0);
    await relay.waitForLog((l) => l.event === 'mta-sts.enforce' && l.domain === 'enforce.test');
  });

  test('enforce: mail for a domain none of whose MX hosts the policy lists is deferred, not sent', async () => {
    const before = rogue.connections;
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok@enforce-rogue.test'] });
    const line = await deferredWith(
      'ok@enforce-rogue.test',
      /MTA-STS policy of enforce-rogue\.test .*mx\.rogue\.test/,
    );
    assert.match(String(line.status), /^4\.7\.5$/);
    assert.equal(rogue.connections, before, 'the unlisted MX host is not contacted');
    assert.ok(
      (await metric(relay, /^cartero_mta_sts_violations_total\{mode="enforce",reason="mx-mismatch"\}/)) >= 1,
    );
  });

  test('enforce: a listed MX host with a self-signed certificate gets nothing', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok@enforce-self.test'] });
    await deferredWith('ok@enforce-self.test', /TLS policy verify \(MTA-STS enforce\)/);
    assert.equal(self.byRecipient('ok@enforce-self.test').length, 0);
    assert.ok((await metric(relay, /^cartero_mta_sts_violations_total\{mode="enforce",reason="tls"\}/)) >= 1);
  });

  test('testing: mail goes out as before, and what enforce would have refused is counted and logged', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok@testing.test'] });
    await waitFor(() => self.byRecipient('ok@testing.test')[0], {
      what: 'delivery despite the testing policy',
    });
    await relay.waitForLog((l) => l.event === 'mta-sts.testing' && l.reason === 'mx-mismatch');
    await relay.waitForLog((l) => l.event === 'mta-sts.testing' && l.reason === 'tls');
    assert.ok(
      (await metric(relay, /^cartero_mta_sts_violations_total\{mode="testing",reason="mx-mismatch"\}/)) >= 1,
    );
    assert.ok((await metric(relay, /^cartero_mta_sts_violations_total\{mode="testing",reason="tls"\}/)) >= 1);
    assert.ok((await metric(relay, /^cartero_mta_sts_policies\{mode="testing"\}/)) >= 1);
  });

  test('verify (destination policy): a self-signed MX certificate defers, one from the configured CA delivers', async () => {
    await sendMail(relay.ports.smtp, {
      from: 'a@sender.test',
      to: ['ok@verify-self.test', 'ok@verify-good.test'],
    });
    await deferredWith('ok@verify-self.test', /TLS policy verify \(destination\)/);
    const msg = await waitFor(() => good.byRecipient('ok@verify-good.test')[0], {
      what: 'verified delivery',
    });
    assert.equal(msg.secure, true);
    assert.equal(self.byRecipient('ok@verify-self.test').length, 0);
    assert.ok((await metric(relay, /^cartero_outbound_tls_total\{level="verify",result="verified"\}/)) >= 1);
    assert.ok((await metric(relay, /^cartero_outbound_tls_total\{level="verify",result="failed"\}/)) >= 1);
  });

  test('required: no STARTTLS defers; a self-signed certificate is accepted (encrypted, not verified)', async () => {
    await sendMail(relay.ports.smtp, {
      from: 'a@sender.test',
      to: ['ok@required-plain.test', 'ok@required-self.test'],
    });
    await deferredWith('ok@required-plain.test', /TLS policy required \(destination\)/);
    const msg = await waitFor(() => self.byRecipient('ok@required-self.test')[0], {
      what: 'encrypted delivery',
    });
    assert.equal(msg.secure, true);
    assert.equal(plain.byRecipient('ok@required-plain.test').length, 0);
    assert.ok(
      (await metric(relay, /^cartero_outbound_tls_total\{level="required",result="unverified"\}/)) >= 1,
    );
  });

  test('opportunistic (the default) still delivers in plain text to an MX without STARTTLS', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok@plain.test'] });
    const msg = await waitFor(() => plain.byRecipient('ok@plain.test')[0], { what: 'plain delivery' });
    assert.equal(msg.secure, false);
  });

  test('an oversized, a hanging or a redirecting policy is no policy: delivery goes on, bounded by fetchTimeout', async () => {
    const started = Date.now();
    await sendMail(relay.ports.smtp, {
      from: 'a@sender.test',
      to: ['ok@oversized.test', 'ok@slow.test', 'ok@redirect.test'],
    });
    for (const to of ['ok@oversized.test', 'ok@slow.test', 'ok@redirect.test'])
      await waitFor(() => good.byRecipient(to)[0], { what: `delivery to ${to}`, timeoutMs: 10_000 });
    assert.ok(
      Date.now() - started < 8_000,
      'the hanging policy host held delivery up for at most about fetchTimeout',
    );
    assert.equal(policies.fetches('slow.test').length >= 1, true);
    assert.ok((await metric(relay, /^cartero_mta_sts_fetch_total\{result="fetch-error"\}/)) >= 3);
    await relay.waitForLog(
      (l) =>
        l.event === 'mta-sts.policy' &&
        l.domain === 'oversized.test' &&
        /larger than 65536/.test(String(l.detail)),
    );
    await relay.waitForLog(
      (l) =>
        l.event === 'mta-sts.policy' && l.domain === 'redirect.test' && /HTTP 301/.test(String(l.detail)),
    );
  });

  test('a cached policy is used until its max_age runs out, then fetched again', async () => {
    // the policy allows only mx.rogue.test, but expiry.test's MX is mx.good.test: deferred while cached
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok@expiry.test'] });
    await deferredWith('ok@expiry.test', /MTA-STS policy of expiry\.test/);
    const first = policies.fetches('expiry.test')[0];
    assert.ok(first !== undefined);
    // the domain fixes its policy without changing the TXT id: the relay sees it once max_age (3 s) ran out
    policies.set('expiry.test', { kind: 'policy', text: stsPolicy('enforce', ['mx.good.test'], 3) });
    const msg = await waitFor(() => good.byRecipient('ok@expiry.test')[0], {
      what: 'delivery after the cached policy expired',
      timeoutMs: 15_000,
    });
    const fetches = policies.fetches('expiry.test');
    assert.ok(fetches.length >= 2);
    assert.ok(fetches[1] - first >= 3_000 - 50, `refetched ${fetches[1] - first} ms after the first fetch`);
    assert.ok(msg.receivedAt.getTime() >= fetches[1]);
    assert.ok((await metric(relay, /^cartero_mta_sts_cache_entries /)) >= 1);
  });
  test('hot reload: a changed destination level applies to the next attempt of queued mail', async () => {
    // ok@verify-self.test waits in the queue (verify, self-signed MX); lowering its level to required lets it go
    assert.equal(self.byRecipient('ok@verify-self.test').length, 0);
    const doc = YAML.parse(await readFile(relay.configFile, 'utf8')) as {
      outboundTls: { policies: { domain: string; level: string }[] };
    };
    doc.outboundTls.policies = doc.outboundTls.policies.map((p) =>
      p.domain === 'verify-self.test' ? { ...p, level: 'required' } : p,
    );
    const tmp = `${relay.configFile}.tmp`;
    await writeFile(tmp, YAML.stringify(doc), { mode: 0o600 });
    await rename(tmp, relay.configFile);
    await relay.waitForLog((l) => l.event === 'config.reloaded');
    const msg = await waitFor(() => self.byRecipient('ok@verify-self.test')[0], {
      what: 'delivery after the reload',
      timeoutMs: 15_000,
    });
    assert.equal(msg.secure, true);
  });
});
