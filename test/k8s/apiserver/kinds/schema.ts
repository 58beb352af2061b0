/** Builders for the (deliberately permissive) OpenAPI schemas of the built-in kinds. */
import type { Json } from './descriptor.js';

export const META = 'io.k8s.apimachinery.pkg.apis.meta.v1.';
export const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
export const refDefault = (name: string, description?: string): Json => ({
  ...(description ? { description } : {}),
  allOf: [ref(name)],
  default: {},
});

export const str = (description?: string): Json => ({
  type: 'string',
  ...(description ? { description } : {}),
});
export const int32 = (): Json => ({ type: 'integer', format: 'int32' });
export const bool = (): Json => ({ type: 'boolean' });
export const dateTime = (): Json => ({ type: 'string', format: 'date-time' });
export const open = (description?: string): Json => ({
  type: 'object',
  ...(description ? { description } : {}),
  'x-kubernetes-preserve-unknown-fields': true,
});
export const strMap = (format?: string): Json => ({
  type: 'object',
  additionalProperties: { type: 'string', ...(format ? { format } : {}), default: '' },
});
export const conditions = (): Json => ({
  type: 'array',
  items: open(),
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
});
/** The spec of a workload (StatefulSet, Deployment, ReplicaSet): replicas, selector, template. */
export const workload = (extra: Json = {}): Json => ({
  type: 'object',
  properties: {
    replicas: int32(),
    selector: open('label selector'),
    template: open('pod template (not modelled)'),
    ...extra,
  },
  'x-kubernetes-preserve-unknown-fields': true,
});

/** A top-level kind: apiVersion, kind, metadata ($ref ObjectMeta) and `properties`. */
export function kindSchema(description: string, properties: Json, required?: string[]): Json {
  return {
    description,
    type: 'object',
    ...(required ? { required } : {}),
    properties: {
      apiVersion: str('APIVersion defines the versioned schema of this representation of an object.'),
      kind: str('Kind is a string value representing the REST resource this object represents.'),
      metadata: refDefault(
        `${META}ObjectMeta`,
        "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
      ),
      ...properties,
    },
  };
}
