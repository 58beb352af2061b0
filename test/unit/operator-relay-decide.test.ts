// The SmtpRelay controller's decisions as pure functions: the scale plan (drain before scale-down, wait
// for addresses on scale-up), rate-limit carry-over, the fleet's copies of pauses and suppressions, and
// the spec rules the CRD schema cannot express.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IpPool, SmtpRelay } from '../../operator/src/api/types.js';
import type { SuppressionChange } from '../../operator/src/relay/admin-client.js';
import { checkRenderedConfig } from '../../operator/src/relay/config-check.js';
import type { PodFigures } from '../../operator/src/relay/figures.js';
import { decidePauseCopies, decideSuppressionCopies } from '../../operator/src/relay/fleet-sync.js';
import {
  drainProgress,
  drainedSurvivors,
  planScale,
  rateCarry,
  scaleDownStep,
} from '../../operator/src/relay/scale-down.js';
import { checkSpec } from '../../operator/src/relay/spec-check.js';
import { tenantState } from '../helpers/tenant-state.js';

const pool = (name: string, mode: 'PodNetwork' | 'HostNetwork' = 'PodNetwork'): IpPool =>
  ({
    apiVersion: 'cartero.io/v1alpha1',
    kind: 'IpPool',
    metadata: { name, namespace: 'ns' },
    spec: { mode, addresses: [{ ip: '192.0.2.1', ehlo: 'mx1.example' }] },
  }) as IpPool;

describe('scale plan', () => {
  it('keeps the count when nothing changes', () => {
    assert.deepEqual(planScale({ name: 'mail', desired: 3, current: 3, pools: [], allocations: [] }), {
      current: 3,
      going: [],
      replicas: 3,
    });
  });

  it('scale-down names the highest ordinals; they drain before the StatefulSet is lowered', () => {
    const plan = planScale({ name: 'mail', desired: 1, current: 3, pools: [], allocations: [] });
    assert.deepEqual(plan, { current: 3, going: ['mail-1', 'mail-2'], replicas: 1 });
    const draining = drainProgress(
      1,
      ['mail-1 (3 queued)', 'mail-2 (indexing its spool, 1 found so far)'],
      1,
    );
    assert.deepEqual(scaleDownStep(plan, draining), {
      replicas: 3,
      drain: {
        message:
          'scaling down to 1: draining mail-1 (3 queued), mail-2 (indexing its spool, 1 found so far) into 1 remaining relay(s)',
        pods: ['mail-1', 'mail-2'],
      },
      event: { type: 'Normal', reason: 'Draining', message: draining.message },
    });
    assert.deepEqual(scaleDownStep(plan, drainProgress(1, [], 1)), {
      replicas: 1,
      event: { type: 'Normal', reason: 'ScaledDown', message: 'drained mail-1, mail-2; scaling to 1' },
    });
  });

  it('a drain with no pod left to take the mail delivers it', () => {
    assert.equal(
      drainProgress(0, ['mail-0 (2 queued)'], 0).message,
      'scaling down to 0: draining mail-0 (2 queued) by delivering their queues',
    );
  });

  it('scale-up stops at the first pod an IpPool has no address for; HostNetwork pools do not hold it', () => {
    const pools = [pool('warm'), pool('hosts', 'HostNetwork')];
    const allocations = [{ pool: 'warm', ip: '192.0.2.1', pod: 'mail-0' }];
    assert.deepEqual(planScale({ name: 'mail', desired: 3, current: 1, pools, allocations }), {
      current: 1,
      going: [],
      replicas: 1,
      waiting: 'waiting for IpPool warm to allocate an address to mail-1',
    });
    // a new fleet (no StatefulSet yet) starts from ordinal 0
    assert.deepEqual(planScale({ name: 'mail', desired: 2, current: undefined, pools, allocations: [] }), {
      current: 2,
      going: [],
      replicas: 0,
      waiting: 'waiting for IpPool warm to allocate an address to mail-0',
    });
    assert.equal(
      planScale({ name: 'mail', desired: 2, current: undefined, pools: [], allocations: [] }).replicas,
      2,
    );
  });

  it('carries this hour and day of a departing pod over to the survivors, rounded up', () => {
    const now = 1_000_000;
    const use = {
      news: [
        { unit: 'h', limit: 100, used: 7, windowStart: 0, resetsAt: now + 1 },
        { unit: 'd', limit: 1000, used: 0, windowStart: 0, resetsAt: now + 1 },
        { unit: 'm', limit: 10, used: 5, windowStart: 0, resetsAt: now + 1 },
      ],
      billing: [{ unit: 'd', limit: 1000, used: 9, windowStart: 0, resetsAt: now }],
    };
    assert.deepEqual(rateCarry(use, 2, now), [{ tenant: 'news', unit: 'h', each: 4 }]);
    assert.deepEqual(rateCarry(use, 0, now), []);
  });

  it('restarts only kept pods that drained to an empty queue', () => {
    const f = (name: string, x: Partial<PodFigures>): PodFigures => ({ name, ready: true, ...x });
    const figures = [
      f('mail-0', { draining: true, queue: 0 }),
      f('mail-1', { draining: true, queue: 2 }),
      f('mail-2', { draining: false, queue: 0 }),
      f('mail-3', { draining: true, queue: 0 }),
    ];
    assert.deepEqual(drainedSurvivors(figures, 3), ['mail-0']);
  });
});

describe('fleet sync', () => {
  const t = tenantState;

  it('copies a pause made on one relay to the others, with its reason and end', () => {
    const live = [
      {
        name: 'mail-0',
        tenants: [t('news', { state: 'paused', by: 'guard', reason: 'bounces', pausedUntil: 99 })],
      },
      { name: 'mail-1', tenants: [t('news')] },
      { name: 'mail-2', tenants: [t('news', { state: 'paused', by: 'fleet' })] },
    ];
    assert.deepEqual(decidePauseCopies(['news'], live), [
      {
        op: 'pause',
        pod: 'mail-1',
        tenant: 'news',
        reason: 'paused on mail-0: bounces',
        until: 99,
        from: 'mail-0',
      },
    ]);
  });

  it('resumes the copies once the pause they copied ended; nothing for one relay or a tenant not reported', () => {
    const live = [
      { name: 'mail-0', tenants: [t('news')] },
      { name: 'mail-1', tenants: [t('news', { state: 'paused', by: 'fleet' }), t('billing')] },
    ];
    assert.deepEqual(decidePauseCopies(['news', 'billing', 'other'], live), [
      { op: 'resume', pod: 'mail-1', tenant: 'news' },
    ]);
    assert.deepEqual(decidePauseCopies(['news'], live.slice(1)), []);
    const noReason = [
      { name: 'mail-0', tenants: [t('news', { state: 'paused', by: 'admin' })] },
      { name: 'mail-1', tenants: [t('news')] },
    ];
    assert.equal(
      (decidePauseCopies(['news'], noReason)[0] as { reason: string }).reason,
      'paused on mail-0: no reason given',
    );
  });

  it('copies suppressions added or removed on one relay, not those it got from the fleet', () => {
    const changes: SuppressionChange[] = [
      {
        seq: 1,
        op: 'add',
        tenant: 'news',
        address: 'a@x',
        entry: { reason: 'complaint', source: 'admin', expiresAt: 0 },
      },
      {
        seq: 2,
        op: 'add',
        tenant: 'news',
        address: 'b@x',
        entry: { reason: 'copied', source: 'fleet', expiresAt: 0 },
      },
      { seq: 3, op: 'remove', tenant: 'news', address: 'c@x', source: 'admin' },
      { seq: 4, op: 'remove', tenant: 'news', address: 'd@x', source: 'fleet' },
    ];
    assert.deepEqual(decideSuppressionCopies('mail-0', changes, ['mail-0', 'mail-1', 'mail-2']), [
      { op: 'add', pod: 'mail-1', tenant: 'news', address: 'a@x', reason: 'suppressed on mail-0: complaint' },
      { op: 'add', pod: 'mail-2', tenant: 'news', address: 'a@x', reason: 'suppressed on mail-0: complaint' },
      { op: 'remove', pod: 'mail-1', tenant: 'news', address: 'c@x' },
      { op: 'remove', pod: 'mail-2', tenant: 'news', address: 'c@x' },
    ]);
  });
});

describe('spec rules', () => {
  const relay = (spec: object): SmtpRelay =>
    ({
      apiVersion: 'cartero.io/v1alpha1',
      kind: 'SmtpRelay',
      metadata: { name: 'mail', namespace: 'ns' },
      spec,
    }) as SmtpRelay;

  it('finds what the schema cannot, once per message', () => {
    const problems = checkSpec(
      relay({
        tenants: [{ name: 'news', ipPool: 'warm' }, { name: 'news' }, { name: 'billing', ipPool: 'cold' }],
        routing: { default: { type: 'smarthost' } },
        listeners: [{ name: 'smtp', port: 25, tls: 'starttls' }],
        queue: { suspend: [{}, { tenant: 'ghost' }, { tenant: 'news' }] },
      }),
      (p) => p === 'warm',
    );
    assert.deepEqual(
      problems.map((p) => p.reason + ': ' + p.message),
      [
        'InvalidSpec: tenant news is defined twice',
        'IpPoolMissing: tenant billing: IpPool cold not found',
        'InvalidSpec: routing.default.type is smarthost but routing.default.smarthost is missing',
        'InvalidSpec: a listener uses TLS but spec.tls.secretName is not set',
        'InvalidSpec: a queue.suspend item names neither tenant nor domain',
        'InvalidSpec: queue.suspend names tenant ghost, which is not in spec.tenants; it is not applied',
      ],
    );
    assert.deepEqual(
      checkSpec(relay({ tenants: [{ name: 'news' }] }), () => false),
      [],
    );
  });

  it('the rendered config check names InvalidConfig', () => {
    const p = checkRenderedConfig({ listeners: 'not a list' }, {});
    assert.equal(p?.reason, 'InvalidConfig');
    assert.match(
      p!.message,
      /^the relay would refuse the config rendered from the spec, so it is not applied/,
    );
  });
});
