/** What the apps/v1 workloads (StatefulSet, Deployment, ReplicaSet) share. */
import type { StatusCause } from '../errors.js';
import { isObject, deepEqual, type KObject } from '../objects.js';
import type { Strategy } from './descriptor.js';

export const specOf = (o: KObject): Record<string, unknown> => (isObject(o.spec) ? o.spec : {});

/** `spec.selector` may not change. */
export function selectorCauses(obj: KObject, old: KObject): StatusCause[] {
  if (deepEqual(specOf(obj).selector, specOf(old).selector)) return [];
  return [
    { reason: 'FieldValueInvalid', message: 'Invalid value: field is immutable', field: 'spec.selector' },
  ];
}

/** `spec.replicas` defaults to 1. */
function defaultReplicas(obj: KObject): void {
  if (isObject(obj.spec) && obj.spec.replicas === undefined) obj.spec.replicas = 1;
}

export const workloadStrategy: Strategy = { validateUpdate: selectorCauses, prepare: defaultReplicas };
