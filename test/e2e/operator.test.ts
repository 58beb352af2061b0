/**
 * End to end: kubectl apply of the CRDs and an SmtpRelay → the operator builds the fleet → the process
 * kubelet runs real relay processes → mail sent to a pod arrives at the test MX. Then: a new tenant
 * reaches the running relays without a restart, a fleet at rest costs no API writes, a scale-down
 * drains queued mail into the remaining pod without losing any, and deletion waits for the queues.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import type { DrainStatus, RateLimitsResponse } from '../../relay/src/contract/admin-api.js';
import { openCrd } from '../helpers/chart.js';
import { cond, credentialsSecret, operatorE2e } from '../helpers/operator-e2e.js';
import { waitFor } from '../helpers/poll.js';
import { unusedPort } from '../helpers/ports.js';
import { sendMail } from '../helpers/swaks.js';

const MX_ADDRESS = '127.0.4.90';

const registry = new Registry();
const e2e = operatorE2e({
  name: 'operator-e2e',
  namespace: 'mail',
  mxAddress: MX_ADDRESS,
  // the Prometheus Operator's CRD, reduced to what the API server needs: the operator adds ServiceMonitors
  manifests: [openCrd('monitoring.coreos.com', 'ServiceMonitor', 'servicemonitors')],
  metrics: registry,
});
const { kubectl, getRelay, podIp, waitForCurrentConfig } = e2e;
/** When the first billing mail was sent: hour windows are fixed (UTC), a run may cross a boundary. */
let firstBillingAt = 0;

const relayYaml = (o: { replicas: number; tenants: string; mxPort?: number }) =>
  [
    credentialsSecret({
      name: 'billing-smtp',
      namespace: 'mail',
      username: 'billing',
      password: 'pw-billing',
    }),
    credentialsSecret({ name: 'news-smtp', namespace: 'mail', username: 'news', password: 'pw-news' }),
    e2e.relayManifest({ ...o, extra: '  queue:\n    retry: {initial: 1s, max: 2s}\n' }),
  ].join('---');
const BILLING = '    - {name: billing, credentialsSecret: billing-smtp, rateLimits: {perHour: 1000}}';
const NEWS = '    - {name: news, credentialsSecret: news-smtp}';

async function reconcileCount(): Promise<number> {
  const m = await registry.getSingleMetric('controller_runtime_reconcile_total')?.get();
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
}

describe('operator end to end', { timeout: 240_000 }, () => {
  it('kubectl apply of an SmtpRelay gives a Ready fleet that delivers mail', async () => {
    await kubectl(['apply', '-f', '-'], relayYaml({ replicas: 2, tenants: BILLING }));
    await kubectl(['wait', '--for=condition=Ready', 'smr/fleet', '-n', 'mail', '--timeout=90s']);
    // Ready comes from the pods; the queue column fills once every pod has reported its queue
    // (a pod indexes its spool in the background after it starts listening), so it is polled.
    const table = await waitFor(
      async () => {
        const t = await kubectl(['get', 'smr', '-n', 'mail']);
        return /fleet\s+2\/2\s+2\s+0\s+0\.0%/.test(t) && t;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'the fleet row with queue 0 in kubectl get smr' },
    );
    assert.match(table, /NAME\s+READY\s+REPLICAS\s+QUEUE\s+BOUNCE%\s+AGE/);
    firstBillingAt = Date.now();
    for (const pod of ['fleet-0', 'fleet-1']) {
      await sendMail(2525, {
        host: await podIp(pod),
        from: 'app@billing.example',
        to: [`ok-${pod}@example.test`],
        auth: { user: 'billing', pass: 'pw-billing' },
      });
    }
    await e2e.mx.waitForMessages(2, 30_000);
    assert.equal(e2e.mx.byRecipient('ok-fleet-1@example.test').length, 1);
    const sm = JSON.parse(await kubectl(['get', 'servicemonitor', 'fleet', '-n', 'mail', '-o', 'json']));
    assert.deepEqual(sm.spec.endpoints, [{ port: 'admin', path: '/metrics', interval: '30s' }]);
  });

  it('makes no API writes while the fleet is at rest', async () => {
    // at rest: Ready, and the mail of the first test delivered (the queue depth in status is 0)
    await waitFor(
      async () => {
        const r = await getRelay();
        return cond(r, 'Ready')?.status === 'True' && r?.status?.queueDepth === 0;
      },
      { timeoutMs: 30_000, what: 'a Ready fleet with empty queues' },
    );
    const start = e2e.api.requests.length;
    const statusBefore = JSON.stringify((await getRelay())?.status, null, 1);
    const before = await reconcileCount();
    // status is re-read from the relays every 500 ms: wait for several full reconciles
    await waitFor(async () => (await reconcileCount()) >= before + 6, {
      timeoutMs: 30_000,
      what: 'reconciles',
    });
    const writes = e2e.api.requests
      .slice(start)
      .filter((r) => ['create', 'update', 'patch', 'delete', 'deletecollection'].includes(r.verb))
      .map((r) => `${r.verb} ${r.resource}${r.subresource ? `/${r.subresource}` : ''} ${r.name ?? ''}`);
    const statusAfter = JSON.stringify((await getRelay())?.status, null, 1);
    assert.deepEqual(writes, [], `status before:\n${statusBefore}\nafter:\n${statusAfter}`);
  });

  it('a new tenant reaches the running relays without restarting them', async () => {
    const stsBefore = JSON.parse(await kubectl(['get', 'sts', 'fleet', '-n', 'mail', '-o', 'json']));
    const hashBefore = (await getRelay())!.status!.configHash;
    await kubectl(['apply', '-f', '-'], relayYaml({ replicas: 2, tenants: `${BILLING}\n${NEWS}` }));
    await waitFor(
      async () => {
        const r = await getRelay();
        return (
          r?.status?.observedGeneration === r?.metadata.generation &&
          r?.status?.configHash !== hashBefore &&
          cond(r, 'Ready')?.status === 'True'
        );
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'the fleet to run the new config' },
    );
    const stsAfter = JSON.parse(await kubectl(['get', 'sts', 'fleet', '-n', 'mail', '-o', 'json']));
    assert.equal(
      stsAfter.metadata.generation,
      stsBefore.metadata.generation,
      'the StatefulSet did not change',
    );
    await sendMail(2525, {
      host: await podIp('fleet-0'),
      from: 'digest@news.example',
      to: ['ok-news@example.test'],
      auth: { user: 'news', pass: 'pw-news' },
    });
    await waitFor(() => e2e.mx.byRecipient('ok-news@example.test').length === 1, { timeoutMs: 30_000 });
  });

  it('a spec the relay would refuse is not applied: the Degraded message names the field, the pods keep the last good config', async () => {
    const objects = async () =>
      JSON.parse(
        await kubectl(['get', 'configmap/fleet-config', 'secret/fleet-secrets', '-n', 'mail', '-o', 'json']),
      ).items as { metadata: { name: string; resourceVersion: string }; data: Record<string, string> }[];
    const before = await objects();
    const hashBefore = (await getRelay())!.status!.configHash;
    // the only tenant's Secret does not exist: rendered, the submission listener wants AUTH and has no account
    await kubectl(
      ['apply', '-f', '-'],
      relayYaml({ replicas: 2, tenants: '    - {name: ghost, credentialsSecret: ghost-smtp}' }),
    );
    const r = await waitFor(
      async () => {
        const r = await getRelay();
        return r?.status?.observedGeneration === r?.metadata.generation &&
          /the relay would refuse the config/.test(cond(r, 'Degraded')?.message ?? '')
          ? r
          : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'the Degraded condition to say the config is refused' },
    );
    assert.equal(cond(r, 'Degraded')?.status, 'True');
    // the cause comes first (the reason); the refused config follows in the message
    assert.equal(cond(r, 'Degraded')?.reason, 'SecretMissing');
    assert.match(
      cond(r, 'Degraded')?.message ?? '',
      /\/listeners\/1\/auth: auth: required needs at least one entry/,
    );
    assert.deepEqual(await objects(), before, 'the ConfigMap and the Secret are not replaced');
    const pods = (await getRelay())!.status!.pods ?? [];
    assert.equal(pods.length, 2);
    for (const p of pods) assert.equal(p.configHash, hashBefore, `${p.name} runs the last good config`);
    // the spec fixed: applied again
    await kubectl(['apply', '-f', '-'], relayYaml({ replicas: 2, tenants: `${BILLING}\n${NEWS}` }));
    await waitForCurrentConfig();
    assert.equal(cond(await getRelay(), 'Degraded')?.status, 'False');
  });

  it('a pod that is still wanted but finished a drain is started over on a fresh volume', async () => {
    // e.g. a scale-down reverted half-way: fleet-1 drained (empty queue) but replicas say it stays
    const uid = JSON.parse(await kubectl(['get', 'pod', 'fleet-1', '-n', 'mail', '-o', 'json'])).metadata.uid;
    await e2e.admin('fleet-1', 'POST', '/drain', { peers: [] });
    await waitFor(
      async () => {
        const pod = JSON.parse(
          (await kubectl(['get', 'pod', 'fleet-1', '-n', 'mail', '-o', 'json', '--ignore-not-found'])) ||
            '{}',
        );
        return pod.metadata && pod.metadata.uid !== uid;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'fleet-1 recreated' },
    );
    await waitForCurrentConfig();
    assert.equal(
      (await e2e.admin<DrainStatus>('fleet-1', 'GET', '/drain')).draining,
      false,
      'the new fleet-1 accepts mail',
    );
    const events = await kubectl(['get', 'events', '-n', 'mail', '-o', 'jsonpath={.items[*].reason}']);
    assert.match(events, /RestartingDrainedPod/);
  });

  it('scaling down drains queued mail into the remaining pod; nothing is lost', async () => {
    // the next hop is unreachable for now: mail waits in the queue of the pod that took it
    const closed = await unusedPort(MX_ADDRESS);
    const tenants = `${BILLING}\n${NEWS}`;
    await kubectl(['apply', '-f', '-'], relayYaml({ replicas: 2, tenants, mxPort: closed }));
    await waitForCurrentConfig();
    const ip1 = await podIp('fleet-1');
    const rcpts = ['ok-drain-1@example.test', 'ok-drain-2@example.test', 'ok-drain-3@example.test'];
    const drainSentAt = Date.now();
    for (const to of rcpts)
      await sendMail(2525, {
        host: ip1,
        from: 'app@billing.example',
        to: [to],
        auth: { user: 'billing', pass: 'pw-billing' },
      });
    await waitFor(
      async () => ((await getRelay())?.status?.pods?.find((p) => p.name === 'fleet-1')?.queueDepth ?? 0) >= 3,
      { timeoutMs: 30_000, intervalMs: 250, what: 'mail queued on fleet-1' },
    );
    await kubectl(['scale', 'smr/fleet', '-n', 'mail', '--replicas=1']);
    await waitFor(
      async () => (await kubectl(['get', 'pods', '-n', 'mail', '-o', 'name'])).trim() === 'pod/fleet-0',
      {
        timeoutMs: 60_000,
        intervalMs: 250,
        what: 'fleet-1 to be drained and removed',
      },
    );
    const events = await kubectl(['get', 'events', '-n', 'mail', '-o', 'jsonpath={.items[*].reason}']);
    assert.match(events, /Draining/);
    // fleet-1 accepted 4 billing recipients this hour; the survivor counts them against the fleet's limit
    const limits = await e2e.admin<RateLimitsResponse>('fleet-0', 'GET', '/ratelimits');
    const hour = limits.tenants.billing.find((l) => l.unit === 'h');
    assert.ok(hour, 'an hourly limit of billing');
    // counted in the current hour window only: a run that crosses the hour keeps what came after it
    const want = (firstBillingAt >= hour.windowStart ? 2 : 0) + (drainSentAt >= hour.windowStart ? 3 : 0);
    assert.ok(
      hour.used >= want,
      `fleet-0 counts its own recipient and fleet-1's four in this hour (used ${hour.used}, want ${want})`,
    );
    assert.equal(e2e.mx.messages.filter((m) => m.rcptTo.some((r) => r.startsWith('ok-drain'))).length, 0);
    // fleet-0 holds the handed-off mail (status shows it within a status interval)
    await waitFor(
      async () => ((await getRelay())?.status?.pods?.find((p) => p.name === 'fleet-0')?.queueDepth ?? 0) >= 3,
      { timeoutMs: 30_000, intervalMs: 250, what: 'fleet-0 to hold the 3 handed-off messages' },
    );
    // the next hop is back: the surviving pod delivers what it was handed
    await kubectl(['apply', '-f', '-'], relayYaml({ replicas: 1, tenants }));
    for (const to of rcpts)
      await waitFor(() => e2e.mx.byRecipient(to).length === 1, { timeoutMs: 30_000, what: to });
    await waitFor(async () => !/fleet-1/.test(await kubectl(['get', 'pvc', '-n', 'mail', '-o', 'name'])), {
      timeoutMs: 30_000,
      intervalMs: 250,
      what: "the drained pod's claim to be released",
    });
    await kubectl(['wait', '--for=condition=Ready', 'smr/fleet', '-n', 'mail', '--timeout=60s']);
  });

  it('deleting the SmtpRelay removes the fleet after its queues are empty', async () => {
    await kubectl(['delete', 'smr', 'fleet', '-n', 'mail', '--wait=false']);
    await waitFor(async () => !(await getRelay()), {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: 'the SmtpRelay to go',
    });
    await waitFor(
      async () => (await kubectl(['get', 'sts,svc,cm,pods', '-n', 'mail', '-o', 'name'])).trim() === '',
      {
        timeoutMs: 60_000,
        intervalMs: 250,
        what: 'owned objects to be collected',
      },
    );
    // the queues were delivered: the spool claims go too, so a new fleet of this name starts clean
    await waitFor(async () => (await kubectl(['get', 'pvc', '-n', 'mail', '-o', 'name'])).trim() === '', {
      timeoutMs: 30_000,
      intervalMs: 250,
      what: 'spool claims deleted',
    });
  });
});
