/**
 * What the kubelet's controllers, its pod runtime and the Service proxy share: the labels and the
 * finalizer they write, the template hash, pod conditions and owner references.
 */
import { createHash } from 'node:crypto';
import type { KObject, OwnerReference } from '../apiserver/objects.js';
import { isObject } from '../apiserver/objects.js';

export const KUBELET_FINALIZER = 'kubelet.cartero.test/process';
export const POD_NAME_LABEL = 'statefulset.kubernetes.io/pod-name';
export const REVISION_LABEL = 'controller-revision-hash';
export const POD_INDEX_LABEL = 'apps.kubernetes.io/pod-index';
export const TEMPLATE_HASH_LABEL = 'pod-template-hash';
export const REVISION_ANNOTATION = 'deployment.kubernetes.io/revision';
/** Where a real pod finds its ServiceAccount token, namespace and CA (the pod dir holds it here). */
export const SERVICEACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** A status condition (pods, Deployments). */
export interface Condition {
  type: string;
  status: string;
  lastTransitionTime?: string;
  lastUpdateTime?: string;
  lastProbeTime?: null;
  reason?: string;
  message?: string;
}

/** JSON with sorted keys (undefined members left out): the basis of the template hash. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isObject(v))
    return `{${Object.keys(v)
      .filter((k) => v[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

/** The hash of a pod template (10 hex digits; key order does not matter). */
export function templateHash(template: unknown): string {
  return createHash('sha256').update(canonical(template)).digest('hex').slice(0, 10);
}

/** The controller-revision-hash of a pod template (`<sts>-<hash>`). */
export function revisionOf(stsName: string, template: unknown): string {
  return `${stsName}-${templateHash(template)}`;
}

/** A condition of an object's status by type. */
export function conditionOf(obj: KObject, type: string): Condition | undefined {
  const status = obj.status as { conditions?: Condition[] } | undefined;
  return status?.conditions?.find((c) => c.type === type);
}

/**
 * The lastTransitionTime of a condition about to be written with `status`: the previous one's while
 * the status stays, else `now`.
 */
export function transitionTime(
  previous: Condition[] | undefined,
  type: string,
  status: string,
  now: string,
): string | undefined {
  const prev = previous?.find((c) => c.type === type);
  return prev?.status === status ? prev.lastTransitionTime : now;
}

export const phaseOf = (pod: KObject) => (pod.status as { phase?: string } | undefined)?.phase;
export const isTerminating = (o: KObject) => !!o.metadata.deletionTimestamp;
export const isFailed = (pod: KObject) => phaseOf(pod) === 'Failed';

export function isRunningAndReady(pod: KObject): boolean {
  return phaseOf(pod) === 'Running' && conditionOf(pod, 'Ready')?.status === 'True' && !isTerminating(pod);
}

/** `spec.replicas`, 1 when unset. */
export const specReplicas = (o: KObject) => (o.spec as { replicas?: number } | undefined)?.replicas ?? 1;

/** Whether `o` has `owner` as its controller. */
export const controlledBy = (owner: KObject) => (o: KObject) =>
  !!o.metadata.ownerReferences?.some((r) => r.uid === owner.metadata.uid && r.controller);

/** The controller reference an apps/v1 object (`kind`) puts on what it makes. */
export function controllerRef(owner: KObject, kind: string): OwnerReference {
  return {
    apiVersion: 'apps/v1',
    kind,
    name: owner.metadata.name ?? '',
    uid: owner.metadata.uid ?? '',
    controller: true,
    blockOwnerDeletion: true,
  };
}
