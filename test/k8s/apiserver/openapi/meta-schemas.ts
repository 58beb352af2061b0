/** The apimachinery schemas every OpenAPI document carries (ObjectMeta, Status, DeleteOptions, ...) and Scale. */
import { bool, int32, kindSchema, META, open, ref, refDefault, str, strMap } from '../kinds/schema.js';

type Json = Record<string, unknown>;

/** `x-kubernetes-group-version-kind` of a component schema (a list there). */
export function gvkList(group: string, version: string, kind: string): Json[] {
  return [{ group, kind, version }];
}

export function metaSchemas(): Json {
  const time = { description: 'RFC 3339 date and time', type: 'string', format: 'date-time' };
  return {
    [`${META}Time`]: time,
    [`${META}MicroTime`]: { ...time, description: 'RFC 3339 date and time with microseconds' },
    [`${META}ObjectMeta`]: {
      description: 'ObjectMeta is metadata that all persisted resources must have.',
      type: 'object',
      properties: {
        annotations: strMap(),
        creationTimestamp: refDefault(`${META}Time`),
        deletionGracePeriodSeconds: { type: 'integer', format: 'int64' },
        deletionTimestamp: ref(`${META}Time`),
        finalizers: {
          type: 'array',
          items: { type: 'string', default: '' },
          'x-kubernetes-list-type': 'set',
        },
        generateName: str(),
        generation: { type: 'integer', format: 'int64' },
        labels: strMap(),
        managedFields: { type: 'array', items: refDefault(`${META}ManagedFieldsEntry`) },
        name: str(),
        namespace: str(),
        ownerReferences: {
          type: 'array',
          items: refDefault(`${META}OwnerReference`),
          'x-kubernetes-list-map-keys': ['uid'],
          'x-kubernetes-list-type': 'map',
          'x-kubernetes-patch-merge-key': 'uid',
          'x-kubernetes-patch-strategy': 'merge',
        },
        resourceVersion: str(),
        selfLink: str(),
        uid: str(),
      },
    },
    [`${META}OwnerReference`]: {
      type: 'object',
      required: ['apiVersion', 'kind', 'name', 'uid'],
      properties: {
        apiVersion: { type: 'string', default: '' },
        blockOwnerDeletion: bool(),
        controller: bool(),
        kind: { type: 'string', default: '' },
        name: { type: 'string', default: '' },
        uid: { type: 'string', default: '' },
      },
      'x-kubernetes-map-type': 'atomic',
    },
    [`${META}ManagedFieldsEntry`]: {
      type: 'object',
      properties: {
        apiVersion: str(),
        fieldsType: str(),
        fieldsV1: open(),
        manager: str(),
        operation: str(),
        subresource: str(),
        time: ref(`${META}Time`),
      },
    },
    [`${META}ListMeta`]: {
      type: 'object',
      properties: {
        continue: str(),
        remainingItemCount: { type: 'integer', format: 'int64' },
        resourceVersion: str(),
        selfLink: str(),
      },
    },
    [`${META}Status`]: {
      type: 'object',
      properties: {
        apiVersion: str(),
        code: int32(),
        details: open(),
        kind: str(),
        message: str(),
        metadata: refDefault(`${META}ListMeta`),
        reason: str(),
        status: str(),
      },
      'x-kubernetes-group-version-kind': gvkList('', 'v1', 'Status'),
    },
    [`${META}DeleteOptions`]: {
      type: 'object',
      properties: {
        apiVersion: str(),
        dryRun: { type: 'array', items: { type: 'string', default: '' }, 'x-kubernetes-list-type': 'atomic' },
        gracePeriodSeconds: { type: 'integer', format: 'int64' },
        kind: str(),
        orphanDependents: bool(),
        preconditions: { type: 'object', properties: { resourceVersion: str(), uid: str() } },
        propagationPolicy: str(),
      },
      'x-kubernetes-group-version-kind': gvkList('', 'v1', 'DeleteOptions'),
    },
    [`${META}Patch`]: {
      description: 'Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.',
      type: 'object',
    },
    [`${META}WatchEvent`]: {
      type: 'object',
      required: ['type', 'object'],
      properties: { object: open(), type: { type: 'string', default: '' } },
      'x-kubernetes-group-version-kind': gvkList('', 'v1', 'WatchEvent'),
    },
  };
}

export const SCALE_DEF = 'io.k8s.api.autoscaling.v1.Scale';

export function scaleSchema(): Json {
  return {
    ...kindSchema('Scale represents a scaling request for a resource.', {
      spec: { type: 'object', properties: { replicas: int32() } },
      status: {
        type: 'object',
        required: ['replicas'],
        properties: { replicas: { type: 'integer', format: 'int32', default: 0 }, selector: str() },
      },
    }),
    'x-kubernetes-group-version-kind': gvkList('autoscaling', 'v1', 'Scale'),
  };
}
