/**
 * The controllers' and the pod runtime's decisions as pure functions (no store, no processes, no
 * clock): which StatefulSet ordinals to create, delete or replace, a Deployment's rollout step, which
 * ReplicaSet pods go first, maxSurge/maxUnavailable, restart back-off and a pod's phase.
 */
import type { KObject } from '../apiserver/objects.js';
import { isFailed, isRunningAndReady, isTerminating, REVISION_LABEL } from './shared.js';

// ---------------------------------------------------------------- StatefulSet

/** What a StatefulSet sync does to reach `replicas`, in this order. */
export interface StatefulSetScalePlan {
  /** Failed pods to delete (they are replaced). */
  deleteFailed: KObject[];
  /** Ordinals to create (unless a pod of that name exists that the StatefulSet does not own). */
  create: number[];
  /** An ordinal is missing or not Ready (OrderedReady), so no rolling update this pass. */
  blocked: boolean;
  /** Ordinals above `replicas` whose claims are condemned (retention `whenScaled: Delete`). */
  condemn: number[];
  /** Ordinals to delete for a scale-down. */
  remove: number[];
}

/**
 * Scale a StatefulSet: missing pods are created in order, each after the previous is Ready
 * (OrderedReady), or all at once (Parallel); extra pods go highest ordinal first, one at a time
 * (all at once when Parallel).
 */
export function planStatefulSetScale(
  pods: Map<number, KObject>,
  replicas: number,
  parallel: boolean,
): StatefulSetScalePlan {
  const deleteFailed = [...pods.values()].filter((pod) => isFailed(pod) && !isTerminating(pod));
  const create: number[] = [];
  let blocked = false;
  for (let o = 0; o < replicas; o++) {
    const pod = pods.get(o);
    if (!pod) {
      create.push(o);
      if (!parallel) {
        blocked = true;
        break;
      }
      continue;
    }
    if (!parallel && (isTerminating(pod) || !isRunningAndReady(pod))) {
      blocked = true;
      break;
    }
  }
  const extra = [...pods.keys()].filter((o) => o >= replicas).sort((a, b) => b - a);
  let remove: number[] = [];
  if (parallel) remove = extra.filter((o) => !isTerminating(pods.get(o)!));
  else if (extra.length && !extra.some((o) => isTerminating(pods.get(o)!))) remove = [extra[0]];
  return { deleteFailed, create, blocked, condemn: extra, remove };
}

/**
 * A RollingUpdate step: when nothing is blocked or terminating and every ordinal is Ready, the
 * highest ordinal at or above `partition` whose revision is not `updateRevision` (to delete; it comes
 * back at the new revision).
 */
export function planStatefulSetUpdate(
  pods: Map<number, KObject>,
  opts: { replicas: number; strategy: string; partition: number; updateRevision: string; blocked: boolean },
): number | undefined {
  const { replicas, partition, updateRevision } = opts;
  const settled =
    !opts.blocked &&
    [...pods.values()].every((p) => !isTerminating(p)) &&
    Array.from({ length: replicas }, (_, o) => pods.get(o)).every((p) => p && isRunningAndReady(p));
  if (opts.strategy !== 'RollingUpdate' || !settled) return undefined;
  for (let o = replicas - 1; o >= partition; o--) {
    const pod = pods.get(o);
    if (pod && pod.metadata.labels?.[REVISION_LABEL] !== updateRevision) return o;
  }
  return undefined;
}

/** A StatefulSet's status from its pods (`old`: the current status). */
export function statefulSetStatus(
  old: Record<string, unknown>,
  generation: number | undefined,
  pods: Map<number, KObject>,
  replicas: number,
  updateRevision: string,
): Record<string, unknown> {
  let currentRevision = typeof old.currentRevision === 'string' ? old.currentRevision : updateRevision;
  let created = 0;
  let ready = 0;
  let current = 0;
  let updated = 0;
  for (const pod of pods.values()) {
    created++;
    if (isRunningAndReady(pod)) ready++;
    if (isTerminating(pod)) continue;
    const rev = pod.metadata.labels?.[REVISION_LABEL];
    if (rev === currentRevision) current++;
    if (rev === updateRevision) updated++;
  }
  if (updated === replicas && ready === replicas && created === replicas) {
    currentRevision = updateRevision;
    current = updated;
  }
  return {
    ...old,
    observedGeneration: generation,
    replicas: created,
    readyReplicas: ready,
    currentReplicas: current,
    updatedReplicas: updated,
    availableReplicas: ready,
    currentRevision,
    updateRevision,
    collisionCount: (old.collisionCount as number | undefined) ?? 0,
  };
}

// ---------------------------------------------------------------- Deployment and ReplicaSet

/** Percent (of `replicas`, rounded up or down) or absolute value of maxSurge/maxUnavailable. */
export function intOrPercent(
  v: number | string | undefined,
  dflt: string,
  replicas: number,
  up: boolean,
): number {
  const val = v ?? dflt;
  if (typeof val === 'number') return val;
  const m = /^(\d+)%$/.exec(val);
  if (!m) return Number(val) || 0;
  const raw = (Number(m[1]) * replicas) / 100;
  return up ? Math.ceil(raw) : Math.floor(raw);
}

export interface DeploymentStrategy {
  type?: string;
  rollingUpdate?: { maxSurge?: number | string; maxUnavailable?: number | string };
}

/** maxSurge and maxUnavailable (25 % each by default; Recreate: no surge, all unavailable). */
export function rolloutLimits(
  strategy: DeploymentStrategy | undefined,
  replicas: number,
): { rolling: boolean; maxSurge: number; maxUnavailable: number } {
  const rolling = (strategy?.type ?? 'RollingUpdate') === 'RollingUpdate';
  let maxSurge = rolling ? intOrPercent(strategy?.rollingUpdate?.maxSurge, '25%', replicas, true) : 0;
  const maxUnavailable = rolling
    ? intOrPercent(strategy?.rollingUpdate?.maxUnavailable, '25%', replicas, false)
    : replicas;
  if (maxSurge === 0 && maxUnavailable === 0) maxSurge = 1;
  return { rolling, maxSurge, maxUnavailable };
}

/** A ReplicaSet as a rollout sees it. */
export interface ReplicaSetState {
  /** spec.replicas */
  replicas: number;
  /** Its pods that are Running and Ready (not terminating). */
  ready: number;
  /** Its pods, terminating ones included. */
  existing: number;
}

/**
 * One rollout pass of a Deployment: the ReplicaSet scalings, in order (a set may be scaled twice).
 * Recreate: the old sets go to 0, and once their pods are all gone the new set to `replicas`.
 * RollingUpdate: the new set grows within maxSurge; old sets lose their unavailable replicas, then
 * more as long as maxUnavailable allows (oldest first: `olds` in revision order).
 */
export function rolloutSteps<T extends ReplicaSetState>(input: {
  replicas: number;
  rolling: boolean;
  maxSurge: number;
  maxUnavailable: number;
  newRs: T;
  olds: T[];
}): { rs: T; replicas: number }[] {
  const { replicas, newRs, olds } = input;
  const steps: { rs: T; replicas: number }[] = [];
  const scaled = new Map<T, number>();
  const cur = (rs: T) => scaled.get(rs) ?? rs.replicas;
  const scale = (rs: T, n: number) => {
    if (cur(rs) === n) return;
    scaled.set(rs, n);
    steps.push({ rs, replicas: n });
  };
  const available = (rs: T) => Math.min(cur(rs), rs.ready);
  if (!input.rolling) {
    for (const rs of olds) scale(rs, 0);
    if (olds.every((rs) => rs.existing === 0)) scale(newRs, replicas);
    return steps;
  }
  const total = [newRs, ...olds].reduce((n, rs) => n + cur(rs), 0);
  const newReplicas = cur(newRs);
  if (newReplicas > replicas) scale(newRs, replicas);
  else if (newReplicas < replicas) {
    const room = replicas + input.maxSurge - total;
    if (room > 0) scale(newRs, Math.min(replicas, newReplicas + room));
  }
  for (const rs of olds) {
    const unhealthy = cur(rs) - available(rs);
    if (unhealthy > 0) scale(rs, cur(rs) - unhealthy);
  }
  const minAvailable = replicas - input.maxUnavailable;
  const availableNow = [newRs, ...olds].reduce((n, rs) => n + available(rs), 0);
  let canScaleDown = Math.max(0, availableNow - minAvailable);
  for (const rs of olds) {
    if (canScaleDown <= 0) break;
    const n = Math.min(canScaleDown, cur(rs));
    if (n > 0) scale(rs, cur(rs) - n);
    canScaleDown -= n;
  }
  return steps;
}

/** The pods a ReplicaSet deletes to get down to `replicas`: not-ready ones first, then the newest. */
export function replicaSetExcess(active: KObject[], replicas: number): KObject[] {
  if (active.length <= replicas) return [];
  const order = [...active].sort((a, b) => {
    const ra = isRunningAndReady(a) ? 1 : 0;
    const rb = isRunningAndReady(b) ? 1 : 0;
    if (ra !== rb) return ra - rb;
    return (b.metadata.creationTimestamp ?? '').localeCompare(a.metadata.creationTimestamp ?? '');
  });
  return order.slice(0, active.length - replicas);
}

// ---------------------------------------------------------------- pod runtime

/** Whether a container that exited with `code` is started again under `restartPolicy`. */
export const restarts = (restartPolicy: string, code: number | null) =>
  restartPolicy === 'Always' || (restartPolicy === 'OnFailure' && code !== 0);

/**
 * The back-off before restart number `restartCount + 1`: doubling from `initialMs` up to `maxMs`,
 * back to `initialMs` after a run of more than 10 s.
 */
export function restartDelay(ranMs: number, restartCount: number, initialMs: number, maxMs: number): number {
  return ranMs > 10_000 ? initialMs : Math.min(maxMs, initialMs * 2 ** Math.min(restartCount, 20));
}

/** A pod's phase from why its container waits (if it does) and whether it ever started. */
export function podPhase(waitingReason: string | undefined, startedAt: string | undefined): string {
  if (waitingReason === 'Completed') return 'Succeeded';
  if (waitingReason === 'Error') return 'Failed';
  if (waitingReason === 'ErrImagePull' || startedAt === undefined) return 'Pending';
  return 'Running';
}
