/**
 * Webhooks through the operator: an SmtpRelay's tenant names an endpoint and a Secret with its signing
 * key; the operator renders both into the relay's config and Secret, the relay (a real process under the
 * test kubelet) sends the tenant's delivery events to a real HTTP receiver, signed with that key. The CRD
 * refuses a URL that is not http(s) and a timeout out of bounds, naming the field. A scale-down while the
 * receiver is down removes the pod without waiting for it: its events go to the pod that stays (ADR 019).
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

const relayYaml = (url: string, timeout = '5s', replicas = 1) => `
apiVersion: cartero.io/v1alpha1
kind: SmtpRelay
metadata: {name: hooked, namespace: mail}
spec:
  replicas: ${replicas}
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

  it('a scale-down with the receiver down does not wait for it: the events leave with the drained pod', async () => {
    rx.setMode('down');
    await kubectl(['apply', '-f', '-'], relayYaml(rx.url, '5s', 2));
    await waitFor(
      async () => {
        const r = await e2e.getRelay('hooked');
        return r?.status?.observedGeneration === r?.metadata.generation && r?.status?.readyReplicas === 2;
      },
      { what: 'two ready pods', timeoutMs: 90_000, intervalMs: 250 },
    );
    const ip = await e2e.podIp('hooked-1');
    const to = 'ok-scaled@example.test';
    await sendMail(2525, { host: ip, from: 'app@shop.example', to: [to] });
    await waitFor(() => e2e.mx.byRecipient(to).length === 1, {
      what: 'the mail delivered',
      timeoutMs: 30_000,
    });
    // hooked-1 holds `accepted` and `delivered` for it, and its endpoint answers 503
    await waitFor(() => rx.requests.some((r) => r.status === 503 && r.body.includes(to)), {
      what: 'a refused batch',
      timeoutMs: 30_000,
    });
    await kubectl(['scale', 'smr/hooked', '-n', 'mail', '--replicas=1']);
    await waitFor(async () => !/hooked-1/.test(await kubectl(['get', 'pods', '-n', 'mail', '-o', 'name'])), {
      timeoutMs: 90_000,
      intervalMs: 250,
      what: 'hooked-1 drained and removed while the receiver is still down',
    });
    assert.equal(rx.accepted().filter((e) => e.recipient === to).length, 0, 'nothing was taken yet');
    rx.setMode('up');
    const got = await waitFor(
      () => {
        const evs = rx.accepted().filter((e) => e.recipient === to);
        return evs.some((e) => e.type === 'delivered') && evs.some((e) => e.type === 'accepted')
          ? evs
          : undefined;
      },
      { what: "hooked-1's events from hooked-0", timeoutMs: 60_000 },
    );
    // the ids hooked-1 gave them, each at least once, signed with the tenant's key
    const refused = rx.requests
      .filter((r) => r.status === 503 && r.body.includes(to))
      .flatMap((r) =>
        (JSON.parse(r.body.toString('utf8')) as { id: string; recipient?: string }[]).filter(
          (e) => e.recipient === to,
        ),
      )
      .map((e) => e.id);
    assert.deepEqual([...new Set(got.map((e) => e.id))].sort(), [...new Set(refused)].sort());
    for (const r of rx.requests.filter((q) => q.status === 200))
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
