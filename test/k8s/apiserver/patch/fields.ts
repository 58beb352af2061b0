/** Field sets (managedFields' FieldsV1) and walking objects by field path, for server-side apply. */
import { clone, deepEqual, isObject } from '../objects.js';
import {
  isAtomicMap,
  joinPath,
  listRule,
  PatchError,
  type KindInfo,
  type ListRule,
  type Obj,
} from './core.js';

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
export function keyElement(item: Obj, rule: ListRule): string {
  const keys = [...(rule.keys ?? [rule.mergeKey as string])].sort();
  const parts: Obj = {};
  for (const key of keys) {
    const value = item[key] ?? rule.defaults?.[key];
    if (value !== undefined) parts[key] = value;
  }
  return `k:${JSON.stringify(parts)}`;
}

/** Does `item` match the key path element `element` of its list? */
export function matchesKey(item: unknown, element: string, rule: ListRule | undefined): boolean {
  return isObject(item) && rule !== undefined && keyElement(item, rule) === element;
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
  if (isObject(top.metadata)) {
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
  if (isObject(value) && Object.keys(value).length > 0 && !isAtomicMap(kind, pattern)) {
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
      rule.set || !isObject(item) ? `v:${JSON.stringify(item)}` : keyElement(item, rule),
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
    if (rule.set || !isObject(item)) continue;
    for (const [key, child] of Object.entries(item)) {
      collectFields(child, [...itemPath, `f:${key}`], kind, set, options);
    }
  }
}

/** Why an item of a keyed list cannot be tracked, if it cannot. */
function listItemProblem(item: unknown, rule: ListRule, duplicate: boolean): string | undefined {
  if (!isObject(item)) return `associative list items must be objects, got ${JSON.stringify(item)}`;
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
    if (!isObject(node)) return;
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

interface Found {
  found: boolean;
  value?: unknown;
}

/** One step of a field path from `node`; returns the child (or not found). */
function step(node: unknown, element: string, pattern: string, kind: KindInfo): Found {
  if (element.startsWith('f:')) {
    const key = element.slice(2);
    return isObject(node) && key in node ? { found: true, value: node[key] } : { found: false };
  }
  if (!Array.isArray(node)) return { found: false };
  const rule = listRule(kind, pattern);
  const item = element.startsWith('v:')
    ? node.find((candidate) => deepEqual(candidate, JSON.parse(element.slice(2))))
    : node.find((candidate) => matchesKey(candidate, element, rule));
  return item === undefined ? { found: false } : { found: true, value: item };
}

/** The value at a field path of `obj`. */
export function valueAt(obj: unknown, elements: string[], kind: KindInfo): Found {
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
export function removeAt(
  obj: Obj,
  elements: string[],
  kind: KindInfo,
  keep: (encoded: string) => boolean,
): void {
  const parentPath = elements.slice(0, -1);
  const parent = valueAt(obj, parentPath, kind);
  if (!parent.found) return;
  const element = elements[elements.length - 1];
  const container = parent.value;
  if (element.startsWith('f:') && isObject(container)) {
    delete container[element.slice(2)];
  } else if (Array.isArray(container)) {
    const target = step(container, element, patternOf(parentPath), kind);
    if (target.found) container.splice(container.indexOf(target.value), 1);
  }
  const isEmptyMap = isObject(container) && Object.keys(container).length === 0;
  const prunable =
    parentPath.length > 0 &&
    parentPath[parentPath.length - 1].startsWith('f:') &&
    JSON.stringify(parentPath) !== '["f:metadata"]';
  if (isEmptyMap && prunable && !keep(JSON.stringify(parentPath))) removeAt(obj, parentPath, kind, keep);
}
