/**
 * End to end, the operator's fleet-wide queue operations (issue 10, "Bulk queue operations"):
 * spec.queue.suspend held on every relay as source fleet (mail queued meanwhile is held, not sent) and
 * lifted when removed, while a suspension made by hand on one relay is left alone; and a purge requested
 * with the annotation cartero.io/purge that runs once on every pod: not again after an operator restart,
 * not on a pod that joins later, and not at all when the annotation is not valid.
 *
 * To know that the operator has reconciled since some moment, a test adds a marker suspension (a domain
 * nobody mails) to the spec and waits until status.queue.suspended lists it on every ready pod: status
 * is written at the end of a reconcile, after its purge step.
 *
 * Needs the relay's bulk queue endpoints (GET /queue/suspensions, POST /queue/suspend, /queue/resume,
 * /queue/purge), which the delivery engine work adds.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { QueueSummary, SuspensionsResponse } from '../../relay/src/contract/admin-api.js';
import { cond, credentialsSecret, operatorE2e } from '../helpers/operator-e2e.js';
import { waitFor } from '../helpers/poll.js';
import { sendMail } from '../helpers/swaks.js';

const MX_ADDRESS = '127.0.4.93';
const NS = 'bulk';

const e2e = operatorE2e({ name: 'operator-queue-e2e', namespace: NS, mxAddress: MX_ADDRESS });
const { kubectl, apply, podIp, admin } = e2e;
const patchSpec = (patch: unknown) =>
  kubectl(['patch', 'smr', 'fleet', '-n', NS, '--type', 'merge', '-p', JSON.stringify(patch)]);
const annotatePurge = (value: string) =>
  kubectl(['annotate', 'smr', 'fleet', '-n', NS, '--overwrite', `cartero.io/purge=${value}`]);

async function getRelay() {
  const r = await e2e.getRelay();
  assert.ok(r, 'the SmtpRelay fleet');
  return r;
}
const suspensions = async (pod: string) =>
  (await admin<SuspensionsResponse>(pod, 'GET', '/queue/suspensions')).suspensions;
const queued = async (pod: string, tenant: string) =>
  (await admin<QueueSummary>(pod, 'GET', '/queue?limit=1')).byTenant[tenant] ?? 0;

async function events(reason: string): Promise<string[]> {
  const out = JSON.parse(await kubectl(['get', 'events', '-n', NS, '-o', 'json'])) as {
    items: { reason: string; message: string }[];
  };
  return out.items.filter((e) => e.reason === reason).map((e) => e.message);
}

let sent = 0;
async function send(pod: string, from = 'digest@news.example'): Promise<string> {
  const to = `q${++sent}-${pod}@example.test`;
  await sendMail(2525, { host: await podIp(pod), from, to: [to], auth: { user: 'news', pass: 'pw-news' } });
  return to;
}

let markers = 0;
/** Waits until a reconcile that started after this call has written its status (see the header). */
async function reconciled(pods: number): Promise<void> {
  const domain = `marker-${++markers}.invalid`;
  const r = await getRelay();
  const suspend = [
    ...(r.spec.queue?.suspend ?? []).filter((s) => !s.domain?.startsWith('marker-')),
    { domain },
  ];
  await patchSpec({ spec: { queue: { suspend } } });
  await waitFor(
    async () =>
      (await getRelay()).status?.queue?.suspended?.find((s) => s.domain === domain && s.source === 'Spec')
        ?.pods === pods,
    { timeoutMs: 30_000, intervalMs: 200, what: `marker ${domain} on ${pods} pods in status` },
  );
}

describe('fleet-wide queue operations', { timeout: 300_000 }, () => {
  // (a suite hook: the root hooks of operatorE2e, which start the cluster, have all run by then)
  before(async () => {
    await apply(
      [
        credentialsSecret({ name: 'news-smtp', namespace: NS, username: 'news', password: 'pw-news' }),
        e2e.relayManifest({
          replicas: 2,
          tenants:
            '    - {name: news, credentialsSecret: news-smtp}\n    - {name: billing, trustedNetworks: [127.0.0.0/8]}',
          extra: '  queue:\n    retry: {initial: 1s, max: 2s}\n',
        }),
      ].join('---'),
    );
    await e2e.waitForCurrentConfig('a Ready fleet');
  });

  it('the schema refuses a suspension of an unknown tenant, one naming nothing, and a duplicate', async () => {
    await assert.rejects(
      patchSpec({ spec: { queue: { suspend: [{ tenant: 'nobody' }] } } }),
      /queue\.suspend names a tenant that is not in spec\.tenants/,
    );
    await assert.rejects(
      patchSpec({ spec: { queue: { suspend: [{ reason: 'no selector' }] } } }),
      /a suspension names a tenant, a domain, or both/,
    );
    await assert.rejects(
      patchSpec({ spec: { queue: { suspend: [{ domain: 'gmail.com' }, { domain: 'gmail.com' }] } } }),
      /the same tenant and domain are suspended twice/,
    );
    await assert.rejects(patchSpec({ spec: { queue: { suspend: [{ domain: 'Upper.Case' }] } } }), /domain/);
  });

  it('spec.queue.suspend holds mail on every relay; removing it releases the mail; a suspension by hand stays', async () => {
    // one made by hand on fleet-0, which the operator must leave alone
    await admin('fleet-0', 'POST', '/queue/suspend', { domain: 'hand.example', reason: 'by hand' });
    await patchSpec({ spec: { queue: { suspend: [{ tenant: 'news', reason: 'complaint spike' }] } } });
    for (const pod of ['fleet-0', 'fleet-1']) {
      const s = await waitFor(
        async () => (await suspensions(pod)).find((x) => x.tenant === 'news' && x.source === 'fleet'),
        { timeoutMs: 30_000, intervalMs: 200, what: `news suspended on ${pod}` },
      );
      assert.equal(s.reason, 'complaint spike');
      assert.ok(!s.domain, 'a suspension of the tenant alone');
    }
    const held = await Promise.all(['fleet-0', 'fleet-1'].map((pod) => send(pod)));
    for (const pod of ['fleet-0', 'fleet-1'])
      await waitFor(async () => (await queued(pod, 'news')) === 1, {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: `the message queued on ${pod}`,
      });
    // billing is not suspended: its mail still leaves
    const free = `free-${Date.now()}@example.test`;
    await sendMail(2525, { host: await podIp('fleet-1'), from: 'x@billing.example', to: [free] });
    await waitFor(() => e2e.mx.byRecipient(free).length > 0, {
      timeoutMs: 30_000,
      what: 'billing mail delivered',
    });
    for (const to of held) assert.equal(e2e.mx.byRecipient(to).length, 0, `${to} was held`);

    const status = await waitFor(
      async () => {
        const s = (await getRelay()).status?.queue?.suspended;
        return s?.find((x) => x.tenant === 'news')?.pods === 2 && s.some((x) => x.source === 'Admin')
          ? s
          : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'status.queue.suspended' },
    );
    assert.deepEqual(
      status.map((s) => ({ ...s, held: undefined })),
      [
        { tenant: 'news', reason: 'complaint spike', source: 'Spec', pods: 2, held: undefined },
        { domain: 'hand.example', reason: 'by hand', source: 'Admin', pods: 1, held: undefined },
      ],
    );
    assert.ok((await events('QueueSuspended')).some((m) => /queued mail of tenant news on .*fleet-/.test(m)));

    // removed from the spec: lifted on every relay, the held mail leaves; the one by hand stays
    await patchSpec({ spec: { queue: { suspend: null } } });
    for (const pod of ['fleet-0', 'fleet-1'])
      await waitFor(async () => !(await suspensions(pod)).some((x) => x.source === 'fleet'), {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: `news resumed on ${pod}`,
      });
    for (const to of held)
      await waitFor(() => e2e.mx.byRecipient(to).length > 0, { timeoutMs: 30_000, what: `${to} delivered` });
    assert.ok(
      (await suspensions('fleet-0')).some((x) => x.source === 'admin' && x.domain === 'hand.example'),
    );
    await waitFor(
      async () =>
        (await events('QueueResumed')).some((m) => /queued mail of tenant news on .*fleet-/.test(m)),
      {
        timeoutMs: 30_000,
        intervalMs: 250,
        what: 'a QueueResumed event',
      },
    );
    await admin('fleet-0', 'POST', '/queue/resume', { domain: 'hand.example', source: 'admin' });
  });

  it('a purge annotation runs once on every pod, never twice, never on a pod that joins later', async () => {
    // held first, so the mail waits in the queues to be purged
    await patchSpec({ spec: { queue: { suspend: [{ tenant: 'news', reason: 'to be purged' }] } } });
    for (const pod of ['fleet-0', 'fleet-1'])
      await waitFor(async () => (await suspensions(pod)).some((x) => x.tenant === 'news'), {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: `news suspended on ${pod}`,
      });
    const doomed = [await send('fleet-0'), await send('fleet-0'), await send('fleet-1')];
    await waitFor(
      async () => (await queued('fleet-0', 'news')) === 2 && (await queued('fleet-1', 'news')) === 1,
      {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: 'three held messages',
      },
    );

    // bad JSON: a Warning and Degraded, and no purge
    await annotatePurge('{"id":"p1","tenant":news}');
    const degraded = await waitFor(
      async () => {
        const c = cond(await getRelay(), 'Degraded');
        return c?.reason === 'InvalidPurge' ? c : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'Degraded InvalidPurge' },
    );
    assert.match(degraded.message ?? '', /annotation cartero\.io\/purge ignored: not JSON/);
    assert.ok((await events('InvalidPurge')).length > 0, 'a Warning event');
    await reconciled(2);
    assert.equal((await queued('fleet-0', 'news')) + (await queued('fleet-1', 'news')), 3, 'nothing purged');

    await annotatePurge('{"id":"p1","tenant":"news","dsn":false}');
    const last = await waitFor(async () => (await getRelay()).status?.lastPurge, {
      timeoutMs: 30_000,
      intervalMs: 250,
      what: 'status.lastPurge',
    });
    assert.deepEqual(
      { ...last, completedAt: undefined },
      {
        id: 'p1',
        tenant: 'news',
        pods: 2,
        purged: 3,
        dsn: 0,
        busy: 0,
        completedAt: undefined,
      },
    );
    const r = await getRelay();
    assert.deepEqual(
      r.status?.purge?.pods?.map((p) => [p.name, p.done, p.purged]),
      [
        ['fleet-0', true, 2],
        ['fleet-1', true, 1],
      ],
    );
    assert.equal(cond(r, 'Degraded')?.status, 'False');
    assert.equal((await queued('fleet-0', 'news')) + (await queued('fleet-1', 'news')), 0);
    assert.ok(
      (await events('Purged')).some((m) =>
        /purge p1 \(tenant news\) ran on 2 pod\(s\): 3 messages purged/.test(m),
      ),
    );

    // the annotation stays: a new message is not purged by later reconciles, nor after an operator restart
    const kept = await send('fleet-1');
    await waitFor(async () => (await queued('fleet-1', 'news')) === 1, {
      timeoutMs: 30_000,
      what: 'kept queued',
    });
    await reconciled(2);
    await e2e.operator.stop();
    await e2e.startOperator();
    await reconciled(2);
    assert.equal(await queued('fleet-1', 'news'), 1, 'the purge did not run again');

    // a pod that joins later does not run the old purge
    await patchSpec({ spec: { replicas: 3 } });
    // (its admin port refuses connections until the relay listens)
    await waitFor(
      async () => (await suspensions('fleet-2').catch(() => [])).some((x) => x.tenant === 'news'),
      {
        timeoutMs: 60_000,
        intervalMs: 250,
        what: 'fleet-2 up, with the suspension',
      },
    );
    const late = await send('fleet-2');
    await waitFor(async () => (await queued('fleet-2', 'news')) === 1, {
      timeoutMs: 30_000,
      what: 'late queued',
    });
    await reconciled(3);
    assert.equal(await queued('fleet-2', 'news'), 1, 'fleet-2 did not run p1');
    assert.deepEqual(
      (await getRelay()).status?.purge?.pods?.map((p) => p.name),
      ['fleet-0', 'fleet-1'],
    );

    // a new id runs on the pods of the moment, here with a DSN to each sender
    await annotatePurge('{"id":"p2","tenant":"news","dsn":true}');
    const p2 = await waitFor(
      async () => {
        const l = (await getRelay()).status?.lastPurge;
        return l?.id === 'p2' ? l : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'p2 completed' },
    );
    assert.deepEqual([p2.pods, p2.purged, p2.dsn, p2.busy], [3, 2, 2, 0]);

    // nothing purged was ever delivered; lifting the suspension leaves the queues empty
    await patchSpec({ spec: { queue: { suspend: null } } });
    for (const pod of ['fleet-0', 'fleet-1', 'fleet-2'])
      await waitFor(async () => !(await suspensions(pod)).some((x) => x.source === 'fleet'), {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: `resumed on ${pod}`,
      });
    for (const to of [...doomed, kept, late])
      assert.equal(e2e.mx.byRecipient(to).length, 0, `${to} was purged`);
  });
});
