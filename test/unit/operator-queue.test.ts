// The operator's fleet-wide queue operations as pure functions: spec.queue.suspend against each relay's
// suspensions, the status they report, and the purge annotation's parsing and once-per-pod bookkeeping.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  applyCall,
  decideSuspensions,
  suspendedStatus,
  wantedSuspensions,
  type PodSuspensions,
} from '../../operator/src/relay/suspend.js';
import { lastPurgeOf, parsePurge, planPurge, recordPurge } from '../../operator/src/relay/purge.js';
import { mergePatchFor } from '../../operator/src/objects.js';
import type { QueueSuspension } from '../../operator/src/relay/admin-client.js';

const NOW = new Date('2026-12-05T07:00:00.000Z');
const since = '2026-12-05T06:00:00.000Z';
const fleet = (s: Partial<QueueSuspension> & { reason: string }): QueueSuspension => ({
  source: 'fleet',
  since,
  ...s,
});
const byHand = (s: Partial<QueueSuspension> & { reason: string }): QueueSuspension => ({
  source: 'admin',
  since,
  ...s,
});

describe('queue suspensions: spec against relays', () => {
  const want = wantedSuspensions(
    [
      { tenant: 'news', reason: 'complaints' },
      { domain: 'gmail.com' },
      { tenant: 'news', domain: 'yahoo.com', reason: 'deferrals' },
      { tenant: 'news', reason: 'a duplicate: the first one wins' },
      {},
    ],
    'spec',
  );

  it('the spec list: default reason, duplicates and empty items dropped', () => {
    assert.deepEqual(want, [
      { tenant: 'news', reason: 'complaints' },
      { domain: 'gmail.com', reason: 'spec' },
      { tenant: 'news', domain: 'yahoo.com', reason: 'deferrals' },
    ]);
  });

  it('a relay without suspensions gets every one; a relay in line gets no call', () => {
    const inLine = want.map((w) => fleet(w));
    const calls = decideSuspensions(want, [
      { pod: 'r-0', suspensions: [] },
      { pod: 'r-1', suspensions: inLine },
    ]);
    assert.deepEqual(calls, [
      { pod: 'r-0', op: 'suspend', tenant: 'news', reason: 'complaints' },
      { pod: 'r-0', op: 'suspend', domain: 'gmail.com', reason: 'spec' },
      { pod: 'r-0', op: 'suspend', tenant: 'news', domain: 'yahoo.com', reason: 'deferrals' },
    ]);
    assert.deepEqual(decideSuspensions(want, [{ pod: 'r-1', suspensions: inLine }]), []);
  });

  it('fleet suspensions no longer wanted are resumed; a changed reason is re-applied; admin ones are left alone', () => {
    const pods: PodSuspensions[] = [
      {
        pod: 'r-0',
        suspensions: [
          fleet({ tenant: 'news', reason: 'old reason' }),
          fleet({ domain: 'gmail.com', reason: 'spec' }),
          fleet({ tenant: 'news', domain: 'yahoo.com', reason: 'deferrals' }),
          fleet({ domain: 'hotmail.com', reason: 'spec' }),
          byHand({ domain: 'aol.com', reason: 'by hand' }),
          byHand({ tenant: 'news', reason: 'by hand, same key as the spec' }),
        ],
      },
    ];
    assert.deepEqual(decideSuspensions(want, pods), [
      { pod: 'r-0', op: 'suspend', tenant: 'news', reason: 'complaints' },
      { pod: 'r-0', op: 'resume', domain: 'hotmail.com' },
    ]);
    // an empty spec lifts every fleet suspension and nothing else
    assert.deepEqual(
      decideSuspensions([], pods).map((c) => `${c.op} ${c.tenant ?? ''}|${c.domain ?? ''}`),
      ['resume news|', 'resume |gmail.com', 'resume news|yahoo.com', 'resume |hotmail.com'],
    );
  });

  it('a relay that reports a domain in capitals or empty fields is still in line', () => {
    const pods = [
      {
        pod: 'r-0',
        suspensions: [
          fleet({ tenant: 'news', domain: '', reason: 'complaints' }),
          fleet({ domain: 'GMail.com', reason: 'spec' }),
          fleet({ tenant: 'news', domain: 'yahoo.com', reason: 'deferrals' }),
        ],
      },
    ];
    assert.deepEqual(decideSuspensions(want, pods), []);
  });

  it('after the calls the relays are in line (idempotent: a second round makes none)', () => {
    let pods: PodSuspensions[] = [
      { pod: 'r-0', suspensions: [fleet({ domain: 'hotmail.com', reason: 'spec' })] },
      { pod: 'r-1', suspensions: [byHand({ domain: 'aol.com', reason: 'x' })] },
    ];
    const calls = decideSuspensions(want, pods);
    pods = pods.map((p) => ({
      ...p,
      suspensions: calls.filter((c) => c.pod === p.pod).reduce((l, c) => applyCall(l, c, NOW), p.suspensions),
    }));
    assert.deepEqual(decideSuspensions(want, pods), []);
    assert.ok(pods[1].suspensions.some((s) => s.source === 'admin' && s.domain === 'aol.com'));
    assert.ok(!pods[0].suspensions.some((s) => s.domain === 'hotmail.com'));
  });

  it('status: spec suspensions with the pods holding them and the messages held, then those made by hand', () => {
    const pods: PodSuspensions[] = [
      {
        pod: 'r-0',
        suspensions: [
          fleet({ tenant: 'news', reason: 'complaints' }),
          byHand({ domain: 'aol.com', reason: 'by hand' }),
        ],
      },
      { pod: 'r-1', suspensions: [fleet({ tenant: 'news', reason: 'complaints', held: 7 })] },
    ];
    const held = (pod: string, s: QueueSuspension) => s.held ?? (pod === 'r-0' ? 3 : undefined);
    assert.deepEqual(suspendedStatus(want, pods, held, undefined), [
      { tenant: 'news', reason: 'complaints', source: 'Spec', pods: 2, held: 10 },
      { domain: 'gmail.com', reason: 'spec', source: 'Spec', pods: 0 },
      { tenant: 'news', domain: 'yahoo.com', reason: 'deferrals', source: 'Spec', pods: 0 },
      { domain: 'aol.com', reason: 'by hand', source: 'Admin', pods: 1, held: 3 },
    ]);
    // no relay reports a count (an operator restart): the previous figure stands
    const none = () => undefined;
    const previous = [{ tenant: 'news', source: 'Spec' as const, pods: 2, held: 10 }];
    assert.equal(suspendedStatus(want, pods, none, previous)[0].held, 10);
    assert.equal(suspendedStatus(want, pods, none, undefined)[0].held, undefined);
  });
});

describe('purge annotation', () => {
  const tenants = ['news', 'billing'];

  it('reads a request; domain lowercased', () => {
    assert.deepEqual(parsePurge('{"id":"p1","tenant":"news","domain":"Example.COM","dsn":true}', tenants), {
      request: { id: 'p1', tenant: 'news', domain: 'example.com', dsn: true },
    });
    assert.deepEqual(parsePurge('{"id":"2026-12-05T07:00","domain":"gmail.com","dsn":false}', tenants), {
      request: { id: '2026-12-05T07:00', domain: 'gmail.com', dsn: false },
    });
    assert.deepEqual(parsePurge(undefined, tenants), {});
  });

  it('refuses bad input with a message, so nothing runs', () => {
    const bad: [string, RegExp][] = [
      ['{"id":"p1", tenant:"news"}', /not JSON/],
      ['[1]', /expected an object/],
      ['{"id":"p1","tennant":"news","domain":"gmail.com","dsn":true}', /unknown field tennant/],
      ['{"tenant":"news","dsn":true}', /id must be/],
      ['{"id":"has space","tenant":"news","dsn":true}', /id must be/],
      ['{"id":"p1","tenant":"nobody","dsn":true}', /tenant "nobody" is not a tenant/],
      ['{"id":"p1","domain":"not a domain","dsn":true}', /is not a domain name/],
      ['{"id":"p1","dsn":true}', /name a tenant, a domain or both/],
      ['{"id":"p1","tenant":"news"}', /dsn must be true/],
      ['{"id":"p1","tenant":"news","dsn":"yes"}', /dsn must be true/],
    ];
    for (const [value, re] of bad) {
      const r = parsePurge(value, tenants);
      assert.equal(r.request, undefined, value);
      assert.match(r.error ?? '', re, value);
      assert.match(r.error ?? '', /^annotation cartero\.io\/purge ignored: /);
    }
  });

  const req = { id: 'p1', tenant: 'news', dsn: true };
  const pods = (...names: string[]) => names.map((n) => ({ name: n, ready: !n.endsWith('*') }));
  /** planPurge of request p1 over the pods `names` (a trailing * marks one not ready), one replica each. */
  const plan1 = (state: Parameters<typeof planPurge>[0]['state'], names: string[], now = NOW) =>
    planPurge({ request: req, state, pods: pods(...names), replicas: names.length, now });

  it('a new id lists the pods that exist; ready ones run now, the others when ready', () => {
    const plan = plan1(undefined, ['r-0', 'r-1', 'r-2*']);
    assert.deepEqual(plan.run, ['r-0', 'r-1']);
    assert.deepEqual(plan.state, {
      id: 'p1',
      startedAt: '2026-12-05T07:00:00Z',
      pods: [
        { name: 'r-0', done: false },
        { name: 'r-1', done: false },
        { name: 'r-2*', done: false },
      ],
    });
  });

  it('runs once per pod: done pods never again, a pod that joins later never, one restarting keeps its turn', () => {
    let state = plan1(undefined, ['r-0', 'r-1']).state!;
    state = recordPurge(state, 'r-0', { result: { purged: 5, dsn: 5, busy: 1 } });
    state = recordPurge(state, 'r-1', { error: 'timeout' });
    assert.deepEqual(state.pods![1], { name: 'r-1', done: false, error: 'timeout' });
    assert.equal(lastPurgeOf(req, state, undefined, NOW), undefined, 'not complete yet');
    // r-1 restarting (gone from the pod list for a moment), r-2 new
    let plan = planPurge({ request: req, state, pods: pods('r-0', 'r-2'), replicas: 3, now: NOW });
    assert.deepEqual(plan.run, [], 'r-0 already ran; r-2 was not there; r-1 is not running');
    assert.deepEqual(
      plan.state!.pods!.map((p) => p.name),
      ['r-0', 'r-1'],
    );
    plan = plan1(plan.state, ['r-0', 'r-1', 'r-2']);
    assert.deepEqual(plan.run, ['r-1']);
    state = recordPurge(plan.state!, 'r-1', { result: { purged: 2, dsn: 2, busy: 0 } });
    const last = lastPurgeOf(req, state, undefined, NOW);
    assert.deepEqual(last, {
      id: 'p1',
      tenant: 'news',
      pods: 2,
      purged: 7,
      dsn: 7,
      busy: 1,
      completedAt: '2026-12-05T07:00:00Z',
    });
    // later reconciles: nothing runs, lastPurge stays as it was
    plan = plan1(state, ['r-0', 'r-1', 'r-2'], new Date());
    assert.deepEqual(plan.run, []);
    assert.equal(lastPurgeOf(req, plan.state, last, new Date()), last);
  });

  it('a pod scaled away before it ran is dropped; without a request nothing runs and status stays', () => {
    const state = plan1(undefined, ['r-0', 'r-1']).state!;
    const done = recordPurge(state, 'r-0', { result: { purged: 1, dsn: 1, busy: 0 } });
    const plan = plan1(done, ['r-0']);
    assert.deepEqual(
      plan.state!.pods!.map((p) => p.name),
      ['r-0'],
    );
    assert.equal(lastPurgeOf(req, plan.state, undefined, NOW)?.pods, 1);
    assert.deepEqual(
      planPurge({ request: undefined, state: done, pods: pods('r-0'), replicas: 1, now: NOW }),
      {
        state: done,
        run: [],
      },
    );
  });

  it('a new id starts over on the pods of the moment', () => {
    const old = recordPurge(plan1(undefined, ['r-0']).state!, 'r-0', {
      result: { purged: 1, dsn: 1, busy: 0 },
    });
    const plan = planPurge({
      request: { id: 'p2', domain: 'gmail.com', dsn: false },
      state: old,
      pods: pods('r-0', 'r-1'),
      replicas: 2,
      now: NOW,
    });
    assert.equal(plan.state!.id, 'p2');
    assert.deepEqual(plan.run, ['r-0', 'r-1']);
  });

  it('a fleet of no pods completes at once', () => {
    const state = plan1(undefined, []).state;
    assert.deepEqual(lastPurgeOf(req, state, undefined, NOW), {
      id: 'p1',
      tenant: 'news',
      pods: 0,
      purged: 0,
      dsn: 0,
      busy: 0,
      completedAt: '2026-12-05T07:00:00Z',
    });
  });
});

describe('status merge patch', () => {
  it('deletes what the new status drops, recursively; replaces arrays', () => {
    assert.deepEqual(
      mergePatchFor(
        {
          queueDepth: 3,
          drain: { pods: ['a'] },
          queue: { suspended: [{ tenant: 'x' }], old: 1 },
          pods: [1, 2],
        },
        { queueDepth: 3, queue: { suspended: [] }, pods: [1] },
      ),
      { queueDepth: 3, drain: null, queue: { suspended: [], old: null }, pods: [1] },
    );
  });
});
