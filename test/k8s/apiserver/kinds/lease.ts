import { ageCol, col, get } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { dateTime, int32, kindSchema, str } from './schema.js';

export const lease: KindDescriptor = {
  group: 'coordination.k8s.io',
  version: 'v1',
  kind: 'Lease',
  resource: {},
  schema: kindSchema('Lease defines a lease concept.', {
    spec: {
      type: 'object',
      properties: {
        holderIdentity: str(),
        leaseDurationSeconds: int32(),
        acquireTime: dateTime(),
        renewTime: dateTime(),
        leaseTransitions: int32(),
        preferredHolder: str(),
        strategy: str(),
      },
    },
  }),
  columns: [col('Holder', 'string', (o) => get(o, 'spec', 'holderIdentity') ?? ''), ageCol],
  strategy: {
    microTimeFields: [
      ['spec', 'acquireTime'],
      ['spec', 'renewTime'],
    ],
  },
};
