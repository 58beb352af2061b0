/**
 * Every built-in kind, one module each (the RBAC kinds share one, the kinds only patch.ts knows share
 * `unserved.ts`). Adding a kind: a module exporting a KindDescriptor, listed here. The order of
 * SERVED is the order the registry, discovery and the OpenAPI documents list them in.
 */
import { configMap } from './configmap.js';
import { customResourceDefinition } from './crd.js';
import { deployment } from './deployment.js';
import type { KindDescriptor } from './descriptor.js';
import { endpoints } from './endpoints.js';
import { endpointSlice } from './endpointslice.js';
import { event } from './event.js';
import { eventsV1Event } from './events-v1.js';
import { lease } from './lease.js';
import { namespace } from './namespace.js';
import { persistentVolumeClaim } from './persistentvolumeclaim.js';
import { pod } from './pod.js';
import { podDisruptionBudget } from './poddisruptionbudget.js';
import { clusterRole, clusterRoleBinding, role, roleBinding } from './rbac.js';
import { replicaSet } from './replicaset.js';
import { secret } from './secret.js';
import { service } from './service.js';
import { serviceAccount } from './serviceaccount.js';
import { statefulSet } from './statefulset.js';
import { tokenRequest } from './tokenrequest.js';
import { UNSERVED } from './unserved.js';

export type { Column, KindDescriptor, ListRule, Strategy, StrategyContext } from './descriptor.js';

/** The kinds served as REST resources. */
export const SERVED: KindDescriptor[] = [
  namespace,
  configMap,
  secret,
  service,
  pod,
  event,
  serviceAccount,
  persistentVolumeClaim,
  endpoints,
  statefulSet,
  deployment,
  replicaSet,
  podDisruptionBudget,
  lease,
  eventsV1Event,
  endpointSlice,
  role,
  roleBinding,
  clusterRole,
  clusterRoleBinding,
  customResourceDefinition,
];

/** Every descriptor: the served kinds, request bodies that are no resource (TokenRequest), patch-only kinds. */
export const DESCRIPTORS: KindDescriptor[] = [...SERVED, tokenRequest, ...UNSERVED];

/** The descriptor of a built-in kind, or undefined (a custom resource, or a kind nobody described). */
export function descriptorOf(group: string, kind: string): KindDescriptor | undefined {
  return DESCRIPTORS.find((d) => d.group === group && d.kind === kind);
}

/**
 * API groups Kubernetes serves itself: the descriptors' groups and the other built-in groups no
 * descriptor names yet. Everything else is a custom resource (no strategic merge patch).
 */
export const KUBERNETES_GROUPS: ReadonlySet<string> = new Set([
  ...DESCRIPTORS.map((d) => d.group),
  'autoscaling',
  'storage.k8s.io',
  'scheduling.k8s.io',
  'node.k8s.io',
  'certificates.k8s.io',
  'admissionregistration.k8s.io',
  'apiregistration.k8s.io',
  'flowcontrol.apiserver.k8s.io',
]);
