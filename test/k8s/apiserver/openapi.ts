// OpenAPI v3 documents for the test Kubernetes API server (custom resource validation and
// server-side Tables are in openapi/validate.ts and openapi/tables.ts, re-exported here). Pure: no
// I/O, no clock unless the caller leaves `now` out.
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
//
// The built-in kinds' schemas come from their descriptors (kinds/).

import { createHash } from 'node:crypto';
import { pluralOf } from './kinds/descriptor.js';
import { SERVED } from './kinds/index.js';
import { META, open, ref, refDefault, str } from './kinds/schema.js';
import { gvkList, metaSchemas, SCALE_DEF, scaleSchema } from './openapi/meta-schemas.js';
import { clone, isObject } from './objects.js';

export { humanDuration } from './kinds/columns.js';
export { evalJsonPath, parseJsonPath } from './openapi/jsonpath.js';
export { toTable } from './openapi/tables.js';
export {
  celRulesOf,
  customResourceAdmission,
  formatValue,
  statusBadRequest,
  statusInvalid,
  validateCustomResource,
  type Admission,
  type CelRule,
  type FieldError,
  type ValidationResult,
} from './openapi/validate.js';

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

type Json = Record<string, unknown>;

/** The built-in kinds with a schema, from their descriptors. */
export const BUILTIN_KINDS: ServedKind[] = SERVED.filter((d) => d.resource && d.schema).map((d) => {
  const r = d.resource ?? {};
  return {
    group: d.group,
    version: d.version,
    kind: d.kind,
    plural: r.plural ?? pluralOf(d.kind),
    namespaced: r.namespaced ?? true,
    schema: d.schema,
    ...(r.status || r.scale ? { subresources: { status: true, ...(r.scale ? { scale: true } : {}) } } : {}),
  };
});

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
  // see the header comment: strategic merge patch is accepted but not advertised
  const patchBody = (): Json => {
    const content: Json = {};
    for (const t of [
      'application/apply-patch+yaml',
      'application/json-patch+json',
      'application/merge-patch+json',
    ]) {
      content[t] = { schema: ref(`${META}Patch`) };
    }
    return { content, required: true };
  };

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
        requestBody: patchBody(),
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

/** A `Warning` response header value as the API server writes it (kubectl prints `Warning: <text>`). */
export function warningHeader(text: string): string {
  return `299 - ${JSON.stringify(text)}`;
}
