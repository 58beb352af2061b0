import { ageCol, col, get, num } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { kindSchema, open } from './schema.js';

export const podDisruptionBudget: KindDescriptor = {
  group: 'policy',
  version: 'v1',
  kind: 'PodDisruptionBudget',
  resource: { shortNames: ['pdb'], status: true },
  schema: kindSchema(
    'PodDisruptionBudget is an object to define the max disruption for a collection of pods.',
    {
      spec: {
        type: 'object',
        properties: {
          minAvailable: { 'x-kubernetes-int-or-string': true },
          maxUnavailable: { 'x-kubernetes-int-or-string': true },
          selector: open(),
        },
        'x-kubernetes-preserve-unknown-fields': true,
      },
      status: open(),
    },
  ),
  columns: [
    col('Min Available', 'string', (o) => String(get(o, 'spec', 'minAvailable') ?? 'N/A')),
    col('Max Unavailable', 'string', (o) => String(get(o, 'spec', 'maxUnavailable') ?? 'N/A')),
    col('Allowed Disruptions', 'integer', (o) => num(get(o, 'status', 'disruptionsAllowed'))),
    ageCol,
  ],
  merge: { atomicMaps: ['spec.selector'] },
};
