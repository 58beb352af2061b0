import type { StatusCause } from '../errors.js';
import { deepEqual, type KObject } from '../objects.js';
import { selectorCauses, specOf, workloadStrategy } from './apps.js';
import { readyOfDesired, col, workloadColumns } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { podSpecLists } from './podspec.js';
import { kindSchema, open, str, workload } from './schema.js';

const STS_MUTABLE = [
  'replicas',
  'ordinals',
  'template',
  'updateStrategy',
  'persistentVolumeClaimRetentionPolicy',
  'minReadySeconds',
];

/** Only STS_MUTABLE fields of the spec may change (then the selector check of every workload). */
function statefulSetUpdateCauses(obj: KObject, old: KObject): StatusCause[] {
  const strip = (o: KObject) =>
    Object.fromEntries(Object.entries(specOf(o)).filter(([k]) => !STS_MUTABLE.includes(k)));
  if (!deepEqual(strip(obj), strip(old)))
    return [
      {
        reason: 'FieldValueForbidden',
        message: `Forbidden: updates to statefulset spec for fields other than ${STS_MUTABLE.map((f) => `'${f}'`).join(', ')} are forbidden`,
        field: 'spec',
      },
    ];
  return selectorCauses(obj, old);
}

export const statefulSet: KindDescriptor = {
  group: 'apps',
  version: 'v1',
  kind: 'StatefulSet',
  resource: { shortNames: ['sts'], categories: ['all'], status: true, scale: true },
  schema: kindSchema('StatefulSet represents a set of pods with consistent identities.', {
    spec: workload({ serviceName: str(), podManagementPolicy: str() }),
    status: open(),
  }),
  columns: workloadColumns([col('Ready', 'string', readyOfDesired)], false),
  merge: { lists: podSpecLists('spec.template.spec'), atomicMaps: ['spec.selector'] },
  strategy: { ...workloadStrategy, validateUpdate: statefulSetUpdateCauses },
};
