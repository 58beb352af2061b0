/**
 * Pure patch machinery for the test Kubernetes API server: JSON merge patch (RFC 7386), JSON patch
 * (RFC 6902), strategic merge patch and server-side apply with managedFields (FieldsV1).
 *
 * Nothing here does I/O and no input is mutated: every function works on clones.
 */

/** A JSON object. */
type Obj = Record<string, unknown>;

/** A patch that the server must reject; `code` and `reason` map onto a metav1.Status. */
export class PatchError extends Error {
  constructor(
    readonly code: 400 | 409 | 422,
    message: string,
    readonly reason: 'BadRequest' | 'Conflict' | 'Invalid',
  ) {
    super(message);
    this.name = 'PatchError';
  }
}

/** The group/version/kind of the object being patched. */
export interface KindInfo {
  group: string;
  version: string;
  kind: string;
}

// ---------------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------------

function isObj(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function clone<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

/** Structural equality of two JSON values (key order is ignored). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((item, i) => deepEqual(item, b[i]));
  }
  if (!isObj(a) || !isObj(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => key in b && deepEqual(a[key], b[key]));
}

function joinPath(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

// ---------------------------------------------------------------------------------------------
// JSON merge patch (RFC 7386)
// ---------------------------------------------------------------------------------------------

/** RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return clone(patch);
  const result: Obj = isObj(target) ? clone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// JSON patch (RFC 6902)
// ---------------------------------------------------------------------------------------------

/** Splits an RFC 6901 JSON pointer into unescaped reference tokens. */
export function parsePointer(pointer: unknown): string[] {
  if (typeof pointer !== 'string') throw new PatchError(422, 'JSON pointer must be a string', 'Invalid');
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) {
    throw new PatchError(422, `invalid JSON pointer ${JSON.stringify(pointer)}`, 'Invalid');
  }
  return pointer
    .slice(1)
    .split('/')
    .map((token) => token.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** The array index a token names; `allowEnd` accepts `-` and `length` (for add). */
function arrayIndex(list: unknown[], token: string, allowEnd: boolean, pointer: string): number {
  const end = allowEnd ? list.length : list.length - 1;
  if (token === '-' && allowEnd) return list.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token) || Number(token) > end) {
    throw new PatchError(422, `array index ${JSON.stringify(token)} out of range in ${pointer}`, 'Invalid');
  }
  return Number(token);
}

/** The container holding the last token of `tokens` (which must exist). */
function parentOf(doc: unknown, tokens: string[], pointer: string): Obj | unknown[] {
  let node = doc;
  for (const token of tokens.slice(0, -1)) {
    if (Array.isArray(node)) node = node[arrayIndex(node, token, false, pointer)];
    else if (isObj(node) && token in node) node = node[token];
    else throw new PatchError(422, `path ${pointer} does not exist`, 'Invalid');
  }
  if (!isObj(node) && !Array.isArray(node)) {
    throw new PatchError(422, `path ${pointer} does not exist`, 'Invalid');
  }
  return node;
}

function pointerGet(doc: unknown, pointer: string): unknown {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return doc;
  const parent = parentOf(doc, tokens, pointer);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) return parent[arrayIndex(parent, last, false, pointer)];
  if (!(last in parent)) throw new PatchError(422, `path ${pointer} does not exist`, 'Invalid');
  return parent[last];
}

/** Adds (or for objects, sets) `value` at `pointer`; returns the new document. */
function pointerAdd(doc: unknown, pointer: string, value: unknown): unknown {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return value;
  const parent = parentOf(doc, tokens, pointer);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, true, pointer), 0, value);
  else parent[last] = value;
  return doc;
}

function pointerRemove(doc: unknown, pointer: string): void {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) throw new PatchError(422, 'cannot remove the whole document', 'Invalid');
  const parent = parentOf(doc, tokens, pointer);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, false, pointer), 1);
  else if (last in parent) delete parent[last];
  else throw new PatchError(422, `path ${pointer} does not exist`, 'Invalid');
}

interface JsonPatchOp {
  op: string;
  path: string;
  from?: string;
  value?: unknown;
}

function validateOp(raw: unknown, index: number): JsonPatchOp {
  const bad = (why: string): PatchError =>
    new PatchError(422, `json patch operation ${index}: ${why}`, 'Invalid');
  if (!isObj(raw)) throw bad('not an object');
  if (typeof raw.op !== 'string') throw bad('missing "op"');
  if (typeof raw.path !== 'string') throw bad('missing "path"');
  if (['add', 'replace', 'test'].includes(raw.op) && !('value' in raw)) throw bad('missing "value"');
  if (['move', 'copy'].includes(raw.op) && typeof raw.from !== 'string') throw bad('missing "from"');
  if (!['add', 'remove', 'replace', 'move', 'copy', 'test'].includes(raw.op))
    throw bad(`unknown op ${raw.op}`);
  return raw as unknown as JsonPatchOp;
}

/** Applies one validated operation to `doc` (mutating it); returns the new document. */
function applyOp(doc: unknown, op: JsonPatchOp): unknown {
  switch (op.op) {
    case 'add':
      return pointerAdd(doc, op.path, clone(op.value));
    case 'remove':
      pointerRemove(doc, op.path);
      return doc;
    case 'replace':
      pointerGet(doc, op.path);
      if (op.path === '') return clone(op.value);
      pointerRemove(doc, op.path);
      return pointerAdd(doc, op.path, clone(op.value));
    case 'move': {
      const from = op.from as string;
      if (op.path.startsWith(`${from}/`)) {
        throw new PatchError(422, `cannot move ${from} into its own child ${op.path}`, 'Invalid');
      }
      const value = pointerGet(doc, from);
      if (from === op.path) return doc;
      pointerRemove(doc, from);
      return pointerAdd(doc, op.path, value);
    }
    case 'copy':
      return pointerAdd(doc, op.path, clone(pointerGet(doc, op.from as string)));
    default: {
      const actual = pointerGet(doc, op.path);
      if (!deepEqual(actual, op.value)) {
        throw new PatchError(422, `test operation failed at ${op.path}`, 'Invalid');
      }
      return doc;
    }
  }
}

/**
 * RFC 6902 JSON patch. As in Kubernetes, a body that is not a list of operations is 400 and every
 * failure while applying (bad op, missing path, failed `test`) is 422.
 */
export function jsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops))
    throw new PatchError(400, 'json patch must be an array of operations', 'BadRequest');
  const validated = ops.map(validateOp);
  let doc = clone(target);
  for (const op of validated) doc = applyOp(doc, op);
  return doc;
}

// ---------------------------------------------------------------------------------------------
// The list table: how each list of each built-in kind merges (one place, keyed by path pattern)
// ---------------------------------------------------------------------------------------------

/**
 * How a list merges. `mergeKey` is the strategic-merge-patch key; `keys` are the server-side-apply
 * keys (listMapKeys, default `[mergeKey]`) with `defaults` for keys the API server would default.
 * `set: true` is a merged list of primitives (SMP `patchStrategy: merge`, SSA `listType: set`).
 * Lists not in the table are atomic: replaced wholesale.
 */
export interface ListRule {
  mergeKey?: string;
  keys?: string[];
  defaults?: Obj;
  set?: boolean;
}

const byName: ListRule = { mergeKey: 'name' };

/** Lists of a container, relative to the container. */
const CONTAINER_LISTS: Record<string, ListRule> = {
  env: byName,
  ports: { mergeKey: 'containerPort', keys: ['containerPort', 'protocol'], defaults: { protocol: 'TCP' } },
  volumeMounts: { mergeKey: 'mountPath' },
  volumeDevices: { mergeKey: 'devicePath' },
  resizePolicy: { mergeKey: 'resourceName' },
};

/** Lists of a PodSpec, relative to the PodSpec (containers expand to CONTAINER_LISTS). */
const POD_SPEC_LISTS: Record<string, ListRule> = {
  containers: byName,
  initContainers: byName,
  ephemeralContainers: byName,
  volumes: byName,
  imagePullSecrets: byName,
  hostAliases: { mergeKey: 'ip' },
  resourceClaims: byName,
  schedulingGates: byName,
  topologySpreadConstraints: { mergeKey: 'topologyKey', keys: ['topologyKey', 'whenUnsatisfiable'] },
};

/** Where the PodSpec sits in each built-in kind that has one. */
const POD_SPEC_ROOTS: Record<string, string> = {
  Pod: 'spec',
  PodTemplate: 'template.spec',
  ReplicationController: 'spec.template.spec',
  ReplicaSet: 'spec.template.spec',
  Deployment: 'spec.template.spec',
  StatefulSet: 'spec.template.spec',
  DaemonSet: 'spec.template.spec',
  Job: 'spec.template.spec',
  CronJob: 'spec.jobTemplate.spec.template.spec',
};

/** API groups served by Kubernetes itself (everything else is a custom resource). */
const BUILTIN_GROUPS = new Set([
  '',
  'apps',
  'batch',
  'autoscaling',
  'policy',
  'networking.k8s.io',
  'rbac.authorization.k8s.io',
  'coordination.k8s.io',
  'discovery.k8s.io',
  'events.k8s.io',
  'storage.k8s.io',
  'scheduling.k8s.io',
  'node.k8s.io',
  'certificates.k8s.io',
  'admissionregistration.k8s.io',
  'apiextensions.k8s.io',
  'apiregistration.k8s.io',
  'flowcontrol.apiserver.k8s.io',
]);

/**
 * Maps that server-side apply owns and replaces as a whole: metav1.LabelSelector is
 * `structType=atomic` wherever it appears, Service and ReplicationController selectors are
 * `mapType=atomic`. Keyed like the list table.
 */
function atomicMapPaths(): Record<string, true> {
  const table: Record<string, true> = {
    'Service:spec.selector': true,
    'ReplicationController:spec.selector': true,
    'PodDisruptionBudget:spec.selector': true,
    'NetworkPolicy:spec.podSelector': true,
  };
  for (const kind of ['ReplicaSet', 'Deployment', 'StatefulSet', 'DaemonSet', 'Job']) {
    table[`${kind}:spec.selector`] = true;
  }
  return table;
}

/**
 * The list table, keyed `<scope>:<path pattern>`. A path pattern is the dotted field path with `[]`
 * after each list, e.g. `spec.template.spec.containers[].env`. Scope `*` is every kind (ObjectMeta),
 * `builtin` every built-in kind, otherwise one built-in kind.
 */
function buildListTable(): Record<string, ListRule> {
  const table: Record<string, ListRule> = {
    '*:metadata.ownerReferences': { mergeKey: 'uid' },
    '*:metadata.finalizers': { set: true },
    'builtin:status.conditions': { mergeKey: 'type' },
    'Service:spec.ports': { mergeKey: 'port', keys: ['port', 'protocol'], defaults: { protocol: 'TCP' } },
  };
  for (const [kind, root] of Object.entries(POD_SPEC_ROOTS)) {
    for (const [list, rule] of Object.entries(POD_SPEC_LISTS)) table[`${kind}:${root}.${list}`] = rule;
    for (const containers of ['containers', 'initContainers', 'ephemeralContainers']) {
      for (const [list, rule] of Object.entries(CONTAINER_LISTS)) {
        table[`${kind}:${root}.${containers}[].${list}`] = rule;
      }
    }
  }
  return table;
}

const LIST_TABLE = buildListTable();
const ATOMIC_MAPS = atomicMapPaths();

/** True for kinds Kubernetes serves itself; custom resources get 415 for strategic merge patch. */
export function supportsStrategicMerge(kind: KindInfo): boolean {
  return BUILTIN_GROUPS.has(kind.group);
}

/** The merge rule of the list at `path` (a path pattern) in `kind`; undefined means atomic. */
export function listRule(kind: KindInfo, path: string): ListRule | undefined {
  if (supportsStrategicMerge(kind)) {
    const rule = LIST_TABLE[`${kind.kind}:${path}`] ?? LIST_TABLE[`builtin:${path}`];
    if (rule) return rule;
  }
  return LIST_TABLE[`*:${path}`];
}

function isAtomicMap(kind: KindInfo, path: string): boolean {
  return supportsStrategicMerge(kind) && ATOMIC_MAPS[`${kind.kind}:${path}`] === true;
}

/**
 * Every merge rule that applies to `kind`, by path pattern, and its atomic maps: for an OpenAPI
 * document that wants to advertise the same `x-kubernetes-patch-merge-key` / `list-type` data.
 */
export function mergeRulesFor(kind: KindInfo): { lists: Record<string, ListRule>; atomicMaps: string[] } {
  const lists: Record<string, ListRule> = {};
  const builtin = supportsStrategicMerge(kind);
  for (const [key, rule] of Object.entries(LIST_TABLE)) {
    const [scope, pattern] = [key.slice(0, key.indexOf(':')), key.slice(key.indexOf(':') + 1)];
    if (scope === '*' || (builtin && (scope === 'builtin' || scope === kind.kind))) lists[pattern] = rule;
  }
  const atomicMaps = Object.keys(ATOMIC_MAPS)
    .filter((key) => builtin && key.startsWith(`${kind.kind}:`))
    .map((key) => key.slice(kind.kind.length + 1));
  return { lists, atomicMaps };
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------------------------

const PATCH_DIRECTIVE = '$patch';
const RETAIN_KEYS = '$retainKeys';
const SET_ORDER = '$setElementOrder/';
const DELETE_PRIMITIVE = '$deleteFromPrimitiveList/';

/**
 * Strategic merge patch as kubectl sends it. Built-in kinds merge lists by the keys in the list
 * table; custom resources fall back to JSON merge patch (the server should answer 415 first, see
 * {@link supportsStrategicMerge}).
 */
export function strategicMergePatch(target: Obj, patch: Obj, kind: KindInfo): Obj {
  if (!supportsStrategicMerge(kind)) return mergePatch(target, patch) as Obj;
  if (!isObj(patch)) throw new PatchError(400, 'strategic merge patch must be an object', 'BadRequest');
  return smpMap(isObj(target) ? target : {}, patch, '', kind) ?? {};
}

/** Merges a patch map into an original map; undefined means "delete this map" ($patch: delete). */
function smpMap(original: Obj, patch: Obj, path: string, kind: KindInfo): Obj | undefined {
  const directive = patch[PATCH_DIRECTIVE];
  if (directive === 'delete') return undefined;
  if (directive === 'replace') {
    const rest = { ...patch };
    delete rest[PATCH_DIRECTIVE];
    return smpMap({}, rest, path, kind);
  }
  if (directive !== undefined && directive !== 'merge') {
    throw new PatchError(400, `unknown $patch directive ${JSON.stringify(directive)}`, 'BadRequest');
  }
  const result = clone(original);
  applyRetainKeys(result, patch[RETAIN_KEYS]);
  applyDeleteFromPrimitiveLists(result, patch);
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$')) continue;
    if (value === null) {
      delete result[key];
      continue;
    }
    const merged = smpValue(result[key], value, joinPath(path, key), kind);
    if (merged === undefined) delete result[key];
    else result[key] = merged;
  }
  applySetElementOrders(result, patch, path, kind);
  return result;
}

/** `$retainKeys: [...]` drops every key of the original not listed. */
function applyRetainKeys(result: Obj, retain: unknown): void {
  if (retain === undefined) return;
  if (!Array.isArray(retain)) throw new PatchError(400, '$retainKeys must be a list', 'BadRequest');
  for (const key of Object.keys(result)) if (!retain.includes(key)) delete result[key];
}

/** `$deleteFromPrimitiveList/<list>: [...]` removes those values from a list of primitives. */
function applyDeleteFromPrimitiveLists(result: Obj, patch: Obj): void {
  for (const [key, values] of Object.entries(patch)) {
    if (!key.startsWith(DELETE_PRIMITIVE)) continue;
    const field = key.slice(DELETE_PRIMITIVE.length);
    const list = result[field];
    if (!Array.isArray(list) || !Array.isArray(values)) continue;
    result[field] = list.filter((item) => !values.some((value) => deepEqual(value, item)));
  }
}

/** `$setElementOrder/<list>: [...]` orders the merged list; unlisted items keep their order, last. */
function applySetElementOrders(result: Obj, patch: Obj, path: string, kind: KindInfo): void {
  for (const [key, order] of Object.entries(patch)) {
    if (!key.startsWith(SET_ORDER)) continue;
    const field = key.slice(SET_ORDER.length);
    const list = result[field];
    if (!Array.isArray(list) || !Array.isArray(order)) continue;
    const mergeKey = listRule(kind, joinPath(path, field))?.mergeKey;
    const identity = (item: unknown): string =>
      JSON.stringify(mergeKey !== undefined && isObj(item) ? item[mergeKey] : item);
    const wanted = order.map(identity);
    const rank = (item: unknown): number => {
      const at = wanted.indexOf(identity(item));
      return at < 0 ? wanted.length : at;
    };
    result[field] = list
      .map((item, index) => ({ item, index }))
      .sort((a, b) => rank(a.item) - rank(b.item) || a.index - b.index)
      .map(({ item }) => item);
  }
}

/** Merges one patch value (not null) into the original value at `path`. */
function smpValue(original: unknown, patch: unknown, path: string, kind: KindInfo): unknown {
  if (isObj(patch)) return smpMap(isObj(original) ? original : {}, patch, path, kind);
  if (!Array.isArray(patch)) return clone(patch);
  const rule = listRule(kind, path);
  const base = Array.isArray(original) ? original : [];
  if (rule?.mergeKey !== undefined) return smpKeyedList(base, patch, rule.mergeKey, `${path}[]`, kind);
  if (rule?.set) return smpPrimitiveList(base, patch);
  return clone(patch);
}

/** Is this list element the bare `{"$patch": "replace"}` that makes the patch list replace the list? */
function isListReplace(item: unknown): boolean {
  return isObj(item) && item[PATCH_DIRECTIVE] === 'replace' && Object.keys(item).length === 1;
}

/**
 * Merges a list of maps by `mergeKey`: a bare `{$patch: replace}` element replaces the list, an
 * item with `$patch: delete` deletes the item with its key, `$patch: replace` on an item replaces it.
 */
function smpKeyedList(
  original: unknown[],
  patch: unknown[],
  mergeKey: string,
  path: string,
  kind: KindInfo,
): unknown[] {
  const result: unknown[] = patch.some(isListReplace) ? [] : clone(original);
  for (const item of patch) {
    if (!isObj(item)) throw new PatchError(400, `list ${path} must hold objects`, 'BadRequest');
    if (isListReplace(item)) continue;
    const key = item[mergeKey];
    if (key === undefined) {
      throw new PatchError(400, `an item of ${path} has no merge key "${mergeKey}"`, 'BadRequest');
    }
    const at = result.findIndex((existing) => isObj(existing) && deepEqual(existing[mergeKey], key));
    if (item[PATCH_DIRECTIVE] === 'delete') {
      if (at >= 0) result.splice(at, 1);
      continue;
    }
    const merged = smpMap(at >= 0 ? (result[at] as Obj) : {}, item, path, kind);
    if (merged === undefined) continue;
    if (at >= 0) result[at] = merged;
    else result.push(merged);
  }
  return result;
}

/** Merges a list of primitives: the union, original items first (`{$patch: replace}` replaces). */
function smpPrimitiveList(original: unknown[], patch: unknown[]): unknown[] {
  const result = patch.some(isListReplace) ? [] : clone(original);
  for (const item of patch) {
    if (isObj(item)) continue; // directives
    if (!result.some((existing) => deepEqual(existing, item))) result.push(clone(item));
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Field sets (FieldsV1)
// ---------------------------------------------------------------------------------------------

/** The FieldsV1 wire format: `{"f:spec": {"f:replicas": {}}}`. */
export interface FieldsV1 {
  [element: string]: FieldsV1;
}

/** One metadata.managedFields entry. */
export interface ManagedFieldsEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  time: string;
  fieldsType: 'FieldsV1';
  fieldsV1: FieldsV1;
  subresource?: string;
}

/** A set of field paths; each member is a JSON-encoded array of path elements. */
export type PathSet = Set<string>;

/** Metadata fields nobody owns (stripped from field sets, as the API server does). */
const UNOWNED_METADATA = [
  'name',
  'namespace',
  'creationTimestamp',
  'selfLink',
  'uid',
  'managedFields',
  'generation',
  'resourceVersion',
];

/** The key path element of a keyed list item, e.g. `k:{"name":"app"}` (key fields sorted). */
function keyElement(item: Obj, rule: ListRule): string {
  const keys = [...(rule.keys ?? [rule.mergeKey as string])].sort();
  const parts: Obj = {};
  for (const key of keys) {
    const value = item[key] ?? rule.defaults?.[key];
    if (value !== undefined) parts[key] = value;
  }
  return `k:${JSON.stringify(parts)}`;
}

/** Does `item` match the key path element `element` of its list? */
function matchesKey(item: unknown, element: string, rule: ListRule | undefined): boolean {
  return isObj(item) && rule !== undefined && keyElement(item, rule) === element;
}

/** Turns path elements into a path pattern (`f:spec`,`f:ports`,`k:..` -> `spec.ports[]`). */
function patternOf(elements: string[]): string {
  let pattern = '';
  for (const element of elements) {
    if (element.startsWith('f:')) pattern = joinPath(pattern, element.slice(2));
    else pattern += '[]';
  }
  return pattern;
}

/** Options for {@link fieldSetOf}. */
export interface FieldSetOptions {
  includeStatus: boolean;
  /** Reject (422) keyed list items without their keys or with duplicate keys, as apply does. */
  strict?: boolean;
}

/** Every field `obj` sets, as the API server would record them for its owner. */
export function fieldSetOf(obj: Obj, kind: KindInfo, options: FieldSetOptions): PathSet {
  const set: PathSet = new Set();
  const top = clone(obj);
  delete top.apiVersion;
  delete top.kind;
  if (!options.includeStatus) delete top.status;
  if (isObj(top.metadata)) {
    for (const field of UNOWNED_METADATA) delete top.metadata[field];
    if (Object.keys(top.metadata).length === 0) delete top.metadata;
  }
  for (const [key, value] of Object.entries(top)) collectFields(value, [`f:${key}`], kind, set, options);
  return set;
}

/** The missing key fields of a keyed list item (keys with a server default never miss). */
function missingKeys(item: Obj, rule: ListRule): string[] {
  const keys = rule.keys ?? [rule.mergeKey as string];
  return keys.filter((key) => item[key] === undefined && rule.defaults?.[key] === undefined);
}

/** Adds the paths of one value (and everything below it) to `set`. */
function collectFields(
  value: unknown,
  elements: string[],
  kind: KindInfo,
  set: PathSet,
  options: FieldSetOptions,
): void {
  const pattern = patternOf(elements);
  if (isObj(value) && Object.keys(value).length > 0 && !isAtomicMap(kind, pattern)) {
    for (const [key, child] of Object.entries(value)) {
      collectFields(child, [...elements, `f:${key}`], kind, set, options);
    }
    return;
  }
  const rule = Array.isArray(value) ? listRule(kind, pattern) : undefined;
  if (!Array.isArray(value) || rule === undefined || value.length === 0) {
    set.add(JSON.stringify(elements));
    return;
  }
  for (const item of value) {
    const itemPath = [
      ...elements,
      rule.set || !isObj(item) ? `v:${JSON.stringify(item)}` : keyElement(item, rule),
    ];
    const invalid = rule.set ? undefined : listItemProblem(item, rule, set.has(JSON.stringify(itemPath)));
    if (invalid !== undefined) {
      if (!options.strict) continue;
      throw new PatchError(422, `${displayPath(elements)}: ${invalid}`, 'Invalid');
    }
    if (rule.set && set.has(JSON.stringify(itemPath)) && options.strict) {
      throw new PatchError(
        422,
        `${displayPath(elements)}: duplicate entry ${JSON.stringify(item)}`,
        'Invalid',
      );
    }
    set.add(JSON.stringify(itemPath));
    if (rule.set || !isObj(item)) continue;
    for (const [key, child] of Object.entries(item)) {
      collectFields(child, [...itemPath, `f:${key}`], kind, set, options);
    }
  }
}

/** Why an item of a keyed list cannot be tracked, if it cannot. */
function listItemProblem(item: unknown, rule: ListRule, duplicate: boolean): string | undefined {
  if (!isObj(item)) return `associative list items must be objects, got ${JSON.stringify(item)}`;
  const missing = missingKeys(item, rule);
  if (missing.length > 0) return `an item omits key field(s) ${missing.join(', ')}`;
  if (duplicate) return `duplicate entries for key ${keyElement(item, rule).slice(2)}`;
  return undefined;
}

/** Encodes a path set as FieldsV1 (members with children carry a `.` entry). */
export function toFieldsV1(set: PathSet): FieldsV1 {
  const root: FieldsV1 = {};
  for (const encoded of set) {
    let node = root;
    for (const element of JSON.parse(encoded) as string[]) node = node[element] ??= {};
    node['.'] = {};
  }
  return normalizeFields(root);
}

/** Collapses `{".": {}}` to `{}` and sorts keys (`.` first) so output is deterministic. */
function normalizeFields(node: FieldsV1): FieldsV1 {
  const keys = Object.keys(node).sort((a, b) =>
    a === '.' ? -1 : b === '.' ? 1 : a < b ? -1 : a > b ? 1 : 0,
  );
  if (keys.length === 1 && keys[0] === '.') return {};
  const out: FieldsV1 = {};
  for (const key of keys) out[key] = key === '.' ? {} : normalizeFields(node[key]);
  return out;
}

/** Decodes FieldsV1 into a path set. */
export function fromFieldsV1(fields: unknown): PathSet {
  const set: PathSet = new Set();
  const walk = (node: unknown, elements: string[]): void => {
    if (!isObj(node)) return;
    const keys = Object.keys(node);
    if (elements.length > 0 && (keys.length === 0 || '.' in node)) set.add(JSON.stringify(elements));
    for (const key of keys) if (key !== '.') walk(node[key], [...elements, key]);
  };
  walk(fields, []);
  return set;
}

/** Human-readable field path as kubectl prints conflicts: `.spec.containers[name="app"].image`. */
export function displayPath(elements: string[]): string {
  return elements
    .map((element) => {
      if (element.startsWith('f:')) return `.${element.slice(2)}`;
      if (element.startsWith('v:')) return `[=${element.slice(2)}]`;
      const keys = JSON.parse(element.slice(2)) as Obj;
      return `[${Object.entries(keys)
        .map(([key, value]) => `${key}=${JSON.stringify(value)}`)
        .join(',')}]`;
    })
    .join('');
}

// ---------------------------------------------------------------------------------------------
// Walking objects by field path
// ---------------------------------------------------------------------------------------------

interface Found {
  found: boolean;
  value?: unknown;
}

/** One step of a field path from `node`; returns the child (or not found). */
function step(node: unknown, element: string, pattern: string, kind: KindInfo): Found {
  if (element.startsWith('f:')) {
    const key = element.slice(2);
    return isObj(node) && key in node ? { found: true, value: node[key] } : { found: false };
  }
  if (!Array.isArray(node)) return { found: false };
  const rule = listRule(kind, pattern);
  const item = element.startsWith('v:')
    ? node.find((candidate) => deepEqual(candidate, JSON.parse(element.slice(2))))
    : node.find((candidate) => matchesKey(candidate, element, rule));
  return item === undefined ? { found: false } : { found: true, value: item };
}

/** The value at a field path of `obj`. */
function valueAt(obj: unknown, elements: string[], kind: KindInfo): Found {
  let current: Found = { found: true, value: obj };
  for (let i = 0; i < elements.length && current.found; i++) {
    current = step(current.value, elements[i], patternOf(elements.slice(0, i)), kind);
  }
  return current;
}

/**
 * Removes the field at `elements` from `obj` (in place). A map field left empty is removed too,
 * unless `keep` says somebody owns it (metadata always stays).
 */
function removeAt(obj: Obj, elements: string[], kind: KindInfo, keep: (encoded: string) => boolean): void {
  const parentPath = elements.slice(0, -1);
  const parent = valueAt(obj, parentPath, kind);
  if (!parent.found) return;
  const element = elements[elements.length - 1];
  const container = parent.value;
  if (element.startsWith('f:') && isObj(container)) {
    delete container[element.slice(2)];
  } else if (Array.isArray(container)) {
    const target = step(container, element, patternOf(parentPath), kind);
    if (target.found) container.splice(container.indexOf(target.value), 1);
  }
  const isEmptyMap = isObj(container) && Object.keys(container).length === 0;
  const prunable =
    parentPath.length > 0 &&
    parentPath[parentPath.length - 1].startsWith('f:') &&
    JSON.stringify(parentPath) !== '["f:metadata"]';
  if (isEmptyMap && prunable && !keep(JSON.stringify(parentPath))) removeAt(obj, parentPath, kind, keep);
}

// ---------------------------------------------------------------------------------------------
// Server-side apply
// ---------------------------------------------------------------------------------------------

/** Options for {@link serverSideApply}. */
export interface ApplyOptions {
  manager: string;
  force: boolean;
  kind: KindInfo;
  /** RFC 3339 time recorded in managedFields. */
  now: string;
  /** 'status' when applying to the /status subresource: only status is applied and owned. */
  subresource?: 'status';
  /** Whether the main resource ignores status, as for kinds with a status subresource (default true). */
  statusSubresource?: boolean;
}

/** A field another manager owns that this apply would change. */
export interface ApplyConflict {
  manager: string;
  /** Field path as Kubernetes prints it, e.g. `.spec.replicas`. */
  field: string;
  /** The owner as Kubernetes describes it: `"helm"`, or `"kubectl-edit" using apps/v1 at <time>`. */
  by: string;
}

/** How Kubernetes names a manager in conflict messages (see fieldmanager's printManager). */
function describeManager(entry: ManagedFieldsEntry): string {
  let text = JSON.stringify(entry.manager);
  if (entry.subresource) text += ` with subresource ${JSON.stringify(entry.subresource)}`;
  if (entry.operation !== 'Update') return text;
  return entry.time
    ? `${text} using ${entry.apiVersion} at ${entry.time}`
    : `${text} using ${entry.apiVersion}`;
}

/** The 409 metav1.Status the API server returns for apply conflicts (message format as Kubernetes). */
export function applyConflictStatus(conflicts: ApplyConflict[]): Obj {
  let message: string;
  if (conflicts.length === 1) {
    message = `Apply failed with 1 conflict: conflict with ${conflicts[0].by}: ${conflicts[0].field}`;
  } else {
    const byManager = new Map<string, string[]>();
    for (const { by, field } of conflicts) byManager.set(by, [...(byManager.get(by) ?? []), field]);
    const lines = [...byManager.keys()]
      .sort()
      .flatMap((by) => [`conflicts with ${by}:`, ...(byManager.get(by) ?? []).map((field) => `- ${field}`)]);
    message = `Apply failed with ${conflicts.length} conflicts: ${lines.join('\n')}`;
  }
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: 'Conflict',
    details: {
      // metav1.StatusCause's Type is serialized as `reason`.
      causes: conflicts.map(({ by, field }) => ({
        reason: 'FieldManagerConflict',
        message: `conflict with ${by}`,
        field,
      })),
    },
    code: 409,
  };
}

function apiVersionOf(kind: KindInfo): string {
  return kind.group === '' ? kind.version : `${kind.group}/${kind.version}`;
}

/** The managedFields entries of an object (invalid entries are dropped). */
export function managedFieldsOf(obj: Obj | undefined): ManagedFieldsEntry[] {
  const entries = isObj(obj?.metadata) ? obj.metadata.managedFields : undefined;
  if (!Array.isArray(entries)) return [];
  return clone(entries).filter(
    (entry): entry is ManagedFieldsEntry => isObj(entry) && typeof entry.manager === 'string',
  );
}

/** A copy of `obj` without metadata.managedFields (metadata created if missing). */
function withoutManagedFields(obj: Obj | undefined): Obj & { metadata: Obj } {
  const copy = (clone(obj) ?? {}) as Obj;
  const metadata = isObj(copy.metadata) ? copy.metadata : {};
  delete metadata.managedFields;
  copy.metadata = metadata;
  return copy as Obj & { metadata: Obj };
}

/** Drops null values recursively (SSA treats an explicit null as "not set by this config"). */
function dropNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropNulls);
  if (!isObj(value)) return value;
  const out: Obj = {};
  for (const [key, child] of Object.entries(value)) if (child !== null) out[key] = dropNulls(child);
  return out;
}

/** Merges an applied configuration into the live object: keyed/set lists merge, the rest replaces. */
function mergeApplied(live: unknown, applied: unknown, pattern: string, kind: KindInfo): unknown {
  if (isObj(applied) && isObj(live) && !isAtomicMap(kind, pattern)) {
    const result = clone(live);
    for (const [key, value] of Object.entries(applied)) {
      result[key] = mergeApplied(live[key], value, joinPath(pattern, key), kind);
    }
    return result;
  }
  const rule = listRule(kind, pattern);
  if (!Array.isArray(applied) || !Array.isArray(live) || rule === undefined) return clone(applied);
  const result = clone(live);
  for (const item of applied) {
    const at = rule.set
      ? result.findIndex((existing) => deepEqual(existing, item))
      : result.findIndex((existing) => isObj(item) && matchesKey(existing, keyElement(item, rule), rule));
    if (at < 0) result.push(clone(item));
    else if (!rule.set) result[at] = mergeApplied(result[at], item, `${pattern}[]`, kind);
  }
  return result;
}

/** True when `set` holds `encoded` or anything beneath it. */
function ownsAtOrBelow(set: PathSet, encoded: string): boolean {
  const prefix = encoded.slice(0, -1);
  for (const member of set) if (member === encoded || member.startsWith(`${prefix},`)) return true;
  return false;
}

/** Leaves (and atomic values) whose value the apply changes, with the other managers owning them. */
function findConflicts(
  live: Obj,
  merged: Obj,
  appliedSet: PathSet,
  others: { entry: ManagedFieldsEntry; set: PathSet }[],
  kind: KindInfo,
): (ApplyConflict & { encoded: string })[] {
  const conflicts: (ApplyConflict & { encoded: string })[] = [];
  for (const encoded of appliedSet) {
    const elements = JSON.parse(encoded) as string[];
    if (!elements[elements.length - 1].startsWith('f:')) continue; // list items: their fields decide
    const before = valueAt(live, elements, kind);
    const after = valueAt(merged, elements, kind);
    if (before.found && deepEqual(before.value, after.value)) continue;
    for (const { entry, set } of others) {
      if (!set.has(encoded)) continue;
      conflicts.push({
        manager: entry.manager,
        field: displayPath(elements),
        by: describeManager(entry),
        encoded,
      });
    }
  }
  return conflicts;
}

/** Key fields of a keyed list item must survive while the item does. */
function isKeyField(elements: string[]): boolean {
  const parent = elements[elements.length - 2];
  const last = elements[elements.length - 1];
  return parent?.startsWith('k:') === true && last.slice(2) in (JSON.parse(parent.slice(2)) as Obj);
}

/**
 * The applied configuration as apply sees it: no nulls, and only the part the endpoint owns
 * (status alone on /status; no status on the main resource of kinds with a status subresource).
 * A configuration carrying managedFields is a 400, as in Kubernetes.
 */
function applyConfiguration(applied: Obj, opts: ApplyOptions): Obj {
  if (!isObj(applied)) throw new PatchError(400, 'apply configuration must be an object', 'BadRequest');
  const fields = isObj(applied.metadata) ? applied.metadata.managedFields : undefined;
  if (Array.isArray(fields) && fields.length > 0) {
    throw new PatchError(400, 'metadata.managedFields must be nil', 'BadRequest');
  }
  const config = dropNulls(withoutManagedFields(applied)) as Obj & { metadata: Obj };
  if (opts.subresource === 'status') {
    const { name, namespace } = config.metadata;
    return {
      apiVersion: config.apiVersion,
      kind: config.kind,
      metadata: { name, namespace },
      status: config.status,
    };
  }
  if (opts.statusSubresource !== false) delete config.status;
  return config;
}

/**
 * Server-side apply of `applied` by `opts.manager` onto `live` (undefined on create). Returns the
 * new object with managedFields, or — when another manager owns a field whose value would change
 * and `force` is false — the unchanged live object and the conflicts (the server answers 409).
 */
export function serverSideApply(
  live: Obj | undefined,
  applied: Obj,
  opts: ApplyOptions,
): { object: Obj; conflicts: ApplyConflict[] } {
  const { kind, manager } = opts;
  const base = withoutManagedFields(live);
  const config = applyConfiguration(applied, opts);
  const includeStatus = opts.subresource === 'status' || opts.statusSubresource === false;
  const appliedSet = fieldSetOf(config, kind, { includeStatus, strict: true });
  const entries = managedFieldsOf(live);
  const own = entries.find(
    (entry) =>
      entry.manager === manager && entry.operation === 'Apply' && entry.subresource === opts.subresource,
  );
  const others = entries
    .filter((entry) => entry !== own)
    .map((entry) => ({ entry, set: fromFieldsV1(entry.fieldsV1) }));
  const merged = mergeApplied(base, config, '', kind) as Obj;

  const conflicts = findConflicts(base, merged, appliedSet, others, kind);
  if (conflicts.length > 0 && !opts.force) {
    return {
      object: clone(live) ?? {},
      conflicts: conflicts.map(({ manager: m, field, by }) => ({ manager: m, field, by })),
    };
  }
  for (const { encoded } of conflicts) for (const other of others) other.set.delete(encoded);

  const ownedByOthers: PathSet = new Set(others.flatMap(({ set }) => [...set]));
  const previous = own ? fromFieldsV1(own.fieldsV1) : new Set<string>();
  const dropped = [...previous].filter(
    (encoded) => !appliedSet.has(encoded) && !ownsAtOrBelow(ownedByOthers, encoded),
  );
  const keep = (encoded: string): boolean => appliedSet.has(encoded) || ownedByOthers.has(encoded);
  for (const encoded of dropped) {
    const elements = JSON.parse(encoded) as string[];
    if (!isKeyField(elements)) removeAt(merged, elements, kind, keep);
  }

  const fieldsV1 = toFieldsV1(appliedSet);
  const unchanged = own !== undefined && deepEqual(merged, base) && deepEqual(own.fieldsV1, fieldsV1);
  const ownEntry: ManagedFieldsEntry = {
    manager,
    operation: 'Apply',
    apiVersion: apiVersionOf(kind),
    time: unchanged ? own.time : opts.now,
    fieldsType: 'FieldsV1',
    fieldsV1,
    ...(opts.subresource ? { subresource: opts.subresource } : {}),
  };
  const next = entries
    .map((entry) => {
      if (entry === own) return ownEntry;
      const other = others.find((o) => o.entry === entry);
      return other ? { ...entry, fieldsV1: toFieldsV1(other.set) } : entry;
    })
    .filter((entry) => Object.keys(entry.fieldsV1).length > 0);
  if (!own) next.push(ownEntry);
  if (next.length > 0) (merged.metadata as Obj).managedFields = next;
  return { object: merged, conflicts: [] };
}

/**
 * The managedFields a write asks for explicitly: a non-empty list that differs from the stored one
 * (kubectl rewrites them this way when it moves client-side apply to server-side apply; `[{}]`
 * resets them). Undefined means "keep the stored ones".
 */
function requestedManagedFields(old: Obj | undefined, next: Obj): ManagedFieldsEntry[] | undefined {
  const requested = isObj(next.metadata) ? next.metadata.managedFields : undefined;
  if (!Array.isArray(requested) || requested.length === 0) return undefined;
  const stored = isObj(old?.metadata) ? old.metadata.managedFields : undefined;
  return deepEqual(requested, stored) ? undefined : managedFieldsOf(next);
}

/**
 * Records a non-apply write (PUT, PATCH, create) by `manager`: the fields whose value it changed
 * move to its `Update` entry, other managers lose them, and fields that no longer exist are
 * dropped from every entry. Returns a copy of `next` carrying the new metadata.managedFields.
 */
export function updateManagedFields(
  old: Obj | undefined,
  next: Obj,
  manager: string,
  operation: 'Update',
  kind: KindInfo,
  now: string,
  subresource?: string,
): Obj {
  const before = withoutManagedFields(old);
  const after = withoutManagedFields(next);
  const nextSet = fieldSetOf(after, kind, { includeStatus: true });
  const changed = [...nextSet].filter((encoded) => {
    const elements = JSON.parse(encoded) as string[];
    const previous = valueAt(before, elements, kind);
    if (!elements[elements.length - 1].startsWith('f:')) return !previous.found;
    return !previous.found || !deepEqual(previous.value, valueAt(after, elements, kind).value);
  });
  const entries = requestedManagedFields(old, next) ?? managedFieldsOf(old);
  let own = entries.find(
    (entry) =>
      entry.manager === manager && entry.operation === operation && entry.subresource === subresource,
  );
  if (!own && changed.length > 0) {
    own = {
      manager,
      operation,
      apiVersion: apiVersionOf(kind),
      time: now,
      fieldsType: 'FieldsV1',
      fieldsV1: {},
      ...(subresource ? { subresource } : {}),
    };
    entries.push(own);
  }
  const result = entries
    .map((entry) => {
      const set = fromFieldsV1(entry.fieldsV1);
      for (const encoded of changed) {
        if (entry === own) set.add(encoded);
        else set.delete(encoded);
      }
      for (const encoded of set) if (!nextSet.has(encoded)) set.delete(encoded);
      const fieldsV1 = toFieldsV1(set);
      const touched = entry === own && changed.length > 0;
      return { ...entry, fieldsV1, ...(touched ? { time: now, apiVersion: apiVersionOf(kind) } : {}) };
    })
    .filter((entry) => Object.keys(entry.fieldsV1).length > 0);
  if (result.length > 0) after.metadata.managedFields = result;
  return after;
}
