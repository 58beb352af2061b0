/**
 * Webhooks through the operator: an SmtpRelay's tenant names an endpoint and a Secret with its signing
 * key; the operator renders both into the relay's config and Secret, the relay (a real process under the
 * test kubelet) sends the tenant's delivery events to a real HTTP receiver, signed with that key. The CRD
 * refuses a URL that is not http(s) and a timeout out of bounds, naming the field.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IMAGE, operatorE2e } from '../helpers/operator-e2e.js';
import { waitFor } from '../helpers/poll.js';
import { sendMail } from '../helpers/swaks.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.js';
import { verify } from '../../relay/src/events/signature.js';

const MX_ADDRESS = '127.0.4.92';
const KEY = 'operator-webhook-signing-key';
const e2e = operatorE2e({ name: 'operator-webhooks', namespace: 'mail', mxAddress: MX_ADDRESS });
const { kubectl } = e2e;
let rx: WebhookReceiver;

before(async () => {
  rx = await startWebhookReceiver('up');
});
after(async () => {
  await rx?.close();
});

const relayYaml = (url: string, timeout = '5s') => `
apiVersion: cartero.io/v1alpha1
kind: SmtpRelay
metadata: {name: hooked, namespace: mail}
spec:
  replicas: 1
  image: ${IMAGE}
  terminationGracePeriodSeconds: 15
  listeners: [{name: smtp, port: 25, auth: optional}]
  tenants:
    - name: shop
      trustedNetworks: ['127.0.0.0/8']
      webhooks:
        - {url: '${url}', secretRef: {name: shop-hooks}, events: [accepted, delivered], timeout: ${timeout}}
  routing:
    domains:
      - {domain: example.test, host: ${MX_ADDRESS}, port: ${e2e.mx.port}, tls: none}
`;

describe('webhooks through the operator', { timeout: 180_000 }, () => {
  it("sends the tenant's events, signed with the key of the Secret", async () => {
    const secret = `apiVersion: v1\nkind: Secret\nmetadata: {name: shop-hooks, namespace: mail}\nstringData:\n  signing.key: ${KEY}\n`;
    await kubectl(['apply', '-f', '-'], secret + '---' + relayYaml(rx.url));
    await kubectl(['wait', '--for=condition=Ready', 'smr/hooked', '-n', 'mail', '--timeout=90s']);
    const ip = await e2e.podIp('hooked-0');
    await sendMail(2525, { host: ip, from: 'app@shop.example', to: ['ok-1@example.test'] });
    await waitFor(() => rx.accepted().length >= 2, { what: 'two events', timeoutMs: 30_000 });
    assert.deepEqual(
      rx.accepted().map((e) => [e.type, e.tenant, e.recipient]),
      [
        ['accepted', 'shop', 'ok-1@example.test'],
        ['delivered', 'shop', 'ok-1@example.test'],
      ],
    );
    for (const r of rx.requests)
      assert.equal(verify(KEY, r.body, r.signature, Math.floor(Date.now() / 1000)), true);
  });

  it('the CRD refuses a URL that is not http(s) and a timeout out of bounds', async () => {
    await assert.rejects(
      kubectl(['apply', '-f', '-'], relayYaml('ftp://hooks.example/x')),
      /webhooks\[0\]\.url/s,
    );
    await assert.rejects(
      kubectl(['apply', '-f', '-'], relayYaml(rx.url, '10m')),
      /webhooks\[0\]\.timeout.*must be from 100ms to 5m/s,
    );
  });
});
