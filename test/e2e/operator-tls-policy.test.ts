/**
 * Outbound TLS policy through the operator: an SmtpRelay asks for `verify` towards one destination and
 * names a Secret with the CA that signed that destination's MX certificate (a private CA the system store
 * does not know). The operator copies the CA into the relay's Secret; the relay (a real process under the
 * test kubelet) finds the MX through the test dnsmasq and delivers over verified STARTTLS. The CRD refuses
 * bad levels, durations out of bounds and a domain listed twice.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeTestCa } from '../helpers/certs.js';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';
import { operatorE2e } from '../helpers/operator-e2e.js';
import { waitFor } from '../helpers/poll.js';
import { sendMail } from '../helpers/swaks.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';

const NS = 'tlspolicy';
const PARTNER_MX = '127.0.4.98';
const t = operatorE2e({ name: 'operator-tls-policy', namespace: NS, mxAddress: '127.0.4.99' });
const indent = (b: Buffer) => b.toString().trimEnd().replace(/\n/g, '\n    ');

describe('outbound TLS policy through the operator', { timeout: 180_000 }, () => {
  let dns: DnsServer;
  let partner: TestMx;
  let caPem: Buffer;

  before(async () => {
    const ca = await makeTestCa();
    caPem = ca.cert;
    partner = await startTestMx({
      address: PARTNER_MX,
      name: 'mx.partner.test',
      tls: await ca.issue(['mx.partner.test']),
    });
    dns = await startDns({
      mx: [{ domain: 'partner.test', host: 'mx.partner.test', pref: 10 }],
      a: [{ name: 'mx.partner.test', ip: PARTNER_MX }],
    });
  });

  after(async () => {
    await partner?.close();
    await dns?.stop();
  });

  const relay = (outboundTls: string) =>
    t.relayManifest({
      replicas: 1,
      tenants: "    - {name: shop, trustedNetworks: ['127.0.0.0/8']}",
      extra: `  listeners: [{name: smtp, port: 25, auth: optional}]
  dns: {servers: ['${dns.server}'], allowPrivateTargets: ['127.0.0.0/8'], mxPort: ${partner.port}}
  outboundTls:
${outboundTls}`,
    });

  it('verify towards a destination, with the CA from a Secret: delivered over verified STARTTLS', async () => {
    await t.apply(
      `
apiVersion: v1
kind: Secret
metadata: {name: partner-ca, namespace: ${NS}}
stringData:
  ca.crt: |
    ${indent(caPem)}
---` +
        relay(`    caSecretRef: {name: partner-ca}
    policies:
      - {domain: partner.test, level: verify}
    mtaSts: {fetchTimeout: 2s, recheckInterval: 1m}`),
    );
    await t.waitForCurrentConfig().catch(async (e: Error) => {
      const r = await t.getRelay();
      throw new Error(`${e.message}: ${JSON.stringify(r?.status?.conditions)}`, { cause: e });
    });
    const ip = await t.podIp('fleet-0');
    await sendMail(2525, { host: ip, from: 'app@shop.example', to: ['ok@partner.test'] });
    const m = await waitFor(() => partner.byRecipient('ok@partner.test')[0], {
      what: 'verified delivery to mx.partner.test',
      timeoutMs: 30_000,
    });
    assert.equal(m.secure, true);
  });

  it('the CRD refuses an unknown level, a fetchTimeout out of bounds and a domain listed twice', async () => {
    await assert.rejects(
      t.apply(relay('    level: strict')),
      /spec\.outboundTls\.level: Unsupported value: "strict"/,
    );
    await assert.rejects(
      t.apply(relay('    mtaSts: {fetchTimeout: 5m}')),
      /spec\.outboundTls\.mtaSts\.fetchTimeout.*must be from 100ms to 1m/s,
    );
    await assert.rejects(
      t.apply(
        relay(`    policies:
      - {domain: a.test, level: verify}
      - {domain: a.test, level: required}`),
      ),
      /spec\.outboundTls\.policies\[1\]: Duplicate value/,
    );
  });
});
