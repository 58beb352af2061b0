/**
 * Built-in kinds the server does not serve, known to the patch machinery only (patch.ts is a library
 * too: a strategic merge patch or an apply of these kinds merges their lists as Kubernetes does).
 */
import type { KindDescriptor } from './descriptor.js';
import { podSpecLists } from './podspec.js';

const patchOnly = (group: string, kind: string, podSpec?: string, atomicMaps?: string[]): KindDescriptor => ({
  group,
  version: 'v1',
  kind,
  merge: { ...(podSpec ? { lists: podSpecLists(podSpec) } : {}), ...(atomicMaps ? { atomicMaps } : {}) },
});

export const UNSERVED: KindDescriptor[] = [
  patchOnly('', 'PodTemplate', 'template.spec'),
  patchOnly('', 'ReplicationController', 'spec.template.spec', ['spec.selector']),
  patchOnly('apps', 'DaemonSet', 'spec.template.spec', ['spec.selector']),
  patchOnly('batch', 'Job', 'spec.template.spec', ['spec.selector']),
  patchOnly('batch', 'CronJob', 'spec.jobTemplate.spec.template.spec'),
  patchOnly('networking.k8s.io', 'NetworkPolicy', undefined, ['spec.podSelector']),
];
