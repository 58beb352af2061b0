/** Schemas for test CustomResourceDefinitions. */
type Json = Record<string, unknown>;

/**
 * A CRD version's `openAPIV3Schema` as controller-gen writes it: an object with `apiVersion`, `kind` and
 * `metadata`, then `properties` (spec, status); `root` adds keywords at the root (`x-kubernetes-validations`).
 */
export function crdSchema(properties: Json, root: Json = {}): Json {
  return {
    type: 'object',
    ...root,
    properties: {
      apiVersion: { type: 'string' },
      kind: { type: 'string' },
      metadata: { type: 'object' },
      ...properties,
    },
  };
}
