/**
 * The Deployment and ReplicaSet controllers: a ReplicaSet per pod template (`pod-template-hash`,
 * revision annotations), RollingUpdate within maxSurge/maxUnavailable or Recreate, pods with random
 * suffixes, and both statuses. The decisions are in `decide.ts`.
 */
import { nowTimestamp, type KObject } from '../apiserver/objects.js';
import type { Context } from './context.js';
import { deletePod, podExists, writeStatus } from './context.js';
import {
  replicaSetExcess,
  rolloutLimits,
  rolloutSteps,
  type DeploymentStrategy,
  type ReplicaSetState,
} from './decide.js';
import type { PodSpec } from './runtime/types.js';
import {
  controlledBy,
  controllerRef,
  isFailed,
  isRunningAndReady,
  KUBELET_FINALIZER,
  REVISION_ANNOTATION,
  specReplicas,
  TEMPLATE_HASH_LABEL,
  templateHash,
  transitionTime,
  type Condition,
} from './shared.js';

type Template = { metadata?: KObject['metadata']; spec?: PodSpec };

interface DeploymentSpec {
  replicas?: number;
  paused?: boolean;
  template?: Template;
  selector?: { matchLabels?: Record<string, string>; matchExpressions?: unknown[] };
  strategy?: DeploymentStrategy;
}

const RAND_CHARS = 'bcdfghjklmnpqrstvwxz2456789';
const randomSuffix = () =>
  Array.from({ length: 5 }, () => RAND_CHARS[Math.floor(Math.random() * RAND_CHARS.length)]).join('');

const revisionOfRs = (rs: KObject) => Number(rs.metadata.annotations?.[REVISION_ANNOTATION] ?? 0);

/** A Deployment's status (`old`: the current one, for the conditions' times). */
export function deploymentStatus(input: {
  generation: number | undefined;
  old: { conditions?: Condition[] };
  replicas: number;
  maxUnavailable: number;
  /** The new ReplicaSet's name, when there is one. */
  newRs: { name?: string } | undefined;
  /** Pods of all its ReplicaSets, terminating ones left out. */
  total: number;
  ready: number;
  /** Pods of the new ReplicaSet, terminating ones left out. */
  updated: number;
  /** Ready pods of the new ReplicaSet. */
  newAvailable: number;
  now: string;
}): Record<string, unknown> {
  const { old, now, replicas, total, updated, newRs } = input;
  const available = input.ready;
  const cond = (type: string, ok: boolean, reason: string, message: string) => {
    const status = ok ? 'True' : 'False';
    const prev = old.conditions?.find((c) => c.type === type);
    const same = prev?.status === status && prev.reason === reason;
    return {
      type,
      status,
      lastUpdateTime: same ? prev.lastUpdateTime : now,
      lastTransitionTime: transitionTime(old.conditions, type, status, now),
      reason,
      message,
    };
  };
  const complete = !!newRs && updated === replicas && total === replicas && input.newAvailable === replicas;
  const availableOk = available >= replicas - input.maxUnavailable;
  const status: Record<string, unknown> = {
    observedGeneration: input.generation,
    replicas: total,
    updatedReplicas: updated,
    readyReplicas: input.ready,
    availableReplicas: available,
    conditions: [
      cond(
        'Available',
        availableOk,
        availableOk ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable',
        availableOk
          ? 'Deployment has minimum availability.'
          : 'Deployment does not have minimum availability.',
      ),
      cond(
        'Progressing',
        true,
        complete ? 'NewReplicaSetAvailable' : 'ReplicaSetUpdated',
        complete
          ? `ReplicaSet "${newRs?.name}" has successfully progressed.`
          : `ReplicaSet "${newRs?.name}" is progressing.`,
      ),
    ],
  };
  if (replicas > available) status.unavailableReplicas = replicas - available;
  return status;
}

export function deploymentControllers(ctx: Context): { syncDeployments(): void; syncReplicaSets(): void } {
  const { store, kinds } = ctx;

  const rsPods = (rs: KObject) =>
    store.list(kinds.pod, { namespace: rs.metadata.namespace }).items.filter(controlledBy(rs));
  const activePods = (rs: KObject) => rsPods(rs).filter((p) => !p.metadata.deletionTimestamp);
  const ownedSets = (d: KObject) =>
    store.list(kinds.replicaSet, { namespace: d.metadata.namespace }).items.filter(controlledBy(d));

  /** Sets a ReplicaSet's spec.replicas (read afresh). */
  function scaleRs(ns: string, name: string, replicas: number): void {
    const rs = store.get(kinds.replicaSet, ns, name);
    if (specReplicas(rs) === replicas) return;
    const next = structuredClone(rs);
    (next.spec as { replicas?: number }).replicas = replicas;
    store.update(kinds.replicaSet, ns, name, {
      ...next,
      metadata: { ...next.metadata, resourceVersion: undefined },
    });
  }

  function createReplicaSet(
    d: KObject,
    hash: string,
    revision: number,
    replicas: number,
    maxSurge: number,
  ): KObject {
    const ns = d.metadata.namespace ?? '';
    const spec = d.spec as DeploymentSpec;
    const name = `${d.metadata.name}-${hash}`;
    const tmpl = structuredClone(spec.template ?? {});
    const labels = { ...(tmpl.metadata?.labels ?? {}), [TEMPLATE_HASH_LABEL]: hash };
    store.create(kinds.replicaSet, ns, {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name,
        labels,
        annotations: {
          [REVISION_ANNOTATION]: String(revision),
          'deployment.kubernetes.io/desired-replicas': String(replicas),
          'deployment.kubernetes.io/max-replicas': String(replicas + maxSurge),
        },
        ownerReferences: [controllerRef(d, 'Deployment')],
      },
      spec: {
        replicas: 0,
        selector: {
          ...(spec.selector ?? {}),
          matchLabels: { ...(spec.selector?.matchLabels ?? {}), [TEMPLATE_HASH_LABEL]: hash },
        },
        template: { ...tmpl, metadata: { ...(tmpl.metadata ?? {}), labels } },
      },
    });
    return store.get(kinds.replicaSet, ns, name);
  }

  function reconcileDeployment(d: KObject): void {
    if (d.metadata.deletionTimestamp) return; // owner GC deletes the ReplicaSets
    const ns = d.metadata.namespace ?? '';
    const spec = d.spec as DeploymentSpec;
    const replicas = spec.replicas ?? 1;
    const hash = templateHash(spec.template);
    const all = ownedSets(d);
    let newRs = all.find((rs) => rs.metadata.labels?.[TEMPLATE_HASH_LABEL] === hash);
    const { rolling, maxSurge, maxUnavailable } = rolloutLimits(spec.strategy, replicas);
    if (!newRs && !spec.paused)
      newRs = createReplicaSet(d, hash, Math.max(0, ...all.map(revisionOfRs)) + 1, replicas, maxSurge);
    if (newRs && !spec.paused) {
      const state = (rs: KObject): ReplicaSetState & { name: string } => ({
        name: rs.metadata.name ?? '',
        replicas: specReplicas(rs),
        ready: rsPods(rs).filter((p) => !p.metadata.deletionTimestamp && isRunningAndReady(p)).length,
        existing: rsPods(rs).length, // terminating pods included
      });
      const olds = ownedSets(d)
        .filter((rs) => rs.metadata.uid !== newRs?.metadata.uid)
        .sort((a, b) => revisionOfRs(a) - revisionOfRs(b));
      const steps = rolloutSteps({
        replicas,
        rolling,
        maxSurge,
        maxUnavailable,
        newRs: state(newRs),
        olds: olds.map(state),
      });
      for (const step of steps) scaleRs(ns, step.rs.name, step.replicas);
    }
    writeDeploymentStatus(d, newRs, replicas, maxUnavailable);
  }

  function writeDeploymentStatus(
    d: KObject,
    newRs: KObject | undefined,
    replicas: number,
    maxUnavailable: number,
  ) {
    let total = 0;
    let ready = 0;
    let updated = 0;
    for (const rs of ownedSets(d)) {
      const pods = activePods(rs);
      total += pods.length;
      ready += pods.filter(isRunningAndReady).length;
      if (rs.metadata.uid === newRs?.metadata.uid) updated = pods.length;
    }
    const newAvailable = newRs
      ? rsPods(newRs).filter((p) => !p.metadata.deletionTimestamp && isRunningAndReady(p)).length
      : 0;
    const status = deploymentStatus({
      generation: d.metadata.generation,
      old: (d.status ?? {}) as { conditions?: Condition[] },
      replicas,
      maxUnavailable,
      newRs: newRs && { name: newRs.metadata.name },
      total,
      ready,
      updated,
      newAvailable,
      now: nowTimestamp(),
    });
    writeStatus(ctx, kinds.deployment, d, status);
  }

  function reconcileReplicaSet(rs: KObject): void {
    if (rs.metadata.deletionTimestamp) return;
    const ns = rs.metadata.namespace ?? '';
    const replicas = specReplicas(rs);
    for (const p of rsPods(rs)) if (isFailed(p) && !p.metadata.deletionTimestamp) deletePod(ctx, p);
    let active = activePods(rs);
    const tmpl = structuredClone((rs.spec as { template?: Template }).template ?? {});
    for (let i = active.length; i < replicas; i++) {
      let name = `${rs.metadata.name}-${randomSuffix()}`;
      while (podExists(ctx, ns, name)) name = `${rs.metadata.name}-${randomSuffix()}`;
      store.create(kinds.pod, ns, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          labels: { ...(tmpl.metadata?.labels ?? {}) },
          ...(tmpl.metadata?.annotations ? { annotations: tmpl.metadata.annotations } : {}),
          ownerReferences: [controllerRef(rs, 'ReplicaSet')],
          finalizers: [KUBELET_FINALIZER],
        },
        spec: { ...(tmpl.spec ?? {}), nodeName: ctx.nodeName },
      });
    }
    for (const p of replicaSetExcess(active, replicas)) deletePod(ctx, p);
    active = activePods(rs);
    const ready = active.filter(isRunningAndReady).length;
    writeStatus(ctx, kinds.replicaSet, rs, {
      ...((rs.status ?? {}) as Record<string, unknown>),
      observedGeneration: rs.metadata.generation,
      replicas: active.length,
      fullyLabeledReplicas: active.length,
      readyReplicas: ready,
      availableReplicas: ready,
    });
  }

  return {
    syncDeployments() {
      for (const d of store.list(kinds.deployment).items) ctx.guard(() => reconcileDeployment(d));
    },
    syncReplicaSets() {
      for (const rs of store.list(kinds.replicaSet).items) ctx.guard(() => reconcileReplicaSet(rs));
    },
  };
}
