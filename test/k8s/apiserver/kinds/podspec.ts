/** Strategic-merge list rules of a PodSpec, for every kind that holds one (Pod, the workloads, Job, ...). */
import type { ListRule } from './descriptor.js';

const byName: ListRule = { mergeKey: 'name' };

/** Lists of a container, relative to the container. */
const CONTAINER_LISTS: Record<string, ListRule> = {
  env: byName,
  ports: { mergeKey: 'containerPort', keys: ['containerPort', 'protocol'], defaults: { protocol: 'TCP' } },
  volumeMounts: { mergeKey: 'mountPath' },
  volumeDevices: { mergeKey: 'devicePath' },
  resizePolicy: { mergeKey: 'resourceName' },
};

/** Lists of a PodSpec, relative to the PodSpec (containers expand to CONTAINER_LISTS). */
const POD_SPEC_LISTS: Record<string, ListRule> = {
  containers: byName,
  initContainers: byName,
  ephemeralContainers: byName,
  volumes: byName,
  imagePullSecrets: byName,
  hostAliases: { mergeKey: 'ip' },
  resourceClaims: byName,
  schedulingGates: byName,
  topologySpreadConstraints: { mergeKey: 'topologyKey', keys: ['topologyKey', 'whenUnsatisfiable'] },
};

/** The list rules of a PodSpec at `root` (`spec`, `spec.template.spec`), by path pattern. */
export function podSpecLists(root: string): Record<string, ListRule> {
  const table: Record<string, ListRule> = {};
  for (const [list, rule] of Object.entries(POD_SPEC_LISTS)) table[`${root}.${list}`] = rule;
  for (const containers of ['containers', 'initContainers', 'ephemeralContainers']) {
    for (const [list, rule] of Object.entries(CONTAINER_LISTS))
      table[`${root}.${containers}[].${list}`] = rule;
  }
  return table;
}
