import { workloadStrategy } from './apps.js';
import { ageCol, col, get, num } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { podSpecLists } from './podspec.js';
import { kindSchema, open, workload } from './schema.js';

export const replicaSet: KindDescriptor = {
  group: 'apps',
  version: 'v1',
  kind: 'ReplicaSet',
  resource: { shortNames: ['rs'], categories: ['all'], status: true, scale: true },
  schema: kindSchema('ReplicaSet ensures that a specified number of pod replicas are running.', {
    spec: workload(),
    status: open(),
  }),
  columns: [
    col('Desired', 'integer', (o) => num(get(o, 'spec', 'replicas') ?? 1)),
    col('Current', 'integer', (o) => num(get(o, 'status', 'replicas'))),
    col('Ready', 'integer', (o) => num(get(o, 'status', 'readyReplicas'))),
    ageCol,
  ],
  merge: { lists: podSpecLists('spec.template.spec'), atomicMaps: ['spec.selector'] },
  strategy: workloadStrategy,
};
