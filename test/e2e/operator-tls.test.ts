/**
 * Certificate renewal through the operator: an SmtpRelay serves the certificate of a cert-manager-shaped
 * Secret (kubernetes.io/tls with tls.crt and tls.key) on a STARTTLS and an implicit-TLS listener. The
 * Secret is renewed the way cert-manager does it (the same Secret, new data); the test kubelet refreshes
 * the mounted volume and the relay serves the new certificate to new handshakes, with the same pod (uid)
 * and the same restart hash on the pod template.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeSelfSignedCert, type TestCert } from '../helpers/certs.js';
import { waitFor } from '../helpers/poll.js';
import { operatorE2e } from '../helpers/operator-e2e.js';
import { fingerprintOf, servedFingerprint } from '../helpers/tls-probe.js';

const NS = 'certs';
const t = operatorE2e({ name: 'operator-tls', namespace: NS, mxAddress: '127.0.4.97' });
const indent = (b: Buffer) => b.toString().trimEnd().replace(/\n/g, '\n    ');

const certSecret = (c: TestCert) => `
apiVersion: v1
kind: Secret
metadata: {name: relay-cert, namespace: ${NS}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
    ${indent(c.cert)}
  tls.key: |
    ${indent(c.key)}
`;

describe('TLS certificate renewal through the operator', { timeout: 180_000 }, () => {
  it('a renewed kubernetes.io/tls Secret is served by the running pod, without a restart', async () => {
    const [a, b] = await Promise.all([makeSelfSignedCert('localhost'), makeSelfSignedCert('localhost')]);
    await t.apply(
      certSecret(a) +
        '---' +
        t.relayManifest({
          replicas: 1,
          tenants: "    - {name: shop, trustedNetworks: ['127.0.0.0/8']}",
          extra: `  listeners:
    - {name: submission, port: 587, tls: starttls}
    - {name: smtps, port: 465, tls: implicit}
  tls: {secretName: relay-cert}`,
        }),
    );
    await t.waitForCurrentConfig();
    const ip = await t.podIp('fleet-0');
    const fa = fingerprintOf(a.cert);
    await waitFor(
      async () =>
        (await servedFingerprint(5870, 'starttls', [a.cert, b.cert], ip).catch(() => undefined)) === fa,
      {
        what: 'cert A on the STARTTLS listener',
        timeoutMs: 30_000,
        intervalMs: 200,
      },
    );
    assert.equal(await servedFingerprint(4650, 'implicit', [a.cert, b.cert], ip), fa);
    const pod = async () =>
      (await t.getJson<{ metadata: { uid: string } }>('pod', 'fleet-0'))?.metadata.uid ?? 'gone';
    const template = async () =>
      JSON.stringify(
        (await t.getJson<{ spec: { template: unknown } }>('statefulset', 'fleet'))?.spec.template,
      );
    const uid = await pod();
    const before = await template();

    await t.apply(certSecret(b)); // cert-manager renews in place: same Secret, new data
    const fb = fingerprintOf(b.cert);
    await waitFor(async () => (await servedFingerprint(5870, 'starttls', [a.cert, b.cert], ip)) === fb, {
      what: 'cert B on the STARTTLS listener',
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    assert.equal(await servedFingerprint(4650, 'implicit', [a.cert, b.cert], ip), fb);
    assert.equal(await pod(), uid, 'the same pod serves the new certificate');
    assert.equal(await template(), before, 'the pod template (and its restart hash) did not change');
  });
});
