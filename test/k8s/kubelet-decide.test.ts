/**
 * The process kubelet's decisions (`kubelet/decide.ts`, `kubelet/shared.ts`) without a store or
 * processes: StatefulSet scale and update plans and status, maxSurge/maxUnavailable, Deployment
 * rollout steps and status, which ReplicaSet pods go first, restart back-off, pod phase and status,
 * `$(VAR)` expansion and mount path rewriting.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { KObject } from './apiserver/objects.js';
import {
  intOrPercent,
  planStatefulSetScale,
  planStatefulSetUpdate,
  podPhase,
  replicaSetExcess,
  restartDelay,
  restarts,
  rolloutLimits,
  rolloutSteps,
  statefulSetStatus,
  type ReplicaSetState,
} from './kubelet/decide.js';
import { deploymentStatus } from './kubelet/deployments.js';
import { expand } from './kubelet/runtime/env.js';
import { podStatus } from './kubelet/runtime/status.js';
import type { Runtime } from './kubelet/runtime/types.js';
import { rewritePaths } from './kubelet/runtime/volumes.js';
import {
  canonical,
  isRunningAndReady,
  REVISION_LABEL,
  revisionOf,
  templateHash,
  transitionTime,
} from './kubelet/shared.js';

type PodState = 'ready' | 'running' | 'failed' | 'terminating' | 'pending';

function pod(name: string, state: PodState, revision = 'r1', created = '2026-01-01T00:00:00Z'): KObject {
  const ready = state === 'ready' || state === 'terminating';
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      creationTimestamp: created,
      labels: { [REVISION_LABEL]: revision },
      ...(state === 'terminating' ? { deletionTimestamp: '2026-01-01T00:01:00Z' } : {}),
    },
    status: {
      phase: state === 'failed' ? 'Failed' : state === 'pending' ? 'Pending' : 'Running',
      conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
    },
  };
}

const pods = (...states: (PodState | undefined)[]) =>
  new Map(states.flatMap((s, o) => (s ? [[o, pod(`web-${o}`, s)] as [number, KObject]] : [])));

describe('template hash and revisions', () => {
  it('does not depend on key order or undefined members', () => {
    const a = {
      metadata: { labels: { app: 'x', tier: 'y' } },
      spec: { containers: [{ name: 'c', image: 'i' }] },
    };
    const b = {
      spec: { containers: [{ image: 'i', name: 'c', command: undefined }] },
      metadata: { labels: { tier: 'y', app: 'x' } },
    };
    assert.equal(canonical(a), canonical(b));
    assert.equal(templateHash(a), templateHash(b));
    assert.match(templateHash(a), /^[0-9a-f]{10}$/);
    assert.equal(revisionOf('web', a), `web-${templateHash(a)}`);
    assert.notEqual(
      templateHash(a),
      templateHash({ ...a, spec: { containers: [{ name: 'c', image: 'j' }] } }),
    );
  });

  it('isRunningAndReady wants Running, Ready and no deletionTimestamp', () => {
    assert.equal(isRunningAndReady(pod('a', 'ready')), true);
    assert.equal(isRunningAndReady(pod('a', 'running')), false);
    assert.equal(isRunningAndReady(pod('a', 'terminating')), false);
    assert.equal(isRunningAndReady(pod('a', 'failed')), false);
  });

  it('keeps a condition transition time while the status stays', () => {
    const prev = [{ type: 'Ready', status: 'True', lastTransitionTime: 'then' }];
    assert.equal(transitionTime(prev, 'Ready', 'True', 'now'), 'then');
    assert.equal(transitionTime(prev, 'Ready', 'False', 'now'), 'now');
    assert.equal(transitionTime(undefined, 'Ready', 'True', 'now'), 'now');
  });
});

describe('StatefulSet scale plan', () => {
  it('OrderedReady creates the first missing ordinal and waits for it', () => {
    const plan = planStatefulSetScale(pods(), 3, false);
    assert.deepEqual(plan.create, [0]);
    assert.equal(plan.blocked, true);
    assert.deepEqual(planStatefulSetScale(pods('ready'), 3, false).create, [1]);
  });

  it('OrderedReady waits while an earlier ordinal is not Ready', () => {
    const plan = planStatefulSetScale(pods('ready', 'running'), 3, false);
    assert.deepEqual(plan.create, []);
    assert.equal(plan.blocked, true);
  });

  it('Parallel creates every missing ordinal at once', () => {
    const plan = planStatefulSetScale(pods(undefined, 'running'), 4, true);
    assert.deepEqual(plan.create, [0, 2, 3]);
    assert.equal(plan.blocked, false);
  });

  it('replaces failed pods', () => {
    const current = pods('ready', 'failed');
    const plan = planStatefulSetScale(current, 2, false);
    assert.deepEqual(plan.deleteFailed, [current.get(1)]);
    assert.equal(plan.blocked, true);
  });

  it('scales down from the highest ordinal, one at a time unless Parallel', () => {
    const current = pods('ready', 'ready', 'ready', 'ready');
    const ordered = planStatefulSetScale(current, 1, false);
    assert.deepEqual(ordered.remove, [3]);
    assert.deepEqual(ordered.condemn, [3, 2, 1]);
    assert.equal(ordered.blocked, false);
    assert.deepEqual(planStatefulSetScale(current, 1, true).remove, [3, 2, 1]);
    // while one is terminating, the next waits
    assert.deepEqual(planStatefulSetScale(pods('ready', 'ready', 'terminating'), 1, false).remove, []);
    assert.deepEqual(planStatefulSetScale(pods('ready', 'ready', 'terminating'), 1, true).remove, [1]);
  });
});

describe('StatefulSet rolling update', () => {
  const opts = { replicas: 3, strategy: 'RollingUpdate', partition: 0, updateRevision: 'r2', blocked: false };
  const at = (...revs: string[]) =>
    new Map(revs.map((r, o) => [o, pod(`web-${o}`, 'ready', r)] as [number, KObject]));

  it('replaces the highest outdated ordinal once everything is Ready', () => {
    assert.equal(planStatefulSetUpdate(at('r1', 'r1', 'r1'), opts), 2);
    assert.equal(planStatefulSetUpdate(at('r1', 'r1', 'r2'), opts), 1);
    assert.equal(planStatefulSetUpdate(at('r2', 'r2', 'r2'), opts), undefined);
  });

  it('honours partition, OnDelete and an unsettled set', () => {
    assert.equal(planStatefulSetUpdate(at('r1', 'r1', 'r2'), { ...opts, partition: 2 }), undefined);
    assert.equal(planStatefulSetUpdate(at('r1', 'r1', 'r1'), { ...opts, strategy: 'OnDelete' }), undefined);
    assert.equal(planStatefulSetUpdate(at('r1', 'r1', 'r1'), { ...opts, blocked: true }), undefined);
    const notReady = at('r1', 'r1', 'r1');
    notReady.set(1, pod('web-1', 'running', 'r1'));
    assert.equal(planStatefulSetUpdate(notReady, opts), undefined);
  });

  it('status counts pods per revision and moves currentRevision when the update is done', () => {
    const mixed = new Map([
      [0, pod('web-0', 'ready', 'r1')],
      [1, pod('web-1', 'ready', 'r2')],
    ]);
    const s = statefulSetStatus({ currentRevision: 'r1' }, 3, mixed, 2, 'r2');
    assert.deepEqual(
      { ...s },
      {
        currentRevision: 'r1',
        observedGeneration: 3,
        replicas: 2,
        readyReplicas: 2,
        currentReplicas: 1,
        updatedReplicas: 1,
        availableReplicas: 2,
        updateRevision: 'r2',
        collisionCount: 0,
      },
    );
    const done = statefulSetStatus(
      { currentRevision: 'r1' },
      3,
      new Map([[0, pod('web-0', 'ready', 'r2')]]),
      1,
      'r2',
    );
    assert.equal(done.currentRevision, 'r2');
    assert.equal(done.currentReplicas, 1);
  });
});

describe('Deployment rollout', () => {
  it('intOrPercent rounds surge up and unavailability down', () => {
    assert.equal(intOrPercent('25%', '25%', 10, true), 3);
    assert.equal(intOrPercent('25%', '25%', 10, false), 2);
    assert.equal(intOrPercent(undefined, '25%', 4, true), 1);
    assert.equal(intOrPercent(2, '25%', 10, true), 2);
    assert.equal(intOrPercent('3', '25%', 10, true), 3);
  });

  it('rolloutLimits: defaults, Recreate, and never both zero', () => {
    assert.deepEqual(rolloutLimits(undefined, 4), { rolling: true, maxSurge: 1, maxUnavailable: 1 });
    assert.deepEqual(rolloutLimits({ type: 'Recreate' }, 4), {
      rolling: false,
      maxSurge: 0,
      maxUnavailable: 4,
    });
    assert.deepEqual(rolloutLimits({ rollingUpdate: { maxSurge: 0, maxUnavailable: 0 } }, 4), {
      rolling: true,
      maxSurge: 1,
      maxUnavailable: 0,
    });
  });

  const rs = (name: string, replicas: number, ready: number, existing = replicas) => ({
    name,
    replicas,
    ready,
    existing,
  });
  const steps = (s: { rs: ReplicaSetState & { name: string }; replicas: number }[]) =>
    s.map((x) => `${x.rs.name}=${x.replicas}`);

  it('RollingUpdate surges the new set, then scales the old one down within maxUnavailable', () => {
    const newRs = rs('new', 0, 0);
    const old = rs('old', 4, 4);
    assert.deepEqual(
      steps(rolloutSteps({ replicas: 4, rolling: true, maxSurge: 1, maxUnavailable: 1, newRs, olds: [old] })),
      ['new=1', 'old=3'],
    );
  });

  it('RollingUpdate drops unavailable old replicas first', () => {
    const newRs = rs('new', 1, 0);
    const old = rs('old', 3, 1);
    assert.deepEqual(
      steps(rolloutSteps({ replicas: 3, rolling: true, maxSurge: 1, maxUnavailable: 0, newRs, olds: [old] })),
      ['old=1'],
    );
  });

  it('RollingUpdate shrinks a new set above replicas and leaves a finished rollout alone', () => {
    assert.deepEqual(
      steps(
        rolloutSteps({
          replicas: 2,
          rolling: true,
          maxSurge: 1,
          maxUnavailable: 0,
          newRs: rs('new', 3, 3),
          olds: [],
        }),
      ),
      ['new=2'],
    );
    assert.deepEqual(
      rolloutSteps({
        replicas: 2,
        rolling: true,
        maxSurge: 1,
        maxUnavailable: 0,
        newRs: rs('new', 2, 2),
        olds: [],
      }),
      [],
    );
  });

  it('Recreate empties the old sets first and scales the new one once their pods are gone', () => {
    const input = { replicas: 2, rolling: false, maxSurge: 0, maxUnavailable: 2 };
    assert.deepEqual(steps(rolloutSteps({ ...input, newRs: rs('new', 0, 0), olds: [rs('old', 2, 2)] })), [
      'old=0',
    ]);
    assert.deepEqual(
      steps(rolloutSteps({ ...input, newRs: rs('new', 0, 0), olds: [rs('old', 0, 0, 1)] })),
      [],
    );
    assert.deepEqual(steps(rolloutSteps({ ...input, newRs: rs('new', 0, 0), olds: [rs('old', 0, 0, 0)] })), [
      'new=2',
    ]);
  });

  it('Deployment status: availability, progress and unavailable replicas', () => {
    const base = {
      generation: 2,
      old: {
        conditions: [
          {
            type: 'Available',
            status: 'True',
            reason: 'MinimumReplicasAvailable',
            lastUpdateTime: 'then',
            lastTransitionTime: 'then',
          },
        ],
      },
      replicas: 3,
      maxUnavailable: 1,
      newRs: { name: 'web-abc' },
      now: 'now',
    };
    const progressing = deploymentStatus({ ...base, total: 3, ready: 2, updated: 1, newAvailable: 1 });
    const [available, progress] = progressing.conditions as Record<string, unknown>[];
    assert.deepEqual(
      [available.status, available.lastTransitionTime, available.lastUpdateTime],
      ['True', 'then', 'then'],
    );
    assert.equal(progress.reason, 'ReplicaSetUpdated');
    assert.equal(progressing.unavailableReplicas, 1);
    const complete = deploymentStatus({ ...base, total: 3, ready: 3, updated: 3, newAvailable: 3 });
    assert.equal((complete.conditions as Record<string, unknown>[])[1].reason, 'NewReplicaSetAvailable');
    assert.equal(complete.unavailableReplicas, undefined);
    const down = deploymentStatus({ ...base, total: 3, ready: 1, updated: 3, newAvailable: 1 });
    assert.deepEqual((down.conditions as Record<string, unknown>[])[0].status, 'False');
    assert.equal((down.conditions as Record<string, unknown>[])[0].lastTransitionTime, 'now');
  });

  it('a ReplicaSet deletes not-ready pods first, then the newest', () => {
    const a = pod('a', 'ready', 'r', '2026-01-01T00:00:01Z');
    const b = pod('b', 'ready', 'r', '2026-01-01T00:00:03Z');
    const c = pod('c', 'running', 'r', '2026-01-01T00:00:02Z');
    assert.deepEqual(replicaSetExcess([a, b, c], 1), [c, b]);
    assert.deepEqual(replicaSetExcess([a, b, c], 3), []);
  });
});

describe('pod runtime decisions', () => {
  it('restart policy and back-off', () => {
    assert.equal(restarts('Always', 0), true);
    assert.equal(restarts('OnFailure', 0), false);
    assert.equal(restarts('OnFailure', 1), true);
    assert.equal(restarts('Never', 1), false);
    assert.equal(restartDelay(100, 0, 200, 5_000), 200);
    assert.equal(restartDelay(100, 3, 200, 5_000), 1_600);
    assert.equal(restartDelay(100, 10, 200, 5_000), 5_000);
    assert.equal(restartDelay(20_000, 10, 200, 5_000), 200);
  });

  it('pod phase', () => {
    assert.equal(podPhase(undefined, undefined), 'Pending');
    assert.equal(podPhase('ErrImagePull', undefined), 'Pending');
    assert.equal(podPhase(undefined, 'then'), 'Running');
    assert.equal(podPhase('CrashLoopBackOff', 'then'), 'Running');
    assert.equal(podPhase('Completed', 'then'), 'Succeeded');
    assert.equal(podPhase('Error', 'then'), 'Failed');
  });

  it('pod status from a runtime', () => {
    const rt = {
      ip: '127.0.1.7',
      container: { name: 'c', image: 'img' },
      ready: false,
      restartCount: 2,
      waiting: { reason: 'CrashLoopBackOff' },
      startedAt: 'then',
      lastTerminated: { exitCode: 1, finishedAt: 'then' },
    } as unknown as Runtime;
    const s = podStatus(rt, { startTime: 'start' }, 'now');
    assert.equal(s.phase, 'Running');
    assert.equal(s.podIP, '127.0.1.7');
    assert.equal(s.startTime, 'start');
    const [cs] = s.containerStatuses as Record<string, unknown>[];
    assert.deepEqual(cs.state, { waiting: { reason: 'CrashLoopBackOff' } });
    assert.equal((cs.lastState as { terminated: { reason: string } }).terminated.reason, 'Error');
    const ready = (s.conditions as { type: string; status: string }[]).find((c) => c.type === 'Ready');
    assert.equal(ready?.status, 'False');
  });

  it('$(VAR) expansion', () => {
    const env = { A: 'x', B: 'y' };
    assert.equal(expand('$(A)-$(B)-$(C)', env), 'x-y-$(C)');
    assert.equal(expand('$$(A)', env), '$(A)');
  });

  it('rewrites mount paths, also after `=`, longest mount first', () => {
    const rt = {
      dir: '/pods/p',
      implicitMounts: ['/var/run/secrets/kubernetes.io/serviceaccount'],
      container: {
        volumeMounts: [
          { name: 'a', mountPath: '/etc/x/' },
          { name: 'b', mountPath: '/etc/x/sub' },
        ],
      },
    };
    assert.equal(rewritePaths('/etc/x/a.yaml', rt), '/pods/p/mounts/etc/x/a.yaml');
    assert.equal(rewritePaths('/etc/x/sub/b', rt), '/pods/p/mounts/etc/x/sub/b');
    assert.equal(rewritePaths('--config=/etc/x', rt), '--config=/pods/p/mounts/etc/x');
    assert.equal(rewritePaths('/etc/xy', rt), '/etc/xy');
    assert.equal(
      rewritePaths('/var/run/secrets/kubernetes.io/serviceaccount/token', rt),
      '/pods/p/mounts/var/run/secrets/kubernetes.io/serviceaccount/token',
    );
  });
});
