// An SmtpRelay's status as a pure function of what a reconcile observed: every Ready reason, the
// events it calls for (returned, not written), and the fleet figures.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SmtpRelay } from '../../operator/src/api/types.js';
import type { StatefulSet } from '../../operator/src/cache.js';
import { findCondition } from '../../operator/src/conditions.js';
import type { PodFigures } from '../../operator/src/relay/figures.js';
import { deletingStatus, relayStatus, type StatusInputs } from '../../operator/src/relay/status.js';
import { tenantState } from '../helpers/tenant-state.js';

const NOW = new Date('2026-12-05T07:00:00.000Z');
const REV = 'rev-2';

const relay = (status?: SmtpRelay['status']): SmtpRelay => ({
  apiVersion: 'cartero.io/v1alpha1',
  kind: 'SmtpRelay',
  metadata: { name: 'mail', namespace: 'ns', generation: 3 },
  spec: { replicas: 2, tenants: [{ name: 'news' }, { name: 'billing' }] } as SmtpRelay['spec'],
  ...(status ? { status } : {}),
});
const sts = (rolled = true): StatefulSet => ({
  apiVersion: 'apps/v1',
  kind: 'StatefulSet',
  metadata: { name: 'mail', generation: 4 },
  status: { observedGeneration: 4, updateRevision: 'b', currentRevision: rolled ? 'b' : 'a' },
});
const pod = (name: string, f: Partial<PodFigures> = {}): PodFigures => ({
  name,
  ready: true,
  ip: '10.0.0.1',
  revision: REV,
  queue: 0,
  byTenant: {},
  tenants: [],
  draining: false,
  ...f,
});
const inputs = (s: Partial<StatusInputs> = {}): StatusInputs => ({
  sts: sts(),
  figures: [pod('mail-0'), pod('mail-1')],
  revision: REV,
  problems: [],
  desired: 2,
  now: NOW,
  ...s,
});
const ready = (r: ReturnType<typeof relayStatus>) => findCondition(r.status.conditions, 'Ready')!;

describe('SmtpRelay status: Ready', () => {
  it('is True when every desired pod is ready with the current config, and calls for a Ready event', () => {
    const r = relayStatus(relay(), inputs());
    assert.equal(ready(r).status, 'True');
    assert.equal(ready(r).reason, 'Ready');
    assert.equal(ready(r).message, '2 of 2 relays ready with the current config');
    assert.equal(ready(r).observedGeneration, 3);
    assert.equal(findCondition(r.status.conditions, 'Progressing')!.reason, 'Complete');
    assert.equal(findCondition(r.status.conditions, 'Degraded')!.status, 'False');
    assert.equal(findCondition(r.status.conditions, 'Reconciled')!.reason, 'Applied');
    assert.deepEqual(r.events, [{ type: 'Normal', reason: 'Ready', message: '2 relays ready' }]);
    assert.equal(r.status.readyText, '2/2');
    assert.equal(r.status.selector, 'app.kubernetes.io/name=cartero-relay,app.kubernetes.io/instance=mail');
  });

  it('ConfigPending: a ready pod still runs an older config, and it is named', () => {
    const r = relayStatus(
      relay(),
      inputs({ figures: [pod('mail-0'), pod('mail-1', { revision: 'rev-1' })] }),
    );
    assert.equal(ready(r).status, 'False');
    assert.equal(ready(r).reason, 'ConfigPending');
    assert.equal(
      ready(r).message,
      '1 of 2 relays ready with the current config; waiting for mail-1 to load config rev-2',
    );
    assert.equal(findCondition(r.status.conditions, 'Progressing')!.reason, 'ConfigPending');
    assert.deepEqual(r.events, []);
  });

  it('WaitingForAddresses: a scale-up waits for an IpPool, and says which', () => {
    const waiting = 'waiting for IpPool warm to allocate an address to mail-1';
    const r = relayStatus(relay(), inputs({ figures: [pod('mail-0')], waiting }));
    assert.equal(ready(r).reason, 'WaitingForAddresses');
    assert.equal(ready(r).message, `1 of 2 relays ready with the current config; ${waiting}`);
  });

  it('PodsNotReady: pods run the current config but too few are ready; admin API errors are named', () => {
    const r = relayStatus(
      relay(),
      inputs({
        figures: [pod('mail-0'), pod('mail-1', { ready: false, revision: null, error: 'fetch failed' })],
      }),
    );
    assert.equal(ready(r).reason, 'PodsNotReady');
    assert.equal(
      ready(r).message,
      '1 of 2 relays ready with the current config; admin API: mail-1: fetch failed',
    );
    assert.equal(r.status.readyReplicas, 1);
    assert.equal(r.status.replicas, 2);
  });

  it('RollingUpdate: the StatefulSet has not rolled (or not observed its generation) yet', () => {
    assert.equal(ready(relayStatus(relay(), inputs({ sts: sts(false) }))).reason, 'RollingUpdate');
    const unobserved = sts();
    unobserved.status!.observedGeneration = 3;
    assert.equal(ready(relayStatus(relay(), inputs({ sts: unobserved }))).reason, 'RollingUpdate');
    assert.equal(ready(relayStatus(relay(), inputs({ sts: undefined }))).reason, 'RollingUpdate');
  });

  it('Draining comes before the others, and Progressing says ScalingDown with the drain message', () => {
    const drain = {
      message: 'scaling down to 1: draining mail-1 (3 queued) into 1 remaining relay(s)',
      pods: ['mail-1'],
    };
    const r = relayStatus(
      relay(),
      inputs({ drain, figures: [pod('mail-0'), pod('mail-1', { revision: 'old' })] }),
    );
    assert.equal(ready(r).reason, 'Draining');
    const progressing = findCondition(r.status.conditions, 'Progressing')!;
    assert.equal(progressing.reason, 'ScalingDown');
    assert.equal(progressing.message, drain.message);
    assert.deepEqual(r.status.drain, { targetReplicas: 2, pods: ['mail-1'], since: '2026-12-05T07:00:00Z' });
    // a drain in progress keeps the time it started
    const later = relayStatus(
      relay({ drain: { targetReplicas: 2, pods: ['mail-1'], since: '2026-12-05T06:00:00Z' } }),
      inputs({ drain, now: new Date('2026-12-05T08:00:00Z') }),
    );
    assert.equal(later.status.drain!.since, '2026-12-05T06:00:00Z');
  });

  it('ApplyFailed comes first: Reconciled and Degraded say it too', () => {
    const r = relayStatus(
      relay(),
      inputs({ applyError: 'StatefulSet mail: 422: invalid', drain: { message: 'm', pods: ['mail-1'] } }),
    );
    assert.equal(ready(r).reason, 'ApplyFailed');
    assert.equal(findCondition(r.status.conditions, 'Reconciled')!.status, 'False');
    const degraded = findCondition(r.status.conditions, 'Degraded')!;
    assert.deepEqual(
      [degraded.status, degraded.reason, degraded.message],
      ['True', 'ApplyFailed', 'StatefulSet mail: 422: invalid'],
    );
  });
});

describe('SmtpRelay status: problems and figures', () => {
  it('problems make Degraded (first reason, every message) and one Warning event each; Ready may stay True', () => {
    const problems = [
      { reason: 'SecretMissing', message: 'TLS Secret tls not found' },
      { reason: 'InvalidSpec', message: 'tenant news is defined twice' },
    ];
    const r = relayStatus(relay(), inputs({ problems }));
    const degraded = findCondition(r.status.conditions, 'Degraded')!;
    assert.deepEqual(
      [degraded.status, degraded.reason, degraded.message],
      ['True', 'SecretMissing', 'TLS Secret tls not found; tenant news is defined twice'],
    );
    assert.deepEqual(
      r.events.map((e) => [e.type, e.reason]),
      [
        ['Warning', 'SecretMissing'],
        ['Warning', 'InvalidSpec'],
        ['Normal', 'Ready'],
      ],
    );
  });

  it('keeps lastTransitionTime while a condition keeps its status', () => {
    const first = relayStatus(relay(), inputs());
    const again = relayStatus(relay(first.status), inputs({ now: new Date('2026-12-05T09:00:00Z') }));
    assert.equal(ready(again).lastTransitionTime, '2026-12-05T07:00:00Z');
  });

  it('sums queues and bounces; a tenant is as bad as its worst relay, a pause by hand before a fleet copy', () => {
    const t = tenantState;
    const r = relayStatus(
      relay(),
      inputs({
        figures: [
          pod('mail-0', {
            queue: 5,
            byTenant: { news: 4, billing: 1 },
            tenants: [
              t('news', {
                state: 'paused',
                by: 'fleet',
                reason: 'copy',
                rate: 0.01,
                attempted: 100,
                hard: 1,
              }),
              t('billing', {
                state: 'warning',
                reason: 'bounces rising',
                rate: 0.03,
                attempted: 100,
                hard: 3,
              }),
            ],
          }),
          pod('mail-1', {
            queue: 2,
            byTenant: { news: 2 },
            tenants: [
              t('news', {
                state: 'paused',
                by: 'guard',
                reason: 'bounce rate 12%',
                rate: 0.12345,
                attempted: 200,
                hard: 4,
              }),
            ],
          }),
        ],
      }),
    );
    assert.equal(r.status.queueDepth, 7);
    assert.equal(r.status.bounceRate, 0.02);
    assert.equal(r.status.bounceRatePercent, '2.0%');
    assert.deepEqual(r.status.tenants, [
      { name: 'news', state: 'Paused', reason: 'bounce rate 12%', bounceRate: 0.1235, queueDepth: 6 },
      { name: 'billing', state: 'Warning', reason: 'bounces rising', bounceRate: 0.03, queueDepth: 1 },
    ]);
    assert.deepEqual(r.status.pods![0], { name: 'mail-0', ready: true, configHash: REV, queueDepth: 5 });
  });

  it('says no queue depth while a relay still indexes its spool', () => {
    const r = relayStatus(
      relay(),
      inputs({ figures: [pod('mail-0', { queue: undefined, recovering: true }), pod('mail-1')] }),
    );
    assert.equal(r.status.queueDepth, undefined);
    assert.equal(r.status.tenants![0].queueDepth, undefined);
    assert.deepEqual(r.status.pods![0], { name: 'mail-0', ready: true, configHash: REV });
  });

  it('a draining pod is marked in pods[]', () => {
    const r = relayStatus(relay(), inputs({ figures: [pod('mail-0'), pod('mail-1', { draining: true })] }));
    assert.equal(r.status.pods![1].draining, true);
  });
});

describe('SmtpRelay status while deleting', () => {
  it('keeps the old status, sets Progressing Deleting and calls for a Deleting event', () => {
    const before = relayStatus(relay(), inputs()).status;
    const r = deletingStatus(relay(before), 'deleting: waiting for mail-0 (3 queued)', NOW);
    assert.equal(r.status.readyText, '2/2');
    const p = findCondition(r.status.conditions, 'Progressing')!;
    assert.deepEqual(
      [p.status, p.reason, p.message],
      ['True', 'Deleting', 'deleting: waiting for mail-0 (3 queued)'],
    );
    assert.deepEqual(r.events, [
      { type: 'Normal', reason: 'Deleting', message: 'deleting: waiting for mail-0 (3 queued)' },
    ]);
    assert.equal(
      findCondition(before.conditions, 'Progressing')!.reason,
      'Complete',
      'the input is not changed',
    );
  });
});
