/** The pod object as the runtime writes it: status (phase, conditions, container status) and finalizer. */
import { ApiError } from '../../apiserver/errors.js';
import { nowTimestamp, type KObject } from '../../apiserver/objects.js';
import { podPhase } from '../decide.js';
import { KUBELET_FINALIZER, transitionTime, type Condition } from '../shared.js';
import type { Runtime, RuntimeContext } from './types.js';

/** The pod a runtime belongs to, unless it is gone (or replaced by one of the same name). */
export function currentPod(ctx: RuntimeContext, rt: Runtime): KObject | undefined {
  try {
    const pod = ctx.store.get(ctx.kinds.pod, rt.namespace, rt.name);
    return pod.metadata.uid === rt.uid ? pod : undefined;
  } catch {
    return undefined;
  }
}

/** A pod's status from its runtime (`old`: the current status, for startTime and transition times). */
export function podStatus(
  rt: Runtime,
  old: { conditions?: Condition[]; startTime?: string },
  now: string,
): Record<string, unknown> {
  const cond = (type: string, ok: boolean): Condition => {
    const status = ok ? 'True' : 'False';
    return {
      type,
      status,
      lastProbeTime: null,
      lastTransitionTime: transitionTime(old.conditions, type, status, now),
    };
  };
  const running = rt.child !== undefined && rt.child.exitCode === null && rt.child.signalCode === null;
  const c = rt.container;
  const containerStatus: Record<string, unknown> = {
    name: c.name ?? 'main',
    image: c.image ?? '',
    imageID: '',
    containerID: rt.pid ? `process://${rt.pid}` : '',
    ready: rt.ready,
    started: running,
    restartCount: rt.restartCount,
    state: running
      ? { running: { startedAt: rt.startedAt } }
      : { waiting: rt.waiting ?? { reason: 'ContainerCreating' } },
  };
  if (rt.lastTerminated)
    containerStatus.lastState = {
      terminated: {
        exitCode: rt.lastTerminated.exitCode,
        reason: rt.lastTerminated.exitCode === 0 ? 'Completed' : 'Error',
        ...(rt.lastTerminated.signal ? { signal: rt.lastTerminated.signal } : {}),
        startedAt: rt.lastTerminated.startedAt,
        finishedAt: rt.lastTerminated.finishedAt,
      },
    };
  return {
    phase: podPhase(rt.waiting?.reason, rt.startedAt),
    conditions: [
      cond('PodReadyToStartContainers', true),
      cond('Initialized', true),
      cond('Ready', rt.ready),
      cond('ContainersReady', rt.ready),
      cond('PodScheduled', true),
    ],
    hostIP: '127.0.0.1',
    hostIPs: [{ ip: '127.0.0.1' }],
    podIP: rt.ip,
    podIPs: [{ ip: rt.ip }],
    startTime: old.startTime ?? now,
    containerStatuses: [containerStatus],
    qosClass: 'BestEffort',
  };
}

export function writePodStatus(ctx: RuntimeContext, rt: Runtime): void {
  if (ctx.stopped) return;
  const pod = currentPod(ctx, rt);
  if (!pod) return;
  const status = podStatus(
    rt,
    (pod.status ?? {}) as { conditions?: Condition[]; startTime?: string },
    nowTimestamp(),
  );
  try {
    ctx.store.update(ctx.kinds.pod, rt.namespace, rt.name, { ...pod, status }, { subresource: 'status' });
  } catch (err) {
    if (!(err instanceof ApiError && err.code === 404)) throw err;
  }
}

export function addFinalizer(ctx: RuntimeContext, pod: KObject): void {
  const next = structuredClone(pod);
  next.metadata.finalizers = [...(next.metadata.finalizers ?? []), KUBELET_FINALIZER];
  try {
    ctx.store.update(ctx.kinds.pod, pod.metadata.namespace ?? '', pod.metadata.name ?? '', next);
  } catch (err) {
    // Changed meanwhile: the next pass sees the new version (the runtime exists by then).
    if (!(err instanceof ApiError && (err.code === 404 || err.code === 409))) throw err;
  }
}

export function dropFinalizer(ctx: RuntimeContext, pod: KObject): void {
  if (!pod.metadata.finalizers?.includes(KUBELET_FINALIZER)) return;
  const next = structuredClone(pod);
  next.metadata.finalizers = (next.metadata.finalizers ?? []).filter((f) => f !== KUBELET_FINALIZER);
  try {
    ctx.store.update(ctx.kinds.pod, pod.metadata.namespace ?? '', pod.metadata.name ?? '', {
      ...next,
      metadata: { ...next.metadata, resourceVersion: undefined },
    });
  } catch (err) {
    if (!(err instanceof ApiError && err.code === 404)) throw err;
  }
}
