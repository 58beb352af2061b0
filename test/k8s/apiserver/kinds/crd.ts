import type { StatusCause } from '../errors.js';
import { isObject, nowTimestamp, type KObject } from '../objects.js';
import { col, get } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { kindSchema, open } from './schema.js';

export const CRD_CLEANUP_FINALIZER = 'customresourcecleanup.apiextensions.k8s.io';

export interface CrdNames {
  plural: string;
  singular?: string;
  kind: string;
  listKind?: string;
  shortNames?: string[];
  categories?: string[];
}

/** The names a CRD is accepted with: spec.names with singular and listKind defaulted. */
export function acceptedNames(names: CrdNames): Required<CrdNames> {
  return {
    plural: names.plural,
    singular: names.singular || names.kind.toLowerCase(),
    kind: names.kind,
    listKind: names.listKind || `${names.kind}List`,
    shortNames: names.shortNames ?? [],
    categories: names.categories ?? [],
  };
}

function crdCauses(obj: KObject): StatusCause[] {
  const spec = obj.spec as Record<string, unknown> | undefined;
  const causes: StatusCause[] = [];
  const req = (field: string) =>
    causes.push({ reason: 'FieldValueRequired', message: 'Required value', field });
  if (!isObject(spec)) return [{ reason: 'FieldValueRequired', message: 'Required value', field: 'spec' }];
  const names = spec.names as CrdNames | undefined;
  if (typeof spec.group !== 'string' || !spec.group.includes('.'))
    causes.push({
      reason: 'FieldValueInvalid',
      message: 'Invalid value: should be a domain with at least one dot',
      field: 'spec.group',
    });
  if (!names?.plural) req('spec.names.plural');
  if (!names?.kind) req('spec.names.kind');
  if (spec.scope !== 'Namespaced' && spec.scope !== 'Cluster')
    causes.push({
      reason: 'FieldValueNotSupported',
      message: 'Unsupported value: supported values: "Cluster", "Namespaced"',
      field: 'spec.scope',
    });
  const versions = Array.isArray(spec.versions) ? (spec.versions as { storage?: boolean }[]) : [];
  if (!versions.length) req('spec.versions');
  else if (versions.filter((v) => v.storage).length !== 1)
    causes.push({
      reason: 'FieldValueInvalid',
      message: 'Invalid value: must have exactly one version marked as storage version',
      field: 'spec.versions',
    });
  if (
    names?.plural &&
    typeof spec.group === 'string' &&
    obj.metadata.name !== `${names.plural}.${spec.group}`
  )
    causes.push({
      reason: 'FieldValueInvalid',
      message: `Invalid value: "${obj.metadata.name}": must be spec.names.plural+"."+spec.group`,
      field: 'metadata.name',
    });
  return causes;
}

/** Status as the apiextensions controller sets it at once: names accepted, established, stored versions. */
function crdStatus(obj: KObject, old: KObject | undefined): void {
  const spec = obj.spec as { names: CrdNames; versions: { name: string; storage?: boolean }[] };
  const now = nowTimestamp();
  const oldStatus = (old?.status ?? {}) as {
    conditions?: { type: string; lastTransitionTime?: string }[];
    storedVersions?: string[];
  };
  const since = (type: string) =>
    oldStatus.conditions?.find((c) => c.type === type)?.lastTransitionTime ?? now;
  const storage = spec.versions.find((v) => v.storage)?.name ?? spec.versions[0].name;
  obj.status = {
    conditions: [
      {
        type: 'NamesAccepted',
        status: 'True',
        reason: 'NoConflicts',
        message: 'no conflicts found',
        lastTransitionTime: since('NamesAccepted'),
      },
      {
        type: 'Established',
        status: 'True',
        reason: 'InitialNamesAccepted',
        message: 'the initial names have been accepted',
        lastTransitionTime: since('Established'),
      },
    ],
    acceptedNames: acceptedNames(spec.names),
    storedVersions: [...new Set([...(oldStatus.storedVersions ?? []), storage])],
  };
  if (!old)
    obj.metadata.finalizers = [...new Set([...(obj.metadata.finalizers ?? []), CRD_CLEANUP_FINALIZER])];
}

export const customResourceDefinition: KindDescriptor = {
  group: 'apiextensions.k8s.io',
  version: 'v1',
  kind: 'CustomResourceDefinition',
  resource: { namespaced: false, shortNames: ['crd', 'crds'], status: true },
  schema: kindSchema(
    'CustomResourceDefinition represents a resource that should be exposed on the API server.',
    { spec: open('CustomResourceDefinitionSpec (not modelled in detail)'), status: open() },
    ['spec'],
  ),
  columns: [
    col('Created At', 'date', (o) => get(o, 'metadata', 'creationTimestamp') ?? null, 0, 'CreationTimestamp'),
  ],
  strategy: { validate: crdCauses, prepare: (obj, old) => crdStatus(obj, old) },
};
