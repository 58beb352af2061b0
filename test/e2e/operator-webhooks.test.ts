/**
 * Webhooks through the operator: an SmtpRelay's tenant names an endpoint and a Secret with its signing
 * key; the operator renders both into the relay's config and Secret, the relay (a real process under the
 * test kubelet) sends the tenant's delivery events to a real HTTP receiver, signed with that key. The CRD
 * refuses a URL that is not http(s) and a timeout out of bounds, naming the field.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Operator } from '../../operator/src/controller.js';
import { startTestCluster, type Kubectl, type TestCluster } from '@cartero/k8s-testbed/harness.js';
import { waitFor } from '../helpers/poll.js';
import { RELAY_MAIN } from '../helpers/relay.js';
import { sendMail } from '../helpers/swaks.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.js';
import { verify } from '../../relay/src/events/signature.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const IMAGE = 'cartero/relay:test';
const MX_ADDRESS = '127.0.4.92';
const KEY = 'operator-webhook-signing-key';

let dir: string;
let cluster: TestCluster;
let kubectl: Kubectl;
let mx: TestMx;
let rx: WebhookReceiver;
let operator: Operator;

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
      - {domain: example.test, host: ${MX_ADDRESS}, port: ${mx.port}, tls: none}
`;

before(async () => {
  dir = await makeTmpDir('operator-webhooks');
  cluster = await startTestCluster({
    dir,
    kubelet: { images: { [IMAGE]: { command: process.execPath, args: [RELAY_MAIN] } } },
  });
  ({ kubectl } = cluster);
  mx = await startTestMx({ address: MX_ADDRESS });
  rx = await startWebhookReceiver('up');
  await kubectl(['apply', '-f', path.join(ROOT, 'crds')]);
  await kubectl(['apply', '-f', '-'], 'apiVersion: v1\nkind: Namespace\nmetadata: {name: mail}\n');
  const kc = new KubeConfig();
  kc.loadFromFile(cluster.api.kubeconfig);
  operator = new Operator({ kc, log: pino({ level: 'silent' }), defaultImage: IMAGE, statusIntervalMs: 500 });
  await operator.start();
});

after(async () => {
  await operator?.stop();
  await cluster?.stop();
  await mx?.close();
  await rx?.close();
  await removeTmpDir(dir);
});

describe('webhooks through the operator', { timeout: 180_000 }, () => {
  it("sends the tenant's events, signed with the key of the Secret", async () => {
    const secret = `apiVersion: v1\nkind: Secret\nmetadata: {name: shop-hooks, namespace: mail}\nstringData:\n  signing.key: ${KEY}\n`;
    await kubectl(['apply', '-f', '-'], secret + '---' + relayYaml(rx.url));
    await kubectl(['wait', '--for=condition=Ready', 'smr/hooked', '-n', 'mail', '--timeout=90s']);
    const ip = (
      await kubectl(['get', 'pod', 'hooked-0', '-n', 'mail', '-o', 'jsonpath={.status.podIP}'])
    ).trim();
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
