import { workloadStrategy } from './apps.js';
import { col, get, num, readyOfDesired, workloadColumns } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { podSpecLists } from './podspec.js';
import { kindSchema, open, workload } from './schema.js';

export const deployment: KindDescriptor = {
  group: 'apps',
  version: 'v1',
  kind: 'Deployment',
  resource: { shortNames: ['deploy'], categories: ['all'], status: true, scale: true },
  schema: kindSchema('Deployment enables declarative updates for Pods and ReplicaSets.', {
    spec: workload({ strategy: open() }),
    status: open(),
  }),
  columns: workloadColumns(
    [
      col('Ready', 'string', readyOfDesired),
      col('Up-to-date', 'integer', (o) => num(get(o, 'status', 'updatedReplicas'))),
      col('Available', 'integer', (o) => num(get(o, 'status', 'availableReplicas'))),
    ],
    true,
  ),
  merge: { lists: podSpecLists('spec.template.spec'), atomicMaps: ['spec.selector'] },
  strategy: workloadStrategy,
};
