// OpenAPI v3 documents, custom resource validation (structural schema semantics) and
// server-side Tables for the test Kubernetes API server. Pure: no I/O, no clock unless
// the caller leaves `now` out.
//
// What real clients read from here (kubectl 1.32):
// - `/openapi/v3` (root) and `/openapi/v3/<api|apis/g>/<v>` (one document per group/version).
// - kubectl's `--validate=strict` (the default) looks for a PATCH operation whose
//   `x-kubernetes-group-version-kind` (a single object on operations) equals the GVK and which has a
//   `fieldValidation` query parameter; without it kubectl refuses or falls back to client-side checks.
// - `kubectl apply` builds a strategic merge patch from the v3 schema only when the PATCH operation's
//   requestBody lists `application/strategic-merge-patch+json`. Our built-in schemas are deliberately
//   permissive (no patch merge keys), so we do NOT list it: kubectl then falls back (v2 is absent) to
//   its compiled-in Go types for the patch metadata, which is exact. The server must still accept
//   strategic merge patches for built-ins.
// - `kubectl explain` reads components.schemas (x-kubernetes-group-version-kind is a list there).

import { createHash } from 'node:crypto';

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  priority?: number;
  format?: string;
}

export interface ServedKind {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  /** openAPIV3Schema of a CRD version, or a built-in schema. */
  schema?: Record<string, unknown>;
  subresources?: { status?: boolean; scale?: boolean };
  printerColumns?: PrinterColumn[];
}

export interface FieldError {
  /** Path like `spec.listeners[0].port`. */
  field: string;
  /** The cause message without the field, e.g. `Invalid value: -1: spec.replicas in body should be ...`. */
  message: string;
  /** Status cause reason: FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueTypeInvalid,
   * FieldValueTooLong, FieldValueTooMany, FieldValueDuplicate, FieldValueForbidden; `FieldValueUnknown` for
   * an unknown field in Strict mode (which the real server answers with 400, see customResourceAdmission). */
  type: string;
}

export interface ValidationResult {
  object: Record<string, unknown>;
  errors: FieldError[];
  warnings: string[];
}

type Json = Record<string, unknown>;

const META = 'io.k8s.apimachinery.pkg.apis.meta.v1.';
const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
const refDefault = (name: string, description?: string): Json => ({
  ...(description ? { description } : {}),
  allOf: [ref(name)],
  default: {},
});

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T);
}

// ---------------------------------------------------------------------------------------------
// Built-in kinds and their (permissive) schemas
// ---------------------------------------------------------------------------------------------

const str = (description?: string): Json => ({ type: 'string', ...(description ? { description } : {}) });
const int32 = (): Json => ({ type: 'integer', format: 'int32' });
const bool = (): Json => ({ type: 'boolean' });
const open = (description?: string): Json => ({
  type: 'object',
  ...(description ? { description } : {}),
  'x-kubernetes-preserve-unknown-fields': true,
});
const strMap = (format?: string): Json => ({
  type: 'object',
  additionalProperties: { type: 'string', ...(format ? { format } : {}), default: '' },
});
const conditions = (): Json => ({
  type: 'array',
  items: open(),
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
});
const workload = (extra: Json = {}): Json => ({
  type: 'object',
  properties: {
    replicas: int32(),
    selector: open('label selector'),
    template: open('pod template (not modelled)'),
    ...extra,
  },
  'x-kubernetes-preserve-unknown-fields': true,
});

function kindSchema(description: string, properties: Json, required?: string[]): Json {
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

const core = (
  kind: string,
  plural: string,
  namespaced: boolean,
  schema: Json,
  status = false,
): ServedKind => ({
  group: '',
  version: 'v1',
  kind,
  plural,
  namespaced,
  schema,
  ...(status ? { subresources: { status: true } } : {}),
});

export const BUILTIN_KINDS: ServedKind[] = [
  core(
    'Namespace',
    'namespaces',
    false,
    kindSchema('Namespace provides a scope for Names.', {
      spec: { type: 'object', properties: { finalizers: { type: 'array', items: str() } } },
      status: { type: 'object', properties: { phase: str(), conditions: conditions() } },
    }),
    true,
  ),
  core(
    'ConfigMap',
    'configmaps',
    true,
    kindSchema('ConfigMap holds configuration data for pods to consume.', {
      data: strMap(),
      binaryData: strMap('byte'),
      immutable: bool(),
    }),
  ),
  core(
    'Secret',
    'secrets',
    true,
    kindSchema('Secret holds secret data of a certain type.', {
      data: strMap('byte'),
      stringData: strMap(),
      type: str(),
      immutable: bool(),
    }),
  ),
  core(
    'Service',
    'services',
    true,
    kindSchema('Service is a named abstraction of software service.', {
      spec: open('ServiceSpec (not modelled in detail)'),
      status: open(),
    }),
    true,
  ),
  core(
    'Pod',
    'pods',
    true,
    kindSchema('Pod is a collection of containers that can run on a host.', {
      spec: open('PodSpec (not modelled in detail)'),
      status: open(),
    }),
    true,
  ),
  core(
    'Event',
    'events',
    true,
    kindSchema(
      'Event is a report of an event somewhere in the cluster.',
      {
        involvedObject: open(),
        reason: str(),
        message: str(),
        type: str(),
        count: int32(),
        firstTimestamp: { type: 'string', format: 'date-time' },
        lastTimestamp: { type: 'string', format: 'date-time' },
        eventTime: { type: 'string', format: 'date-time' },
        source: open(),
        series: open(),
        action: str(),
        related: open(),
        reportingComponent: str(),
        reportingInstance: str(),
      },
      ['metadata', 'involvedObject'],
    ),
  ),
  core(
    'ServiceAccount',
    'serviceaccounts',
    true,
    kindSchema('ServiceAccount binds together a name, a principal and a set of secrets.', {
      secrets: { type: 'array', items: open() },
      imagePullSecrets: { type: 'array', items: open() },
      automountServiceAccountToken: bool(),
    }),
  ),
  core(
    'Endpoints',
    'endpoints',
    true,
    kindSchema('Endpoints is a collection of endpoints that implement the actual service.', {
      subsets: { type: 'array', items: open('EndpointSubset (not modelled in detail)') },
    }),
  ),
  {
    group: 'discovery.k8s.io',
    version: 'v1',
    kind: 'EndpointSlice',
    plural: 'endpointslices',
    namespaced: true,
    schema: kindSchema(
      'EndpointSlice represents a subset of the endpoints that implement a service.',
      {
        addressType: str(),
        endpoints: { type: 'array', items: open('Endpoint (not modelled in detail)') },
        ports: { type: 'array', items: open('EndpointPort (not modelled in detail)') },
      },
      ['addressType', 'endpoints'],
    ),
  },
  core(
    'PersistentVolumeClaim',
    'persistentvolumeclaims',
    true,
    kindSchema("PersistentVolumeClaim is a user's request for and claim to a persistent volume.", {
      spec: open(),
      status: open(),
    }),
    true,
  ),
  {
    group: 'apps',
    version: 'v1',
    kind: 'StatefulSet',
    plural: 'statefulsets',
    namespaced: true,
    subresources: { status: true, scale: true },
    schema: kindSchema('StatefulSet represents a set of pods with consistent identities.', {
      spec: workload({ serviceName: str(), podManagementPolicy: str() }),
      status: open(),
    }),
  },
  {
    group: 'apps',
    version: 'v1',
    kind: 'Deployment',
    plural: 'deployments',
    namespaced: true,
    subresources: { status: true, scale: true },
    schema: kindSchema('Deployment enables declarative updates for Pods and ReplicaSets.', {
      spec: workload({ strategy: open() }),
      status: open(),
    }),
  },
  {
    group: 'apps',
    version: 'v1',
    kind: 'ReplicaSet',
    plural: 'replicasets',
    namespaced: true,
    subresources: { status: true, scale: true },
    schema: kindSchema('ReplicaSet ensures that a specified number of pod replicas are running.', {
      spec: workload(),
      status: open(),
    }),
  },
  {
    group: 'policy',
    version: 'v1',
    kind: 'PodDisruptionBudget',
    plural: 'poddisruptionbudgets',
    namespaced: true,
    subresources: { status: true },
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
  },
  {
    group: 'coordination.k8s.io',
    version: 'v1',
    kind: 'Lease',
    plural: 'leases',
    namespaced: true,
    schema: kindSchema('Lease defines a lease concept.', {
      spec: {
        type: 'object',
        properties: {
          holderIdentity: str(),
          leaseDurationSeconds: int32(),
          acquireTime: { type: 'string', format: 'date-time' },
          renewTime: { type: 'string', format: 'date-time' },
          leaseTransitions: int32(),
          preferredHolder: str(),
          strategy: str(),
        },
      },
    }),
  },
  {
    group: 'apiextensions.k8s.io',
    version: 'v1',
    kind: 'CustomResourceDefinition',
    plural: 'customresourcedefinitions',
    namespaced: false,
    subresources: { status: true },
    schema: kindSchema(
      'CustomResourceDefinition represents a resource that should be exposed on the API server.',
      { spec: open('CustomResourceDefinitionSpec (not modelled in detail)'), status: open() },
      ['spec'],
    ),
  },
];

// ---------------------------------------------------------------------------------------------
// OpenAPI v3 documents
// ---------------------------------------------------------------------------------------------

/** `api/v1` for the core group, `apis/<group>/<version>` otherwise. */
export function groupVersionPath(group: string, version: string): string {
  return group === '' ? `api/${version}` : `apis/${group}/${version}`;
}

/** Definition name as the real server spells it: io.k8s.api.core.v1.ConfigMap, io.cartero.v1alpha1.SmtpRelay. */
export function definitionName(group: string, version: string, kind: string): string {
  const known: Record<string, string> = {
    '': 'io.k8s.api.core',
    apps: 'io.k8s.api.apps',
    policy: 'io.k8s.api.policy',
    autoscaling: 'io.k8s.api.autoscaling',
    'coordination.k8s.io': 'io.k8s.api.coordination',
    'events.k8s.io': 'io.k8s.api.events',
    'apiextensions.k8s.io': 'io.k8s.apiextensions-apiserver.pkg.apis.apiextensions',
  };
  const prefix = known[group] ?? group.split('.').reverse().join('.');
  return `${prefix}.${version}.${kind}`;
}

function gvkList(group: string, version: string, kind: string): Json[] {
  return [{ group, kind, version }];
}

function metaSchemas(): Json {
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

const SCALE_DEF = 'io.k8s.api.autoscaling.v1.Scale';

function scaleSchema(): Json {
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

/** The kind's schema as published: CRD schemas get apiVersion/kind and a $ref'd ObjectMeta. */
function publishedSchema(k: ServedKind): Json {
  const base: Json = k.schema ? clone(k.schema) : open();
  const props: Json = isObject(base.properties) ? { ...base.properties } : {};
  props.apiVersion =
    props.apiVersion ?? str('APIVersion defines the versioned schema of this representation.');
  props.kind =
    props.kind ?? str('Kind is a string value representing the REST resource this object represents.');
  props.metadata = refDefault(`${META}ObjectMeta`, "Standard object's metadata.");
  return {
    ...base,
    type: 'object',
    properties: props,
    'x-kubernetes-group-version-kind': gvkList(k.group, k.version, k.kind),
  };
}

function listSchema(k: ServedKind, def: string): Json {
  return {
    description: `${k.kind}List is a list of ${k.kind}`,
    type: 'object',
    required: ['items'],
    properties: {
      apiVersion: str(),
      items: { type: 'array', items: refDefault(def) },
      kind: str(),
      metadata: refDefault(`${META}ListMeta`),
    },
    'x-kubernetes-group-version-kind': gvkList(k.group, k.version, `${k.kind}List`),
  };
}

function queryParam(
  name: string,
  description: string,
  type: 'string' | 'boolean' | 'integer' = 'string',
): Json {
  return {
    name,
    in: 'query',
    description,
    schema: { type, uniqueItems: true, ...(type === 'integer' ? { format: 'int32' } : {}) },
  };
}

const P = {
  pretty: queryParam('pretty', "If 'true', then the output is pretty printed."),
  dryRun: queryParam(
    'dryRun',
    'When present, indicates that modifications should not be persisted. Valid value: All.',
  ),
  fieldManager: queryParam(
    'fieldManager',
    'fieldManager is a name associated with the actor making these changes.',
  ),
  fieldValidation: queryParam(
    'fieldValidation',
    'fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values: Ignore, Warn, Strict.',
  ),
  force: queryParam('force', 'Force is going to "force" Apply requests.', 'boolean'),
  gracePeriodSeconds: queryParam('gracePeriodSeconds', 'The duration in seconds before deletion.', 'integer'),
  orphanDependents: queryParam('orphanDependents', 'Deprecated: use propagationPolicy.', 'boolean'),
  propagationPolicy: queryParam('propagationPolicy', 'Orphan, Background or Foreground.'),
  allowWatchBookmarks: queryParam(
    'allowWatchBookmarks',
    'Requests watch events of type BOOKMARK.',
    'boolean',
  ),
  continue: queryParam('continue', 'The continue option, from a previous list.'),
  fieldSelector: queryParam(
    'fieldSelector',
    'A selector to restrict the list of returned objects by fields.',
  ),
  labelSelector: queryParam(
    'labelSelector',
    'A selector to restrict the list of returned objects by labels.',
  ),
  limit: queryParam('limit', 'Maximum number of responses to return for a list call.', 'integer'),
  resourceVersion: queryParam(
    'resourceVersion',
    'resourceVersion sets a constraint on what resource versions a request may be served from.',
  ),
  resourceVersionMatch: queryParam('resourceVersionMatch', 'How resourceVersion is applied to list calls.'),
  sendInitialEvents: queryParam(
    'sendInitialEvents',
    'Streaming lists: initial events then a bookmark.',
    'boolean',
  ),
  timeoutSeconds: queryParam('timeoutSeconds', 'Timeout for the list/watch call.', 'integer'),
  watch: queryParam('watch', 'Watch for changes to the described resources.', 'boolean'),
};
const LIST_PARAMS = [
  P.allowWatchBookmarks,
  P.continue,
  P.fieldSelector,
  P.labelSelector,
  P.limit,
  P.resourceVersion,
  P.resourceVersionMatch,
  P.sendInitialEvents,
  P.timeoutSeconds,
  P.watch,
];
const WRITE_PARAMS = [P.dryRun, P.fieldManager, P.fieldValidation];
const DELETE_PARAMS = [P.dryRun, P.gracePeriodSeconds, P.orphanDependents, P.propagationPolicy];

const pathParam = (name: string, description: string): Json => ({
  name,
  in: 'path',
  description,
  required: true,
  schema: { type: 'string', uniqueItems: true },
});

function pascal(s: string): string {
  return s
    .split(/[.-]/)
    .filter((x) => x)
    .map((x) => x[0].toUpperCase() + x.slice(1))
    .join('');
}

function jsonBody(schemaRef: Json): Json {
  const content: Json = {};
  for (const t of ['application/json', 'application/yaml', 'application/vnd.kubernetes.protobuf']) {
    content[t] = { schema: schemaRef };
  }
  return content;
}

function responses(schemaRef: Json, codes: string[]): Json {
  const out: Json = {};
  const text: Record<string, string> = { '200': 'OK', '201': 'Created', '202': 'Accepted' };
  for (const c of codes) out[c] = { description: text[c], content: jsonBody(schemaRef) };
  out['401'] = { description: 'Unauthorized' };
  return out;
}

function operation(
  action: string,
  opId: string,
  tag: string,
  gvk: Json,
  parameters: Json[],
  extra: Json,
): Json {
  return {
    tags: [tag],
    description: `${action} ${String(gvk.kind)}`,
    operationId: opId,
    ...(parameters.length ? { parameters } : {}),
    ...extra,
    'x-kubernetes-action': action,
    'x-kubernetes-group-version-kind': gvk,
  };
}

function pathsFor(k: ServedKind, paths: Json): void {
  const def = definitionName(k.group, k.version, k.kind);
  const listDef = `${def}List`;
  const gvk = { group: k.group, version: k.version, kind: k.kind };
  const tag = `${k.group === '' ? 'core' : pascal(k.group.replace(/\.k8s\.io$/, ''))}_${k.version}`;
  const idGroup = `${k.group === '' ? 'Core' : pascal(k.group.replace(/\.k8s\.io$/, ''))}${pascal(k.version)}`;
  const ns = k.namespaced ? 'Namespaced' : '';
  const prefix = `/${groupVersionPath(k.group, k.version)}${k.namespaced ? '/namespaces/{namespace}' : ''}/${k.plural}`;
  const common = [
    ...(k.namespaced
      ? [pathParam('namespace', 'object name and auth scope, such as for teams and projects')]
      : []),
    P.pretty,
  ];
  const nameParam = pathParam('name', `name of the ${k.kind}`);
  const patchBody = (builtin: boolean): Json => {
    const content: Json = {};
    const types = [
      'application/apply-patch+yaml',
      'application/json-patch+json',
      'application/merge-patch+json',
    ];
    if (!builtin) types.sort();
    for (const t of types) content[t] = { schema: ref(`${META}Patch`) };
    return { content, required: true };
  };
  // see the header comment: strategic merge patch is accepted but not advertised
  const builtin = BUILTIN_KINDS.some((b) => b.group === k.group && b.kind === k.kind);

  paths[prefix] = {
    parameters: common,
    get: operation('list', `list${idGroup}${ns}${k.kind}`, tag, gvk, LIST_PARAMS, {
      responses: responses(ref(listDef), ['200']),
    }),
    post: operation('post', `create${idGroup}${ns}${k.kind}`, tag, gvk, WRITE_PARAMS, {
      requestBody: { content: jsonBody(ref(def)), required: true },
      responses: responses(ref(def), ['200', '201', '202']),
    }),
    delete: operation(
      'deletecollection',
      `deletecollection${idGroup}${ns}${k.kind}`,
      tag,
      gvk,
      [...LIST_PARAMS.filter((p) => p !== P.watch && p !== P.allowWatchBookmarks), ...DELETE_PARAMS],
      {
        requestBody: { content: jsonBody(ref(`${META}DeleteOptions`)) },
        responses: responses(ref(`${META}Status`), ['200']),
      },
    ),
  };
  const item = (
    suffix: string,
    subject: string,
    bodyDef: string,
    itemGvk: Json,
    withDelete: boolean,
  ): void => {
    const ops: Json = {
      parameters: [nameParam, ...common],
      get: operation('get', `read${idGroup}${ns}${subject}`, tag, itemGvk, [], {
        responses: responses(ref(bodyDef), ['200']),
      }),
      put: operation('put', `replace${idGroup}${ns}${subject}`, tag, itemGvk, WRITE_PARAMS, {
        requestBody: { content: jsonBody(ref(bodyDef)), required: true },
        responses: responses(ref(bodyDef), ['200', '201']),
      }),
      patch: operation('patch', `patch${idGroup}${ns}${subject}`, tag, itemGvk, [...WRITE_PARAMS, P.force], {
        requestBody: patchBody(builtin),
        responses: responses(ref(bodyDef), ['200', '201']),
      }),
    };
    if (withDelete) {
      ops.delete = operation('delete', `delete${idGroup}${ns}${subject}`, tag, itemGvk, DELETE_PARAMS, {
        requestBody: { content: jsonBody(ref(`${META}DeleteOptions`)) },
        responses: responses(ref(`${META}Status`), ['200', '202']),
      });
    }
    paths[`${prefix}/{name}${suffix}`] = ops;
  };
  item('', k.kind, def, gvk, true);
  if (k.subresources?.status) item('/status', `${k.kind}Status`, def, gvk, false);
  if (k.subresources?.scale) {
    item(
      '/scale',
      `${k.kind}Scale`,
      SCALE_DEF,
      { group: 'autoscaling', version: 'v1', kind: 'Scale' },
      false,
    );
  }
  if (k.namespaced) {
    paths[`/${groupVersionPath(k.group, k.version)}/${k.plural}`] = {
      parameters: LIST_PARAMS.concat([P.pretty]),
      get: operation('list', `list${idGroup}${k.kind}ForAllNamespaces`, tag, gvk, [], {
        responses: responses(ref(listDef), ['200']),
      }),
    };
  }
}

function kindsOf(kinds: ServedKind[], group: string, version: string): ServedKind[] {
  return kinds.filter((k) => k.group === group && k.version === version);
}

/**
 * The OpenAPI 3.0 document for one group/version, or undefined when no kind is served there
 * (the server answers 404 then).
 */
export function openApiV3GroupVersion(
  kinds: ServedKind[],
  group: string,
  version: string,
): Record<string, unknown> | undefined {
  const here = kindsOf(kinds, group, version);
  if (here.length === 0) return undefined;
  const schemas: Json = metaSchemas();
  const paths: Json = {};
  for (const k of here) {
    const def = definitionName(k.group, k.version, k.kind);
    schemas[def] = publishedSchema(k);
    schemas[`${def}List`] = listSchema(k, def);
    if (k.subresources?.scale) schemas[SCALE_DEF] = scaleSchema();
    pathsFor(k, paths);
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.32.0' },
    paths,
    components: {
      securitySchemes: {
        BearerToken: {
          type: 'apiKey',
          description: 'Bearer Token authentication',
          name: 'authorization',
          in: 'header',
        },
      },
      schemas,
    },
  };
}

/** The hash the root document carries for a group/version document (sha512, upper-case hex). */
export function documentHash(doc: unknown): string {
  return createHash('sha512').update(JSON.stringify(doc)).digest('hex').toUpperCase();
}

/** GET /openapi/v3 */
export function openApiV3Root(kinds: ServedKind[]): Record<string, unknown> {
  const gvs = new Map<string, [string, string]>();
  for (const k of kinds) gvs.set(groupVersionPath(k.group, k.version), [k.group, k.version]);
  const paths: Json = {};
  for (const [p, [g, v]] of [...gvs.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
    const doc = openApiV3GroupVersion(kinds, g, v);
    paths[p] = { serverRelativeURL: `/openapi/v3/${p}?hash=${documentHash(doc)}` };
  }
  return { paths };
}

// ---------------------------------------------------------------------------------------------
// Custom resource validation: structural schema semantics
// ---------------------------------------------------------------------------------------------

interface Ctx {
  mode: 'Strict' | 'Warn' | 'Ignore';
  errors: FieldError[];
  unknown: string[];
  /** Validation only (allOf/anyOf/oneOf/not branches): no pruning, no unknown-field reports. */
  validateOnly: boolean;
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** How the API server renders a value in `Invalid value: ...`. */
export function formatValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => deepEqual(x, bb[i]));
  }
  const ka = Object.keys(a as Json).sort();
  const kb = Object.keys(b as Json).sort();
  return deepEqual(ka, kb) && ka.every((k) => deepEqual((a as Json)[k], (b as Json)[k]));
}

const invalid = (field: string, value: unknown, detail: string): FieldError => ({
  field,
  type: 'FieldValueInvalid',
  message: `Invalid value: ${formatValue(value)}: ${detail}`,
});

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const FORMATS: Record<string, (s: string) => boolean> = {
  'date-time': (s) => RFC3339.test(s) && !Number.isNaN(Date.parse(s.replace(' ', 'T'))),
  datetime: (s) => FORMATS['date-time'](s),
  date: (s) => /^\d{4}-\d{2}-\d{2}$/.test(s) && !Number.isNaN(Date.parse(s)),
  byte: (s) => /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s),
  uuid: (s) => /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(s),
  hostname: (s) =>
    s.length <= 255 &&
    /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/.test(
      s,
    ),
  ipv4: (s) => /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(s),
  ipv6: (s) => /^[0-9a-fA-F:.]+$/.test(s) && s.includes(':'),
  cidr: (s) => /^[0-9a-fA-F:.]+\/\d{1,3}$/.test(s),
  email: (s) => /^[^@\s]+@[^@\s]+$/.test(s),
  uri: (s) => /^[A-Za-z][A-Za-z0-9+.-]*:/.test(s),
  duration: (s) => /^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(s) || s === '0',
};

function checkSchema(schema: Json, value: unknown, path: string, ctx: Ctx, root: boolean): unknown {
  const display = path || '<root>';
  if (value === null) {
    if (schema.nullable === true) return value;
    if (schema.type !== undefined) {
      ctx.errors.push({
        field: display,
        type: 'FieldValueTypeInvalid',
        message: `Invalid value: "null": ${display} in body must be of type ${String(schema.type)}: "null"`,
      });
    }
    return value;
  }
  const actual = jsonType(value);
  if (schema['x-kubernetes-int-or-string'] === true) {
    if (actual !== 'integer' && actual !== 'string') {
      ctx.errors.push({
        field: display,
        type: 'FieldValueTypeInvalid',
        message: `Invalid value: "${actual}": ${display} in body must be of type integer,string: "${actual}"`,
      });
      return value;
    }
  } else if (typeof schema.type === 'string') {
    const want = schema.type;
    const ok = want === actual || (want === 'number' && actual === 'integer');
    if (!ok) {
      ctx.errors.push({
        field: display,
        type: 'FieldValueTypeInvalid',
        message: `Invalid value: "${actual}": ${display} in body must be of type ${want}: "${actual}"`,
      });
      return value;
    }
  }

  if (isObject(value)) value = checkObject(schema, value, path, ctx, root);
  else if (Array.isArray(value)) checkArray(schema, value, path, ctx);
  else if (typeof value === 'string') checkString(schema, value, display, ctx);
  else if (typeof value === 'number') checkNumber(schema, value, display, ctx);

  if (Array.isArray(schema.enum) && !schema.enum.some((e) => deepEqual(e, value))) {
    ctx.errors.push({
      field: display,
      type: 'FieldValueNotSupported',
      message: `Unsupported value: ${formatValue(value)}: supported values: ${schema.enum.map(formatValue).join(', ')}`,
    });
  }
  checkJunctors(schema, value, display, ctx);
  return value;
}

function subValidate(schema: unknown, value: unknown, path: string, ctx: Ctx): FieldError[] {
  if (!isObject(schema)) return [];
  const sub: Ctx = { mode: ctx.mode, errors: [], unknown: [], validateOnly: true };
  checkSchema(schema, clone(value), path, sub, false);
  return sub.errors;
}

function checkJunctors(schema: Json, value: unknown, display: string, ctx: Ctx): void {
  const path = display === '<root>' ? '' : display;
  if (Array.isArray(schema.allOf)) {
    for (const s of schema.allOf) ctx.errors.push(...subValidate(s, value, path, ctx));
  }
  if (Array.isArray(schema.anyOf)) {
    const results = schema.anyOf.map((s) => subValidate(s, value, path, ctx));
    if (results.length > 0 && results.every((r) => r.length > 0)) {
      ctx.errors.push(...results[0]);
      ctx.errors.push(
        invalid(display, value, `${display} in body must validate at least one schema (anyOf)`),
      );
    }
  }
  if (Array.isArray(schema.oneOf)) {
    const passing = schema.oneOf.filter((s) => subValidate(s, value, path, ctx).length === 0).length;
    if (passing !== 1) {
      ctx.errors.push(
        invalid(display, value, `${display} in body must validate one and only one schema (oneOf)`),
      );
    }
  }
  if (isObject(schema.not) && subValidate(schema.not, value, path, ctx).length === 0) {
    ctx.errors.push(invalid(display, value, `${display} in body must not validate the schema (not)`));
  }
}

const OBJECT_META_FIELDS = new Set([
  'name',
  'generateName',
  'namespace',
  'selfLink',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
  'managedFields',
]);

function child(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function checkObject(schema: Json, obj: Json, path: string, ctx: Ctx, root: boolean): Json {
  const display = path || '<root>';
  const props = isObject(schema.properties) ? schema.properties : {};
  const additional = schema.additionalProperties;
  const preserve = schema['x-kubernetes-preserve-unknown-fields'] === true;
  const embedded = schema['x-kubernetes-embedded-resource'] === true;

  // nulls of non-nullable fields are dropped (or defaulted), then defaults for absent fields
  for (const [key, ps] of Object.entries(props)) {
    if (!isObject(ps)) continue;
    if (obj[key] === null && ps.nullable !== true && !ctx.validateOnly) {
      if (ps.default !== undefined) obj[key] = clone(ps.default);
      else delete obj[key];
    }
    if (obj[key] === undefined && ps.default !== undefined && !ctx.validateOnly) obj[key] = clone(ps.default);
  }

  for (const key of Object.keys(obj)) {
    const p = child(path, key);
    if ((root || embedded) && (key === 'apiVersion' || key === 'kind')) continue;
    if ((root || embedded) && key === 'metadata') {
      if (root && isObject(obj.metadata)) {
        for (const mk of Object.keys(obj.metadata)) {
          if (!OBJECT_META_FIELDS.has(mk)) unknownField(obj.metadata, mk, `metadata.${mk}`, ctx);
        }
      }
      continue;
    }
    const ps = props[key];
    if (isObject(ps)) {
      obj[key] = checkSchema(ps, obj[key], p, ctx, false);
    } else if (isObject(additional)) {
      obj[key] = checkSchema(additional, obj[key], p, ctx, false);
    } else if (additional === true || preserve) {
      continue;
    } else {
      unknownField(obj, key, p, ctx);
    }
  }

  if (Array.isArray(schema.required)) {
    for (const r of schema.required) {
      if (typeof r === 'string' && obj[r] === undefined) {
        ctx.errors.push({ field: child(path, r), type: 'FieldValueRequired', message: 'Required value' });
      }
    }
  }
  const n = Object.keys(obj).length;
  if (typeof schema.minProperties === 'number' && n < schema.minProperties) {
    ctx.errors.push(
      invalid(display, n, `${display} in body should have at least ${schema.minProperties} properties`),
    );
  }
  if (typeof schema.maxProperties === 'number' && n > schema.maxProperties) {
    ctx.errors.push({
      field: display,
      type: 'FieldValueTooMany',
      message: `Too many: ${n}: must have at most ${schema.maxProperties} items`,
    });
  }
  return obj;
}

function unknownField(obj: Json, key: string, path: string, ctx: Ctx): void {
  if (ctx.validateOnly) return;
  ctx.unknown.push(path);
  delete obj[key];
}

function checkArray(schema: Json, arr: unknown[], path: string, ctx: Ctx): void {
  const display = path || '<root>';
  if (isObject(schema.items)) {
    for (let i = 0; i < arr.length; i++)
      arr[i] = checkSchema(schema.items, arr[i], `${path}[${i}]`, ctx, false);
  }
  if (typeof schema.minItems === 'number' && arr.length < schema.minItems) {
    ctx.errors.push(
      invalid(display, arr, `${display} in body should have at least ${schema.minItems} items`),
    );
  }
  if (typeof schema.maxItems === 'number' && arr.length > schema.maxItems) {
    ctx.errors.push({
      field: display,
      type: 'FieldValueTooMany',
      message: `Too many: ${arr.length}: must have at most ${schema.maxItems} items`,
    });
  }
  const listType = schema['x-kubernetes-list-type'];
  const keys = schema['x-kubernetes-list-map-keys'];
  if (listType === 'set' || schema.uniqueItems === true) {
    for (let i = 0; i < arr.length; i++) {
      if (arr.slice(0, i).some((x) => deepEqual(x, arr[i]))) {
        ctx.errors.push({
          field: `${path}[${i}]`,
          type: 'FieldValueDuplicate',
          message: `Duplicate value: ${formatValue(arr[i])}`,
        });
      }
    }
  } else if (listType === 'map' && Array.isArray(keys)) {
    const seen: Json[] = [];
    arr.forEach((item, i) => {
      if (!isObject(item)) return;
      const k: Json = {};
      for (const key of keys) if (typeof key === 'string') k[key] = item[key];
      if (seen.some((s) => deepEqual(s, k))) {
        ctx.errors.push({
          field: `${path}[${i}]`,
          type: 'FieldValueDuplicate',
          message: `Duplicate value: ${formatValue(k)}`,
        });
      }
      seen.push(k);
    });
  }
}

function checkString(schema: Json, s: string, display: string, ctx: Ctx): void {
  const len = [...s].length;
  if (typeof schema.minLength === 'number' && len < schema.minLength) {
    ctx.errors.push(
      invalid(display, s, `${display} in body should be at least ${schema.minLength} chars long`),
    );
  }
  if (typeof schema.maxLength === 'number' && len > schema.maxLength) {
    ctx.errors.push({
      field: display,
      type: 'FieldValueTooLong',
      message: `Too long: may not be more than ${schema.maxLength} bytes`,
    });
  }
  if (typeof schema.pattern === 'string') {
    let re: RegExp | undefined;
    try {
      re = new RegExp(schema.pattern, 'u');
    } catch {
      re = undefined; // the CRD should have been refused; nothing to check against
    }
    if (re && !re.test(s)) {
      ctx.errors.push(invalid(display, s, `${display} in body should match '${schema.pattern}'`));
    }
  }
  if (typeof schema.format === 'string' && schema['x-kubernetes-int-or-string'] !== true) {
    const check = FORMATS[schema.format];
    if (check && !check(s)) {
      ctx.errors.push(
        invalid(display, s, `${display} in body must be of type ${schema.format}: ${formatValue(s)}`),
      );
    }
  }
}

function checkNumber(schema: Json, n: number, display: string, ctx: Ctx): void {
  if (typeof schema.minimum === 'number') {
    if (schema.exclusiveMinimum === true ? n <= schema.minimum : n < schema.minimum) {
      const rel = schema.exclusiveMinimum === true ? 'greater than' : 'greater than or equal to';
      ctx.errors.push(invalid(display, n, `${display} in body should be ${rel} ${schema.minimum}`));
    }
  }
  if (typeof schema.maximum === 'number') {
    if (schema.exclusiveMaximum === true ? n >= schema.maximum : n > schema.maximum) {
      const rel = schema.exclusiveMaximum === true ? 'less than' : 'less than or equal to';
      ctx.errors.push(invalid(display, n, `${display} in body should be ${rel} ${schema.maximum}`));
    }
  }
  if (typeof schema.multipleOf === 'number' && schema.multipleOf > 0) {
    const q = n / schema.multipleOf;
    if (Math.abs(q - Math.round(q)) > 1e-9) {
      ctx.errors.push(invalid(display, n, `${display} in body should be a multiple of ${schema.multipleOf}`));
    }
  }
  if (schema.format === 'int32' && (n < -2147483648 || n > 2147483647)) {
    ctx.errors.push(invalid(display, n, `${display} in body must be of type int32: ${formatValue(n)}`));
  }
  if (schema.format === 'int64' && !Number.isSafeInteger(n)) {
    ctx.errors.push(invalid(display, n, `${display} in body must be of type int64: ${formatValue(n)}`));
  }
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/**
 * Default, prune and validate a custom resource against its CRD version's openAPIV3Schema.
 * The input is not modified. `errors` holds schema violations and (Strict only) unknown fields as
 * `FieldValueUnknown`; `warnings` holds `unknown field "spec.foo"` in Warn mode. CEL rules
 * (x-kubernetes-validations) are not evaluated here: cel.ts does that in an admission step, where the
 * stored object (oldSelf) is known.
 */
export function validateCustomResource(
  schema: Record<string, unknown>,
  obj: Record<string, unknown>,
  mode: 'Strict' | 'Warn' | 'Ignore',
  opts: { namespaced?: boolean } = {},
): ValidationResult {
  const ctx: Ctx = { mode, errors: [], unknown: [], validateOnly: false };
  const object = clone(obj);
  const meta = isObject(object.metadata) ? object.metadata : undefined;
  const metaErrors: FieldError[] = [];
  if (!meta || (!meta.name && !meta.generateName)) {
    metaErrors.push({
      field: 'metadata.name',
      type: 'FieldValueRequired',
      message: 'Required value: name or generateName is required',
    });
  } else if (
    typeof meta.name === 'string' &&
    meta.name !== '' &&
    !(meta.name.length <= 253 && DNS1123_SUBDOMAIN.test(meta.name))
  ) {
    metaErrors.push(
      invalid(
        'metadata.name',
        meta.name,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
      ),
    );
  }
  if (opts.namespaced === true && !(meta && meta.namespace)) {
    metaErrors.push({ field: 'metadata.namespace', type: 'FieldValueRequired', message: 'Required value' });
  } else if (opts.namespaced === false && meta && meta.namespace) {
    metaErrors.push({
      field: 'metadata.namespace',
      type: 'FieldValueForbidden',
      message: 'Forbidden: not allowed on this type',
    });
  }
  const result = checkSchema(schema, object, '', ctx, true) as Json;
  const errors = [...metaErrors, ...ctx.errors];
  const warnings: string[] = [];
  for (const u of ctx.unknown) {
    const msg = `unknown field "${u}"`;
    if (mode === 'Strict') errors.push({ field: u, type: 'FieldValueUnknown', message: msg });
    else if (mode === 'Warn') warnings.push(msg);
  }
  return { object: result, errors, warnings };
}

export interface CelRule {
  /** Where the rule sits: `` for the root, `spec`, `spec.listeners[*]`. */
  path: string;
  rule: string;
  message?: string;
  messageExpression?: string;
  reason?: string;
  fieldPath?: string;
}

/** The x-kubernetes-validations (CEL) rules of a schema, listed (cel.ts compiles and evaluates them). */
export function celRulesOf(schema: Record<string, unknown>): CelRule[] {
  const out: CelRule[] = [];
  const walk = (s: unknown, path: string): void => {
    if (!isObject(s)) return;
    const rules = s['x-kubernetes-validations'];
    if (Array.isArray(rules)) {
      for (const r of rules) {
        if (!isObject(r) || typeof r.rule !== 'string') continue;
        const rule: CelRule = { path, rule: r.rule };
        for (const k of ['message', 'messageExpression', 'reason', 'fieldPath'] as const) {
          if (typeof r[k] === 'string') rule[k] = r[k];
        }
        out.push(rule);
      }
    }
    if (isObject(s.properties)) for (const [k, v] of Object.entries(s.properties)) walk(v, child(path, k));
    if (isObject(s.items)) walk(s.items, `${path}[*]`);
    if (isObject(s.additionalProperties)) walk(s.additionalProperties, `${path}[*]`);
  };
  walk(schema, '');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Status bodies
// ---------------------------------------------------------------------------------------------

function splitKind(kind: string | ServedKind): { kind: string; group: string } {
  if (typeof kind !== 'string') return { kind: kind.kind, group: kind.group };
  const dot = kind.indexOf('.');
  return dot < 0 ? { kind, group: '' } : { kind: kind.slice(0, dot), group: kind.slice(dot + 1) };
}

/** 422 Invalid, as the API server sends it. `kind` is `SmtpRelay.cartero.io`, `ConfigMap` or a ServedKind. */
export function statusInvalid(
  kind: string | ServedKind,
  name: string,
  errors: FieldError[],
): Record<string, unknown> {
  const k = splitKind(kind);
  const qualified = k.group ? `${k.kind}.${k.group}` : k.kind;
  const lines = errors.map((e) => `${e.field}: ${e.message}`);
  const agg = lines.length === 1 ? lines[0] : `[${lines.join(', ')}]`;
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `${qualified} "${name}" is invalid: ${agg}`,
    reason: 'Invalid',
    details: {
      name,
      ...(k.group ? { group: k.group } : {}),
      kind: k.kind,
      causes: errors.map((e) => ({ reason: e.type, message: e.message, field: e.field })),
    },
    code: 422,
  };
}

/** 400 BadRequest Status body. */
export function statusBadRequest(message: string): Record<string, unknown> {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: 'BadRequest',
    code: 400,
  };
}

export type Admission =
  | { ok: true; object: Record<string, unknown>; warnings: string[] }
  | { ok: false; code: 400 | 422; status: Record<string, unknown>; warnings: string[] };

/**
 * What the server does with a create/update body of a custom resource: unknown fields under
 * fieldValidation=Strict are a 400 (`SmtpRelay in version "v1alpha1" cannot be handled as a SmtpRelay:
 * strict decoding error: unknown field "spec.foo"`), schema violations a 422, Warn gives warnings
 * (send each as a `Warning: 299 - "<text>"` header). The API server's default when the request has no
 * fieldValidation parameter is Warn; kubectl sends Strict by default.
 */
export function customResourceAdmission(
  kind: ServedKind,
  obj: Record<string, unknown>,
  mode: 'Strict' | 'Warn' | 'Ignore',
): Admission {
  const res = validateCustomResource(kind.schema ?? open(), obj, mode, { namespaced: kind.namespaced });
  const unknown = res.errors.filter((e) => e.type === 'FieldValueUnknown');
  if (unknown.length > 0) {
    const msg = `${kind.kind} in version "${kind.version}" cannot be handled as a ${kind.kind}: strict decoding error: ${unknown.map((e) => e.message).join(', ')}`;
    return { ok: false, code: 400, status: statusBadRequest(msg), warnings: res.warnings };
  }
  if (res.errors.length > 0) {
    const meta = isObject(obj.metadata) ? obj.metadata : {};
    const name = typeof meta.name === 'string' ? meta.name : '';
    return { ok: false, code: 422, status: statusInvalid(kind, name, res.errors), warnings: res.warnings };
  }
  return { ok: true, object: res.object, warnings: res.warnings };
}

// ---------------------------------------------------------------------------------------------
// JSONPath subset and Tables
// ---------------------------------------------------------------------------------------------

type Segment =
  | { t: 'field'; name: string }
  | { t: 'index'; i: number }
  | { t: 'all' }
  | { t: 'filter'; path: Segment[]; op: '==' | '!=' | 'exists'; value?: unknown };

function parseLiteral(s: string): unknown {
  const t = s.trim();
  if ((t.startsWith('"') && t.endsWith('"')) || (t.startsWith("'") && t.endsWith("'"))) return t.slice(1, -1);
  if (t === 'true' || t === 'false') return t === 'true';
  if (t !== '' && !Number.isNaN(Number(t))) return Number(t);
  return t;
}

/** Parses `.spec.x`, `{.a.b}`, `.a[0]`, `.a[*].b`, `.a['x.y']`, `.a[?(@.type=="Ready")].status`, `a\.b`. */
export function parseJsonPath(expr: string): Segment[] {
  let s = expr.trim();
  if (s.startsWith('{') && s.endsWith('}')) s = s.slice(1, -1).trim();
  if (s.startsWith('$')) s = s.slice(1);
  const out: Segment[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === '.') {
      i++;
      let name = '';
      while (i < s.length && s[i] !== '.' && s[i] !== '[') {
        if (s[i] === '\\' && i + 1 < s.length) {
          name += s[i + 1];
          i += 2;
        } else name += s[i++];
      }
      if (name) out.push({ t: 'field', name });
    } else if (c === '[') {
      const end = findClose(s, i);
      const inner = s.slice(i + 1, end).trim();
      i = end + 1;
      if (inner === '*') out.push({ t: 'all' });
      else if (/^-?\d+$/.test(inner)) out.push({ t: 'index', i: Number(inner) });
      else if (/^['"].*['"]$/.test(inner)) out.push({ t: 'field', name: inner.slice(1, -1) });
      else if (inner.startsWith('?(') && inner.endsWith(')')) {
        const body = inner.slice(2, -1).trim();
        const m = /^@((?:\.[^=!<>\s]+)+)\s*(==|!=)\s*(.+)$/.exec(body);
        if (m)
          out.push({
            t: 'filter',
            path: parseJsonPath(m[1]),
            op: m[2] as '==' | '!=',
            value: parseLiteral(m[3]),
          });
        else if (/^@((?:\.[^=!<>\s]+)+)$/.test(body))
          out.push({ t: 'filter', path: parseJsonPath(body.slice(1)), op: 'exists' });
        else throw new Error(`unsupported JSONPath filter: ${inner}`);
      } else throw new Error(`unsupported JSONPath segment: [${inner}]`);
    } else {
      // a leading bare name: `spec.x`
      out.push(...parseJsonPath(`.${s.slice(i)}`));
      break;
    }
  }
  return out;
}

function findClose(s: string, open: number): number {
  let depth = 0;
  let quote = '';
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '[') depth++;
    else if (c === ']' && --depth === 0) return i;
  }
  throw new Error(`unbalanced [ in JSONPath: ${s}`);
}

/** Evaluates a JSONPath subset; returns every match in order. */
export function evalJsonPath(expr: string | Segment[], obj: unknown): unknown[] {
  const segs = typeof expr === 'string' ? parseJsonPath(expr) : expr;
  let cur: unknown[] = [obj];
  for (const seg of segs) {
    const next: unknown[] = [];
    for (const v of cur) {
      if (seg.t === 'field') {
        if (isObject(v) && v[seg.name] !== undefined) next.push(v[seg.name]);
      } else if (seg.t === 'index') {
        if (Array.isArray(v)) {
          const idx = seg.i < 0 ? v.length + seg.i : seg.i;
          if (idx >= 0 && idx < v.length) next.push(v[idx]);
        }
      } else if (seg.t === 'all') {
        if (Array.isArray(v)) next.push(...v);
        else if (isObject(v)) next.push(...Object.values(v));
      } else if (Array.isArray(v)) {
        for (const item of v) {
          const got = evalJsonPath(seg.path, item);
          if (
            seg.op === 'exists'
              ? got.length > 0
              : (got.length > 0 && deepEqual(got[0], seg.value)) === (seg.op === '==')
          ) {
            next.push(item);
          }
        }
      }
    }
    cur = next;
  }
  return cur;
}

/** kubectl's age format (k8s.io/apimachinery/pkg/util/duration.HumanDuration). */
export function humanDuration(ms: number): string {
  const seconds = Math.trunc(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.trunc(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.trunc(seconds / 3600);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.trunc(hours / 24)}d` : `${Math.trunc(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.trunc(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const dy = Math.trunc(hours / 24) % 365;
    const y = Math.trunc(hours / 24 / 365);
    return dy === 0 ? `${y}y` : `${y}y${dy}d`;
  }
  return `${Math.trunc(hours / 24 / 365)}y`;
}

function age(ts: unknown, now: number): string {
  if (typeof ts !== 'string' || ts === '') return '<unknown>';
  const t = Date.parse(ts);
  if (Number.isNaN(t)) return '<invalid>';
  return humanDuration(now - t);
}

function cellFor(type: string, value: unknown, now: number): unknown {
  if (value === undefined || value === null) return null;
  switch (type) {
    case 'integer':
      return typeof value === 'number' ? Math.trunc(value) : null;
    case 'number':
      return typeof value === 'number' ? value : null;
    case 'boolean':
      return typeof value === 'boolean' ? value : null;
    case 'date':
      return typeof value === 'string' ? age(value, now) : null;
    case 'string':
      return typeof value === 'string'
        ? value
        : isObject(value) || Array.isArray(value)
          ? JSON.stringify(value)
          : String(value);
    default:
      return null;
  }
}

interface BuiltinColumn {
  def: { name: string; type: string; format?: string; description: string; priority: number };
  cell: (o: Json, now: number) => unknown;
}

const NAME_COLUMN = {
  name: 'Name',
  type: 'string',
  format: 'name',
  description:
    'Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names',
  priority: 0,
};

const get = (o: unknown, ...path: (string | number)[]): unknown => {
  let v: unknown = o;
  for (const p of path) {
    if (typeof p === 'number') v = Array.isArray(v) ? v[p] : undefined;
    else v = isObject(v) ? v[p] : undefined;
  }
  return v;
};
const count = (v: unknown): number => (isObject(v) ? Object.keys(v).length : Array.isArray(v) ? v.length : 0);
const num = (v: unknown): number => (typeof v === 'number' ? v : 0);
const col = (
  name: string,
  type: string,
  cell: BuiltinColumn['cell'],
  priority = 0,
  description = '',
): BuiltinColumn => ({
  def: { name, type, description, priority },
  cell,
});
const ageCol = col(
  'Age',
  'string',
  (o, now) => age(get(o, 'metadata', 'creationTimestamp'), now),
  0,
  'CreationTimestamp',
);
const containers = (spec: unknown): string =>
  ((get(spec, 'containers') as unknown[] | undefined) ?? [])
    .map((c) => String(get(c, 'name') ?? ''))
    .join(',') || '<none>';
const images = (spec: unknown): string =>
  ((get(spec, 'containers') as unknown[] | undefined) ?? [])
    .map((c) => String(get(c, 'image') ?? ''))
    .join(',') || '<none>';
const selector = (s: unknown): string => {
  const labels = get(s, 'matchLabels') ?? s;
  if (!isObject(labels) || Object.keys(labels).length === 0) return '<none>';
  return Object.entries(labels)
    .filter(([, v]) => typeof v === 'string')
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(',');
};

function podStatus(o: Json): string {
  if (get(o, 'metadata', 'deletionTimestamp')) return 'Terminating';
  const statuses = (get(o, 'status', 'containerStatuses') as unknown[] | undefined) ?? [];
  for (const s of statuses) {
    const waiting = get(s, 'state', 'waiting', 'reason');
    if (typeof waiting === 'string' && waiting) return waiting;
    const terminated = get(s, 'state', 'terminated', 'reason');
    if (typeof terminated === 'string' && terminated) return terminated;
  }
  const reason = get(o, 'status', 'reason');
  if (typeof reason === 'string' && reason) return reason;
  return String(get(o, 'status', 'phase') ?? 'Pending');
}

function servicePorts(o: Json): string {
  const ports = (get(o, 'spec', 'ports') as unknown[] | undefined) ?? [];
  if (ports.length === 0) return '<none>';
  return ports
    .map((p) => {
      const node = get(p, 'nodePort');
      return `${String(get(p, 'port'))}${node ? `:${String(node)}` : ''}/${String(get(p, 'protocol') ?? 'TCP')}`;
    })
    .join(',');
}

/** kubectl's ENDPOINTS column of Endpoints: ready `ip:port`s, three at most, then `+ N more...`. */
function endpointsColumn(o: Json): string {
  const subsets = (get(o, 'subsets') as unknown[] | undefined) ?? [];
  if (subsets.length === 0) return '<none>';
  const list: string[] = [];
  let count = 0;
  for (const ss of subsets) {
    const addresses = ((get(ss, 'addresses') as unknown[] | undefined) ?? []).map((a) =>
      String(get(a, 'ip')),
    );
    const ports = (get(ss, 'ports') as unknown[] | undefined) ?? [];
    const entries = ports.length
      ? ports.flatMap((p) => addresses.map((ip) => `${ip}:${String(get(p, 'port'))}`))
      : addresses;
    count += entries.length;
    for (const e of entries) if (list.length < 3) list.push(e);
  }
  return count > 3 ? `${list.join(',')} + ${count - 3} more...` : list.join(',');
}

/** kubectl's PORTS and ENDPOINTS columns of EndpointSlices (three at most, then `+ N more...`). */
function sliceColumn(values: string[]): string {
  if (values.length === 0) return '<unset>';
  const shown = values.slice(0, 3).join(',');
  return values.length > 3 ? `${shown} + ${values.length - 3} more...` : shown;
}

const BUILTIN_COLUMNS: Record<string, BuiltinColumn[]> = {
  Endpoints: [col('Endpoints', 'string', endpointsColumn), ageCol],
  EndpointSlice: [
    col('AddressType', 'string', (o) => get(o, 'addressType') ?? ''),
    col('Ports', 'string', (o) =>
      sliceColumn(((get(o, 'ports') as unknown[] | undefined) ?? []).map((p) => String(get(p, 'port')))),
    ),
    col('Endpoints', 'string', (o) =>
      sliceColumn(
        ((get(o, 'endpoints') as unknown[] | undefined) ?? []).flatMap((e) =>
          ((get(e, 'addresses') as unknown[] | undefined) ?? []).map(String),
        ),
      ),
    ),
    ageCol,
  ],
  Namespace: [col('Status', 'string', (o) => get(o, 'status', 'phase') ?? 'Active'), ageCol],
  ConfigMap: [col('Data', 'integer', (o) => count(o.data) + count(o.binaryData)), ageCol],
  Secret: [
    col('Type', 'string', (o) => o.type ?? 'Opaque'),
    col('Data', 'integer', (o) => count(o.data)),
    ageCol,
  ],
  Service: [
    col('Type', 'string', (o) => get(o, 'spec', 'type') ?? 'ClusterIP'),
    col('Cluster-IP', 'string', (o) => get(o, 'spec', 'clusterIP') ?? '<none>'),
    col('External-IP', 'string', (o) => {
      const ips = get(o, 'spec', 'externalIPs');
      return Array.isArray(ips) && ips.length ? ips.join(',') : '<none>';
    }),
    col('Port(s)', 'string', servicePorts),
    ageCol,
    col('Selector', 'string', (o) => selector(get(o, 'spec', 'selector')), 1),
  ],
  Pod: [
    col('Ready', 'string', (o) => {
      const total = count(get(o, 'spec', 'containers'));
      const statuses = (get(o, 'status', 'containerStatuses') as unknown[] | undefined) ?? [];
      return `${statuses.filter((s) => get(s, 'ready') === true).length}/${total}`;
    }),
    col('Status', 'string', podStatus),
    col('Restarts', 'string', (o) => {
      const statuses = (get(o, 'status', 'containerStatuses') as unknown[] | undefined) ?? [];
      return String(statuses.reduce((n: number, s) => n + num(get(s, 'restartCount')), 0));
    }),
    ageCol,
    col('IP', 'string', (o) => get(o, 'status', 'podIP') ?? '<none>', 1),
    col('Node', 'string', (o) => get(o, 'spec', 'nodeName') ?? '<none>', 1),
  ],
  Event: [
    col('Last Seen', 'string', (o, now) =>
      age(get(o, 'lastTimestamp') ?? get(o, 'eventTime') ?? get(o, 'metadata', 'creationTimestamp'), now),
    ),
    col('Type', 'string', (o) => o.type ?? ''),
    col('Reason', 'string', (o) => o.reason ?? ''),
    col(
      'Object',
      'string',
      (o) =>
        `${String(get(o, 'involvedObject', 'kind') ?? '').toLowerCase()}/${String(get(o, 'involvedObject', 'name') ?? '')}`,
    ),
    col('Message', 'string', (o) => String(o.message ?? '').trim()),
    col('Count', 'integer', (o) => num(o.count) || 1, 1),
  ],
  ServiceAccount: [col('Secrets', 'integer', (o) => count(o.secrets)), ageCol],
  PersistentVolumeClaim: [
    col('Status', 'string', (o) => get(o, 'status', 'phase') ?? 'Pending'),
    col('Volume', 'string', (o) => get(o, 'spec', 'volumeName') ?? ''),
    col('Capacity', 'string', (o) => get(o, 'status', 'capacity', 'storage') ?? ''),
    col('Access Modes', 'string', (o) => {
      const m = get(o, 'status', 'accessModes');
      const short: Record<string, string> = {
        ReadWriteOnce: 'RWO',
        ReadOnlyMany: 'ROX',
        ReadWriteMany: 'RWX',
        ReadWriteOncePod: 'RWOP',
      };
      return Array.isArray(m) ? m.map((x) => short[String(x)] ?? String(x)).join(',') : '';
    }),
    col('StorageClass', 'string', (o) => get(o, 'spec', 'storageClassName') ?? '<unset>'),
    ageCol,
  ],
  StatefulSet: [
    col(
      'Ready',
      'string',
      (o) => `${num(get(o, 'status', 'readyReplicas'))}/${num(get(o, 'spec', 'replicas') ?? 1)}`,
    ),
    ageCol,
    col('Containers', 'string', (o) => containers(get(o, 'spec', 'template', 'spec')), 1),
    col('Images', 'string', (o) => images(get(o, 'spec', 'template', 'spec')), 1),
  ],
  Deployment: [
    col(
      'Ready',
      'string',
      (o) => `${num(get(o, 'status', 'readyReplicas'))}/${num(get(o, 'spec', 'replicas') ?? 1)}`,
    ),
    col('Up-to-date', 'integer', (o) => num(get(o, 'status', 'updatedReplicas'))),
    col('Available', 'integer', (o) => num(get(o, 'status', 'availableReplicas'))),
    ageCol,
    col('Containers', 'string', (o) => containers(get(o, 'spec', 'template', 'spec')), 1),
    col('Images', 'string', (o) => images(get(o, 'spec', 'template', 'spec')), 1),
    col('Selector', 'string', (o) => selector(get(o, 'spec', 'selector')), 1),
  ],
  ReplicaSet: [
    col('Desired', 'integer', (o) => num(get(o, 'spec', 'replicas') ?? 1)),
    col('Current', 'integer', (o) => num(get(o, 'status', 'replicas'))),
    col('Ready', 'integer', (o) => num(get(o, 'status', 'readyReplicas'))),
    ageCol,
  ],
  PodDisruptionBudget: [
    col('Min Available', 'string', (o) => String(get(o, 'spec', 'minAvailable') ?? 'N/A')),
    col('Max Unavailable', 'string', (o) => String(get(o, 'spec', 'maxUnavailable') ?? 'N/A')),
    col('Allowed Disruptions', 'integer', (o) => num(get(o, 'status', 'disruptionsAllowed'))),
    ageCol,
  ],
  Lease: [col('Holder', 'string', (o) => get(o, 'spec', 'holderIdentity') ?? ''), ageCol],
  CustomResourceDefinition: [
    col('Created At', 'date', (o) => get(o, 'metadata', 'creationTimestamp') ?? null, 0, 'CreationTimestamp'),
  ],
};

const DEFAULT_COLUMNS: BuiltinColumn[] = [ageCol];

/**
 * A meta.k8s.io/v1 Table (what `kubectl get` asks for with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
 * CRD kinds use their printerColumns (Name first; Name + Age when none). includeObject defaults to Metadata
 * (the API server's default); `None` leaves `object` out of the rows.
 */
export function toTable(
  kind: ServedKind,
  objects: Record<string, unknown>[],
  opts: {
    includeObject?: 'None' | 'Object' | 'Metadata';
    now?: number;
    resourceVersion?: string;
    continue?: string;
    noHeaders?: boolean;
  } = {},
): Record<string, unknown> {
  const now = opts.now ?? Date.now();
  const include = opts.includeObject ?? 'Metadata';
  const builtin = BUILTIN_KINDS.some((b) => b.group === kind.group && b.kind === kind.kind);
  let columns: BuiltinColumn[];
  if (kind.printerColumns && kind.printerColumns.length > 0) {
    columns = kind.printerColumns.map((pc) => {
      const segs = parseJsonPath(pc.jsonPath);
      return {
        def: {
          name: pc.name,
          type: pc.type,
          ...(pc.format ? { format: pc.format } : {}),
          description: pc.description ?? '',
          priority: pc.priority ?? 0,
        },
        cell: (o: Json, n: number) => {
          const found = evalJsonPath(segs, o);
          return found.length === 0 ? null : cellFor(pc.type, found[0], n);
        },
      };
    });
  } else if (builtin) {
    columns = BUILTIN_COLUMNS[kind.kind] ?? DEFAULT_COLUMNS;
  } else {
    columns = DEFAULT_COLUMNS;
  }
  // Event tables have no Name column up front in kubectl; keep Name first for every kind anyway except Event
  const withName = kind.kind !== 'Event' || !builtin;
  const defs = [...(withName ? [NAME_COLUMN] : []), ...columns.map((c) => c.def)];
  if (!withName) defs.push({ ...NAME_COLUMN, priority: 1 });
  const rows = objects.map((o) => {
    const name = get(o, 'metadata', 'name') ?? '';
    const cells = columns.map((c) => {
      const v = c.cell(o, now);
      return v === undefined ? null : v;
    });
    const row: Json = { cells: withName ? [name, ...cells] : [...cells, name] };
    if (include === 'Object') row.object = o;
    else if (include === 'Metadata') {
      row.object = {
        kind: 'PartialObjectMetadata',
        apiVersion: 'meta.k8s.io/v1',
        metadata: o.metadata ?? {},
      };
    }
    return row;
  });
  const metadata: Json = {};
  if (opts.resourceVersion !== undefined) metadata.resourceVersion = opts.resourceVersion;
  if (opts.continue) metadata.continue = opts.continue;
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata,
    ...(opts.noHeaders ? {} : { columnDefinitions: defs }),
    rows,
  };
}

/** A `Warning` response header value as the API server writes it (kubectl prints `Warning: <text>`). */
export function warningHeader(text: string): string {
  return `299 - ${JSON.stringify(text)}`;
}
